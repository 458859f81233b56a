"""Turns a list of remote files into work, and runs it.

``plan()`` is pure: checked files in, ordered work out (largest downloads first so big transfers
start early and small files fill the gaps). ``Scheduler.run()`` owns one task group per run: N
workers behind the shared connection limiter pull file tasks from a bounded channel; each task
fetches into a temp file (ranges for big files, inside the Fetcher; continued from a partial
download an earlier attempt left, if any; small files in memory, written in one step) and hands
the commit to the cache writer. Per-file failures are collected, never left as a bare
ExceptionGroup.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import anyio
import filelock

from hubasync._events import FileDone, FileFailed, PlanReady, RunDone
from hubasync._exceptions import HubError, InsufficientDiskSpaceError
from hubasync._fileio import free_space, remove_quietly
from hubasync._partial import FLUSH_SIZE, Where, bytes_held

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from hubasync._bus import ProgressBus
    from hubasync._cache_writer import CacheWriter
    from hubasync._destinations import Check, Destination
    from hubasync._models import RemoteFile
    from hubasync._threads import DiskIO
    from hubasync._worker import Fetcher

log = logging.getLogger("hubasync")
LOCK_POLL: Final = 0.25
DISK_MARGIN: Final = 16 * 1024 * 1024
SMALL_FILE: Final = FLUSH_SIZE  # at most this size: fetched in memory, no lock, no resume


@dataclass(frozen=True)
class FileTask:
    remote: RemoteFile
    check: Check


@dataclass(frozen=True)
class Plan:
    """What a run will do; built without I/O."""

    done: tuple[FileTask, ...]
    materialize: tuple[FileTask, ...]
    download: tuple[FileTask, ...]


def plan(remotes: Sequence[RemoteFile], checks: Sequence[Check]) -> Plan:
    tasks = [FileTask(r, c) for r, c in zip(remotes, checks, strict=True)]
    return Plan(
        done=tuple(t for t in tasks if t.check.action == "done"),
        materialize=tuple(t for t in tasks if t.check.action == "materialize"),
        download=tuple(sorted((t for t in tasks if t.check.action == "download"),
                              key=lambda t: -(t.remote.size or 0))),
    )


@dataclass
class RunResult:
    paths: dict[str, str] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    bytes_downloaded: int = 0
    bytes_from_cache: int = 0
    files_from_cache: int = 0
    blobs: set[str] = field(default_factory=set)  # small blobs fetched in this run (lock keys)


@dataclass(frozen=True)
class RunInfo:
    run_id: int
    repo_id: str
    repo_type: str
    revision: str
    commit: str


@contextlib.asynccontextmanager
async def blob_lock(disk: DiskIO, path: str) -> AsyncIterator[None]:
    """Best-effort inter-process lock at the official path (flock); never needed for safety."""
    lock = filelock.FileLock(path, thread_local=False, mode=0o664)

    def try_acquire() -> bool:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return False
        except OSError:
            return True  # unlockable filesystem: go on without (renames keep us safe)
        return True

    # Another process holds it: poll, flock has no async wake-up across processes.
    while not await disk.run(try_acquire):  # noqa: ASYNC110
        await anyio.sleep(LOCK_POLL)
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await disk.run(lock.release)


class Scheduler:
    def __init__(self, *, fetcher: Fetcher, writer: CacheWriter, disk: DiskIO,
                 bus: ProgressBus, max_workers: int) -> None:
        self._fetcher = fetcher
        self._writer = writer
        self._disk = disk
        self._bus = bus
        self._max_workers = max_workers
        self.active = 0
        self.queued = 0
        self._blobs = KeyedLocks()

    def __repr__(self) -> str:
        return f"<Scheduler [files: {self.active} active, {self.queued} queued]>"

    async def run(self, info: RunInfo, destination: Destination, remotes: Sequence[RemoteFile],
                  *, force: bool = False, max_workers: int | None = None) -> RunResult:
        started = time.monotonic()
        def prepare() -> list[Check]:
            destination.collect_stale({r.etag for r in remotes})
            return [destination.check(r, force=force) for r in remotes]

        checks = await self._disk.run(prepare)
        work = plan(remotes, checks)
        cached = (*work.done, *work.materialize)
        self._bus.publish(PlanReady(
            run_id=info.run_id, repo_id=info.repo_id, repo_type=info.repo_type,
            revision=info.revision, commit=info.commit, total_files=len(remotes),
            total_bytes=sum(r.size or 0 for r in remotes), cached_files=len(cached),
            cached_bytes=sum(t.remote.size or 0 for t in cached),
        ))
        result = RunResult()
        finished = False  # not cancelled, nothing raised
        try:
            await self._check_space(destination, work.download)
            for task in work.done:
                self._finish(info, task, task.check.path, result, from_cache=True, t0=started)
            workers = max(1, min(max_workers or self._max_workers, len(work.download) or 1))
            async with anyio.create_task_group() as tg:
                for task in work.materialize:
                    tg.start_soon(self._materialize, info, task, result)
                send, receive = anyio.create_memory_object_stream[FileTask](workers)
                async with receive:
                    for _ in range(workers):
                        tg.start_soon(self._worker, info, destination, receive.clone(), result,
                                      force)
                async with send:
                    self.queued += len(work.download)
                    for task in work.download:
                        await send.send(task)
            finished = True
        finally:
            self._bus.publish(RunDone(
                run_id=info.run_id, ok=finished and not result.errors, files=len(result.paths),
                files_from_cache=result.files_from_cache, files_failed=len(result.errors),
                bytes_downloaded=result.bytes_downloaded, bytes_from_cache=result.bytes_from_cache,
                seconds=time.monotonic() - started, path=destination.root,
            ))
        return result

    async def _check_space(self, destination: Destination, tasks: Sequence[FileTask]) -> None:
        """Enough free space for what must still be fetched (what earlier attempts recorded of
        a resumable download is already on disk), before the first byte."""
        if not any(t.remote.size for t in tasks):
            return

        def needed_and_free() -> tuple[int, int]:
            needed = 0
            for task in tasks:
                size = task.remote.size or 0
                if size > SMALL_FILE:
                    files = destination.resume_files(task.remote)
                    size -= bytes_held(files, task.remote.etag, size)
                needed += size
            return needed, free_space(destination.root)

        needed, available = await self._disk.run(needed_and_free)
        root = destination.root
        if needed + DISK_MARGIN > available:
            raise InsufficientDiskSpaceError(
                f"not enough disk space in {root}: {needed:,} bytes to download, "
                f"{available:,} available", needed=needed, available=available, path=root,
            )

    def _finish(self, info: RunInfo, task: FileTask, path: str, result: RunResult, *,
                from_cache: bool, t0: float) -> None:
        size = task.remote.size or 0
        result.paths[task.remote.path] = path
        if from_cache:
            result.files_from_cache += 1
            result.bytes_from_cache += size
        else:
            result.bytes_downloaded += size
        self._bus.publish(FileDone(run_id=info.run_id, path=task.remote.path, size=size,
                                   from_cache=from_cache, local_path=path,
                                   seconds=time.monotonic() - t0))

    def _fail(self, info: RunInfo, task: FileTask, exc: Exception, result: RunResult) -> None:
        result.errors[task.remote.path] = exc
        self._bus.publish(FileFailed(run_id=info.run_id, path=task.remote.path,
                                     error_type=type(exc).__name__, message=str(exc)))

    async def _materialize(self, info: RunInfo, task: FileTask, result: RunResult) -> None:
        t0 = time.monotonic()
        fn = task.check.materialize
        assert fn is not None
        try:
            await self._writer.submit(fn)
        except (HubError, OSError) as exc:
            self._fail(info, task, exc, result)
        else:
            self._finish(info, task, task.check.path, result, from_cache=True, t0=t0)

    async def _worker(self, info: RunInfo, destination: Destination,
                      receive: anyio.abc.ObjectReceiveStream[FileTask], result: RunResult,
                      force: bool) -> None:
        async with receive:
            async for task in receive:
                self.queued -= 1
                self.active += 1
                t0 = time.monotonic()
                try:
                    path, fetched = await self._download(info, destination, task, force,
                                                         result)
                except (HubError, OSError) as exc:
                    log.debug("download of %s failed", task.remote.path, exc_info=True)
                    self._fail(info, task, exc, result)
                else:
                    self._finish(info, task, path, result, from_cache=not fetched, t0=t0)
                finally:
                    self.active -= 1

    async def _download(self, info: RunInfo, destination: Destination, task: FileTask,
                        force: bool, result: RunResult) -> tuple[str, bool]:
        remote = task.remote
        if remote.size is not None and remote.size <= SMALL_FILE:
            return await self._download_small(info, destination, remote, force, result)
        async with blob_lock(self._disk, destination.lock_path(remote)):
            if not force:  # another process (or worker) may have finished it meanwhile
                path = await self._done_meanwhile(destination, remote)
                if path is not None:
                    return path, False
            where = Where(destination.temp_path(remote), destination.resume_files(remote))
            partial = await self._fetcher.fetch(info.run_id, remote, where, force=force)
            try:
                path = await self._writer.commit(*destination.commit_steps(remote, partial.path))
            except BaseException:
                with anyio.CancelScope(shield=True):  # a resumable file is kept (verified again)
                    await self._disk.run(partial.abandon)
                raise
            with anyio.CancelScope(shield=True):
                await self._disk.run(partial.committed)
            return path, True

    async def _done_meanwhile(self, destination: Destination, remote: RemoteFile) -> str | None:
        """The final path if the file is there now, or was materialised from a blob that is."""
        again = await self._disk.run(destination.check, remote, force=False)
        if again.action == "done":
            return again.path
        if again.action == "materialize" and again.materialize is not None:
            await self._writer.submit(again.materialize)
            return again.path
        return None

    async def _download_small(self, info: RunInfo, destination: Destination,
                              remote: RemoteFile, force: bool,
                              result: RunResult) -> tuple[str, bool]:
        """A small file: fetched into memory, verified and written in one step, committed in
        the writer's next batch. No file lock (it is best effort and costs more than the file:
        two processes that both fetch it both rename the same bytes into place) and no resume
        state (a failure fetches it again whole); within this process one task per blob."""
        key = destination.lock_path(remote)
        async with self._blobs.hold(key) as waited:
            # the same content under another name, fetched meanwhile or earlier in this run
            if key in result.blobs or (waited and not force):
                path = await self._done_meanwhile(destination, remote)
                if path is not None:
                    return path, False
            temp = destination.temp_path(remote)
            try:  # the lock file is left as the official client leaves it (never locked)
                await self._fetcher.fetch_small(info.run_id, remote, temp, lock_file=key)
                path = await self._writer.commit(*destination.commit_steps(remote, temp))
                result.blobs.add(key)
                return path, True
            except BaseException:
                with anyio.CancelScope(shield=True):  # a temp the commit did not take
                    await self._disk.run(remove_quietly, temp)
                raise


class KeyedLocks:
    """In-process locks by key, forgotten when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    def __repr__(self) -> str:
        return f"<KeyedLocks [keys: {len(self._locks)}]>"

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[bool]:
        """Hold the lock of `key`; yields whether another task held it first."""
        lock, users = self._locks.get(key) or (anyio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        waited = lock.locked()
        try:
            async with lock:
                yield waited
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
