"""The write threads (`_threads.WriteThreads`): per-key order, errors, cancellation, batching."""

from __future__ import annotations

import asyncio
import threading
import time

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from hubasync._threads import DiskIO, WriteThreads


def keys_on_different_threads(size: int) -> tuple[str, str]:
    first = "file-0"
    for i in range(1, 100):
        if hash(f"file-{i}") % size != hash(first) % size:
            return first, f"file-{i}"
    raise AssertionError("no two keys on different threads")


@pytest.mark.anyio
async def test_one_key_runs_one_call_at_a_time_in_order() -> None:
    threads = WriteThreads(4)
    running, seen, overlaps = [0], [], []
    lock = threading.Lock()

    def call(i: int) -> int:
        with lock:
            running[0] += 1
            overlaps.append(running[0] > 1)
        time.sleep(0.002)
        with lock:
            running[0] -= 1
            seen.append((i, threading.current_thread().name))
        return i * 10

    results: dict[int, int] = {}

    async def one(i: int) -> None:
        results[i] = await threads.run("the-file", lambda: call(i))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(one, i)
            await anyio.lowlevel.checkpoint()  # submitted in this order
    await threads.aclose()
    assert results == {i: i * 10 for i in range(20)}
    assert [i for i, _ in seen] == list(range(20))
    assert not any(overlaps)
    assert len({name for _, name in seen}) == 1
    assert "running: 1 of 4" in repr(threads)


@pytest.mark.anyio
async def test_keys_spread_over_threads_and_threads_start_on_first_use() -> None:
    threads = WriteThreads(4)
    a, b = keys_on_different_threads(4)
    assert "running: 0" in repr(threads)
    name_a = await threads.run(a, lambda: threading.current_thread().name)
    name_b = await threads.run(b, lambda: threading.current_thread().name)
    assert name_a != name_b
    assert name_a.startswith("hubasync-write-")
    await threads.aclose()
    assert not [t for t in threading.enumerate() if t.name in (name_a, name_b)]
    with pytest.raises(RuntimeError, match="closed"):
        await threads.run(a, lambda: None)


@pytest.mark.anyio
async def test_an_error_reaches_the_caller_and_the_thread_goes_on() -> None:
    disk = DiskIO(2)

    def fail() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        await disk.write("f", fail)
    def add(x: int, y: int = 0) -> int:
        return x + y

    assert await disk.write("f", add, 1, y=2) == 3
    await disk.aclose()


@pytest.mark.anyio
async def test_a_cancellation_waits_for_the_call_then_is_raised() -> None:
    threads = WriteThreads(1)
    release, finished, after = threading.Event(), threading.Event(), []

    def slow() -> str:
        release.wait(5)
        finished.set()
        return "written"

    def release_later() -> None:
        time.sleep(0.3)
        release.set()

    started = time.monotonic()
    with anyio.move_on_after(0.05) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, release_later)
            after.append(await threads.run("f", slow))  # the result still comes back
            await anyio.sleep(5)  # the next checkpoint raises the cancellation
    assert scope.cancelled_caught
    assert finished.is_set()
    assert after == ["written"]
    assert time.monotonic() - started < 2
    await threads.aclose()


@pytest.mark.anyio
async def test_finished_calls_reach_the_loop_in_one_wake_up() -> None:
    threads = WriteThreads(1)
    loop = asyncio.get_running_loop()
    settles = []
    real = threads._settle

    def counting(target: asyncio.AbstractEventLoop) -> None:
        settles.append(target)
        real(target)

    threads._settle = counting  # type: ignore[method-assign,assignment]
    futures: list[asyncio.Future[object]] = [loop.create_future() for _ in range(3)]
    threads._report(loop, futures[0], ("a", None))
    threads._report(loop, futures[1], (None, ValueError("b")))
    threads._report(loop, futures[2], ("c", None))
    assert await futures[0] == "a"
    with pytest.raises(ValueError, match="b"):
        await futures[1]
    assert await futures[2] == "c"
    assert settles == [loop]


def test_a_closed_loop_is_not_an_error_for_the_thread() -> None:
    threads = WriteThreads(1)
    loop = asyncio.new_event_loop()
    future: asyncio.Future[object] = loop.create_future()
    loop.close()
    threads._report(loop, future, ("late", None))  # nobody awaits it any more
    assert not threads._finished


def test_the_threads_serve_one_loop_after_another() -> None:
    threads = WriteThreads(2)

    async def main(value: int) -> int:
        return await threads.run("f", lambda: value + 1)

    assert asyncio.run(main(1)) == 2
    assert asyncio.run(main(41)) == 42
    asyncio.run(threads.aclose())
