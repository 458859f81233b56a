"""Progress for logs and machines: `LogProgress` (standard `logging`) and `JsonProgress`.

Both fold events into a `ProgressTracker` and add a steady aggregate line while a run is going,
so a container log shows life even when no file starts or ends for minutes::

    INFO plan repo=org/model revision=main files=12 total=2.6 GB cached_files=3 cached=1.4 GB
    INFO progress=45.2% speed=25.3 MB/s downloaded=1.2 GB total=2.6 GB eta=52s files=3/12
    INFO done path=model.safetensors size=1.2 GB duration=48s speed=25.0 MB/s

Every record also carries its values as attributes (``record.progress``, ``record.speed``...,
through ``extra=``) for structured handlers. `JsonProgress` writes each event as one JSON object
per line (`hubasync.Event`'s encoding, with its ``"type"`` tag) plus a periodic
``{"type": "progress", ...}`` aggregate. Both have an injectable clock, and are fed by
`show_progress` from a worker thread, so a blocked stderr never blocks the event loop.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Final, TextIO

import msgspec

from hubasync._events import (
    FileDone,
    FileFailed,
    FileStarted,
    PlanReady,
    RateLimited,
    Retrying,
    RunDone,
    encode_event,
)
from hubasync._tracker import ProgressTracker, format_bytes, format_duration

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from hubasync._events import Event

__all__ = ["JsonProgress", "LogProgress", "ProgressUpdate"]

DEFAULT_LOG_INTERVAL: Final = 5.0
DEFAULT_JSON_INTERVAL: Final = 1.0
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(message)s"


class _Periodic:
    """Shared by both: a tracker plus "is the next aggregate line due?"."""

    interval: float | None

    def __init__(self, interval: float, get_time: Callable[[], float]) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0 seconds")
        self.interval = interval
        self.tracker = ProgressTracker(get_time)
        self._last_line: float | None = None

    def _due(self) -> bool:
        """True at most once per interval, only while a run with bytes to fetch is going."""
        t = self.tracker
        t.sample()
        now = t.get_time()
        if not t.running or t.to_download == 0:
            self._last_line = None
            return False
        if self._last_line is None:
            self._last_line = now  # the plan line just said where we start
            return False
        assert self.interval is not None
        if now - self._last_line < self.interval:
            return False
        self._last_line = now
        return True


class LogProgress(_Periodic):
    """Progress as `logging` records on the ``hubasync`` logger (see the module docstring).

    If nothing anywhere handles log records (no handler on the logger or the root), a handler
    writing to `stream` (default: stderr) is attached for the run and removed by `close`, so
    ``progress="log"`` is never silent in a plain script; configured logging is left alone.
    """

    def __init__(self, *, logger: logging.Logger | None = None,
                 interval: float = DEFAULT_LOG_INTERVAL,
                 get_time: Callable[[], float] = time.monotonic,
                 stream: TextIO | None = None) -> None:
        super().__init__(interval, get_time)
        self.logger = logger if logger is not None else logging.getLogger("hubasync")
        self._stream = stream
        self._handler: logging.Handler | None = None
        self._saved_level = logging.NOTSET
        self._planned: dict[int, int] = {}  # run_id -> files in its plan

    def start(self) -> None:
        if self.logger.hasHandlers():
            return
        self._handler = logging.StreamHandler(self._stream or sys.stderr)
        self._handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self._saved_level = self.logger.level
        self.logger.addHandler(self._handler)
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)

    def close(self) -> None:
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
            self.logger.setLevel(self._saved_level)
            self._handler = None

    def feed(self, events: Sequence[Event]) -> None:
        for event in events:
            self.tracker.handle(event)
            self._log_event(event)
        if self._due():
            self._log_progress()

    def _log(self, level: int, event: str, message: str, **fields: Any) -> None:
        self.logger.log(level, message, extra={"event": event, **fields})

    def _log_event(self, event: Event) -> None:
        match event:
            case PlanReady():
                self._log_plan(event)
            case FileStarted(path=path, size=size, resumed_from=resumed):
                again = f" resumed_from={format_bytes(resumed)}" if resumed else ""
                self._log(logging.INFO, "file_started", f"start path={path} "
                          f"size={format_bytes(size)}{again}", path=path, size=size)
            case FileDone(from_cache=True, path=path, size=size):
                self._log(logging.DEBUG, "file_cached", f"cached path={path} "
                          f"size={format_bytes(size)}", path=path, size=size)
            case FileDone(path=path, size=size, seconds=seconds):
                self._log_done(path, size, seconds)
            case FileFailed(path=path, error_type=kind, message=message):
                self._log(logging.WARNING, "file_failed", f"failed path={path} error={kind} "
                          f"message={message}", path=path, error=kind)
            case RateLimited(host=host, wait=wait, status=status):
                self._log(logging.WARNING, "rate_limited", f"rate_limited host={host} "
                          f"status={status} wait={wait:.1f}s", host=host, wait=wait)
            case Retrying(path=path, attempt=attempt, delay=delay, reason=reason):
                self._log(logging.WARNING, "retrying", f"retry path={path} attempt={attempt} "
                          f"delay={delay:.1f}s reason={reason}", path=path, attempt=attempt,
                          delay=delay)
            case RunDone():
                self._log_finished(event)
            case _:
                pass

    def _log_plan(self, event: PlanReady) -> None:
        self._planned[event.run_id] = event.total_files
        self._log(logging.INFO, "plan", f"plan repo={event.repo_id} revision={event.revision} "
                  f"commit={event.commit[:12]} files={event.total_files} "
                  f"total={format_bytes(event.total_bytes)} cached_files={event.cached_files} "
                  f"cached={format_bytes(event.cached_bytes)}", repo=event.repo_id,
                  revision=event.revision, commit=event.commit, files=event.total_files,
                  total=event.total_bytes)

    def _log_done(self, path: str, size: int, duration: float) -> None:
        speed = size / duration if duration > 0 else None
        speed_text = "-" if speed is None else f"{format_bytes(speed)}/s"
        self._log(logging.INFO, "file_done", f"done path={path} size={format_bytes(size)} "
                  f"duration={format_duration(duration)} speed={speed_text}",
                  path=path, size=size, duration=duration, speed=speed)

    def _log_progress(self) -> None:
        t = self.tracker
        fraction, speed, eta = t.fraction() or 0.0, t.speed(), t.eta()
        self._log(
            logging.INFO, "progress",
            f"progress={fraction * 100:.1f}% "
            f"speed={'-' if speed is None else format_bytes(speed) + '/s'} "
            f"downloaded={format_bytes(t.downloaded)} total={format_bytes(t.to_download)} "
            f"eta={'-' if eta is None else format_duration(eta)} "
            f"files={t.files_finished}/{t.files_total}",
            progress=round(fraction * 100, 1), speed=speed, downloaded=t.downloaded,
            total=t.to_download, eta=eta, files_done=t.files_finished,
            files_total=t.files_total,
        )

    def _log_finished(self, event: RunDone) -> None:
        """The run's own totals (a long-lived client may run many under one reporter)."""
        planned = self._planned.pop(event.run_id, event.files + event.files_failed)
        missing = max(planned - event.files - event.files_failed, 0)
        speed = event.bytes_downloaded / event.seconds if event.seconds > 0 else None
        level = logging.INFO if event.ok and not missing else logging.WARNING
        self._log(
            level, "finished",
            f"finished files={event.files} "
            f"downloaded_files={event.files - event.files_from_cache} "
            f"cached_files={event.files_from_cache} failed={event.files_failed} "
            + (f"not_fetched={missing} " if missing else "")
            + f"downloaded={format_bytes(event.bytes_downloaded)} "
            f"cached={format_bytes(event.bytes_from_cache)} "
            f"time={format_duration(event.seconds)} "
            f"speed={'-' if speed is None else format_bytes(speed) + '/s'}",
            files=event.files, files_failed=event.files_failed, files_missing=missing,
            downloaded=event.bytes_downloaded, cached=event.bytes_from_cache,
            duration=event.seconds, speed=speed, path=event.path,
        )


