"""What the command line prints on stdout: download results, listings, repo info.

Plain text for people and pipes (no colour, no escape codes), or JSON with ``--json``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import msgspec

from hubasync._events import PlanReady, RunDone
from hubasync._tracker import format_bytes
from hubasync._types import DEFAULT_REVISION, is_commit_hash

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from hubasync._events import Event
    from hubasync._models import RepoFile, RepoInfo

__all__ = ["DownloadRecorder", "format_info", "format_listing", "result_json"]

_encoder = msgspec.json.Encoder(order="deterministic")


class DownloadRecorder:
    """A cheap bus callback keeping the plan and the end of each run, for ``--json``."""

    def __init__(self) -> None:
        self.plans: list[PlanReady] = []
        self.runs: list[RunDone] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, PlanReady):
            self.plans.append(event)
        elif isinstance(event, RunDone):
            self.runs.append(event)


def result_json(path: str, args: argparse.Namespace, recorder: DownloadRecorder) -> str:
    """One JSON object describing a finished download (reads the disk when nothing ran:
    a fully cached revision by commit needs no run at all)."""
    revision = args.revision or DEFAULT_REVISION
    commit = recorder.plans[-1].commit if recorder.plans else (
        revision if is_commit_hash(revision) else None)
    result: dict[str, Any] = {
        "path": path, "repo_id": args.repo_id, "repo_type": args.repo_type,
        "revision": revision, "commit": commit,
    }
    if recorder.runs:
        result["files"] = sum(r.files for r in recorder.runs)
        result["bytes"] = sum(r.bytes_downloaded + r.bytes_from_cache for r in recorder.runs)
        result["files_from_cache"] = sum(r.files_from_cache for r in recorder.runs)
        result["bytes_downloaded"] = sum(r.bytes_downloaded for r in recorder.runs)
    else:
        files, size = _on_disk(path)
        result.update(files=files, bytes=size, files_from_cache=files, bytes_downloaded=0)
    return _encoder.encode(result).decode()


def _on_disk(path: str) -> tuple[int, int]:
    if os.path.isfile(path):
        return 1, os.path.getsize(path)
    files = size = 0
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if d != ".cache"]  # local_dir metadata
        for name in names:
            files += 1
            size += os.path.getsize(os.path.join(root, name))
    return files, size


def format_listing(files: Sequence[RepoFile], *, as_json: bool) -> tuple[str, str]:
    """(stdout text, a footer for stderr): size, LFS or not, and path, one file per line."""
    if as_json:
        return _encoder.encode(list(files)).decode(), ""
    lines = [f"{format_bytes(f.size):>10}  {'LFS' if f.lfs else '   '}  {f.path}"
             for f in files]
    total = sum(f.size for f in files)
    lfs = sum(1 for f in files if f.lfs)
    footer = f"{len(files)} file{'' if len(files) == 1 else 's'}, {format_bytes(total)} " \
             f"({lfs} LFS)"
    return "\n".join(lines), footer


def format_info(info: RepoInfo, files: Sequence[RepoFile], *, revision: str | None,
                as_json: bool) -> str:
    total = sum(f.size for f in files)
    lfs = sum(1 for f in files if f.lfs)
    fields: dict[str, Any] = {
        "repo_id": info.id, "repo_type": info.repo_type,
        "revision": revision or DEFAULT_REVISION, "commit": info.sha,
        "last_modified": info.last_modified, "private": info.private, "gated": info.gated,
        "disabled": info.disabled, "files": len(files), "lfs_files": lfs, "total_bytes": total,
    }
    if as_json:
        return _encoder.encode(fields).decode()
    gated = "no" if info.gated is False else ("yes" if info.gated is True else info.gated)
    rows = [
        ("repo", f"{info.id} ({info.repo_type})"),
        ("revision", fields["revision"]),
        ("commit", info.sha),
        ("last modified", info.last_modified or "-"),
        ("private", "yes" if info.private else "no"),
        ("gated", gated),
        ("files", f"{len(files)} ({lfs} LFS)"),
        ("total size", f"{format_bytes(total)} ({total:,} bytes)"),
    ]
    if info.disabled:
        rows.append(("disabled", "yes"))
    return "\n".join(f"{name:<14} {value}" for name, value in rows)
