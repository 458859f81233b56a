from __future__ import annotations

import logging
from collections import defaultdict

import anyio
import msgspec
import pytest

from hubasync._bus import BusStatistics, ProgressBus, Subscription
from hubasync._events import (
    BlobCommitted,
    BytesReceived,
    Event,
    FileDone,
    FileFailed,
    FileStarted,
    PlanReady,
    RateLimited,
    Retrying,
    RunDone,
    decode_event,
    encode_event,
    is_file_terminal,
    is_progress,
)
from hubasync._exceptions import ConfigError

# -- event builders ------------------------------------------------------------------------------


def plan(run_id: int = 1, files: int = 1) -> PlanReady:
    return PlanReady(
        run_id=run_id, repo_id="org/name", repo_type="model", revision="main",
        commit="a" * 40, total_files=files, total_bytes=files * 100, cached_files=0,
        cached_bytes=0,
    )


def started(path: str, run_id: int = 1) -> FileStarted:
    return FileStarted(run_id=run_id, path=path, size=100)


def progress(path: str, delta: int, downloaded: int, run_id: int = 1) -> BytesReceived:
    return BytesReceived(run_id=run_id, path=path, delta=delta, downloaded=downloaded, total=10**9)


def done(path: str, run_id: int = 1) -> FileDone:
    return FileDone(run_id=run_id, path=path, size=100, from_cache=False,
                    local_path=f"/cache/{path}", seconds=1.0)


def failed(path: str, run_id: int = 1) -> FileFailed:
    return FileFailed(run_id=run_id, path=path, error_type="ReadError", message="boom")


def run_done(run_id: int = 1) -> RunDone:
    return RunDone(run_id=run_id, ok=True, files=1, files_from_cache=0, files_failed=0,
                   bytes_downloaded=100, bytes_from_cache=0, seconds=2.0, path="/snap")


async def drain(subscription: Subscription) -> list[Event]:
    return [event async for event in subscription]


def by_type(events: list[Event], kind: type[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, kind)]


# -- events ----------------------------------------------------------------------------------------

ALL_EVENTS: list[Event] = [
    plan(),
    started("a.bin"),
    FileStarted(run_id=1, path="b.bin", size=10, resumed_from=4),
    progress("a.bin", 5, 5),
    RateLimited(run_id=0, host="huggingface.co:443", wait=30.0),
    Retrying(run_id=1, path="a.bin", attempt=2, delay=1.5, reason="ReadError: reset"),
    BlobCommitted(run_id=1, path="a.bin", etag="e" * 64, size=100),
    done("a.bin"),
    failed("b.bin"),
    run_done(),
    RunDone(run_id=2, ok=False, files=0, files_from_cache=0, files_failed=1,
            bytes_downloaded=0, bytes_from_cache=0, seconds=0.5, path=None),
]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: type(e).__name__)
def test_event_json_round_trip(event: Event) -> None:
    data = encode_event(event)
    assert decode_event(data) == event
    assert decode_event(data.decode()) == event
    assert type(decode_event(data)) is type(event)


def test_event_tags_are_snake_case_and_run_id_comes_first() -> None:
    tags = {type(e).__name__: msgspec.json.decode(encode_event(e))["type"] for e in ALL_EVENTS}
    assert tags == {
        "PlanReady": "plan_ready", "FileStarted": "file_started",
        "BytesReceived": "bytes_received", "RateLimited": "rate_limited",
        "Retrying": "retrying", "BlobCommitted": "blob_committed", "FileDone": "file_done",
        "FileFailed": "file_failed", "RunDone": "run_done",
    }
    for event in ALL_EVENTS:
        assert type(event).__struct_fields__[0] == "run_id"
        assert list(msgspec.json.decode(encode_event(event)))[:2] == ["type", "run_id"]


def test_event_defaults() -> None:
    assert started("x").resumed_from == 0
    assert RateLimited(run_id=0, host="h:443", wait=1.0).status == 429


def test_events_are_frozen_and_keyword_only() -> None:
    event = progress("a", 1, 1)
    with pytest.raises(AttributeError):
        event.delta = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        BytesReceived(1, "a", 1, 1, 1)  # type: ignore[call-arg]


def test_decode_event_rejects_garbage() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"type": "nope", "run_id": 1}')
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"type": "file_started", "run_id": 1}')
    with pytest.raises(msgspec.DecodeError):
        decode_event(b"{not json")


def test_is_progress_and_is_file_terminal() -> None:
    assert [type(e).__name__ for e in ALL_EVENTS if is_progress(e)] == ["BytesReceived"]
    assert {type(e).__name__ for e in ALL_EVENTS if is_file_terminal(e)} == {
        "FileDone", "FileFailed"
    }


