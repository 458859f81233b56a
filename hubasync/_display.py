"""`RichDisplay`: the live terminal (and notebook) view of a download, as a bus subscriber.

It knows nothing of the scheduler: it folds events into a `ProgressTracker` and draws it as
one overall bar (bytes, speed, ETA, files), the first few files in flight with their own bars
(the rest counted as "+N more"), recent rate-limit and retry notices, and at the end a short
summary. Drawing happens in rich's own refresh thread at a few frames per second; the consumer
of the events (see `show_progress`) feeds it from a worker thread, so neither a slow terminal
nor a slow render ever holds up a download::

    display = RichDisplay(console=Console(file=buffer, width=80, force_terminal=True),
                          get_time=fake_clock)
    display.start(); display.feed(events); display.close()   # what show_progress does
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Final

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Column, Table
from rich.text import Text

from hubasync._tracker import ProgressTracker, Summary, format_bytes, format_duration

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from rich.console import RenderableType

    from hubasync._events import Event
    from hubasync._tracker import FileState, Notice

__all__ = ["RichDisplay"]

DEFAULT_MAX_FILES: Final = 8
DEFAULT_REFRESH_PER_SECOND: Final = 5.0
_MAX_LISTED_FAILURES: Final = 5


class RichDisplay:
    """A rich `Live` view of progress events (see the module docstring).

    ``console``: where to draw (default: a console on stderr; rich detects terminals and
    Jupyter). ``get_time``: the clock behind speeds, ETAs and notices. ``max_files``: file bars
    shown at once. ``refresh_per_second``: redraw rate (at most 10). ``transient``: erase the
    bars at the end, leaving only the summary.
    """

    interval: float | None = 0.5  # how often to be fed when idle (speed decays in a stall)

    def __init__(
        self, *, console: Console | None = None, get_time: Callable[[], float] = time.monotonic,
        max_files: int = DEFAULT_MAX_FILES,
        refresh_per_second: float = DEFAULT_REFRESH_PER_SECOND, transient: bool = True,
        summary: bool = True,
    ) -> None:
        if not 0 < refresh_per_second <= 10:
            raise ValueError("refresh_per_second must be in (0, 10]")
        if max_files < 0:
            raise ValueError("max_files must be >= 0")
        self.console = console if console is not None else Console(stderr=True)
        self.tracker = ProgressTracker(get_time)
        self.max_files = max_files
        self.show_summary = summary
        self._lock = threading.RLock()  # the feeding thread vs rich's refresh thread
        self._live = Live(console=self.console, get_renderable=self.__rich__,
                          refresh_per_second=refresh_per_second, transient=transient,
                          redirect_stdout=False, redirect_stderr=True)

    def __repr__(self) -> str:
        t = self.tracker
        return (f"<RichDisplay [files: {t.files_finished}/{t.files_total}, "
                f"active: {len(t.active)} | bytes: {t.downloaded}/{t.to_download}]>")

    # -- the reporter protocol (called from one thread at a time) ------------------------------

    def start(self) -> None:
        self._live.start()

    def feed(self, events: Sequence[Event]) -> None:
        with self._lock:
            for event in events:
                self.tracker.handle(event)
            self.tracker.sample()

    def close(self) -> None:
        """Stop drawing (the terminal is left clean), then print the summary if anything ran."""
        try:
            self._live.stop()
        finally:
            if self.show_summary and self.tracker.started_at is not None:
                self.console.print(self.render_summary())

    # -- rendering ---------------------------------------------------------------------------

    def __rich__(self) -> RenderableType:
        with self._lock:
            parts: list[RenderableType] = [self._overall()]
            files = self._files()
            if files is not None:
                parts.append(files)
            parts.extend(_notice_line(n) for n in self.tracker.current_notices())
            if self.console.is_terminal:  # the cursor rests on an empty line: a ^C echoed
                parts.append(Text(""))    # there cannot wrap and defeat the final erase
            return Group(*parts)

    def _overall(self) -> Table:
        t = self.tracker
        header = Table.grid(Column(ratio=1, no_wrap=True, overflow="ellipsis"),
                            Column(justify="right", no_wrap=True), expand=True)
        files = f"{t.files_finished}/{t.files_total} files"
        if t.files_from_cache:
            files += f", {t.files_from_cache} cached"
        if t.files_failed:
            files += f", [red]{t.files_failed} failed[/]"
        header.add_row(Text(t.label or "resolving...", style="bold"), files)
        bar = Table.grid(Column(ratio=1), *_number_columns(), padding=(0, 1), expand=True)
        speed, eta = t.speed(), t.eta()
        planned_and_cached = t.files_total > 0 and t.to_download == 0
        bar.add_row(
            ProgressBar(total=1, completed=1) if planned_and_cached
            else _bar(t.to_download, t.downloaded, None, t.get_time()),
            _percent(1.0 if planned_and_cached else t.fraction()),
            _amount(t.downloaded, t.to_download),
            "" if speed is None else f"{format_bytes(speed)}/s",
            "" if eta is None or not t.running else f"eta {format_duration(eta)}",
        )
        return _grid(header, bar)

    def _files(self) -> Table | None:
        active = list(self.tracker.active.values())
        if not active or self.max_files == 0:
            return None
        table = Table.grid(Column(ratio=1, no_wrap=True, overflow="ellipsis"),
                           Column(width=16), *_number_columns()[:3], padding=(0, 1),
                           expand=True)
        now = self.tracker.get_time()
        for state in active[: self.max_files]:
            table.add_row(*self._file_row(state, now))
        hidden = len(active) - self.max_files
        if hidden > 0:
            table.add_row(Text(f"  +{hidden} more file{'s' if hidden > 1 else ''}",
                               style="dim"), "", "", "", "")
        return table

    @staticmethod
    def _file_row(state: FileState, now: float) -> tuple[RenderableType, ...]:
        elapsed = now - state.started
        speed = state.downloaded / elapsed if elapsed > 0 and state.downloaded else None
        fraction = state.downloaded / state.size if state.size else None
        if state.size and state.downloaded >= state.size:
            rate = Text("verifying", style="dim")  # hashing, then the commit into the cache
        else:
            rate = Text("" if speed is None else f"{format_bytes(speed)}/s")
        return (
            Text(f"  {state.path}"),
            _bar(state.size, state.downloaded, 16, now),
            _percent(fraction),
            _amount(state.downloaded, state.size),
            rate,
        )

    def render_summary(self) -> RenderableType:
        """The end-of-run summary (also what `close` prints)."""
        with self._lock:
            return render_summary(self.tracker.summary())


def _grid(*rows: RenderableType) -> Table:
    table = Table.grid(expand=True)
    for row in rows:
        table.add_row(row)
    return table


def _number_columns() -> tuple[Column, ...]:
    return (Column(justify="right", width=4, no_wrap=True),
            Column(justify="right", min_width=9, no_wrap=True),
            Column(justify="right", min_width=9, no_wrap=True),
            Column(justify="right", min_width=7, no_wrap=True))


def _bar(total: int, completed: int, width: int | None, now: float) -> ProgressBar:
    if total <= 0:
        return ProgressBar(total=None, width=width, pulse=True, animation_time=now)
    return ProgressBar(total=total, completed=min(completed, total), width=width)


def _percent(fraction: float | None) -> str:
    return "" if fraction is None else f"{fraction * 100:.0f}%"


def _amount(done: int, total: int) -> str:
    if total <= 0:
        return format_bytes(done)
    return f"{format_bytes(done)}/{format_bytes(total)}"


def _notice_line(notice: Notice) -> Text:
    style = "yellow" if notice.kind == "rate_limited" else "magenta"
    mark = "⏸" if notice.kind == "rate_limited" else "↻"
    return Text(f"{mark} {notice.text}", style=style, no_wrap=True, overflow="ellipsis")


def render_summary(summary: Summary) -> RenderableType:
    """A few lines: what was fetched, from where, how fast, and what failed."""
    ok = summary.ok
    mark = Text("✔ " if ok else "✘ ", style="bold green" if ok else "bold red")
    title = Text.assemble(mark, (summary.label or "download", "bold"),
                          f": {summary.files} file{_s(summary.files)}, "
                          f"{format_bytes(summary.bytes_total)} in "
                          f"{format_duration(summary.seconds)}")
    table = Table.grid(Column(style="dim", no_wrap=True), Column(), padding=(0, 2))
    speed = summary.average_speed
    table.add_row("  downloaded", f"{summary.files_downloaded} file{_s(summary.files_downloaded)}"
                  f", {format_bytes(summary.bytes_downloaded)}"
                  + (f" at {format_bytes(speed)}/s average" if speed else ""))
    table.add_row("  from cache", f"{summary.files_from_cache} file"
                  f"{_s(summary.files_from_cache)}, {format_bytes(summary.bytes_from_cache)}")
    if summary.retries or summary.rate_limits:
        table.add_row("  retries", f"{summary.retries} ({summary.rate_limits} rate limit"
                      f"{_s(summary.rate_limits)})")
    if summary.files_missing:
        table.add_row(Text("  stopped", style="red"), f"{summary.files_missing} file"
                      f"{_s(summary.files_missing)} not fetched (the run stopped early)")
    if summary.files_failed:
        table.add_row(Text("  failed", style="red"),
                      f"{summary.files_failed} file{_s(summary.files_failed)}")
        for path, reason in summary.failures[:_MAX_LISTED_FAILURES]:
            table.add_row("", Text(f"{path}: {reason}", no_wrap=True, overflow="ellipsis"))
    return Group(title, table)


def _s(n: int) -> str:
    return "" if n == 1 else "s"
