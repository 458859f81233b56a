"""Every example runs against FakeHub: the FastAPI app (ASGI and a real uvicorn), the script, the
service."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

import hubasync
from examples import fastapi_app, service
from hubasync.testing import FakeHub, FakeRepo, Fault

ROOT = Path(__file__).resolve().parent.parent
FILES = {"config.json": b'{"a": 1}', "tokenizer.json": b"{}" * 1000,
         "model-1.safetensors": b"\x01" * 400_000, "model-2.safetensors": b"\x02" * 400_000}


def make_repo() -> FakeRepo:
    repo = FakeRepo("org/svc")
    repo.commit(FILES)
    return repo


def hub_env(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "home"),
               HF_HUB_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    return env


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    async with FakeHub(repos=[make_repo()]) as fake:
        yield fake


@pytest.fixture
async def api(hub: FakeHub, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    for key, value in hub_env(hub, tmp_path).items():
        monkeypatch.setenv(key, value)
    app = fastapi_app.app
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            yield client


def sse_events(text: str) -> list[str]:
    return [line.removeprefix("event: ") for line in text.splitlines()
            if line.startswith("event: ")]


@pytest.mark.anyio
async def test_post_follow_events_and_get(api: httpx.AsyncClient, tmp_path: Path) -> None:
    created = await api.post("/downloads", json={"repo_id": "org/svc"})
    assert created.status_code == 202
    download_id = created.json()["id"]
    events = await api.get(f"/downloads/{download_id}/events")
    kinds = sse_events(events.text)
    assert kinds[0] == "status"
    assert kinds[-1] == "status"
    assert "plan_ready" in kinds or kinds.count("status") == 2
    status = (await api.get(f"/downloads/{download_id}")).json()
    assert status["state"] == "done"
    assert status["files"]["total"] == len(FILES)
    assert status["bytes"]["done"] == status["bytes"]["total"] == sum(map(len, FILES.values()))
    for name, data in FILES.items():
        assert Path(status["path"], name).read_bytes() == data
    assert str(tmp_path / "cache") in status["path"]
    assert (await api.get("/downloads/nope")).status_code == 404
    bad = await api.post("/downloads", json={"repo_id": "bad//id"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "InvalidRepoIdError"


@pytest.mark.anyio
async def test_ten_concurrent_posts_make_one_download(api: httpx.AsyncClient,
                                                      hub: FakeHub) -> None:
    hub.add_fault(Fault.stall(after_bytes=1000, seconds=0.3, server="cdn", times=2))
    ids: list[str] = []

    async def post() -> None:
        ids.append((await api.post("/downloads", json={"repo_id": "org/svc"})).json()["id"])

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(post)
    assert len(set(ids)) == 1
    await api.get(f"/downloads/{ids[0]}/events")  # ends when the download ends
    cdn_gets = [r for r in hub.requests if r.server == "cdn" and r.method == "GET"]
    assert len(cdn_gets) == 2


@pytest.mark.anyio
async def test_delete_cancels_within_a_second(api: httpx.AsyncClient, hub: FakeHub,
                                              tmp_path: Path) -> None:
    hub.add_fault(Fault.stall(after_bytes=1000, seconds=30, server="cdn"))
    download_id = (await api.post("/downloads", json={"repo_id": "org/svc"})).json()["id"]
    await anyio.sleep(0.3)
    assert (await api.get(f"/downloads/{download_id}")).json()["state"] == "running"
    assert (await api.delete(f"/downloads/{download_id}")).status_code == 200
    with anyio.fail_after(1):  # "cancelled" only once it has stopped and cleaned up
        while (await api.get(f"/downloads/{download_id}")).json()["state"] != "cancelled":
            await anyio.sleep(0.02)
    with anyio.fail_after(2):
        events = await api.get(f"/downloads/{download_id}/events")
    kinds = sse_events(events.text)
    assert kinds[0] == kinds[-1] == "status"
    assert set(kinds) <= {"status", "run_done"}
    assert (await api.get(f"/downloads/{download_id}")).json()["state"] == "cancelled"
    cache = tmp_path / "cache"
    assert not [p for p in cache.rglob("*") if p.name.endswith(".incomplete")]
    for link in cache.rglob("*"):
        assert not link.is_symlink() or link.exists()


@pytest.mark.anyio
async def test_service_worker_logs_structured_progress(
    hub: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="examples.service")
    config = hubasync.HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=tmp_path,
                                         token=False)
    async with hubasync.HubClient(config) as client:
        client.bus.add_callback(service.log_event)
        results = await service.serve(service._from(["org/svc", "org/missing", "org/svc"]),
                                      client)
    assert Path(results["org/svc"], "config.json").read_bytes() == FILES["config.json"]
    assert results["org/missing"].startswith("error: RepositoryNotFoundError")
    kinds = [getattr(r, "event", None) for r in caplog.records]
    assert kinds.count("file_done") == len(FILES)
    assert "run_done" in kinds
    assert "plan" in kinds


@pytest.fixture
def thread_hub() -> Iterator[FakeHub]:
    with FakeHub(repos=[make_repo()]).run_in_thread() as fake:
        yield fake


def test_script_example(thread_hub: FakeHub, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "script.py"), "org/svc", "*.json"],
        env=hub_env(thread_hub, tmp_path), capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "tokenizer.json"]


def test_service_example_cli(thread_hub: FakeHub, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "service.py"), "org/svc"],
        env=hub_env(thread_hub, tmp_path), capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("org/svc\t")
    assert "run done" in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_under_a_real_uvicorn(thread_hub: FakeHub, tmp_path: Path) -> None:
    thread_hub.add_fault(Fault.stall(after_bytes=1000, seconds=1.0, server="cdn", times=2))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        env=hub_env(thread_hub, tmp_path), cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.get("/health")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "uvicorn did not start"
                    time.sleep(0.05)
            download_id = client.post("/downloads", json={"repo_id": "org/svc"}).json()["id"]
            latencies = []
            while client.get(f"/downloads/{download_id}").json()["state"] == "running":
                started = time.perf_counter()
                assert client.get("/health").json() == {"ok": True}
                latencies.append(time.perf_counter() - started)
                time.sleep(0.05)
            status = client.get(f"/downloads/{download_id}").json()
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert status["state"] == "done"
    assert latencies  # the health endpoint answered while the download ran
    assert max(latencies) < 1.0  # generous: shared CI machines; typical is a few ms
    for name, data in FILES.items():
        assert Path(status["path"], name).read_bytes() == data
