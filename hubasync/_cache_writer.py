"""The single committer: one coroutine, fed by a bounded channel, performs every final write.

Each job is a blocking function (a destination's ``commit`` or ``materialize``, a ref, a tree
listing) that it runs off the loop under a shield, so a cancellation never interrupts a commit
half-way: the cache is in the old state or the new one.

Jobs that queue up while one runs are taken together, in one trip to a worker thread. A commit
may come in two steps (`commit`: put the bytes in place, then link them): in a batch every first
step runs, then the folders they renamed into are fsynced once each, then the second steps run
in order. So a link never points at a blob whose rename is not yet durable, and two thousand
small files cost a few directory fsyncs, not two thousand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import anyio

from hubasync._exceptions import ClientClosedError
from hubasync._fileio import deferred_dir_syncs

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from anyio.abc import TaskStatus
    from anyio.streams.memory import MemoryObjectSendStream

    from hubasync._threads import DiskIO

T = TypeVar("T")


MAX_BATCH: Final = 64


class _Job(Generic[T]):
    __slots__ = ("done", "error", "fn", "place", "result")

    def __init__(self, fn: Callable[[], T], place: Callable[[], object] | None = None) -> None:
        self.place = place
        self.fn = fn
        self.done = anyio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


def run_batch(jobs: Sequence[_Job[Any]]) -> None:
    """Blocking: first steps, one fsync per folder they touched, then the jobs in order."""
    with deferred_dir_syncs():
        for job in jobs:
            if job.place is not None:
                try:
                    job.place()
                except Exception as exc:
                    job.error = exc
    for job in jobs:
        if job.error is None:
            try:
                job.result = job.fn()
            except Exception as exc:
                job.error = exc


class CacheWriter:
    """Start with ``await tg.start(writer.serve)``; submit jobs with ``await writer.submit(fn)``."""

    def __init__(self, disk: DiskIO, *, buffer: int = 64) -> None:
        self._disk = disk
        self._buffer = buffer
        self._send: MemoryObjectSendStream[_Job[Any]] | None = None
        self.commits = 0
        self.batches = 0

    def __repr__(self) -> str:
        state = "running" if self._send is not None else "stopped"
        return f"<CacheWriter [{state} | commits: {self.commits} in {self.batches} batches]>"

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        send, receive = anyio.create_memory_object_stream[_Job[Any]](self._buffer)
        self._send = send
        task_status.started()
        async with receive:
            async for job in receive:
                batch = [job]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                with anyio.CancelScope(shield=True):
                    try:
                        await self._disk.run(run_batch, batch)
                    except BaseException as exc:  # run_batch itself failed: nothing is known
                        for queued in batch:
                            queued.error = queued.error or exc
                        raise
                    finally:
                        self.commits += sum(queued.error is None for queued in batch)
                        self.batches += 1
                        for queued in batch:
                            queued.done.set()

    async def submit(self, fn: Callable[[], T]) -> T:
        """Run `fn` (blocking) in the committer; return its result or raise its error."""
        return await self._submit(_Job(fn))

    async def commit(self, place: Callable[[], object], link: Callable[[], T]) -> T:
        """A two-step commit: `place` puts the bytes at their final path (its renames are made
        durable before any second step of the batch runs), then `link` (its result is
        returned). If `place` fails, `link` is not run."""
        return await self._submit(_Job(link, place))

    async def _submit(self, job: _Job[T]) -> T:
        if self._send is None:
            raise ClientClosedError("the cache writer is not running (is the HubClient open?)")
        try:
            await self._send.send(job)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ClientClosedError("the cache writer has stopped") from None
        await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    async def aclose(self) -> None:
        send, self._send = self._send, None
        if send is not None:
            await send.aclose()
