"""Choosing how progress is shown, and running it beside a download.

`select_reporter` is the one place where a ``progress=`` value becomes a consumer:

=========  ====================================================================================
"auto"     bars when stderr is a terminal (or in a notebook), log records otherwise
"bars"     `RichDisplay` on stderr
"log"      `LogProgress` on the ``hubasync`` logger
"json"     `JsonProgress`: JSON lines on stderr
"none"     nothing
callable   called with every event (sync or async; see `show_progress`)
Reporter   any object with ``start()``, ``feed(events)``, ``close()`` (e.g. a configured
           ``RichDisplay(console=...)``)
None       the config's mode: HF_PROGRESS_MODE (default "auto")
=========  ====================================================================================

``HF_HUB_DISABLE_PROGRESS_BARS`` keeps the official meaning, "true/false forces off/on":
when true, "auto" and "bars" show nothing at all (as the official client then prints no progress),
while an explicit "log" or "json" still reports (they are not bars); when false, "auto" means
bars even if stderr is not a terminal.

`show_progress` runs the consumer in a task of its own task group, subscribed to the bus, so a
slow consumer only makes the bus merge its progress events: downloads never wait for it. Our
reporters are fed from a worker thread (a blocked terminal or log handler never blocks the event
loop); callables run on the loop, and async ones are awaited. A failing consumer is logged once
and dropped; it never raises into the download.
"""

from __future__ import annotations

import inspect
import logging
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

import anyio
import anyio.to_thread
from rich.console import Console

from hubasync._display import RichDisplay
from hubasync._exceptions import ConfigError
from hubasync._progress import JsonProgress, LogProgress
from hubasync._types import PROGRESS_MODES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from typing import TextIO

    from anyio.abc import TaskStatus

    from hubasync._bus import ProgressBus, Subscription
    from hubasync._config import HubConfig
    from hubasync._events import Event

__all__ = ["ProgressArg", "Reporter", "resolve_mode", "select_reporter", "show_progress"]

_log = logging.getLogger("hubasync")
_MAX_BATCH = 512


@runtime_checkable
class Reporter(Protocol):
    """A synchronous progress consumer, fed batches of events from one thread at a time.

    ``interval``: feed me (possibly an empty batch) at least this often, or None.
    """

    interval: float | None

    def start(self) -> None: ...

    def feed(self, events: Sequence[Event]) -> None: ...

    def close(self) -> None: ...


ProgressArg: TypeAlias = "str | Reporter | Callable[[Event], object] | None"


def resolve_mode(progress: str | None, config: HubConfig | None = None, *,
                 stream: TextIO | None = None, console: Console | None = None) -> str:
    """The concrete mode ("bars", "log", "json" or "none") for a `progress` string."""
    mode = progress if progress is not None else (config.progress if config else "auto")
    if mode not in PROGRESS_MODES:
        raise ConfigError(f"progress must be one of {PROGRESS_MODES} or a callable, "
                          f"got {mode!r}")
    bars_switch = config.disable_progress_bars if config is not None else None
    if bars_switch is True and mode in ("auto", "bars"):
        return "none"
    if mode == "auto":
        if bars_switch is False or _interactive(stream or sys.stderr, console):
            return "bars"
        return "log"
    return mode


def _interactive(stream: TextIO, console: Console | None) -> bool:
    """A terminal, or a notebook (where rich draws widgets instead)."""
    if (console or Console(file=stream)).is_jupyter:
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def select_reporter(
    progress: ProgressArg, config: HubConfig | None = None, *, stream: TextIO | None = None,
) -> Reporter | Callable[[Event], object] | None:
    """What `show_progress` will run for `progress` (see the module docstring)."""
    if isinstance(progress, Reporter):
        return progress
    if callable(progress):
        return progress
    if progress is not None and not isinstance(progress, str):
        raise ConfigError(f"progress must be a mode string, a callable or a reporter, "
                          f"got {type(progress).__name__}")
    mode = resolve_mode(progress, config, stream=stream)
    if mode == "bars":
        return RichDisplay(console=Console(file=stream) if stream else None)
    if mode == "log":
        return LogProgress(stream=stream)
    if mode == "json":
        return JsonProgress(stream)
    return None


@asynccontextmanager
async def show_progress(bus: ProgressBus, progress: ProgressArg = "auto", *,
                        config: HubConfig | None = None,
                        stream: TextIO | None = None) -> AsyncIterator[None]:
    """Show the bus's events while the block runs; when it ends, the consumer gets every
    event published so far, then stops (a display prints its summary). Cancellation stops it
    at once, leaving the terminal clean::

        async with HubClient(config) as hub, show_progress(hub.bus, "bars"):
            await hub.snapshot_download("org/name")
    """
    consumer = select_reporter(progress, config, stream=stream)
    if consumer is None:
        yield
        return
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        subscription: Subscription = await tg.start(_serve, bus, consumer)
        try:
            yield
        except Exception as exc:  # keep it out of the task group: re-raised as itself below
            failure = exc
        finally:
            subscription.close()  # the consumer drains what is pending, then ends
    if failure is not None:
        raise failure


async def _serve(bus: ProgressBus, consumer: Reporter | Callable[[Event], object], *,
                 task_status: TaskStatus[Subscription]) -> None:
    sink = _ThreadSink(consumer) if isinstance(consumer, Reporter) else _CallbackSink(consumer)
    async with bus.subscribe() as subscription:
        task_status.started(subscription)  # subscribed: nothing published from now is missed
        try:
            await sink.start()
            while (batch := await _next_batch(subscription, sink.interval)) is not None:
                await sink.feed(batch)
        except Exception:
            _log.warning("progress display failed; the download goes on without it",
                         exc_info=True)
        finally:
            with anyio.CancelScope(shield=True):
                await _close_quietly(sink)


async def _close_quietly(sink: _ThreadSink | _CallbackSink) -> None:
    try:
        await sink.close()
    except Exception:
        _log.warning("closing the progress display failed", exc_info=True)


async def _next_batch(subscription: Subscription, idle: float | None) -> list[Event] | None:
    """Everything pending (at least one event), [] after `idle` seconds without any, None at
    the end. Cancellation can only strike before an event is taken, so none is lost."""
    first: Event | None = None
    with anyio.move_on_after(idle):
        try:
            first = await subscription.__anext__()
        except StopAsyncIteration:
            return None
    if first is None:
        return []
    return [first, *subscription.drain(_MAX_BATCH)]


class _ThreadSink:
    """Runs a synchronous `Reporter` in a worker thread, one call at a time."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.interval = reporter.interval
        self._limiter = anyio.CapacityLimiter(1)

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self.reporter.start, limiter=self._limiter)

    async def feed(self, batch: list[Event]) -> None:
        await anyio.to_thread.run_sync(self.reporter.feed, batch, limiter=self._limiter)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.reporter.close, limiter=self._limiter)


class _CallbackSink:
    """Calls a user callable on the loop for every event (awaiting it if it is async). Its
    errors are logged once and swallowed."""

    interval: float | None = None

    def __init__(self, fn: Callable[[Event], object]) -> None:
        self.fn = fn
        self.errors = 0

    async def start(self) -> None:
        pass

    async def feed(self, batch: list[Event]) -> None:
        for event in batch:
            try:
                result = self.fn(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.errors += 1
                if self.errors == 1:
                    _log.exception("progress callback %r raised; its further errors are "
                                   "not logged", self.fn)

    async def close(self) -> None:
        pass
