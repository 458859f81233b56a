"""The rich live display: rendered into a StringIO console with a hand-driven clock."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from io import StringIO
from pathlib import Path

import anyio
import pytest
from rich.console import Console

import hubasync
from hubasync import (
    BytesReceived,
    Event,
    FileDone,
    FileFailed,
    FileStarted,
    PlanReady,
    ProgressBus,
    RateLimited,
    Retrying,
    RichDisplay,
    RunDone,
    show_progress,
)
from hubasync._tracker import ProgressTracker, format_bytes, format_duration
from hubasync.testing import FakeFile, FakeHub, FakeRepo

MB = 1_000_000
COMMIT = "c0ffee" + "0" * 34


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_console() -> Console:
    return Console(file=StringIO(), width=80, force_terminal=True, record=True)


def text_of(console: Console, renderable: object) -> str:
    console.print(renderable)
    return console.export_text(clear=True)


def plan(files: int, total: int, cached_files: int = 0, cached: int = 0,
         run_id: int = 1) -> PlanReady:
    return PlanReady(run_id=run_id, repo_id="org/model", repo_type="model", revision="main",
                     commit=COMMIT, total_files=files, total_bytes=total,
                     cached_files=cached_files, cached_bytes=cached)


def started(path: str, size: int, run_id: int = 1) -> FileStarted:
    return FileStarted(run_id=run_id, path=path, size=size)


def received(path: str, done: int, total: int, delta: int | None = None) -> BytesReceived:
    return BytesReceived(run_id=1, path=path, delta=done if delta is None else delta,
                         downloaded=done, total=total)


def done(path: str, size: int, from_cache: bool = False) -> FileDone:
    return FileDone(run_id=1, path=path, size=size, from_cache=from_cache,
                    local_path=f"/cache/{path}", seconds=1.0)


def run_done(files: int, downloaded: int, cached: int = 0, seconds: float = 20.0,
             failed: int = 0) -> RunDone:
    return RunDone(run_id=1, ok=not failed, files=files, files_from_cache=0,
                   files_failed=failed, bytes_downloaded=downloaded, bytes_from_cache=cached,
                   seconds=seconds, path="/cache/snapshot")


# -- formatting --------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"),
                                         (25_300_000, "25.3 MB"), (2.6e9, "2.6 GB"),
                                         (3e15, "3000.0 TB")])
def test_format_bytes(n: float, text: str) -> None:
    assert format_bytes(n) == text


@pytest.mark.parametrize(("seconds", "text"), [(0.42, "0.4s"), (52, "52s"), (185, "3m05s"),
                                               (7260, "2h01m")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# -- the tracker -------------------------------------------------------------------------------


def test_tracker_counts_a_restarted_file_once(clock: Clock) -> None:
    tracker = ProgressTracker(clock)
    for event in (plan(1, 10 * MB), started("a.bin", 10 * MB), received("a.bin", 6 * MB, 10 * MB),
                  started("a.bin", 10 * MB), received("a.bin", 2 * MB, 10 * MB)):
        tracker.handle(event)
    assert tracker.downloaded == 2 * MB
    tracker.handle(done("a.bin", 10 * MB))
    assert (tracker.downloaded, tracker.files_downloaded, tracker.active) == (10 * MB, 1, {})


def test_tracker_speed_uses_a_window_and_decays_in_a_stall(clock: Clock) -> None:
    tracker = ProgressTracker(clock)
    tracker.handle(plan(1, 100 * MB))
    tracker.handle(started("a.bin", 100 * MB))
    clock.advance(10)
    tracker.handle(received("a.bin", 50 * MB, 100 * MB))
    assert tracker.speed() == pytest.approx(5 * MB)
    assert tracker.eta() == pytest.approx(10)
    clock.advance(5)  # nothing arrives: the ticks alone bring the speed down
    tracker.sample()
    assert tracker.speed() == pytest.approx(50 * MB / 15)
    clock.advance(10)  # the window has moved past the last bytes
    tracker.sample()
    assert tracker.speed() == 0
    assert tracker.eta() is None


# -- rendering ---------------------------------------------------------------------------------


def test_overall_bar_shows_bytes_speed_eta_and_files(clock: Clock) -> None:
    console = make_console()
    display = RichDisplay(console=console, get_time=clock)
    display.feed([plan(3, 100 * MB + 500, cached_files=1, cached=500),
                  started("a.bin", 60 * MB), started("b.bin", 40 * MB),
                  done("c.json", 500, from_cache=True)])
    clock.advance(10)
    display.feed([received("a.bin", 30 * MB, 60 * MB), received("b.bin", 10 * MB, 40 * MB)])
    text = text_of(console, display)
    lines = text.splitlines()
    assert "org/model@main (c0ffee0)" in lines[0]
    assert "1/3 files, 1 cached" in lines[0]
    assert re.search(r"40% +40\.0 MB/100\.0 MB +4\.0 MB/s +eta 15s", lines[1]), lines[1]
    assert re.search(r"a\.bin .* 50% +30\.0 MB/60\.0 MB +3\.0 MB/s", text)
    assert re.search(r"b\.bin .* 25% +10\.0 MB/40\.0 MB +1\.0 MB/s", text)
    assert "c.json" not in text  # only files in flight get a bar
    assert all(len(line) <= 80 for line in lines)


def test_active_file_bars_are_bounded(clock: Clock) -> None:
    console = make_console()
    display = RichDisplay(console=console, get_time=clock, max_files=8)
    display.feed([plan(12, 12 * MB), *(started(f"shard-{i:02d}.bin", MB) for i in range(12))])
    text = text_of(console, display)
    assert [n for n in range(12) if f"shard-{n:02d}.bin" in text] == list(range(8))
    assert "+4 more files" in text
    display.feed([done("shard-00.bin", MB), done("shard-01.bin", MB)])
    text = text_of(console, display)
    assert "shard-08.bin" in text and "shard-09.bin" in text  # promoted as others finish
    assert "+2 more files" in text


def test_long_names_are_cut_not_wrapped(clock: Clock) -> None:
    console = make_console()
    display = RichDisplay(console=console, get_time=clock)
    name = "deeply/nested/folder/" * 5 + "model.safetensors"
    display.feed([plan(1, 10 * MB), started(name, 10 * MB)])
    lines = text_of(console, display).splitlines()
    assert len(lines) == 4  # header, overall bar, one file, the empty resting line
    assert "…" in lines[2]


def test_rate_limit_and_retry_notices_come_and_go(clock: Clock) -> None:
    console = make_console()
    display = RichDisplay(console=console, get_time=clock)
    display.feed([plan(1, 10 * MB), started("a.bin", 10 * MB),
                  RateLimited(run_id=0, host="cdn.example:443", wait=3.0),
                  Retrying(run_id=1, path="a.bin", attempt=2, delay=1.5,
                           reason="ReadError: connection dropped")])
    text = text_of(console, display)
    assert "rate limited by cdn.example:443 (429): every request to it waits 3.0s" in text
    assert "retry 2 of a.bin in 1.5s: ReadError: connection dropped" in text
    clock.advance(4)
    text = text_of(console, display)
    assert "rate limited" not in text
    assert "retry 2 of a.bin" in text  # a retry notice stays a few seconds
    clock.advance(2)
    assert "retry" not in text_of(console, display)


def test_a_file_at_full_size_is_shown_verifying(clock: Clock) -> None:
    console = make_console()
    display = RichDisplay(console=console, get_time=clock)
    display.feed([plan(1, 10 * MB), started("a.bin", 10 * MB)])
    clock.advance(1)
    display.feed([received("a.bin", 10 * MB, 10 * MB)])
    assert re.search(r"a\.bin .*100% +10\.0 MB/10\.0 MB +verifying", text_of(console, display))


def test_everything_cached_shows_a_full_bar(clock: Clock) -> None:
    console = make_console()
    display = RichDisplay(console=console, get_time=clock)
    display.feed([plan(2, 700, cached_files=2, cached=700), done("a.json", 500, from_cache=True),
                  done("b.json", 200, from_cache=True)])
    lines = text_of(console, display).splitlines()
    assert "2/2 files, 2 cached" in lines[0]
    assert "100%" in lines[1] and "━" in lines[1]


def test_unknown_sizes_pulse_instead_of_dividing_by_zero(clock: Clock) -> None:
    console = make_console()
    display = RichDisplay(console=console, get_time=clock)
    display.feed([started("stream.bin", 0), received("stream.bin", 3 * MB, 0)])
    text = text_of(console, display)
    assert "resolving..." in text  # no plan seen (subscribed late)
    assert "3.0 MB" in text


def test_summary_reports_files_bytes_time_speed_and_failures(clock: Clock) -> None:
    console = make_console()
    display = RichDisplay(console=console, get_time=clock)
    display.feed([plan(4, 30 * MB + 700, cached_files=1, cached=700),
                  done("config.json", 700, from_cache=True),
                  started("a.bin", 20 * MB), started("b.bin", 10 * MB),
                  started("c.bin", 10)])
    clock.advance(20)
    display.feed([done("a.bin", 20 * MB), done("b.bin", 10 * MB),
                  Retrying(run_id=1, path="c.bin", attempt=1, delay=0.5, reason="ReadError"),
                  FileFailed(run_id=1, path="c.bin", error_type="IntegrityError",
                             message="hash mismatch"),
                  run_done(3, 30 * MB, cached=700, seconds=20.0, failed=1)])
    text = text_of(console, display.render_summary())
    assert text.splitlines()[0] == "✘ org/model@main (c0ffee0): 3 files, 30.0 MB in 20s"
    assert "downloaded  2 files, 30.0 MB at 1.5 MB/s average" in text
    assert "from cache  1 file, 700 B" in text
    assert "retries     1 (0 rate limits)" in text
    assert "failed      1 file" in text
    assert "c.bin: IntegrityError: hash mismatch" in text
    assert len(text.splitlines()) <= 12


def test_summary_of_an_interrupted_run_says_so(clock: Clock) -> None:
    console = make_console()
    display = RichDisplay(console=console, get_time=clock)
    display.feed([plan(5, 5 * MB), started("a.bin", MB), done("a.bin", MB),
                  run_done(1, MB)])
    text = text_of(console, display.render_summary())
    assert text.startswith("✘ ")
    assert "4 files not fetched" in text


# -- lifecycle, through show_progress ----------------------------------------------------------


def events_of_a_run() -> list[Event]:
    return [plan(2, 3 * MB), started("a.bin", 2 * MB), received("a.bin", MB, 2 * MB),
            received("a.bin", 2 * MB, 2 * MB, delta=MB), done("a.bin", 2 * MB),
            started("b.bin", MB), received("b.bin", MB, MB), done("b.bin", MB),
            run_done(2, 3 * MB, seconds=3.0)]


@pytest.mark.anyio
async def test_show_progress_draws_then_leaves_only_the_summary(clock: Clock) -> None:
    console = make_console()
    display = RichDisplay(console=console, get_time=clock)
    bus = ProgressBus()
    async with show_progress(bus, display):
        for event in events_of_a_run():
            bus.publish(event)
    assert not display._live.is_started
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert raw.rfind("\x1b[?25h") > raw.rfind("\x1b[?25l")  # the cursor is visible again
    text = console.export_text()
    assert "✔ org/model@main (c0ffee0): 2 files, 3.0 MB in 3.0s" in text
    assert "downloaded  2 files, 3.0 MB at 1.0 MB/s average" in text


@pytest.mark.anyio
async def test_cancellation_stops_the_display_and_restores_the_cursor(clock: Clock) -> None:
    console = make_console()
    display = RichDisplay(console=console, get_time=clock)
    bus = ProgressBus()
    with anyio.CancelScope() as scope:
        async with show_progress(bus, display):
            bus.publish(plan(2, 3 * MB))
            bus.publish(started("a.bin", 2 * MB))
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.sleep_forever()
    assert not display._live.is_started
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[?25l" in raw
    assert raw.rfind("\x1b[?25h") > raw.rfind("\x1b[?25l")


class Exploding:
    interval: float | None = None

    def __init__(self, where: str) -> None:
        self.where = where
        self.closed = False

    def start(self) -> None:
        if self.where == "start":
            raise RuntimeError("no terminal")

    def feed(self, events: Sequence[Event]) -> None:
        if self.where == "feed":
            raise RuntimeError("render bug")

    def close(self) -> None:
        self.closed = True
        if self.where == "close":
            raise RuntimeError("cannot restore")


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["start", "feed", "close"])
async def test_a_broken_display_never_raises_into_the_download(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = ProgressBus()
    reporter = Exploding(where)
    async with show_progress(bus, reporter):
        for event in events_of_a_run():
            bus.publish(event)
        await anyio.wait_all_tasks_blocked()
    assert reporter.closed
    assert any("progress display" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_the_download_error_passes_through_as_itself() -> None:
    bus = ProgressBus()
    error = hubasync.IntegrityError("hash mismatch", path="a.bin")
    with pytest.raises(hubasync.IntegrityError) as caught:
        async with show_progress(bus, RichDisplay(console=make_console())):
            raise error
    assert caught.value is error  # not wrapped in an ExceptionGroup


# -- against a real (local) Hub ----------------------------------------------------------------


@pytest.fixture
def repo() -> FakeRepo:
    repo = FakeRepo("org/shown")
    repo.commit({"config.json": b'{"a": 1}', "notes/readme.md": b"# notes\n" * 100,
                 **{f"shard-{i}.bin": FakeFile(bytes([i]) * (300_000 + i), lfs=True)
                    for i in range(10)}})
    return repo


def files_on_disk(folder: str) -> tuple[int, int]:
    paths = [p for p in Path(folder).rglob("*") if p.is_file()]
    return len(paths), sum(p.stat().st_size for p in paths)


@pytest.mark.anyio
async def test_summary_totals_match_the_files_on_disk(repo: FakeRepo, tmp_path: Path) -> None:
    async with FakeHub(repos=[repo]) as hub:
        first = RichDisplay(console=make_console(), max_files=3)
        await hubasync.snapshot_download("org/shown", endpoint=hub.endpoint, token=False,
                                         cache_dir=tmp_path, progress=first)
        again = RichDisplay(console=make_console())
        folder = await hubasync.snapshot_download(
            "org/shown", endpoint=hub.endpoint, token=False, cache_dir=tmp_path,
            progress=again)
    count, size = files_on_disk(folder)
    one = first.tracker.summary()
    assert (one.files, one.files_downloaded, one.bytes_downloaded) == (count, count, size)
    assert one.ok and one.files_failed == 0
    text = first.console.export_text()
    commit = repo.try_resolve("main") or "?"
    assert f"✔ org/shown@main ({commit[:7]}): {count} files, {format_bytes(size)}" in text
    two = again.tracker.summary()
    assert (two.files, two.files_from_cache, two.bytes_from_cache) == (count, count, size)


@pytest.mark.anyio
async def test_a_stuck_display_does_not_hold_up_the_download(repo: FakeRepo,
                                                             tmp_path: Path) -> None:
    """The display's feed blocks (a frozen terminal) until the download has returned."""
    release = threading.Event()
    display = RichDisplay(console=make_console())
    seen: list[int] = []
    feed = display.feed

    def frozen_feed(events: Sequence[Event]) -> None:
        seen.append(len(events))
        release.wait(30)
        feed(events)

    display.feed = frozen_feed  # type: ignore[method-assign]
    async with FakeHub(repos=[repo]) as hub:
        config = hubasync.HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=tmp_path,
                                             token=False)
        async with hubasync.HubClient(config) as client, show_progress(client.bus, display):
            folder = await client.snapshot_download("org/shown")
            assert len(seen) <= 1  # the download finished while the display was stuck
            assert display.tracker.files_finished == 0
            release.set()
    count, size = files_on_disk(folder)
    summary = display.tracker.summary()
    assert (summary.files, summary.bytes_downloaded) == (count, size)  # nothing was lost


@pytest.fixture(autouse=True)
def _no_refresh_thread_left() -> Iterator[None]:
    yield
    for thread in threading.enumerate():  # rich signals its refresh thread, does not join it
        if type(thread).__name__ == "_RefreshThread":
            thread.join(timeout=5)
            assert not thread.is_alive()
