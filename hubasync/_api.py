"""One-shot coroutines with the official client's names, parameters and return values.

Each call builds a :class:`HubConfig` from the environment (off the event loop), opens a
:class:`HubClient` for the call and closes it. Services that download often should keep one
HubClient open instead.

``progress`` (downloads only) is "auto", "bars", "log", "json", "none", a callable receiving
every event, or a reporter object; None means the config's mode (HF_PROGRESS_MODE, default
"auto"). The display runs in a task owned by the call and is stopped before the call returns or
raises; it never raises into the download. See `hubasync.show_progress` for the details.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio.to_thread

from hubasync._client import HubClient
from hubasync._config import HubConfig
from hubasync._reporting import ProgressArg, show_progress

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from hubasync._models import RepoFile, RepoFolder
    from hubasync._types import StrPath

Progress: TypeAlias = ProgressArg


@asynccontextmanager
async def open_client(*, token: str | bool | None, endpoint: str | None,
                      cache_dir: StrPath | None, progress: Progress,
                      **overrides: Any) -> AsyncIterator[HubClient]:
    """A HubClient for one call, with its progress shown while the block runs."""
    if endpoint:
        overrides["endpoint"] = endpoint
    if cache_dir is not None:
        overrides["cache_dir"] = cache_dir
    config = await anyio.to_thread.run_sync(
        lambda: HubConfig.from_env(token=token, **overrides)
    )
    async with HubClient(config) as client, show_progress(client.bus, progress, config=config):
        yield client


async def hf_hub_download(
    repo_id: str, filename: str, *, subfolder: str | None = None, repo_type: str | None = None,
    revision: str | None = None, cache_dir: StrPath | None = None,
    local_dir: StrPath | None = None, token: str | bool | None = None,
    endpoint: str | None = None, force_download: bool = False, local_files_only: bool = False,
    progress: Progress = None,
) -> str:
    """Download one file into the cache (or `local_dir`) and return its local path."""
    async with open_client(token=token, endpoint=endpoint, cache_dir=cache_dir,
                           progress=progress) as hub:
        return await hub.hf_hub_download(
            repo_id, filename, subfolder=subfolder, repo_type=repo_type, revision=revision,
            local_dir=local_dir, force_download=force_download,
            local_files_only=local_files_only,
        )


async def snapshot_download(
    repo_id: str, *, repo_type: str | None = None, revision: str | None = None,
    cache_dir: StrPath | None = None, local_dir: StrPath | None = None,
    allow_patterns: str | Sequence[str] | None = None,
    ignore_patterns: str | Sequence[str] | None = None, token: str | bool | None = None,
    endpoint: str | None = None, max_workers: int | None = None, force_download: bool = False,
    local_files_only: bool = False, progress: Progress = None,
) -> str:
    """Download a repo at a revision and return the snapshot folder (or `local_dir`)."""
    extra = {"max_workers": max_workers} if max_workers else {}
    async with open_client(token=token, endpoint=endpoint, cache_dir=cache_dir,
                           progress=progress, **extra) as hub:
        return await hub.snapshot_download(
            repo_id, repo_type=repo_type, revision=revision, local_dir=local_dir,
            allow_patterns=allow_patterns, ignore_patterns=ignore_patterns,
            max_workers=max_workers, force_download=force_download,
            local_files_only=local_files_only,
        )


async def list_repo_tree(
    repo_id: str, path_in_repo: str | None = None, *, recursive: bool = False,
    repo_type: str | None = None, revision: str | None = None, token: str | bool | None = None,
    endpoint: str | None = None,
) -> list[RepoFile | RepoFolder]:
    """Files and folders of a repo (one level, or everything with `recursive=True`)."""
    async with open_client(token=token, endpoint=endpoint, cache_dir=None,
                           progress="none") as hub:
        return await hub.list_repo_tree(repo_id, path_in_repo, recursive=recursive,
                                        repo_type=repo_type, revision=revision)


async def list_repo_files(
    repo_id: str, *, repo_type: str | None = None, revision: str | None = None,
    token: str | bool | None = None, endpoint: str | None = None,
) -> list[str]:
    """Every file path of a repo at a revision."""
    async with open_client(token=token, endpoint=endpoint, cache_dir=None,
                           progress="none") as hub:
        return await hub.list_repo_files(repo_id, repo_type=repo_type, revision=revision)
