from __future__ import annotations

import math

import anyio
import pytest

from hubasync._exceptions import ConfigError
from hubasync._ratelimit import HostGate, HostGateStatistics, TokenBucket

HF = "huggingface.co:443"
CDN = "cdn-lfs.hf.co:443"


class SteppingClock:
    """A clock that only moves when someone sleeps: each sleep jumps it forward at once."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await anyio.lowlevel.checkpoint()


class VirtualClock:
    """A clock that the test moves with `advance()`; sleepers wake when their deadline passes."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, anyio.Event]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        event = anyio.Event()
        self._sleepers.append((self.now + delay, event))
        await event.wait()

    async def advance(self, seconds: float) -> None:
        await anyio.wait_all_tasks_blocked()  # let tasks started just now reach their sleep
        self.now += seconds
        due = [item for item in self._sleepers if item[0] <= self.now]
        for item in due:
            self._sleepers.remove(item)
            item[1].set()
        await anyio.wait_all_tasks_blocked()


async def no_sleep(delay: float) -> None:
    raise AssertionError(f"slept {delay}s")


# -- HostGate: blocking --------------------------------------------------------------------------


def test_block_and_blocked_until() -> None:
    clock = SteppingClock()
    gate = HostGate(clock=clock, sleep=no_sleep)
    assert gate.blocked_until(HF) == 0.0
    gate.block(HF, 30.0)
    assert gate.blocked_until(HF) == 1030.0
    assert gate.blocked_until(CDN) == 0.0


def test_a_shorter_block_never_shortens_a_longer_one() -> None:
    clock = SteppingClock()
    gate = HostGate(clock=clock, sleep=no_sleep)
    gate.block(HF, 30.0)
    clock.now += 10
    gate.block(HF, 5.0)  # would end at 1015: earlier than 1030
    assert gate.blocked_until(HF) == 1030.0
    gate.block(HF, 60.0)  # ends at 1070: extends
    assert gate.blocked_until(HF) == 1070.0
    assert gate.statistics().total_blocks == 3


@pytest.mark.parametrize("delay", [0.0, -1.0])
def test_non_positive_block_is_a_no_op(delay: float) -> None:
    gate = HostGate(clock=SteppingClock(), sleep=no_sleep)
    gate.block(HF, delay)
    assert gate.blocked_until(HF) == 0.0
    assert gate.statistics().total_blocks == 0


@pytest.mark.parametrize("delay", [math.inf, math.nan])
def test_non_finite_block_is_rejected(delay: float) -> None:
    gate = HostGate(clock=SteppingClock(), sleep=no_sleep)
    with pytest.raises(ValueError, match="finite"):
        gate.block(HF, delay)


def test_expired_hosts_are_forgotten() -> None:
    clock = SteppingClock()
    gate = HostGate(clock=clock, sleep=no_sleep)
    for i in range(1000):
        gate.block(f"host{i}:443", 1.0 + i / 1000)
    assert gate.statistics().blocked_hosts == 1000
    clock.now += 1.5
    assert gate.statistics().blocked_hosts == 499  # 1.0 + i/1000 <= 1.5 for i <= 500
    clock.now += 1.0
    gate.block(HF, 1.0)
    assert gate.statistics().blocked_hosts == 1
    assert len(gate._until) == 1  # bounded memory, not just a filtered count
    assert gate.blocked_until("host999:443") == 0.0


# -- HostGate: waiting -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_wait_when_open_does_not_sleep() -> None:
    gate = HostGate(clock=SteppingClock(), sleep=no_sleep)
    assert await gate.wait(HF) == 0.0
    gate.block(CDN, 10.0)
    assert await gate.wait(HF) == 0.0
    assert gate.statistics().total_waited == 0.0


@pytest.mark.anyio
async def test_wait_after_the_block_expired_does_not_sleep() -> None:
    clock = SteppingClock()
    gate = HostGate(clock=clock, sleep=no_sleep)
    gate.block(HF, 10.0)
    clock.now += 10.0
    assert await gate.wait(HF) == 0.0


