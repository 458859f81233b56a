"""HubClient: the long-lived front door for services.

One client owns one transport (a small pool of aiohttp sessions), one host gate, one progress bus,
one cache writer and one scheduler, all started inside one anyio task group when the client is
entered and stopped when it exits::

    async with HubClient(HubConfig.from_env()) as hub:
        path = await hub.snapshot_download("org/name", allow_patterns=["*.json"])
"""

from __future__ import annotations

import enum
import itertools
import os
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING, Self

import anyio
import anyio.to_thread

from hubasync._bus import ProgressBus
from hubasync._cache_writer import CacheWriter
from hubasync._config import HubConfig
from hubasync._download import Engine, SnapshotRequest, download_file, snapshot
from hubasync._events import Event, RateLimited
from hubasync._exceptions import ClientClosedError, OfflineModeIsEnabled
from hubasync._flight import Download, SingleFlight
from hubasync._hub_api import HubApi
from hubasync._models import RepoFile, RepoFolder, RepoInfo, RepoRef, check_repo_type
from hubasync._ratelimit import HostGate, TokenBucket
from hubasync._scheduler import Scheduler
from hubasync._threads import DiskIO
from hubasync._transport import AiohttpTransport
from hubasync._types import DEFAULT_REVISION, StrPath
from hubasync._worker import Fetcher

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
    from types import TracebackType

    from anyio.abc import TaskGroup

    from hubasync._ratelimit import HostGate as _HostGate


