"""What `hf_hub_download` and `snapshot_download` decide before and after the transfer.

The official client's decision order is kept step by step (hub-protocol.md sections 3.2, 4.3, 5, 6):
commit-hash fast path, metadata (HEAD or repo info + tree), the offline / failure fallback
matrix, then the plan handed to the scheduler. Refs are written only once the snapshot they
point to exists.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

import msgspec

from hubasync._cache_layout import (
    CACHEDIR_TAG_CONTENT,
    TREE_FORMAT_VERSION,
    LocalDirLayout,
    RepoCache,
    check_relative_path,
)
from hubasync._destinations import CacheDestination, Destination, LocalDirDestination
from hubasync._exceptions import (
    DisabledRepoError,
    FileMetadataError,
    HubHTTPError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    SnapshotError,
    TransportError,
    UsageError,
)
from hubasync._fileio import create_if_missing, makedirs, read_text, write_if_changed
from hubasync._models import BlobLfsInfo, RemoteFile, RepoFile, RepoRef
from hubasync._scheduler import RunInfo, RunResult, Scheduler
from hubasync._types import DEFAULT_REVISION, is_commit_hash

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from hubasync._cache_writer import CacheWriter
    from hubasync._hub_api import HubApi
    from hubasync._threads import DiskIO

log = logging.getLogger("hubasync")

#: Errors after which the cache may answer instead of the Hub (hub-protocol.md 3.2).
FALLBACK_ERRORS = (OfflineModeIsEnabled, TransportError, HubHTTPError, FileMetadataError)


@dataclass
class Engine:
    """The parts of an open HubClient that a download needs."""

    api: HubApi
    scheduler: Scheduler
    writer: CacheWriter
    disk: DiskIO
    cache_dir: str
    disable_symlinks: bool
    run_ids: Iterator[int]

    def next_run(self) -> int:
        return next(self.run_ids)


# -- pure helpers ------------------------------------------------------------------------------


def _as_list(patterns: str | Sequence[str] | None) -> list[str] | None:
    if patterns is None:
        return None
    items = [patterns] if isinstance(patterns, str) else list(patterns)
    return [(p + "*" if p.endswith("/") else p).replace("\\", "/") for p in items]


def filter_paths(paths: Iterable[str], allow: str | Sequence[str] | None,
                 ignore: str | Sequence[str] | None) -> list[str]:
    """fnmatch semantics, case-sensitive, `*` crosses `/`, trailing `/` means the folder."""
    allow_list, ignore_list = _as_list(allow), _as_list(ignore)
    out = []
    for path in paths:
        norm = path.replace("\\", "/")
        if allow_list is not None and not any(fnmatchcase(norm, p) for p in allow_list):
            continue
        if ignore_list and any(fnmatchcase(norm, p) for p in ignore_list):
            continue
        out.append(path)
    return out


def tree_json(files: Sequence[RepoFile]) -> bytes:
    """`trees/<commit>.json` exactly as the official client writes it."""
    entries: dict[str, dict[str, Any]] = {}
    for f in sorted(files, key=lambda f: f.path):
        info: dict[str, Any] = {"size": f.size, "blob_id": f.blob_id}
        if f.lfs is not None:
            info["lfs_sha256"] = f.lfs.sha256
            info["lfs_size"] = f.lfs.size
        if f.xet_hash is not None:
            info["xet_hash"] = f.xet_hash
        entries[f.path] = info
    return json.dumps({"format_version": TREE_FORMAT_VERSION, "files": entries},
                      indent=1).encode()


class _TreeEntry(msgspec.Struct):
    size: int
    blob_id: str
    lfs_sha256: str | None = None
    lfs_size: int | None = None
    xet_hash: str | None = None


class _TreeFile(msgspec.Struct):
    format_version: int
    files: dict[str, _TreeEntry]


def parse_tree_json(text: str | None) -> list[RepoFile] | None:
    if text is None:
        return None
    try:
        data = msgspec.json.decode(text, type=_TreeFile)
    except msgspec.DecodeError:
        log.warning("ignoring an unreadable tree listing in the cache")
        return None
    if data.format_version != TREE_FORMAT_VERSION:
        return None
    return [
        RepoFile(path=path, size=e.size, blob_id=e.blob_id, xet_hash=e.xet_hash,
                 lfs=None if e.lfs_sha256 is None else
                 BlobLfsInfo(size=e.lfs_size or e.size, sha256=e.lfs_sha256, pointer_size=0))
        for path, e in data.files.items()
    ]


def _no_cache_error(error: BaseException | None, local_files_only: bool,
                    what: str) -> BaseException:
    """The error to raise when the Hub failed and the cache has nothing (fallback matrix)."""
    if local_files_only:
        return LocalEntryNotFoundError(
            f"{what} is not in the cache and local_files_only=True forbids looking it up online"
        )
    if isinstance(error, OfflineModeIsEnabled):
        return LocalEntryNotFoundError(
            f"{what} is not in the cache and offline mode is enabled (HF_HUB_OFFLINE=1)"
        )
    if isinstance(error, RepositoryNotFoundError) or (
        isinstance(error, HubHTTPError) and error.status == 401
    ):
        return error
    return LocalEntryNotFoundError(
        f"{what} is not in the cache and the Hub could not be reached "
        f"({type(error).__name__}: {error}); check your connection and try again"
    )


def _read_ref(cache: RepoCache, revision: str) -> str | None:
    if is_commit_hash(revision):
        return revision
    text = read_text(cache.ref(revision))
    return text if text and is_commit_hash(text) else None


# -- hf_hub_download -----------------------------------------------------------------------------


async def download_file(eng: Engine, repo: RepoRef, filename: str, *, revision: str | None,
                        local_dir: str | None, force: bool, local_files_only: bool,
                        run_id: int | None = None) -> str:
    revision = revision or DEFAULT_REVISION
    check_relative_path(revision, what="revision")  # git forbids `..` in refs; so do paths
    check_relative_path(filename)
    cache = RepoCache(eng.cache_dir, repo)
    layout = LocalDirLayout(local_dir) if local_dir else None
    if is_commit_hash(revision) and not force:
        fast = await eng.disk.run(_fast_path, cache, layout, revision, filename)
        if fast is not None:
            return fast
    url = eng.api.resolve_url(repo, revision, filename)
    try:
        if local_files_only:
            raise OfflineModeIsEnabled("local_files_only=True")
        meta = await eng.api.file_metadata(url)
    except RemoteEntryNotFoundError as exc:
        missing_at = exc.commit_hash
        if missing_at and is_commit_hash(missing_at) and layout is None:
            await eng.writer.submit(lambda: _mark_missing(cache, revision, missing_at, filename))
        raise
    except RevisionNotFoundError:
        raise
    except FALLBACK_ERRORS as exc:
        found = None if force else await eng.disk.run(_cached_file, cache, layout, revision,
                                                      filename)
        if found is not None:
            log.warning("using the cached %s: the Hub could not be asked (%s)", filename,
                        type(exc).__name__)
            return found
        if force:
            raise UsageError(f"force_download=True but the Hub could not be reached: {exc}"
                             ) from exc
        raise _no_cache_error(exc, local_files_only, f"{repo.repo_id}/{filename}") from exc
    remote = RemoteFile(path=filename, etag=meta.etag, size=meta.size, url=url,
                        location=meta.location if meta.location != url else None)
    destination: Destination
    if layout is not None:
        source = CacheDestination(cache, meta.commit_hash, disable_symlinks=eng.disable_symlinks)
        destination = LocalDirDestination(layout, meta.commit_hash, cache_source=source)
        await _prepare_local_dir(eng, layout)
    else:
        destination = CacheDestination(cache, meta.commit_hash,
                                       disable_symlinks=eng.disable_symlinks)
        await eng.writer.submit(lambda: _prepare_cache(cache))
    info = RunInfo(run_id=run_id or eng.next_run(), repo_id=repo.repo_id,
                   repo_type=repo.repo_type, revision=revision, commit=meta.commit_hash)
    result = await eng.scheduler.run(info, destination, [remote], force=force)
    if result.errors:
        raise next(iter(result.errors.values()))
    if layout is None:
        await _write_ref(eng, cache, revision, meta.commit_hash)
    return result.paths[filename]


def _fast_path(cache: RepoCache, layout: LocalDirLayout | None, commit: str,
               filename: str) -> str | None:
    if layout is None:
        pointer = cache.pointer(commit, filename)
        return pointer if os.path.exists(pointer) else None
    meta = LocalDirDestination(layout, commit).read_metadata(filename)
    return layout.file(filename) if meta is not None and meta[0] == commit else None


def _cached_file(cache: RepoCache, layout: LocalDirLayout | None, revision: str,
                 filename: str) -> str | None:
    if layout is not None:
        path = layout.file(filename)
        return path if os.path.isfile(path) else None
    commit = _read_ref(cache, revision)
    if commit is None:
        return None
    pointer = cache.pointer(commit, filename)
    return pointer if os.path.exists(pointer) else None


def _prepare_cache(cache: RepoCache) -> None:
    """CACHEDIR.TAG, and `snapshots/` before anything else goes in the repo folder."""
    create_if_missing(cache.cachedir_tag, CACHEDIR_TAG_CONTENT.encode())
    makedirs(cache.snapshots)


def _mark_missing(cache: RepoCache, revision: str, commit: str, filename: str) -> None:
    """`.no_exist/<commit>/<path>`, and the ref (to an existing, maybe empty, snapshot) so
    the official `try_to_load_from_cache` answers by branch name too."""
    _prepare_cache(cache)
    marker = cache.no_exist(commit, filename)
    if not os.path.exists(marker):
        create_if_missing(marker, b"")
    if revision != commit:
        makedirs(cache.snapshot(commit))
        write_if_changed(cache.ref(revision), commit.encode(), scratch=cache.scratch)


async def _write_ref(eng: Engine, cache: RepoCache, revision: str, commit: str) -> None:
    if revision == commit:
        return

    def write() -> None:
        makedirs(cache.snapshot(commit))  # the ref never points to a missing snapshot
        write_if_changed(cache.ref(revision), commit.encode(), scratch=cache.scratch)

    try:
        await eng.writer.submit(write)
    except OSError as exc:
        log.warning("could not update refs/%s: %s", revision, exc)


async def _prepare_local_dir(eng: Engine, layout: LocalDirLayout) -> None:
    def prepare() -> None:
        create_if_missing(layout.gitignore, b"*")
        create_if_missing(layout.cachedir_tag, CACHEDIR_TAG_CONTENT.encode())

    await eng.writer.submit(prepare)


# -- snapshot_download ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotRequest:
    repo: RepoRef
    revision: str | None = None
    local_dir: str | None = None
    allow_patterns: str | Sequence[str] | None = None
    ignore_patterns: str | Sequence[str] | None = None
    force: bool = False
    local_files_only: bool = False
    max_workers: int | None = None
    run_id: int | None = None


async def snapshot(eng: Engine, req: SnapshotRequest) -> str:
    repo, revision = req.repo, req.revision or DEFAULT_REVISION
    check_relative_path(revision, what="revision")
    cache = RepoCache(eng.cache_dir, repo)
    layout = LocalDirLayout(req.local_dir) if req.local_dir else None
    commit: str | None = revision if is_commit_hash(revision) else None
    files: list[RepoFile] | None = None
    api_error: BaseException | None = None
    if not req.local_files_only:
        try:
            if commit is None:
                commit = (await eng.api.repo_info(repo, revision)).sha
                if not is_commit_hash(commit):
                    raise FileMetadataError(f"repo info for {repo.repo_id} has no commit sha")
            files = await _list_files(eng, repo, cache, layout, commit)
        except RevisionNotFoundError:
            raise
        except FALLBACK_ERRORS as exc:
            api_error = exc
    if files is None or commit is None:
        return await eng.disk.run(_offline_snapshot, cache, layout, revision, req, api_error)
    wanted = filter_paths([f.path for f in files], req.allow_patterns, req.ignore_patterns)
    for path in wanted:
        check_relative_path(path)
    destination = await _destination(eng, cache, layout, commit)
    await _store_tree(eng, cache, layout, commit, files)
    by_path = {f.path: f for f in files}
    remotes = [RemoteFile(path=p, etag=by_path[p].etag, size=by_path[p].size,
                          url=eng.api.resolve_url(repo, commit, p)) for p in wanted]
    info = RunInfo(run_id=req.run_id or eng.next_run(), repo_id=repo.repo_id,
                   repo_type=repo.repo_type, revision=revision, commit=commit)
    result = await eng.scheduler.run(info, destination, remotes, force=req.force,
                                     max_workers=req.max_workers)
    _raise_for_result(repo, result)
    if layout is None:
        await _write_ref(eng, cache, revision, commit)
    return destination.root


async def _list_files(eng: Engine, repo: RepoRef, cache: RepoCache,
                      layout: LocalDirLayout | None, commit: str) -> list[RepoFile]:
    tree_path = layout.tree(commit) if layout else cache.tree(commit)
    cached = parse_tree_json(await eng.disk.run(read_text, tree_path))
    if cached is not None:
        return cached
    return [e async for e in eng.api.list_tree(repo, commit, recursive=True)
            if isinstance(e, RepoFile)]


async def _store_tree(eng: Engine, cache: RepoCache, layout: LocalDirLayout | None, commit: str,
                      files: Sequence[RepoFile]) -> None:
    tree_path = layout.tree(commit) if layout else cache.tree(commit)
    data = tree_json(files)
    try:
        await eng.writer.submit(lambda: write_if_changed(tree_path, data))
    except OSError as exc:
        log.warning("could not cache the tree listing: %s", exc)


async def _destination(eng: Engine, cache: RepoCache, layout: LocalDirLayout | None,
                       commit: str) -> Destination:
    in_cache = CacheDestination(cache, commit, disable_symlinks=eng.disable_symlinks)
    if layout is not None:
        await _prepare_local_dir(eng, layout)
        return LocalDirDestination(layout, commit, cache_source=in_cache)

    def prepare() -> None:
        _prepare_cache(cache)
        makedirs(cache.snapshot(commit))

    await eng.writer.submit(prepare)
    return in_cache


def _raise_for_result(repo: RepoRef, result: RunResult) -> None:
    if not result.errors:
        return
    for error in result.errors.values():  # a repo-wide refusal is raised as itself
        if isinstance(error, RepositoryNotFoundError | DisabledRepoError) or (
            isinstance(error, HubHTTPError) and error.status == 401
        ):
            raise error
    names = ", ".join(sorted(result.errors)[:5])
    more = f" and {len(result.errors) - 5} more" if len(result.errors) > 5 else ""
    first = result.errors[min(result.errors)]
    raise SnapshotError(
        f"{len(result.errors)} file(s) of {repo.repo_id} failed: {names}{more} (first: "
        f"{type(first).__name__}: {first}); the {len(result.paths)} that succeeded are in the "
        "cache, a re-run fetches only the rest",
        result.errors,
    )


def _offline_snapshot(cache: RepoCache, layout: LocalDirLayout | None, revision: str,
                      req: SnapshotRequest, error: BaseException | None) -> str:
    """Answer from the cache (blocking; runs off the loop)."""
    commit = _read_ref(cache, revision)
    what = f"snapshot of {req.repo.repo_id}@{revision}"
    if commit is not None and layout is None:
        folder = cache.snapshot(commit)
        if os.path.isdir(folder):
            _raise_if_incomplete(cache.tree(commit), folder, req, what, error)
            return folder
    if layout is not None and os.path.isdir(layout.local_dir) and os.listdir(layout.local_dir):
        if commit is not None:
            _raise_if_incomplete(layout.tree(commit), layout.local_dir, req, what, error)
        log.warning("returning the existing %s: the Hub could not be asked", layout.local_dir)
        return layout.local_dir
    raise _no_cache_error(error, req.local_files_only, what)


def _raise_if_incomplete(tree_path: str, folder: str, req: SnapshotRequest, what: str,
                         error: BaseException | None) -> None:
    files = parse_tree_json(read_text(tree_path))
    if files is None:
        return
    wanted = filter_paths([f.path for f in files], req.allow_patterns, req.ignore_patterns)
    missing = [p for p in wanted if not os.path.exists(os.path.join(folder, *p.split("/")))]
    if missing:
        raise IncompleteSnapshotError(
            f"the cached {what} is missing {len(missing)} file(s) (e.g. {missing[0]}) and the "
            "Hub could not be asked" + (f" ({type(error).__name__})" if error else "")
        )