# -- ordering and delivery -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_event_is_delivered_in_order() -> None:
    bus = ProgressBus()
    async with bus.subscribe() as sub:
        for event in ALL_EVENTS:
            bus.publish(event)
        bus.close()
        assert await drain(sub) == ALL_EVENTS
        assert sub.dropped == 0


@pytest.mark.anyio
async def test_a_live_consumer_sees_every_progress_event_unmerged() -> None:
    bus = ProgressBus()
    received: list[Event] = []

    async def consume(sub: Subscription) -> None:
        received.extend(await drain(sub))

    async with bus.subscribe(max_pending=4) as sub, anyio.create_task_group() as tg:
        tg.start_soon(consume, sub)
        bus.publish(started("a"))
        for i in range(1, 101):
            bus.publish(progress("a", 1, i))
            await anyio.wait_all_tasks_blocked()  # the consumer keeps up
        bus.publish(done("a"))
        await bus.aclose()
    assert len(received) == 102
    assert sub.dropped == 0


@pytest.mark.anyio
async def test_slow_consumer_gets_merged_progress_with_exact_totals() -> None:
    bus = ProgressBus()
    files = ["a.bin", "b.bin", "c.bin", "d.bin"]
    published: dict[str, int] = defaultdict(int)
    async with bus.subscribe(max_pending=64) as sub:
        bus.publish(plan(files=len(files)))
        for path in files:
            bus.publish(started(path))
        high_water = 0
        for i in range(10_000):
            path = files[i % len(files)]
            delta = i % 7 + 1
            published[path] += delta
            bus.publish(progress(path, delta, published[path]))
            high_water = max(high_water, sub.pending)
        for path in files:
            bus.publish(done(path))
        bus.publish(run_done())
        bus.close()

        assert high_water <= 64 + len(files)  # bounded, whatever the volume
        events = await drain(sub)

    delivered: dict[str, int] = defaultdict(int)
    last_downloaded: dict[str, int] = defaultdict(int)
    finished: set[str] = set()
    for event in events:
        if isinstance(event, BytesReceived):
            assert event.path not in finished
            assert event.downloaded >= last_downloaded[event.path]
            delivered[event.path] += event.delta
            last_downloaded[event.path] = event.downloaded
        elif isinstance(event, FileDone):
            finished.add(event.path)
    assert delivered == published  # not a byte lost
    assert last_downloaded == published  # the latest cumulative count survives merging
    n_progress = len(by_type(events, BytesReceived))
    assert sub.dropped == 10_000 - n_progress > 9_000
    assert bus.statistics().merged == sub.dropped
    others = [e for e in events if not isinstance(e, BytesReceived)]
    assert others == [plan(files=4), *map(started, files), *map(done, files), run_done()]


@pytest.mark.anyio
async def test_merging_never_crosses_another_event_of_the_same_file() -> None:
    bus = ProgressBus()
    async with bus.subscribe(max_pending=1) as sub:
        bus.publish(started("a"))
        bus.publish(progress("a", 10, 10))
        bus.publish(progress("a", 5, 15))  # merged into the previous one
        bus.publish(Retrying(run_id=1, path="a", attempt=1, delay=1.0, reason="reset"))
        bus.publish(progress("b", 7, 7))  # another file: unaffected
        bus.publish(progress("a", 3, 18))  # after the Retrying: must stay after it
        bus.publish(progress("a", 2, 20))
        bus.publish(done("a"))
        bus.close()
        events = await drain(sub)
    assert events == [
        started("a"),
        progress("a", 15, 15),
        Retrying(run_id=1, path="a", attempt=1, delay=1.0, reason="reset"),
        progress("b", 7, 7),
        progress("a", 5, 20),
        done("a"),
    ]
    assert sub.dropped == 2


@pytest.mark.anyio
async def test_progress_is_never_delivered_after_the_file_is_terminal() -> None:
    bus = ProgressBus()
    async with bus.subscribe(max_pending=1) as sub:
        bus.publish(progress("a", 1, 1))
        bus.publish(done("a"))
        bus.publish(progress("a", 1, 2))  # a straggler: discarded
        bus.publish(failed("b"))
        bus.publish(progress("b", 1, 1))  # discarded
        bus.publish(started("b"))  # the same file again, in the same run
        bus.publish(progress("b", 4, 4))  # delivered
        bus.close()
        events = await drain(sub)
    assert events == [progress("a", 1, 1), done("a"), failed("b"), started("b"),
                      progress("b", 4, 4)]
    assert bus.statistics().late_dropped == 2


@pytest.mark.anyio
async def test_run_done_forgets_the_run() -> None:
    bus = ProgressBus()
    bus.publish(done("a"))
    bus.publish(done("a", run_id=2))
    bus.publish(run_done())
    assert set(bus._finished) == {2}


