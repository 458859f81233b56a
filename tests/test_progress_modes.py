"""Choosing the progress mode, the log and JSON-lines reporters, and callables."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from io import StringIO
from pathlib import Path

import anyio
import msgspec
import pytest
from rich.console import Console

import hubasync
from hubasync import (
    BytesReceived,
    Event,
    FileDone,
    FileStarted,
    HubConfig,
    JsonProgress,
    LogProgress,
    PlanReady,
    ProgressUpdate,
    RateLimited,
    Retrying,
    RichDisplay,
    RunDone,
)
from hubasync._events import decode_event
from hubasync._reporting import resolve_mode, select_reporter
from hubasync.testing import FakeFile, FakeHub, FakeRepo

MB = 1_000_000
COMMIT = "ab" * 20


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class Tty(StringIO):
    def isatty(self) -> bool:
        return True


def config(**env: str) -> HubConfig:
    return HubConfig.from_env(env, cache_dir="/tmp/unused-cache", token=False)


# -- mode selection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("progress", "env", "tty", "mode"),
    [
        (None, {}, True, "bars"),
        (None, {}, False, "log"),
        ("auto", {}, True, "bars"),
        ("auto", {}, False, "log"),
        (None, {"HF_PROGRESS_MODE": "log"}, True, "log"),
        (None, {"HF_PROGRESS_MODE": "bars"}, False, "bars"),
        (None, {"HF_PROGRESS_MODE": "json"}, True, "json"),
        ("none", {}, True, "none"),
        ("json", {"HF_PROGRESS_MODE": "log"}, True, "json"),  # the argument wins
        # HF_HUB_DISABLE_PROGRESS_BARS=1: no bars, and "auto" prints nothing (as officially)
        (None, {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}, True, "none"),
        ("bars", {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}, True, "none"),
        ("log", {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}, False, "log"),
        (None, {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_PROGRESS_MODE": "log"}, True, "log"),
        # ...and =0 forces them on
        (None, {"HF_HUB_DISABLE_PROGRESS_BARS": "0"}, False, "bars"),
    ],
)
def test_resolve_mode(progress: str | None, env: dict[str, str], tty: bool, mode: str) -> None:
    stream = Tty() if tty else StringIO()
    assert resolve_mode(progress, config(**env), stream=stream) == mode


def test_auto_draws_bars_in_a_notebook() -> None:
    notebook = Console(file=StringIO(), force_jupyter=True)
    assert resolve_mode("auto", stream=StringIO(), console=notebook) == "bars"


def test_unknown_modes_are_usage_errors() -> None:
    with pytest.raises(hubasync.ConfigError, match="progress must be one of"):
        select_reporter("fancy")
    with pytest.raises(hubasync.ConfigError, match="a mode string, a callable or a reporter"):
        select_reporter(42)  # type: ignore[arg-type]
    with pytest.raises(hubasync.ConfigError):
        config(HF_PROGRESS_MODE="rainbow")


def test_select_reporter_builds_each_kind() -> None:
    stream = StringIO()
    assert isinstance(select_reporter("bars", stream=stream), RichDisplay)
    assert isinstance(select_reporter("log", stream=stream), LogProgress)
    assert isinstance(select_reporter("json", stream=stream), JsonProgress)
    assert select_reporter("none") is None
    assert select_reporter("auto", config(), stream=stream).__class__ is LogProgress
    display = RichDisplay(console=Console(file=stream))
    assert select_reporter(display) is display
    assert select_reporter(print) is print


# -- the reporters, driven by hand -------------------------------------------------------------


def a_run(clock: Clock) -> Iterator[list[Event]]:
    """Batches of events of one run; the clock moves between them."""
    yield [PlanReady(run_id=1, repo_id="org/m", repo_type="model", revision="main",
                     commit=COMMIT, total_files=3, total_bytes=100 * MB + 10,
                     cached_files=1, cached_bytes=10),
           FileDone(run_id=1, path="c.json", size=10, from_cache=True, local_path="/x",
                    seconds=0.0),
           FileStarted(run_id=1, path="a.bin", size=60 * MB),
           FileStarted(run_id=1, path="b.bin", size=40 * MB)]
    clock.now += 2
    yield [BytesReceived(run_id=1, path="a.bin", delta=20 * MB, downloaded=20 * MB,
                         total=60 * MB),
           RateLimited(run_id=0, host="cdn:443", wait=2.0)]
    clock.now += 4
    yield [BytesReceived(run_id=1, path="b.bin", delta=25 * MB, downloaded=25 * MB,
                         total=40 * MB),
           Retrying(run_id=1, path="b.bin", attempt=1, delay=0.5, reason="ReadError: cut")]
    clock.now += 4
    yield [FileDone(run_id=1, path="a.bin", size=60 * MB, from_cache=False, local_path="/x",
                    seconds=10.0),
           FileDone(run_id=1, path="b.bin", size=40 * MB, from_cache=False, local_path="/x",
                    seconds=8.0),
           RunDone(run_id=1, ok=True, files=3, files_from_cache=1, files_failed=0,
                   bytes_downloaded=100 * MB, bytes_from_cache=10, seconds=10.0, path="/snap")]


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    logger = logging.getLogger("hubasync")
    handler, level = ListHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_log_progress_lines_carry_the_fields(records: list[logging.LogRecord]) -> None:
    clock = Clock()
    reporter = LogProgress(interval=5.0, get_time=clock)
    reporter.start()
    for batch in a_run(clock):
        reporter.feed(batch)
    reporter.close()
    by_event = {r.__dict__["event"]: r for r in records}
    lines = [r.getMessage() for r in records]
    assert lines[0] == ("plan repo=org/m revision=main commit=abababababab files=3 "
                        "total=100.0 MB cached_files=1 cached=10 B")
    progress = by_event["progress"]
    fields = progress.__dict__  # the values, for structured handlers (extra=)
    assert progress.getMessage() == ("progress=45.0% speed=7.5 MB/s downloaded=45.0 MB "
                                     "total=100.0 MB eta=7.3s files=1/3")
    assert (fields["progress"], fields["downloaded"], fields["total"]) == (45.0, 45 * MB,
                                                                            100 * MB)
    assert fields["speed"] == pytest.approx(7.5 * MB)
    assert fields["eta"] == pytest.approx(55 / 7.5)
    assert sum(r.__dict__["event"] == "progress" for r in records) == 1  # one per interval
    assert "start path=a.bin size=60.0 MB" in lines
    assert "done path=a.bin size=60.0 MB duration=10s speed=6.0 MB/s" in lines
    done = by_event["file_done"].__dict__
    assert (done["size"], done["duration"]) == (40 * MB, 8.0)
    assert by_event["file_cached"].levelno == logging.DEBUG
    assert by_event["rate_limited"].levelno == logging.WARNING
    assert "retry path=b.bin attempt=1 delay=0.5s reason=ReadError: cut" in lines
    assert lines[-1] == ("finished files=3 downloaded_files=2 cached_files=1 failed=0 "
                         "downloaded=100.0 MB cached=10 B time=10s speed=10.0 MB/s")
    assert by_event["finished"].__dict__["path"] == "/snap"


def test_log_progress_flags_a_run_stopped_early(records: list[logging.LogRecord]) -> None:
    reporter = LogProgress(get_time=Clock())
    batches = list(a_run(Clock()))
    reporter.feed([*batches[0], RunDone(run_id=1, ok=True, files=1, files_from_cache=1,
                                        files_failed=0, bytes_downloaded=0, bytes_from_cache=10,
                                        seconds=1.0, path=None)])
    last = records[-1]
    assert last.levelno == logging.WARNING
    assert "failed=0 not_fetched=2 " in last.getMessage()
    assert last.__dict__["files_missing"] == 2


def test_log_progress_is_quiet_between_runs(records: list[logging.LogRecord]) -> None:
    clock = Clock()
    reporter = LogProgress(interval=1.0, get_time=clock)
    for _ in range(5):
        clock.now += 10
        reporter.feed([])
    assert records == []


def test_log_progress_speaks_even_when_logging_is_not_configured() -> None:
    logger = logging.getLogger("hubasync.test-unconfigured")
    logger.propagate = False  # as if nothing anywhere handled records
    stream = StringIO()
    clock = Clock()
    reporter = LogProgress(logger=logger, stream=stream, get_time=clock)
    reporter.start()
    for batch in a_run(clock):
        reporter.feed(batch)
    reporter.close()
    assert "INFO finished files=3" in stream.getvalue()
    assert logger.handlers == [] and logger.level == logging.NOTSET  # all put back


def test_json_progress_writes_decodable_lines() -> None:
    clock = Clock()
    stream = StringIO()
    reporter = JsonProgress(stream, interval=3.0, get_time=clock)
    reporter.start()
    for batch in a_run(clock):
        reporter.feed(batch)
    reporter.close()
    lines = stream.getvalue().splitlines()
    decoded = [msgspec.json.decode(line) for line in lines]
    assert [d["type"] for d in decoded] == [
        "plan_ready", "file_done", "file_started", "file_started",
        "bytes_received", "rate_limited",
        "bytes_received", "retrying", "progress",
        "file_done", "file_done", "run_done",
    ]
    events = [decode_event(line) for line in lines if '"type":"progress"' not in line]
    assert isinstance(events[-1], RunDone) and events[-1].bytes_downloaded == 100 * MB
    update = msgspec.json.decode(lines[8], type=ProgressUpdate)
    assert (update.downloaded, update.total, update.files_done, update.active) == (
        45 * MB, 100 * MB, 1, 2)
    assert update.fraction == pytest.approx(0.45)


# -- through the one-shot functions, against a real local Hub ---------------------------------


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    repo = FakeRepo("org/modes")
    repo.commit({"config.json": b"{}", "w.bin": FakeFile(b"w" * 200_000, lfs=True),
                 "x.bin": b"x" * 3_000})
    async with FakeHub(repos=[repo]) as fake:
        yield fake


@pytest.mark.anyio
async def test_auto_picks_logs_when_stderr_is_not_a_tty(
    hub: FakeHub, tmp_path: Path, records: list[logging.LogRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HF_PROGRESS_MODE", raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    await hubasync.snapshot_download("org/modes", endpoint=hub.endpoint, token=False,
                                     cache_dir=tmp_path)  # pytest's stderr is no terminal
    kinds = [r.__dict__.get("event") for r in records]
    assert kinds[0] == "plan" and kinds[-1] == "finished"
    assert kinds.count("file_done") == 3


@pytest.mark.anyio
async def test_env_mode_json_via_one_shot(hub: FakeHub, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_PROGRESS_MODE", "json")
    path = await hubasync.hf_hub_download("org/modes", "w.bin", endpoint=hub.endpoint,
                                          token=False, cache_dir=tmp_path)
    lines = capsys.readouterr().err.splitlines()
    events = [decode_event(line) for line in lines if '"type":"progress"' not in line]
    assert isinstance(events[0], PlanReady)
    assert isinstance(events[-1], RunDone) and events[-1].bytes_downloaded == 200_000
    assert Path(path).stat().st_size == 200_000


@pytest.mark.anyio
async def test_disabled_bars_print_nothing(hub: FakeHub, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str],
                                           records: list[logging.LogRecord]) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("HF_PROGRESS_MODE", raising=False)
    await hubasync.snapshot_download("org/modes", endpoint=hub.endpoint, token=False,
                                     cache_dir=tmp_path)
    assert capsys.readouterr().err == ""
    assert [r for r in records if r.__dict__.get("event")] == []


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_callables_see_every_event_before_the_call_returns(
    hub: FakeHub, tmp_path: Path, kind: str
) -> None:
    seen: list[Event] = []

    async def async_fn(event: Event) -> None:
        seen.append(event)

    fn = seen.append if kind == "sync" else async_fn
    folder = await hubasync.snapshot_download("org/modes", endpoint=hub.endpoint, token=False,
                                              cache_dir=tmp_path, progress=fn)
    assert isinstance(seen[0], PlanReady)
    assert isinstance(seen[-1], RunDone) and seen[-1].path == folder
    done = sorted(e.path for e in seen if isinstance(e, FileDone))
    assert done == ["config.json", "w.bin", "x.bin"]


@pytest.mark.anyio
async def test_a_raising_callable_does_not_fail_the_download(
    hub: FakeHub, tmp_path: Path, records: list[logging.LogRecord]
) -> None:
    def explode(event: Event) -> None:
        raise ValueError("subscriber bug")

    folder = await hubasync.snapshot_download("org/modes", endpoint=hub.endpoint, token=False,
                                              cache_dir=tmp_path, progress=explode)
    assert (Path(folder) / "w.bin").stat().st_size == 200_000
    assert sum("progress callback" in r.getMessage() for r in records) == 1  # logged once


@pytest.mark.anyio
async def test_a_slow_async_subscriber_lags_but_misses_nothing(hub: FakeHub,
                                                               tmp_path: Path) -> None:
    """`hub.events()` consumer stuck on its first event while the download runs to its end:
    the download is not held up, and afterwards every start, end and the run's end arrive."""
    config = HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=tmp_path, token=False)
    finished = anyio.Event()
    seen: list[Event] = []
    async with hubasync.HubClient(config) as client:
        async def consume() -> None:
            async for event in client.events():
                seen.append(event)
                if len(seen) == 1:
                    await finished.wait()  # as slow as it gets: until the download is over
                if isinstance(event, RunDone):
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            folder = await client.snapshot_download("org/modes")
            assert len(seen) == 1  # the download ended while the subscriber was stuck
            finished.set()
    assert isinstance(seen[0], PlanReady)
    kinds = [type(e).__name__ for e in seen]
    assert kinds.count("FileStarted") == kinds.count("FileDone") == 3
    assert isinstance(seen[-1], RunDone) and seen[-1].path == folder
    on_disk = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    assert seen[-1].bytes_downloaded == on_disk

