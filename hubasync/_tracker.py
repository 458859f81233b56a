"""What every progress consumer needs, folded from the events alone: pure, no I/O, no rich.

`ProgressTracker` turns the event stream into totals (files, bytes, speed, ETA), the files in
flight, short-lived notices (rate limits, retries) and a final `Summary`. The rich display, the
log and the JSON-lines reporters are thin views over it. Its clock is injected, so tests drive
time by hand.

Bytes "to download" exclude what the plan found in the cache; the overall fraction, speed and
ETA are about network bytes only. A file that starts again (a retry from scratch) is counted
from its new `downloaded`, never twice.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import TYPE_CHECKING, Final, Literal

from hubasync._events import (
    BytesReceived,
    FileDone,
    FileFailed,
    FileStarted,
    PlanReady,
    RateLimited,
    Retrying,
    RunDone,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from hubasync._events import Event

__all__ = ["FileState", "Notice", "ProgressTracker", "Summary", "format_bytes",
           "format_duration"]

SPEED_WINDOW: Final = 10.0  # seconds of samples behind the speed estimate
RETRY_NOTICE_SECONDS: Final = 5.0  # a retry notice stays at least this long
_MAX_NOTICES: Final = 16
_MAX_FAILURES: Final = 100

_FileKey = tuple[int, str]


def format_bytes(n: float) -> str:
    """Decimal units, like download tools and rich: ``"512 B"``, ``"25.3 MB"``, ``"2.6 GB"``."""
    if n < 1000:
        return f"{int(n)} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            break
    return f"{n:.1f} {unit}"


def format_duration(seconds: float) -> str:
    """``"0.4s"``, ``"52s"``, ``"3m05s"``, ``"2h01m"``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@dataclasses.dataclass(slots=True)
class FileState:
    """A file in flight: `downloaded` of `size` bytes since tracker time `started`."""

    run_id: int
    path: str
    size: int
    downloaded: int
    started: float


@dataclasses.dataclass(frozen=True, slots=True)
class Notice:
    """Something worth telling the user for a while (until tracker time `until`)."""

    kind: Literal["rate_limited", "retrying"]
    text: str
    at: float
    until: float


@dataclasses.dataclass(frozen=True, slots=True)
class Summary:
    """The end of it all. `files` counts the files available (downloaded or from the cache)."""

    label: str | None
    files_planned: int
    files: int
    files_downloaded: int
    files_from_cache: int
    files_failed: int
    bytes_downloaded: int
    bytes_from_cache: int
    seconds: float
    retries: int
    rate_limits: int
    failures: tuple[tuple[str, str], ...]
    path: str | None

    @property
    def files_missing(self) -> int:
        """Planned files that neither arrived nor failed (the run was stopped early)."""
        return max(self.files_planned - self.files - self.files_failed, 0)

    @property
    def ok(self) -> bool:
        return self.files_failed == 0 and self.files_missing == 0

    @property
    def bytes_total(self) -> int:
        return self.bytes_downloaded + self.bytes_from_cache

    @property
    def average_speed(self) -> float | None:
        """Network bytes per second over the whole run (None when nothing was downloaded)."""
        if self.bytes_downloaded == 0 or self.seconds <= 0:
            return None
        return self.bytes_downloaded / self.seconds