@pytest.mark.anyio
async def test_terminal_events_are_never_lost_under_pressure() -> None:
    bus = ProgressBus()
    paths = [f"f{i:04d}" for i in range(500)]
    async with bus.subscribe(max_pending=2) as sub:
        for path in paths:
            bus.publish(started(path))
            for j in range(1, 21):
                bus.publish(progress(path, 1, j))
            bus.publish(done(path) if int(path[1:]) % 3 else failed(path))
        bus.publish(run_done())
        bus.close()
        events = await drain(sub)
    terminal = [e.path for e in events if isinstance(e, FileDone | FileFailed)]
    assert terminal == paths
    assert isinstance(events[-1], RunDone)
    totals: dict[str, int] = defaultdict(int)
    for event in by_type(events, BytesReceived):
        assert isinstance(event, BytesReceived)
        totals[event.path] += event.delta
    assert totals == dict.fromkeys(paths, 20)


@pytest.mark.anyio
async def test_run_id_filtering() -> None:
    bus = ProgressBus()
    async with bus.subscribe(run_id=2) as only_two, bus.subscribe() as everything:
        for run_id in (1, 2, 3, 2):
            bus.publish(started(f"r{run_id}", run_id=run_id))
        bus.close()
        assert [e.run_id for e in await drain(only_two)] == [2, 2]
        assert [e.run_id for e in await drain(everything)] == [1, 2, 3, 2]


@pytest.mark.anyio
async def test_merging_is_per_run() -> None:
    bus = ProgressBus()
    async with bus.subscribe(max_pending=1) as sub:
        bus.publish(progress("a", 1, 1, run_id=1))
        bus.publish(progress("a", 2, 2, run_id=2))
        bus.publish(progress("a", 3, 4, run_id=2))
        bus.publish(progress("a", 4, 5, run_id=1))
        bus.close()
        assert await drain(sub) == [progress("a", 5, 5, run_id=1), progress("a", 5, 4, run_id=2)]


# -- lifecycle -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_close_ends_iteration_after_draining() -> None:
    bus = ProgressBus()
    received: list[Event] = []

    async def consume(sub: Subscription) -> None:
        received.extend(await drain(sub))

    async with bus.subscribe() as sub, anyio.create_task_group() as tg:
        tg.start_soon(consume, sub)
        await anyio.wait_all_tasks_blocked()  # the consumer is parked on an empty queue
        bus.publish(started("a"))
        bus.publish(done("a"))
        await bus.aclose()
    assert received == [started("a"), done("a")]
    bus.publish(started("late"))  # ignored once closed
    assert bus.statistics().published == 2


@pytest.mark.anyio
async def test_bus_as_async_context_manager_closes() -> None:
    async with ProgressBus() as bus, bus.subscribe() as sub:
        bus.publish(started("a"))
    assert bus.closed
    assert await drain(sub) == []  # leaving the subscription's block discards what it held


@pytest.mark.anyio
async def test_subscribing_to_a_closed_bus_ends_at_once() -> None:
    bus = ProgressBus()
    bus.close()
    bus.close()  # idempotent
    async with bus.subscribe() as sub:
        assert await drain(sub) == []
    assert bus.subscriber_count == 0


@pytest.mark.anyio
async def test_leaving_a_subscription_detaches_it() -> None:
    bus = ProgressBus()
    async with bus.subscribe() as first:
        async with bus.subscribe(run_id=7):
            assert bus.subscriber_count == 2
        assert bus.subscriber_count == 1
        bus.publish(started("a"))
        assert first.pending == 1
    assert bus.subscriber_count == 0
    bus.publish(started("b"))
    assert first.pending == 0


@pytest.mark.anyio
async def test_two_readers_of_one_subscription_both_wake() -> None:
    bus = ProgressBus()
    got: list[Event] = []

    async def read_one(sub: Subscription) -> None:
        async for event in sub:
            got.append(event)
            return

    async with bus.subscribe() as sub, anyio.create_task_group() as tg:
        tg.start_soon(read_one, sub)
        tg.start_soon(read_one, sub)
        await anyio.wait_all_tasks_blocked()
        bus.publish(started("a"))
        bus.publish(started("b"))
    assert sorted(e.path for e in got if isinstance(e, FileStarted)) == ["a", "b"]


def test_max_pending_is_validated() -> None:
    with pytest.raises(ConfigError, match="max_pending must be >= 1"):
        ProgressBus().subscribe(max_pending=0)


# -- callbacks -------------------------------------------------------------------------------------


def test_callbacks_run_synchronously_and_can_unsubscribe() -> None:
    bus = ProgressBus()
    seen: list[Event] = []
    remove = bus.add_callback(seen.append)
    bus.publish(started("a"))
    assert seen == [started("a")]
    remove()
    remove()  # idempotent
    bus.publish(started("b"))
    assert seen == [started("a")]
    assert bus.statistics().callbacks == 0


