"""HubClient as a service uses it: many callers, single flight, cancellation, events, close."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import hubasync
from hubasync import HubClient, HubConfig
from hubasync.testing import FakeHub, FakeRepo, Fault

pytestmark = pytest.mark.anyio

FILES = {f"shard-{i}.safetensors": bytes([i]) * 200_000 for i in range(3)} | {
    "config.json": b"{}"}


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    repo = FakeRepo("org/model")
    repo.commit(FILES)
    async with FakeHub(repos=[repo]) as fake:
        yield fake


def config(hub: FakeHub, cache: Path) -> HubConfig:
    return HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=cache, token=False)


def file_gets(hub: FakeHub) -> list[str]:
    return [r.path for r in hub.requests if r.method == "GET" and r.server == "cdn"]


def leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.name.endswith((".incomplete", ".tmp"))]


async def test_concurrent_callers_share_one_download(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_fault(Fault.stall(after_bytes=1000, seconds=0.3, server="cdn", times=3))
    results: list[str] = []
    async with HubClient(config(hub, tmp_path)) as client:

        async def call() -> None:
            results.append(await client.snapshot_download("org/model"))

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(call)
    assert len(set(results)) == 1
    assert len(results) == 10
    assert sorted(file_gets(hub)) == sorted(set(file_gets(hub)))  # each blob fetched once
    assert len(file_gets(hub)) == 3


async def test_cancelled_caller_does_not_cancel_the_others(hub: FakeHub,
                                                           tmp_path: Path) -> None:
    hub.add_fault(Fault.stall(after_bytes=1000, seconds=0.5, server="cdn", times=3))
    async with HubClient(config(hub, tmp_path)) as client:
        impatient_done = anyio.Event()

        async def impatient() -> None:
            with anyio.move_on_after(0.1):
                await client.snapshot_download("org/model")
            impatient_done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(impatient)
            folder = await client.snapshot_download("org/model")
        assert impatient_done.is_set()
    for name, data in FILES.items():
        assert Path(folder, name).read_bytes() == data


async def test_last_caller_cancelled_stops_the_download(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_fault(Fault.stall(after_bytes=1000, seconds=30, server="cdn"))
    async with HubClient(config(hub, tmp_path)) as client:
        with anyio.fail_after(5):  # cancellation takes effect promptly
            with anyio.move_on_after(0.3) as scope:
                await client.snapshot_download("org/model")
        assert scope.cancelled_caught
        with anyio.fail_after(5):
            while len(client._flights):
                await anyio.sleep(0.01)
    assert leftovers(tmp_path) == []
    snapshots = tmp_path / "models--org--model" / "snapshots"
    for link in snapshots.rglob("*"):
        assert not link.is_symlink() or link.exists()


async def test_close_with_downloads_in_flight(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_fault(Fault.stall(after_bytes=1000, seconds=30, server="cdn"))
    errors: list[BaseException] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg, HubClient(config(hub, tmp_path)) as client:

            async def call() -> None:
                try:
                    await client.snapshot_download("org/model")
                except hubasync.HubError as exc:
                    errors.append(exc)

            tg.start_soon(call)
            await anyio.sleep(0.3)
    assert len(errors) == 1
    assert isinstance(errors[0], hubasync.ClientClosedError)
    assert leftovers(tmp_path) == []


async def test_events_stream_sees_the_whole_run(hub: FakeHub, tmp_path: Path) -> None:
    seen: list[hubasync.Event] = []
    async with HubClient(config(hub, tmp_path)) as client:
        ready = anyio.Event()

        async def listen() -> None:
            async with client.bus.subscribe() as events:
                ready.set()
                async for event in events:
                    seen.append(event)
                    if isinstance(event, hubasync.RunDone):
                        return

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await ready.wait()
            folder = await client.snapshot_download("org/model")
    plan = [e for e in seen if isinstance(e, hubasync.PlanReady)]
    assert len(plan) == 1
    assert plan[0].total_files == len(FILES)
    assert plan[0].total_bytes == sum(map(len, FILES.values()))
    started = {e.path for e in seen if isinstance(e, hubasync.FileStarted)}
    done = {e.path: e for e in seen if isinstance(e, hubasync.FileDone)}
    assert started == set(done) == set(FILES)
    end = seen[-1]
    assert isinstance(end, hubasync.RunDone)
    assert end.ok
    assert end.files == len(FILES)
    on_disk = sum(Path(folder, n).stat().st_size for n in FILES)
    assert end.bytes_downloaded == on_disk
    received = sum(e.delta for e in seen if isinstance(e, hubasync.BytesReceived))
    assert received == on_disk


async def test_events_iterator_api(hub: FakeHub, tmp_path: Path) -> None:
    kinds: list[str] = []
    async with HubClient(config(hub, tmp_path)) as client:

        async def listen() -> None:
            async for event in client.events():
                kinds.append(type(event).__name__)
                if isinstance(event, hubasync.RunDone):
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await anyio.sleep(0.05)
            await client.hf_hub_download("org/model", "config.json")
    assert kinds[0] == "PlanReady"
    assert kinds[-1] == "RunDone"
    assert "FileDone" in kinds


async def test_background_download_handle(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_fault(Fault.stall(after_bytes=1000, seconds=0.3, server="cdn", times=1))
    async with HubClient(config(hub, tmp_path)) as client:
        download = await client.start_snapshot("org/model")
        assert not download.done
        again = await client.start_snapshot("org/model")
        assert again is download
        assert client.get_download(download.id) is download
        with anyio.move_on_after(0.05):  # an impatient waiter does not stop a background one
            await download.wait()
        path = await download.wait()
        assert download.state == "done"
        assert download.path == path
        fresh = await client.start_snapshot("org/model")
        assert fresh is not download  # finished downloads are not joined
        await fresh.wait()


async def test_cancel_a_background_download(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_fault(Fault.stall(after_bytes=1000, seconds=30, server="cdn"))
    async with HubClient(config(hub, tmp_path)) as client:
        download = await client.start_snapshot("org/model")
        await anyio.sleep(0.2)
        download.cancel()
        states = [download.state]  # "cancelling" until its cleanup is done
        with anyio.fail_after(2):
            with pytest.raises(hubasync.ClientClosedError):
                await download.wait()
        states.append(download.state)
        assert states == ["cancelling", "cancelled"]
    assert leftovers(tmp_path) == []
