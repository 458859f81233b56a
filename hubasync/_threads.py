"""Where blocking file work runs: a bounded pool of worker threads, and the write threads.

:class:`DiskIO` runs blocking primitives (from `_fileio`) off the event loop: hashing, fsync,
rename, symlink, each on a pool of at most `threads` worker threads (an anyio
``CapacityLimiter``).

The bytes of a download are written differently. They come in 1 MiB pieces, and a hand-off
to a pooled thread and back costs about 65 us of CPU on each side, plus anyio's bookkeeping:
0.2 s of a 2 GiB download on two cores, about a tenth of its time. So each file is written by
one of a few long-lived threads (`WriteThreads`), picked by a key:
- One file's writes never run side by side. The kernel serializes buffered writes to one file
  anyway, and a writer that waits for that lock spins on the other core meanwhile.
- A thread that is busy takes the next write from its queue without being woken.
- Finished writes reach the loop in batches: one wake-up for all the writes that finished
  since the previous one.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from typing import TYPE_CHECKING, Final, ParamSpec, TypeVar

import anyio
import anyio.to_thread

if TYPE_CHECKING:
    from collections.abc import Callable

P = ParamSpec("P")
T = TypeVar("T")

WRITE_THREADS: Final = 4  # at most; one file always uses the same one

_Outcome = tuple[object, BaseException | None]
_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[object]", "Callable[[], object]"]


class DiskIO:
    """Runs blocking file operations on at most `threads` worker threads, and the writes of
    downloaded bytes on the write threads (`write`).

    Cancelling the awaiting task waits for the running operation to finish (never abandons a
    thread half-way through a rename or a write), then raises the cancellation.
    """

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._limiter: anyio.CapacityLimiter | None = None
        self._writes = WriteThreads(min(threads, WRITE_THREADS))

    def __repr__(self) -> str:
        return f"<DiskIO [threads: {self._threads}]>"

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._threads)
        if kwargs:
            return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs),
                                                  limiter=self._limiter)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def write(self, key: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args)` on the write thread for `key` (a file's path): the calls for one key run
        one at a time, in the order they were made."""
        return await self._writes.run(key, functools.partial(fn, *args, **kwargs))

    async def aclose(self) -> None:
        """Stop the write threads (once their queued writes are done)."""
        await self._writes.aclose()


class WriteThreads:
    """Up to `size` threads, started on first use; each key always goes to the same one."""

    def __init__(self, size: int) -> None:
        self._queues: list[queue.SimpleQueue[_Item | None]] = [
            queue.SimpleQueue() for _ in range(max(1, size))]
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()  # guards _finished, which write threads fill
        self._finished: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[object],
                                                                   _Outcome]]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<WriteThreads [running: {len(self._threads)} of {len(self._queues)}]>"

    async def run(self, key: str, call: Callable[[], T]) -> T:
        """Run `call` on the thread for `key`. A cancellation waits for it to finish, and is
        raised at the caller's next checkpoint (so the caller still sees what was written)."""
        if self._closed:
            raise RuntimeError("the write threads are closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        self._queue(key).put((loop, future, call))
        with anyio.CancelScope(shield=True):
            result = await future
        return result  # type: ignore[return-value]  # what `call` returned

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for index in self._threads:
            self._queues[index].put(None)
        threads = list(self._threads.values())
        for thread in threads:
            await anyio.to_thread.run_sync(thread.join)

    def _queue(self, key: str) -> queue.SimpleQueue[_Item | None]:
        index = hash(key) % len(self._queues)
        if index not in self._threads:
            thread = threading.Thread(target=self._serve, args=(self._queues[index],),
                                      name=f"hubasync-write-{index}", daemon=True)
            self._threads[index] = thread
            thread.start()
        return self._queues[index]

    def _serve(self, jobs: queue.SimpleQueue[_Item | None]) -> None:
        while (item := jobs.get()) is not None:
            loop, future, call = item
            try:
                outcome: _Outcome = (call(), None)
            except BaseException as exc:
                outcome = (None, exc)
            self._report(loop, future, outcome)

    def _report(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[object],
                outcome: _Outcome) -> None:
        with self._lock:
            batch = self._finished.setdefault(loop, [])
            batch.append((future, outcome))
            first = len(batch) == 1
        if first:  # later ones ride on the wake-up already on its way
            try:
                loop.call_soon_threadsafe(self._settle, loop)
            except RuntimeError:  # the loop is closed: nobody awaits these any more
                with self._lock:
                    self._finished.pop(loop, None)

    def _settle(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            batch = self._finished.pop(loop, [])
        for future, (result, exc) in batch:
            if future.cancelled():
                continue
            if exc is None:
                future.set_result(result)
            else:
                future.set_exception(exc)
