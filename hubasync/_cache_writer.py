"""The single committer: one coroutine, fed by a bounded channel, performs every final write.

Each job is a blocking function (a destination's ``commit`` or ``materialize``, a ref, a tree
listing) that it runs off the loop under a shield, so a cancellation never interrupts a commit
half-way: the cache is in the old state or the new one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from hubasync._exceptions import ClientClosedError

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskStatus
    from anyio.streams.memory import MemoryObjectSendStream

    from hubasync._fileio import DiskIO

T = TypeVar("T")


class _Job(Generic[T]):
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = anyio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class CacheWriter:
    """Start with ``await tg.start(writer.serve)``; submit jobs with ``await writer.submit(fn)``."""

    def __init__(self, disk: DiskIO, *, buffer: int = 64) -> None:
        self._disk = disk
        self._buffer = buffer
        self._send: MemoryObjectSendStream[_Job[Any]] | None = None
        self.commits = 0

    def __repr__(self) -> str:
        state = "running" if self._send is not None else "stopped"
        return f"<CacheWriter [{state} | commits: {self.commits}]>"

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        send, receive = anyio.create_memory_object_stream[_Job[Any]](self._buffer)
        self._send = send
        task_status.started()
        async with receive:
            async for job in receive:
                with anyio.CancelScope(shield=True):
                    try:
                        job.result = await self._disk.run(job.fn)
                        self.commits += 1
                    except Exception as exc:
                        job.error = exc
                    finally:
                        job.done.set()

    async def submit(self, fn: Callable[[], T]) -> T:
        if self._send is None:
            raise ClientClosedError("the cache writer is not running (is the HubClient open?)")
        job = _Job(fn)
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