class ClientState(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class HubClient:
    """An async context manager; every download method needs it open."""

    def __init__(self, config: HubConfig | None = None, *, bus: ProgressBus | None = None,
                 gate: _HostGate | None = None) -> None:
        self.config = config if config is not None else HubConfig.from_env()
        self.bus = bus if bus is not None else ProgressBus()
        self._gate = gate if gate is not None else HostGate()
        self._state = ClientState.UNOPENED
        self._tg: TaskGroup | None = None
        self._engine: Engine | None = None
        self._transport: AiohttpTransport | None = None
        self._flights = SingleFlight(self._next_run_id)
        self._run_ids = itertools.count(1)

    def __repr__(self) -> str:
        return (f"<HubClient [{self._state.value}] endpoint={self.config.endpoint} "
                f"cache_dir={self.config.cache_dir}>")

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is ClientState.OPENED:
            raise ClientClosedError("this HubClient is already open")
        if self._state is ClientState.CLOSED:
            raise ClientClosedError("a closed HubClient cannot be reopened; create a new one")
        cfg = self.config
        self._transport = AiohttpTransport(
            endpoint=cfg.endpoint, token=cfg.token, max_connections=cfg.max_connections,
            gate=self._gate, offline=cfg.offline, user_agent=cfg.user_agent,
            on_rate_limited=self._rate_limited, max_wait=cfg.retry.retry_after_max,
        )
        api = HubApi(self._transport, endpoint=cfg.endpoint, etag_timeout=cfg.etag_timeout,
                     api_timeout=max(cfg.download_timeout, cfg.etag_timeout), retry=cfg.retry)
        disk = DiskIO(cfg.disk_threads)
        writer = CacheWriter(disk)
        bandwidth = TokenBucket(cfg.max_bandwidth) if cfg.max_bandwidth else None
        fetcher = Fetcher(
            transport=self._transport, api=api, disk=disk, bus=self.bus, retry=cfg.retry,
            connections=anyio.CapacityLimiter(cfg.max_connections),
            download_timeout=cfg.download_timeout, chunk_size=cfg.chunk_size,
            range_threshold=cfg.range_threshold, verify_hashes=cfg.verify_hashes,
            page_cache=cfg.page_cache,
            bandwidth=bandwidth,
        )
        scheduler = Scheduler(fetcher=fetcher, writer=writer, disk=disk, bus=self.bus,
                              max_workers=cfg.max_workers)
        self._engine = Engine(api=api, scheduler=scheduler, writer=writer, disk=disk,
                              cache_dir=cfg.cache_dir,
                              disable_symlinks=cfg.disable_symlinks,
                              run_ids=self._run_ids)
        self.bus.add_callback(self._flights.track)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        await self._tg.start(writer.serve)
        self._state = ClientState.OPENED
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        return await self._close(exc_type, exc, tb)

    async def aclose(self) -> None:
        await self._close(None, None, None)

    async def _close(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                     tb: TracebackType | None) -> bool | None:
        if self._state is not ClientState.OPENED:
            self._state = ClientState.CLOSED
            return None
        self._state = ClientState.CLOSED
        assert self._tg is not None
        assert self._engine is not None
        assert self._transport is not None
        try:
            self._flights.cancel_all()  # downloads in flight stop; their callers get an error
            await self._engine.writer.aclose()  # the writer drains its queue, then returns
            await self._tg.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                await self._engine.disk.aclose()
                await self._transport.aclose()
                await self.bus.aclose()
        return None

    def __del__(self) -> None:
        if getattr(self, "_state", None) is ClientState.OPENED:
            warnings.warn(f"unclosed {self!r}: use 'async with HubClient(...)'",
                          ResourceWarning, stacklevel=1)

    def _open_engine(self) -> Engine:
        if self._state is not ClientState.OPENED or self._engine is None:
            raise ClientClosedError(
                "the HubClient is not open: use 'async with HubClient(...) as hub:'"
            )
        return self._engine

    def _next_run_id(self) -> int:
        return next(self._run_ids)

    def _rate_limited(self, host: str, wait: float) -> None:
        self.bus.publish(RateLimited(run_id=0, host=host, wait=wait))

    @property
    def request_count(self) -> int:
        """Requests sent so far (every HTTP request, API and downloads)."""
        return self._transport.request_count if self._transport is not None else 0

    # -- events ------------------------------------------------------------------------------

    async def events(self, *, run_id: int | None = None) -> AsyncIterator[Event]:
        """Every event published from now on, until the client closes."""
        async with self.bus.subscribe(run_id=run_id) as subscription:
            async for event in subscription:
                yield event

    # -- downloads ---------------------------------------------------------------------------

    async def hf_hub_download(
        self, repo_id: str, filename: str, *, subfolder: str | None = None,
        repo_type: str | None = None, revision: str | None = None,
        local_dir: StrPath | None = None, force_download: bool = False,
        local_files_only: bool = False,
    ) -> str:
        """Download one file; return its path (the snapshot pointer, or the local_dir file)."""
        engine = self._open_engine()
        repo = RepoRef(repo_id=repo_id, repo_type=check_repo_type(repo_type))
        if subfolder:
            filename = f"{subfolder.strip('/')}/{filename}"
        target = await _abs_dir(local_dir)
        offline = local_files_only or self.config.offline
        key = ("file", repo, filename, revision, target, force_download, offline)
        download = self._start(key, lambda run_id: download_file(
            engine, repo, filename, revision=revision, local_dir=target, force=force_download,
            local_files_only=offline, run_id=run_id,
        ))
        return await download.wait()

    async def snapshot_download(
        self, repo_id: str, *, repo_type: str | None = None, revision: str | None = None,
        local_dir: StrPath | None = None, allow_patterns: str | Sequence[str] | None = None,
        ignore_patterns: str | Sequence[str] | None = None, max_workers: int | None = None,
        force_download: bool = False, local_files_only: bool = False,
    ) -> str:
        """Download a whole repo at a revision; return the snapshot folder (or local_dir)."""
        download = await self.start_snapshot(
            repo_id, repo_type=repo_type, revision=revision, local_dir=local_dir,
            allow_patterns=allow_patterns, ignore_patterns=ignore_patterns,
            max_workers=max_workers, force_download=force_download,
            local_files_only=local_files_only, background=False,
        )
        return await download.wait()

    async def start_snapshot(
        self, repo_id: str, *, repo_type: str | None = None, revision: str | None = None,
        local_dir: StrPath | None = None, allow_patterns: str | Sequence[str] | None = None,
        ignore_patterns: str | Sequence[str] | None = None, max_workers: int | None = None,
        force_download: bool = False, local_files_only: bool = False, background: bool = True,
    ) -> Download:
        """Start (or join) a snapshot download and return its handle at once.

        The same request already in flight returns the same handle. A background download
        runs until it ends, `download.cancel()` or the client closes; watch it with
        `download.wait()` or `hub.events(run_id=download.run_id)`.
        """
        engine = self._open_engine()
        repo = RepoRef(repo_id=repo_id, repo_type=check_repo_type(repo_type))
        request = SnapshotRequest(
            repo=repo, revision=revision, local_dir=await _abs_dir(local_dir),
            allow_patterns=allow_patterns, ignore_patterns=ignore_patterns,
            force=force_download, local_files_only=local_files_only or self.config.offline,
            max_workers=max_workers,
        )
        key = ("snapshot", request.repo, request.revision, request.local_dir,
               _patterns_key(allow_patterns), _patterns_key(ignore_patterns),
               request.force, request.local_files_only, max_workers)
        return self._start(
            key, lambda run_id: snapshot(engine, replace(request, run_id=run_id)),
            background=background,
        )

    def get_download(self, download_id: str) -> Download | None:
        """A download started on this client, by its id (finished ones are kept a while)."""
        return self._flights.by_id.get(download_id)

    def _start(self, key: Hashable, fn: Callable[[int], Awaitable[str]], *,
               background: bool = False) -> Download:
        assert self._tg is not None
        return self._flights.start(self._tg, key, fn, background=background)

    async def repo_info(self, repo_id: str, *, repo_type: str | None = None,
                        revision: str | None = None) -> RepoInfo:
        engine = self._open_engine()
        self._forbid_offline()
        repo = RepoRef(repo_id=repo_id, repo_type=check_repo_type(repo_type))
        return await engine.api.repo_info(repo, revision)

    async def list_repo_tree(
        self, repo_id: str, path_in_repo: str | None = None, *, recursive: bool = False,
        repo_type: str | None = None, revision: str | None = None,
    ) -> list[RepoFile | RepoFolder]:
        engine = self._open_engine()
        self._forbid_offline()
        repo = RepoRef(repo_id=repo_id, repo_type=check_repo_type(repo_type))
        return [entry async for entry in engine.api.list_tree(
            repo, revision or DEFAULT_REVISION, path_in_repo, recursive=recursive)]

    async def list_repo_files(self, repo_id: str, *, repo_type: str | None = None,
                              revision: str | None = None) -> list[str]:
        entries = await self.list_repo_tree(repo_id, recursive=True, repo_type=repo_type,
                                            revision=revision)
        return [e.path for e in entries if isinstance(e, RepoFile)]

    def _forbid_offline(self) -> None:
        if self.config.offline:
            raise OfflineModeIsEnabled("offline mode is enabled (HF_HUB_OFFLINE=1)")


def _patterns_key(patterns: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if patterns is None:
        return None
    return (patterns,) if isinstance(patterns, str) else tuple(patterns)


async def _abs_dir(path: StrPath | None) -> str | None:
    if path is None:
        return None
    return await anyio.to_thread.run_sync(lambda: os.path.realpath(os.fspath(path)))