class ProgressUpdate(msgspec.Struct, frozen=True, kw_only=True, tag_field="type",
                     tag="progress"):
    """The periodic aggregate line of `JsonProgress` (bytes are network bytes)."""

    downloaded: int
    total: int
    fraction: float | None
    speed: float | None
    eta: float | None
    files_done: int
    files_total: int
    files_failed: int
    active: int


class JsonProgress(_Periodic):
    """One JSON object per line and per event on `stream` (default: stderr), plus a
    `ProgressUpdate` line every `interval` seconds while a run is going."""

    def __init__(self, stream: TextIO | None = None, *,
                 interval: float = DEFAULT_JSON_INTERVAL,
                 get_time: Callable[[], float] = time.monotonic) -> None:
        super().__init__(interval, get_time)
        self.stream = stream if stream is not None else sys.stderr
        self._encoder = msgspec.json.Encoder()

    def start(self) -> None:
        pass

    def close(self) -> None:
        self.stream.flush()

    def feed(self, events: Sequence[Event]) -> None:
        lines = []
        for event in events:
            self.tracker.handle(event)
            lines.append(encode_event(event))
        if self._due():
            lines.append(self._encoder.encode(self.update()))
        if lines:
            self.stream.write(b"\n".join(lines).decode() + "\n")
            self.stream.flush()

    def update(self) -> ProgressUpdate:
        t = self.tracker
        return ProgressUpdate(
            downloaded=t.downloaded, total=t.to_download, fraction=t.fraction(),
            speed=t.speed(), eta=t.eta(), files_done=t.files_finished,
            files_total=t.files_total, files_failed=t.files_failed, active=len(t.active),
        )