class ProgressTracker:
    """Folds events into progress state; see the module docstring."""

    def __init__(self, get_time: Callable[[], float]) -> None:
        self.get_time = get_time
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.label: str | None = None
        self.path: str | None = None
        self.files_total = self.bytes_total = 0
        self.files_planned_cached = self.bytes_planned_cached = 0
        self.files_downloaded = self.bytes_downloaded = 0
        self.files_from_cache = self.bytes_from_cache = 0
        self.files_failed = self.retries = self.rate_limits = 0
        self.failures: list[tuple[str, str]] = []
        self.active: dict[_FileKey, FileState] = {}
        self.notices: deque[Notice] = deque(maxlen=_MAX_NOTICES)
        self._open_runs: set[int] = set()
        self._run_seconds: list[float] = []
        self._samples: deque[tuple[float, int]] = deque()

    # -- folding events ----------------------------------------------------------------------

    def handle(self, event: Event) -> FileState | None:
        """Fold one event in; return the file it concerns when one is known (for a terminal
        event, the state it had, with its start time)."""
        now = self.get_time()
        if self.started_at is None:
            self.started_at = now
        match event:
            case PlanReady():
                self._plan(event)
            case FileStarted():
                return self._started(event, now)
            case BytesReceived():
                return self._received(event, now)
            case FileDone() | FileFailed():
                return self._finished(event, now)
            case RateLimited(host=host, wait=wait, status=status):
                self.rate_limits += 1
                text = f"rate limited by {host} ({status}): every request to it waits {wait:.1f}s"
                self.notices.append(Notice("rate_limited", text, now, now + wait))
            case Retrying(path=path, attempt=attempt, delay=delay, reason=reason):
                self.retries += 1
                text = f"retry {attempt} of {path} in {delay:.1f}s: {reason}"
                self.notices.append(Notice("retrying", text, now,
                                           now + max(delay, RETRY_NOTICE_SECONDS)))
            case RunDone():
                self._run_done(event, now)
        return None

    def _plan(self, event: PlanReady) -> None:
        self._open_runs.add(event.run_id)
        self.ended_at = None
        revision = event.revision if event.revision == event.commit else (
            f"{event.revision} ({event.commit[:7]})")
        self.label = f"{event.repo_id}@{revision}"
        self.files_total += event.total_files
        self.bytes_total += event.total_bytes
        self.files_planned_cached += event.cached_files
        self.bytes_planned_cached += event.cached_bytes

    def _started(self, event: FileStarted, now: float) -> FileState:
        key = (event.run_id, event.path)
        state = self.active.get(key)
        if state is None:
            state = self.active[key] = FileState(event.run_id, event.path, event.size,
                                                 event.resumed_from, now)
        else:  # started again: count from what is local now, not twice
            state.downloaded, state.size = event.resumed_from, event.size
        self._sample(now)
        return state

    def _received(self, event: BytesReceived, now: float) -> FileState:
        key = (event.run_id, event.path)
        state = self.active.get(key)
        if state is None:  # joined mid-file
            state = self.active[key] = FileState(event.run_id, event.path, event.total, 0, now)
        state.downloaded = event.downloaded
        state.size = event.total or state.size
        self._sample(now)
        return state

    def _finished(self, event: FileDone | FileFailed, now: float) -> FileState:
        state = self.active.pop((event.run_id, event.path), None)
        if isinstance(event, FileFailed):
            self.files_failed += 1
            if len(self.failures) < _MAX_FAILURES:
                self.failures.append((event.path, f"{event.error_type}: {event.message}"))
        elif event.from_cache:
            self.files_from_cache += 1
            self.bytes_from_cache += event.size
        else:
            self.files_downloaded += 1
            self.bytes_downloaded += event.size
        self._sample(now)
        if state is None:
            size = event.size if isinstance(event, FileDone) else 0
            start = now - event.seconds if isinstance(event, FileDone) else now
            state = FileState(event.run_id, event.path, size, 0, start)
        return state

    def _run_done(self, event: RunDone, now: float) -> None:
        self._open_runs.discard(event.run_id)
        self._run_seconds.append(event.seconds)
        for key in [k for k in self.active if k[0] == event.run_id]:
            del self.active[key]  # nothing more will come for them
        if event.path is not None:
            self.path = event.path
        if not self._open_runs:
            self.ended_at = now

    # -- reading -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """A run is planned and not done."""
        return bool(self._open_runs)

    @property
    def files_finished(self) -> int:
        return self.files_downloaded + self.files_from_cache + self.files_failed

    @property
    def to_download(self) -> int:
        """Network bytes the plans call for (cached files excluded)."""
        return max(self.bytes_total - self.bytes_planned_cached, 0)

    @property
    def downloaded(self) -> int:
        """Network bytes so far: finished files plus the files in flight."""
        return self.bytes_downloaded + sum(f.downloaded for f in self.active.values())

    def fraction(self) -> float | None:
        total = self.to_download
        return None if total == 0 else min(self.downloaded / total, 1.0)

    def elapsed(self) -> float:
        """Seconds the work took: the engine's own measure for a single run, else the time
        from the first event to the last `RunDone` (or now) on this tracker's clock."""
        if len(self._run_seconds) == 1 and not self._open_runs:
            return self._run_seconds[0]
        if self.started_at is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else self.get_time()
        return max(end - self.started_at, 0.0)

    def sample(self) -> None:
        """Record the current total now (call it on a steady tick, so a stall decays speed)."""
        self._sample(self.get_time())

    def _sample(self, now: float) -> None:
        samples = self._samples
        samples.append((now, self.downloaded))
        while len(samples) > 2 and samples[1][0] <= now - SPEED_WINDOW:
            samples.popleft()

    def speed(self) -> float | None:
        """Bytes per second over the last `SPEED_WINDOW` seconds (None until measurable)."""
        if len(self._samples) < 2:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else None

    def eta(self) -> float | None:
        speed = self.speed()
        if not speed or speed <= 0:
            return None
        return max(self.to_download - self.downloaded, 0) / speed

    def current_notices(self, limit: int = 3) -> list[Notice]:
        """The newest notices still worth showing, oldest first."""
        now = self.get_time()
        alive = [n for n in self.notices if n.until > now]
        return alive[-limit:]

    def summary(self) -> Summary:
        return Summary(
            label=self.label, files_planned=self.files_total,
            files=self.files_downloaded + self.files_from_cache,
            files_downloaded=self.files_downloaded, files_from_cache=self.files_from_cache,
            files_failed=self.files_failed, bytes_downloaded=self.bytes_downloaded,
            bytes_from_cache=self.bytes_from_cache, seconds=self.elapsed(),
            retries=self.retries, rate_limits=self.rate_limits,
            failures=tuple(self.failures), path=self.path,
        )