@pytest.mark.anyio
async def test_one_429_pauses_every_waiter_on_that_host_and_no_other() -> None:
    clock = VirtualClock()
    gate = HostGate(clock=clock, sleep=clock.sleep)
    waited: dict[str, float] = {}

    async def request(name: str, host: str) -> None:
        waited[name] = await gate.wait(host)

    gate.block(HF, 30.0)  # one worker saw a 429 with Retry-After: 30
    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(request, f"hf{i}", HF)
        tg.start_soon(request, "cdn", CDN)
        await anyio.wait_all_tasks_blocked()
        assert waited == {"cdn": 0.0}
        assert gate.statistics().tasks_waiting == 3
        await clock.advance(29.0)
        assert waited == {"cdn": 0.0}
        await clock.advance(1.0)
    assert waited == {"hf0": 30.0, "hf1": 30.0, "hf2": 30.0, "cdn": 0.0}
    assert clock.sleeps == [30.0, 30.0, 30.0]
    assert gate.statistics() == HostGateStatistics(
        blocked_hosts=0, tasks_waiting=0, total_blocks=1, total_waited=90.0
    )


@pytest.mark.anyio
async def test_a_block_extended_during_a_wait_is_waited_out() -> None:
    clock = VirtualClock()
    gate = HostGate(clock=clock, sleep=clock.sleep)
    result: list[float] = []

    async def request() -> None:
        result.append(await gate.wait(HF))

    gate.block(HF, 10.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        await clock.advance(5.0)
        gate.block(HF, 20.0)  # another 429 meanwhile: now blocked until t+25
        await clock.advance(5.0)  # the first sleep ends; the waiter must look again
        assert result == []
        assert gate.statistics().tasks_waiting == 1
        await clock.advance(15.0)
    assert result == [25.0]
    assert clock.sleeps == [10.0, 15.0]


@pytest.mark.anyio
async def test_extension_seen_by_a_stepping_sleep() -> None:
    clock = SteppingClock()
    extended = False

    async def sleep_and_extend(delay: float) -> None:
        nonlocal extended
        await clock.sleep(delay)
        if not extended:
            extended = True
            gate.block(HF, 7.0)

    gate = HostGate(clock=clock, sleep=sleep_and_extend)
    gate.block(HF, 3.0)
    assert await gate.wait(HF) == 10.0
    assert clock.sleeps == [3.0, 7.0]


@pytest.mark.anyio
async def test_cancelled_waiter_is_accounted() -> None:
    clock = VirtualClock()
    gate = HostGate(clock=clock, sleep=clock.sleep)
    gate.block(HF, 60.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(gate.wait, HF)
        await clock.advance(2.0)
        assert gate.statistics().tasks_waiting == 1
        tg.cancel_scope.cancel()
    stats = gate.statistics()
    assert stats.tasks_waiting == 0
    assert stats.total_waited == 2.0
    assert stats.blocked_hosts == 1


def test_repr() -> None:
    clock = SteppingClock()
    gate = HostGate(clock=clock, sleep=no_sleep)
    assert repr(gate) == "<HostGate [open | waiting: 0 | blocks: 0, waited: 0.0s]>"
    gate.block(HF, 12.34)
    gate.block(CDN, 50.0)
    assert repr(gate) == (
        "<HostGate [blocked: cdn-lfs.hf.co:443 for 50.0s, huggingface.co:443 for 12.3s"
        " | waiting: 0 | blocks: 2, waited: 0.0s]>"
    )
    for i in range(4):
        gate.block(f"h{i}:80", 1.0)
    assert "+3 more" in repr(gate)
    clock.now += 100
    assert repr(gate) == "<HostGate [open | waiting: 0 | blocks: 6, waited: 0.0s]>"


# -- TokenBucket -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "burst", "match"),
    [
        (0.0, None, "rate must be"),
        (-5.0, None, "rate must be"),
        (math.inf, None, "rate must be"),
        (math.nan, None, "rate must be"),
        (100.0, 0.0, "burst must be"),
        (100.0, math.inf, "burst must be"),
    ],
)
def test_bucket_rejects_nonsense(rate: float, burst: float | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TokenBucket(rate, burst=burst)


@pytest.mark.anyio
async def test_bucket_serves_the_burst_without_sleeping() -> None:
    clock = SteppingClock()
    bucket = TokenBucket(1000.0, clock=clock, sleep=no_sleep)
    assert bucket.burst == 1000.0
    await bucket.acquire(400)
    await bucket.acquire(600)
    await bucket.acquire(0)
    assert bucket.available == 0.0


@pytest.mark.anyio
async def test_bucket_holds_the_rate() -> None:
    clock = SteppingClock()
    bucket = TokenBucket(1_000_000.0, burst=64_000, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(1000):
        await bucket.acquire(16_000)  # 16 MB in all
    # The first 64 kB ride the burst; the rest flows at exactly 1 MB/s.
    assert clock.now - start == pytest.approx((16_000_000 - 64_000) / 1_000_000)
    assert len(clock.sleeps) == 1000 - 4


@pytest.mark.anyio
async def test_acquiring_more_than_the_burst_waits_proportionally() -> None:
    clock = SteppingClock()
    bucket = TokenBucket(100.0, burst=50.0, clock=clock, sleep=clock.sleep)
    await bucket.acquire(1050)
    assert clock.sleeps == [pytest.approx(10.0)]
    assert bucket.available == pytest.approx(0.0)


@pytest.mark.anyio
async def test_idle_time_refills_only_up_to_the_burst() -> None:
    clock = SteppingClock()
    bucket = TokenBucket(100.0, burst=200.0, clock=clock, sleep=clock.sleep)
    await bucket.acquire(200)
    clock.now += 3600
    assert bucket.available == 200.0
    await bucket.acquire(300)
    assert clock.sleeps == [pytest.approx(1.0)]


@pytest.mark.anyio
async def test_bucket_is_fifo_and_each_caller_sleeps_once() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(100.0, clock=clock, sleep=clock.sleep)
    done: list[tuple[str, float]] = []

    async def download(name: str) -> None:
        await bucket.acquire(100)
        done.append((name, clock.now - 1000.0))

    async with anyio.create_task_group() as tg:
        for name in "abcd":
            tg.start_soon(download, name)
            await anyio.wait_all_tasks_blocked()
        for _ in range(3):
            await clock.advance(1.0)
    assert done == [("a", 0.0), ("b", 1.0), ("c", 2.0), ("d", 3.0)]
    assert clock.sleeps == [1.0, 2.0, 3.0]


@pytest.mark.anyio
async def test_cancelled_acquire_gives_its_tokens_back() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(100.0, clock=clock, sleep=clock.sleep)
    await bucket.acquire(100)
    async with anyio.create_task_group() as tg:
        tg.start_soon(bucket.acquire, 500)
        await anyio.wait_all_tasks_blocked()
        assert bucket.available == -500.0
        tg.cancel_scope.cancel()
    assert bucket.available == 0.0
    await clock.advance(1.0)
    assert bucket.available == 100.0


@pytest.mark.anyio
async def test_negative_acquire_is_rejected() -> None:
    bucket = TokenBucket(100.0, clock=SteppingClock(), sleep=no_sleep)
    with pytest.raises(ValueError, match="negative"):
        await bucket.acquire(-1)


def test_bucket_repr() -> None:
    bucket = TokenBucket(1e6, burst=5e5, clock=SteppingClock(), sleep=no_sleep)
    assert repr(bucket) == "<TokenBucket [rate: 1e+06/s, burst: 500000, available: 500000]>"
    assert bucket.rate == 1e6
