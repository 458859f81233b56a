"""The progress bus: downloads publish events, displays and loggers consume them.

`ProgressBus.publish` is synchronous and never blocks or raises, so a slow or broken consumer can
never stall or fail a download. Two ways to consume:

* ``async with bus.subscribe() as events: async for event in events: ...`` -- for anything that
  does real work (draws, writes a log, awaits). Each subscription buffers on its own and, when
  its consumer falls behind, merges `BytesReceived` events so memory stays bounded.
* ``bus.add_callback(fn)`` -- only for cheap consumers (a counter, a list append): `fn` runs
  inside `publish`, on the download's own time. Slow consumers must use `subscribe()`.

Delivery guarantees of a subscription:

* every other event is delivered, in publication order;
* `BytesReceived` events for one file may be merged (deltas summed, latest ``downloaded`` and
  ``total`` kept): the sum of delivered deltas always equals the sum of published ones, and
  ``Subscription.dropped`` counts the events merged away;
* merging never moves progress across another event of the same file, so no progress for a file
  is delivered after its `FileDone` / `FileFailed`. (The bus also discards, for every consumer,
  progress published after its file's terminal event: see ``BusStatistics.late_dropped``.)

The bus lives on one event loop: call `publish` from that loop's thread (from sync or async
code); from a worker thread, go through ``anyio.from_thread.run_sync(bus.publish, event)``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, TypeAlias

import anyio
import anyio.lowlevel
import msgspec

from hubasync._events import (
    BlobCommitted,
    BytesReceived,
    FileDone,
    FileFailed,
    FileStarted,
    Retrying,
    RunDone,
)
from hubasync._exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Self

    from hubasync._events import Event
    from hubasync._models import RemoteFile

__all__ = ["BusStatistics", "ProgressBus", "Subscription"]

DEFAULT_MAX_PENDING = 1024

_log = logging.getLogger("hubasync")

_FileKey: TypeAlias = tuple[int, str]  # (run_id, path)
_FILE_EVENTS = (FileStarted, Retrying, BlobCommitted, FileDone, FileFailed)


class _Progress:
    """A pending `BytesReceived` for one file, into which later ones can still be merged."""

    __slots__ = ("delta", "event", "merged")

    def __init__(self, event: BytesReceived) -> None:
        self.event = event
        self.delta = event.delta
        self.merged = 0

    def absorb(self, event: BytesReceived) -> None:
        self.event = event
        self.delta += event.delta
        self.merged += 1

    def materialize(self) -> BytesReceived:
        if not self.merged:
            return self.event
        return msgspec.structs.replace(self.event, delta=self.delta)


class Subscription:
    """One consumer's buffered view of a `ProgressBus`: an async iterator of events.

    Get one from `ProgressBus.subscribe` and use it as an async context manager; iteration ends
    once the bus is closed and everything pending has been delivered.
    """

    def __init__(self, bus: ProgressBus, *, run_id: int | None, max_pending: int) -> None:
        self._bus = bus
        self.run_id = run_id
        self.max_pending = max_pending
        self._queue: deque[Event | _Progress] = deque()
        self._mergeable: dict[_FileKey, _Progress] = {}  # the newest pending progress per file
        self._dropped = 0
        self._closed = False
        self._wakeup: anyio.Event | None = None

    @property
    def dropped(self) -> int:
        """How many `BytesReceived` events were merged into others (their bytes are kept)."""
        return self._dropped

    @property
    def pending(self) -> int:
        """Events buffered, not yet delivered."""
        return len(self._queue)

    async def __aenter__(self) -> Self:
        self._bus._attach(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Detach from the bus and discard anything still pending."""
        self._bus._detach(self)
        self._close()
        self._queue.clear()
        self._mergeable.clear()

    def drain(self, limit: int | None = None) -> list[Event]:
        """The events pending right now (at most `limit`), without waiting: for consumers
        that work in batches (one wake-up of the consumer per batch, not per event)."""
        count = len(self._queue) if limit is None else min(limit, len(self._queue))
        return [self._pop() for _ in range(count)]

    def close(self) -> None:
        """Take no more events: iteration ends once what is already pending is delivered.

        This is how a consumer is told "the work is over, finish up" while the bus lives on
        (a display that outlives one download of a long-lived client, for instance).
        """
        self._bus._detach(self)
        self._close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self._queue:
            await anyio.lowlevel.checkpoint()
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            if self._wakeup is None:
                self._wakeup = anyio.Event()
            await self._wakeup.wait()
        return self._pop()

    def _pop(self) -> Event:
        item = self._queue.popleft()
        if not isinstance(item, _Progress):
            return item
        key = (item.event.run_id, item.event.path)
        if self._mergeable.get(key) is item:
            del self._mergeable[key]
        return item.materialize()

    def _push(self, event: Event) -> None:
        if self._closed or (self.run_id is not None and event.run_id not in (self.run_id, 0)):
            return
        if type(event) is BytesReceived:
            self._push_progress(event)
        else:
            self._queue.append(event)
            self._seal(event)
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def _push_progress(self, event: BytesReceived) -> None:
        key = (event.run_id, event.path)
        pending = self._mergeable.get(key)
        if pending is not None and len(self._queue) >= self.max_pending:
            pending.absorb(event)
            self._dropped += 1
            self._bus._merged += 1
        else:
            pending = _Progress(event)
            self._queue.append(pending)
            self._mergeable[key] = pending

    def _seal(self, event: Event) -> None:
        """Pending progress must not be merged across a later event of the same file (or run)."""
        if isinstance(event, _FILE_EVENTS):
            self._mergeable.pop((event.run_id, event.path), None)
        elif isinstance(event, RunDone) and self._mergeable:
            for key in [key for key in self._mergeable if key[0] == event.run_id]:
                del self._mergeable[key]

    def _close(self) -> None:
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def __repr__(self) -> str:
        run = "all runs" if self.run_id is None else f"run {self.run_id}"
        state = "closed, " if self._closed else ""
        return f"<Subscription [{state}{run} | pending: {self.pending}, dropped: {self.dropped}]>"