def test_a_callback_may_unsubscribe_itself_while_being_called() -> None:
    bus = ProgressBus()
    calls: list[str] = []

    def once(event: Event) -> None:
        calls.append("once")
        remove()

    remove = bus.add_callback(once)
    bus.add_callback(lambda e: calls.append("always"))
    bus.publish(started("a"))
    bus.publish(started("b"))
    assert calls == ["once", "always", "always"]


def test_callback_errors_are_swallowed_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    bus = ProgressBus()
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("display crashed")

    bus.add_callback(broken)
    bus.add_callback(seen.append)  # later callbacks still run
    with caplog.at_level(logging.ERROR, logger="hubasync"):
        for i in range(5):
            bus.publish(progress("a", 1, i + 1))
    assert len(seen) == 5
    records = [r for r in caplog.records if r.name == "hubasync"]
    assert len(records) == 1
    assert "progress callback" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert bus.statistics().callback_errors == 5


@pytest.mark.anyio
async def test_a_broken_subscription_does_not_break_publish(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = ProgressBus()
    async with bus.subscribe() as broken, bus.subscribe() as healthy:

        def explode(event: Event) -> None:
            raise RuntimeError("bug")

        monkeypatch.setattr(broken, "_push", explode)
        with caplog.at_level(logging.ERROR, logger="hubasync"):
            bus.publish(started("a"))
            bus.publish(started("b"))
        assert healthy.pending == 2
    assert len([r for r in caplog.records if r.name == "hubasync"]) == 1


# -- cost, statistics, repr ------------------------------------------------------------------------


def test_publish_from_sync_code_with_no_subscribers_is_cheap() -> None:
    bus = ProgressBus()  # no event loop anywhere in this test
    for i in range(100_000):
        bus.publish(progress("a", 1, i + 1))
    bus.publish(done("a"))
    assert bus.statistics() == BusStatistics(
        subscribers=0, callbacks=0, published=100_001, pending=0, merged=0, late_dropped=0,
        callback_errors=0, closed=False,
    )
    assert bus._finished == {1: {"a"}}  # O(files) bookkeeping, nothing per progress event
    bus.publish(run_done())
    assert bus._finished == {}


@pytest.mark.anyio
async def test_publish_from_a_sync_helper_inside_the_loop() -> None:
    bus = ProgressBus()

    def sync_worker_step(n: int) -> None:
        bus.publish(progress("a", n, n))

    async with bus.subscribe() as sub:
        sync_worker_step(3)
        bus.close()
        assert await drain(sub) == [progress("a", 3, 3)]


@pytest.mark.anyio
async def test_statistics_and_repr() -> None:
    bus = ProgressBus()
    assert repr(bus) == "<ProgressBus [subscribers: 0, published: 0]>"
    bus.add_callback(lambda e: None)
    async with bus.subscribe() as a, bus.subscribe(run_id=1, max_pending=1) as b:
        for i in range(1, 121):
            bus.publish(progress("a", 1, i))
        assert repr(bus) == "<ProgressBus [subscribers: 2, published: 120]>"
        assert repr(a) == "<Subscription [all runs | pending: 120, dropped: 0]>"
        assert repr(b) == "<Subscription [run 1 | pending: 1, dropped: 119]>"
        assert bus.statistics() == BusStatistics(
            subscribers=2, callbacks=1, published=120, pending=121, merged=119,
            late_dropped=0, callback_errors=0, closed=False,
        )
        await bus.aclose()
        assert repr(bus) == "<ProgressBus [closed | subscribers: 0, published: 120]>"
        assert repr(b) == "<Subscription [closed, run 1 | pending: 1, dropped: 119]>"


# -- batch consumers: drain() and close() ------------------------------------------------------


@pytest.mark.anyio
async def test_drain_takes_what_is_pending_without_waiting() -> None:
    bus = ProgressBus()
    async with bus.subscribe(max_pending=2) as events:
        assert events.drain() == []
        for event in (plan(), started("a"), progress("a", 10, 10), progress("a", 5, 15),
                      done("a")):
            bus.publish(event)
        first_two = events.drain(2)
        assert first_two == [plan(), started("a")]
        rest = events.drain()
        assert rest == [progress("a", 15, 15), done("a")]  # merged while behind, bytes kept
        assert events.pending == 0


@pytest.mark.anyio
async def test_close_ends_the_iteration_after_what_is_pending() -> None:
    bus = ProgressBus()
    async with bus.subscribe() as events:
        bus.publish(plan())
        bus.publish(started("a"))
        events.close()
        bus.publish(done("a"))  # after close: not for this subscription
        assert [e async for e in events] == [plan(), started("a")]
        assert bus.subscriber_count == 0
    assert not bus.closed  # the bus itself lives on
