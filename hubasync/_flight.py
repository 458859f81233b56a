"""Single flight: callers asking for the same download at once share one.

The download runs in a task owned by the client's task group, not by any caller, so a caller
that is cancelled does not cancel it for the others. When the last caller gives up, the download
is cancelled (nobody wants it any more) and forgotten, so a new caller starts afresh.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from hubasync._exceptions import ClientClosedError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable

    from anyio.abc import TaskGroup

T = TypeVar("T")


class _Flight(Generic[T]):
    __slots__ = ("done", "error", "finished", "result", "scope", "waiters")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.finished = False
        self.waiters = 0


class SingleFlight:
    """``await flights.run(tg, key, fn)``: at most one ``fn()`` per key in flight."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight[Any]] = {}

    def __repr__(self) -> str:
        waiting = sum(f.waiters for f in self._flights.values())
        return f"<SingleFlight [in flight: {len(self._flights)}, callers: {waiting}]>"

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, tg: TaskGroup, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        flight: _Flight[T] | None = self._flights.get(key)
        if flight is None:
            flight = _Flight()
            self._flights[key] = flight
            tg.start_soon(self._drive, key, flight, fn)
        flight.waiters += 1
        try:
            await flight.done.wait()
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.done.is_set():
                self._forget(key, flight)
                flight.scope.cancel()
        if flight.error is not None:
            raise flight.error
        return flight.result  # type: ignore[return-value]

    async def _drive(self, key: Hashable, flight: _Flight[T],
                     fn: Callable[[], Awaitable[T]]) -> None:
        with flight.scope:
            try:
                flight.result = await fn()
                flight.finished = True
            except Exception as exc:
                flight.error = exc
        if not flight.finished and flight.error is None:
            flight.error = ClientClosedError("the download was cancelled: the client closed")
        self._forget(key, flight)
        flight.done.set()

    def _forget(self, key: Hashable, flight: _Flight[Any]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def cancel_all(self) -> None:
        for flight in list(self._flights.values()):
            flight.scope.cancel()