class _Callback:
    __slots__ = ("errors", "fn")

    def __init__(self, fn: Callable[[Event], object]) -> None:
        self.fn = fn
        self.errors = 0


@dataclasses.dataclass(frozen=True, slots=True)
class BusStatistics:
    """A snapshot of a `ProgressBus`.

    ``pending``: events buffered over all subscriptions. ``merged``: progress events merged away
    over the bus's life. ``late_dropped``: progress published after its file's terminal event,
    discarded. ``callback_errors``: exceptions raised (and swallowed) by callbacks.
    """

    subscribers: int
    callbacks: int
    published: int
    pending: int
    merged: int
    late_dropped: int
    callback_errors: int
    closed: bool


class ProgressBus:
    """Fan-out of progress events from the engine to any number of consumers (see module doc)."""

    def __init__(self) -> None:
        self._subscriptions: tuple[Subscription, ...] = ()  # copy-on-write: publish iterates
        self._callbacks: tuple[_Callback, ...] = ()
        self._finished: dict[int, set[str]] = {}  # run_id -> files whose terminal event passed
        self._published = 0
        self._merged = 0
        self._late_dropped = 0
        self._callback_errors = 0
        self._internal_errors = 0
        self._closed = False

    # -- publishing --------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Hand `event` to every consumer. Synchronous, never blocks, never raises.

        Ignored once the bus is closed.
        """
        if self._closed:
            return
        self._published += 1
        if not self._track(event):
            self._late_dropped += 1
            return
        for subscription in self._subscriptions:
            try:
                subscription._push(event)
            except Exception:  # a bug, or a subscription from a dead loop: never the publisher's
                self._internal_error()
        for callback in self._callbacks:
            try:
                callback.fn(event)
            except Exception:
                self._callback_error(callback)

    def _track(self, event: Event) -> bool:
        """Follow which files are finished; False for progress of a finished file."""
        if type(event) is BytesReceived:
            finished = self._finished.get(event.run_id)
            return finished is None or event.path not in finished
        if isinstance(event, FileDone | FileFailed):
            self._finished.setdefault(event.run_id, set()).add(event.path)
        elif isinstance(event, FileStarted):
            finished = self._finished.get(event.run_id)
            if finished is not None:
                finished.discard(event.path)  # the same file again, in the same run
        elif isinstance(event, RunDone):
            self._finished.pop(event.run_id, None)
        return True

    def _callback_error(self, callback: _Callback) -> None:
        callback.errors += 1
        self._callback_errors += 1
        if callback.errors == 1:
            _log.exception(
                "progress callback %r raised; it stays registered, its further errors are "
                "counted but not logged", callback.fn,
            )

    def _internal_error(self) -> None:
        self._internal_errors += 1
        if self._internal_errors == 1:
            _log.exception("delivering a progress event failed; further failures not logged")

    # -- consuming ---------------------------------------------------------------------------

    def subscribe(
        self, *, run_id: int | None = None, max_pending: int = DEFAULT_MAX_PENDING
    ) -> Subscription:
        """A buffered subscription (an async context manager and async iterator of events).

        Only events of `run_id` when given (plus host-wide events, whose run_id is 0). Beyond
        `max_pending` buffered events, progress for a file is merged into that file's newest
        pending progress event.
        """
        if max_pending < 1:
            raise ConfigError(f"max_pending must be >= 1, got {max_pending!r}")
        return Subscription(self, run_id=run_id, max_pending=max_pending)

    def _attach(self, subscription: Subscription) -> None:
        if self._closed:
            subscription._close()
        elif subscription not in self._subscriptions:
            self._subscriptions = (*self._subscriptions, subscription)

    def _detach(self, subscription: Subscription) -> None:
        self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)

    def add_callback(self, fn: Callable[[Event], object]) -> Callable[[], None]:
        """Call `fn(event)` synchronously from every `publish`; return the unsubscribe function.

        Only for cheap consumers: `fn` runs on the download's time. Its exceptions are
        swallowed (the first one is logged on the ``hubasync`` logger). Anything slow, or
        anything that awaits, must use `subscribe()` instead.
        """
        callback = _Callback(fn)
        self._callbacks = (*self._callbacks, callback)

        def remove() -> None:
            self._callbacks = tuple(c for c in self._callbacks if c is not callback)

        return remove

    @property
    def subscriber_count(self) -> int:
        """Subscriptions currently attached (callbacks not included)."""
        return len(self._subscriptions)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop accepting events; each subscription ends after delivering what it holds."""
        if self._closed:
            return
        self._closed = True
        subscriptions, self._subscriptions = self._subscriptions, ()
        for subscription in subscriptions:
            subscription._close()
        self._finished.clear()

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def statistics(self) -> BusStatistics:
        return BusStatistics(
            subscribers=len(self._subscriptions),
            callbacks=len(self._callbacks),
            published=self._published,
            pending=sum(s.pending for s in self._subscriptions),
            merged=self._merged,
            late_dropped=self._late_dropped,
            callback_errors=self._callback_errors,
            closed=self._closed,
        )

    def __repr__(self) -> str:
        state = "closed | " if self._closed else ""
        return (
            f"<ProgressBus [{state}subscribers: {self.subscriber_count}, "
            f"published: {self._published}]>"
        )


class FileProgress:
    """One file's progress, published once per flush (about one event per MiB)."""

    __slots__ = ("_bus", "downloaded", "path", "run_id", "started", "total")

    def __init__(self, bus: ProgressBus, run_id: int, remote: RemoteFile,
                 downloaded: int = 0) -> None:
        self._bus = bus
        self.run_id = run_id
        self.path = remote.path
        self.total = remote.size or 0
        self.downloaded = downloaded
        self.started = time.monotonic()

    def __repr__(self) -> str:
        return f"<FileProgress {self.path} [{self.downloaded} of {self.total}]>"

    def add(self, n: int) -> None:
        self.downloaded += n
        self._bus.publish(BytesReceived(run_id=self.run_id, path=self.path, delta=n,
                                        downloaded=self.downloaded, total=self.total))
