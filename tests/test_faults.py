"""The transfer path under fire: every FakeHub fault, for single-stream and ranged files.

Single-stream files are smaller than `range_threshold` (one GET); ranged files are split into
`CHUNK`-sized byte ranges fetched in parallel. Every test checks the bytes that land in the cache
and that nothing half-done is ever committed or left behind.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import pytest

import hubasync
from hubasync import HubClient, HubConfig, RetryConfig
from hubasync._fileio import Chunk, TempFile
from hubasync._ratelimit import TokenBucket
from hubasync._scheduler import SMALL_FILE
from hubasync.testing import (
    DEFAULT_TOKEN,
    FakeFile,
    FakeHub,
    FakeRepo,
    Fault,
    FaultKind,
    RecordedRequest,
)

pytestmark = pytest.mark.anyio

KiB = 1024
MiB = 1024 * KiB
CHUNK = 256 * KiB
THRESHOLD = MiB
REPO = "org/faults"
SINGLE = "small.safetensors"  # LFS, below the threshold: one GET
RANGED = "big.safetensors"  # LFS, 1.5 MiB: six 256 KiB ranges
REGULAR = "config.json"  # a regular (git) file, served by the Hub itself
TOKENIZER = "tokenizer.json"  # a bigger regular file: hashed as a git blob, in order
FAST_RETRY = RetryConfig(backoff_base=0.01, backoff_max=0.05, max_attempts=5)
DATA = {
    SINGLE: random.Random(1).randbytes(600 * KiB),
    RANGED: random.Random(2).randbytes(3 * MiB // 2),
    REGULAR: b'{"model_type": "faults"}',
    TOKENIZER: b'{"vocab": [' + b'"tok", ' * 12_000 + b'"end"]}',
}
BOTH = pytest.mark.parametrize("name", [SINGLE, RANGED])


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    repo = FakeRepo(REPO)
    repo.commit({name: FakeFile(data) for name, data in DATA.items()})
    async with FakeHub(repos=[repo], seed=7) as fake:
        yield fake


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every positional write into a temp file, as (offset, length), in order."""
    log: list[tuple[int, int]] = []
    original = TempFile.pwrite

    def spy(self: TempFile, buffers: Sequence[Chunk], offset: int,
            hasher: object = None) -> int:
        log.append((offset, sum(len(b) for b in buffers)))
        return original(self, buffers, offset, hasher)  # type: ignore[arg-type]

    monkeypatch.setattr(TempFile, "pwrite", spy)
    return log


def client_for(hub: FakeHub, cache: Path, *, token: str | bool = False,
               **overrides: object) -> HubClient:
    options: dict[str, object] = {"range_threshold": THRESHOLD, "chunk_size": CHUNK,
                                  "retry": FAST_RETRY}
    options.update(overrides)
    return HubClient(HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=cache,
                                        token=token, **options))


def record(client: HubClient) -> list[hubasync.Event]:
    events: list[hubasync.Event] = []
    client.bus.add_callback(events.append)
    return events


def sha(hub: FakeHub, name: str) -> str:
    return hub.repo(REPO).files_at("main")[name].sha256


def storage(cache: Path) -> Path:
    return cache / f"models--{REPO.replace('/', '--')}"


def cdn_gets(hub: FakeHub, name: str) -> list[RecordedRequest]:
    blob = sha(hub, name)
    return [r for r in hub.requests
            if r.server == "cdn" and r.method == "GET" and r.path.endswith(blob)]


def body_gets(hub: FakeHub, name: str) -> list[RecordedRequest]:
    """The GETs that carried `name`'s bytes: CDN blobs for LFS files, resolve-cache otherwise."""
    if hub.repo(REPO).files_at("main")[name].lfs:
        return cdn_gets(hub, name)
    return [r for r in hub.requests if r.method == "GET"
            and r.path.startswith("/api/resolve-cache/") and r.path.endswith(f"/{name}")]


def span(request: RecordedRequest, size: int) -> tuple[int, int]:
    """The inclusive byte span a GET asked for (the whole file without a Range header)."""
    if request.range is None:
        return 0, size - 1
    first, _, last = request.range.removeprefix("bytes=").partition("-")
    return int(first), int(last) if last else size - 1


def temp_files(cache: Path) -> list[Path]:
    return list(cache.rglob("*.incomplete"))


def assert_cache_valid(cache: Path) -> None:
    """No temp file left; every pointer leads to a blob; every ref to a snapshot."""
    assert temp_files(cache) == []
    root = storage(cache)
    for path in (root / "snapshots").rglob("*"):
        if path.is_symlink():
            target = path.resolve()
            assert target.is_file(), f"dangling pointer {path}"
            assert target.parent == (root / "blobs").resolve()
    for ref in (root / "refs").rglob("*") if (root / "refs").exists() else ():
        if ref.is_file():
            assert (root / "snapshots" / ref.read_text()).is_dir()


def assert_not_committed(hub: FakeHub, cache: Path, name: str) -> None:
    root = storage(cache)
    assert not (root / "blobs" / sha(hub, name)).exists()
    assert not list(root.glob(f"snapshots/*/{name}"))
    assert_cache_valid(cache)


def retrying(events: list[hubasync.Event], name: str) -> list[hubasync.Retrying]:
    return [e for e in events if isinstance(e, hubasync.Retrying) and e.path == name]


# -- 1. rate limits --------------------------------------------------------------------------------


@BOTH
async def test_429_on_cdn_pauses_the_host(hub: FakeHub, tmp_path: Path, name: str) -> None:
    hub.add_fault(Fault.rate_limit(1, server="cdn", method="GET", times=1))
    # One connection: every CDN request is sent after the previous answer arrived, so "after the
    # 429" is exact; other ranges are free to go during the retry delay, only the gate stops them.
    async with client_for(hub, tmp_path, max_connections=1) as client:
        events = record(client)
        path = await client.hf_hub_download(REPO, name)
    assert Path(path).read_bytes() == DATA[name]
    cdn = [r for r in hub.requests if r.server == "cdn"]
    limited = [i for i, r in enumerate(cdn) if r.status == 429]
    assert len(limited) == 1
    after = cdn[limited[0] + 1:]
    assert after
    assert min(r.time for r in after) >= cdn[limited[0]].time + 1.0
    paused = [e for e in events if isinstance(e, hubasync.RateLimited)]
    assert [(e.host, e.wait) for e in paused] == [(hub.cdn_endpoint.split("//")[1], 1.0)]
    assert any(e.delay == pytest.approx(1.0) for e in retrying(events, name))
    assert_cache_valid(tmp_path)


# -- 2. server errors, permanent refusals -------------------------------------------------------


@BOTH
async def test_503_is_retried(hub: FakeHub, tmp_path: Path, name: str) -> None:
    hub.add_fault(Fault.server_error(503, server="cdn", path_glob=f"*{sha(hub, name)}", times=3))
    async with client_for(hub, tmp_path) as client:
        events = record(client)
        folder = await client.snapshot_download(REPO)
    assert Path(folder, name).read_bytes() == DATA[name]
    assert len([r for r in cdn_gets(hub, name) if r.status == 503]) == 3
    assert [e for e in events if isinstance(e, hubasync.Retrying)] == retrying(events, name)
    assert ["ServerError" in e.reason for e in retrying(events, name)] == [True] * 3
    assert_cache_valid(tmp_path)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (404, "EntryNotFound", hubasync.RemoteEntryNotFoundError),
        (403, None, hubasync.HubHTTPError),
    ],
)
@BOTH
async def test_permanent_hub_refusal_is_not_retried(
    hub: FakeHub, tmp_path: Path, name: str, status: int, code: str | None,
    expected: type[Exception],
) -> None:
    headers = {"X-Error-Code": code} if code else {}
    hub.add_fault(Fault("status", status=status, headers=headers, server="hub",
                        path_glob=f"*/resolve/*/{name}"))
    async with client_for(hub, tmp_path) as client:
        with pytest.raises(hubasync.SnapshotError) as info:
            await client.snapshot_download(REPO)
    error = info.value.errors[name]
    assert type(error) is expected
    assert isinstance(error, hubasync.HubHTTPError)
    assert error.status == status
    assert list(info.value.errors) == [name]
    refused = [r for r in hub.requests if r.server == "hub" and r.path.endswith(f"/{name}")]
    assert len(refused) == 1  # not retried
    assert_not_committed(hub, tmp_path, name)
    other = SINGLE if name == RANGED else RANGED
    assert (storage(tmp_path) / "blobs" / sha(hub, other)).read_bytes() == DATA[other]


@BOTH
async def test_permanent_cdn_403_ends(hub: FakeHub, tmp_path: Path, name: str) -> None:
    """A CDN that refuses every signed URL: re-resolving is tried, but not forever."""
    hub.add_fault(Fault("status", status=403, server="cdn", message="AccessDenied"))
    async with client_for(hub, tmp_path) as client:
        with pytest.raises(hubasync.HubHTTPError) as info:
            await client.hf_hub_download(REPO, name)
    assert info.value.status == 403
    # per range: the signed URL refused, then the renewed one (one HEAD, shared) refused for
    # good; ranges in flight at once may each get that far before the first failure stops them
    ranges = 1 if name == SINGLE else -(-len(DATA[RANGED]) // CHUNK)
    assert len(cdn_gets(hub, name)) <= 2 * ranges
    assert_not_committed(hub, tmp_path, name)


# -- 3. dropped connections --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [SINGLE, RANGED, TOKENIZER])
async def test_drop_resumes_where_it_stopped(hub: FakeHub, tmp_path: Path, name: str,
                                             writes: list[tuple[int, int]]) -> None:
    size = len(DATA[name])
    hub.add_fault(Fault.drop(after_bytes=50_000, method="GET", times=1))  # the body, on either host
    async with client_for(hub, tmp_path) as client:
        events = record(client)
        path = await client.hf_hub_download(REPO, name)
    assert Path(path).read_bytes() == DATA[name]
    gets = body_gets(hub, name)
    cut = next(i for i, r in enumerate(gets) if r.fault == "drop")
    start, end = span(gets[cut], size)
    resumed = [r for r in gets[cut + 1:] if span(r, size)[1] == end]
    assert len(resumed) == 1
    kept = span(resumed[0], size)[0] - start
    assert 0 < kept <= 50_000  # not 0, not the range start: from what arrived before the drop
    if size > SMALL_FILE:  # written to the temp file before the drop (small files stay in memory)
        assert next(n for offset, n in writes if offset == start) == kept
    assert len(retrying(events, name)) == 1
    assert_cache_valid(tmp_path)


# -- 4. stalls -----------------------------------------------------------------------------------


@BOTH
async def test_stall_times_out_and_resumes(hub: FakeHub, tmp_path: Path, name: str) -> None:
    size = len(DATA[name])
    hub.add_fault(Fault.stall(after_bytes=50_000, seconds=5, server="cdn", method="GET",
                              times=1))
    async with client_for(hub, tmp_path, download_timeout=0.3) as client:
        events = record(client)
        path = await client.hf_hub_download(REPO, name)
    assert Path(path).read_bytes() == DATA[name]
    assert any("ReadTimeout" in e.reason for e in retrying(events, name))
    gets = cdn_gets(hub, name)
    stalled = next(r for r in gets if r.fault == "stall")
    start, end = span(stalled, size)
    assert any(span(r, size) == (start + 50_000, end) for r in gets)
    assert_cache_valid(tmp_path)


# -- 5. corrupt bodies ------------------------------------------------------------------------------


@BOTH
async def test_corrupt_once_gets_one_clean_retry(hub: FakeHub, tmp_path: Path,
                                                 name: str) -> None:
    hub.add_fault(Fault("corrupt", after_bytes=1234, server="cdn", method="GET", times=1))
    async with client_for(hub, tmp_path) as client:
        events = record(client)
        path = await client.hf_hub_download(REPO, name)
    assert Path(path).read_bytes() == DATA[name]
    assert [e.attempt for e in retrying(events, name)] == [1]
    assert_cache_valid(tmp_path)


@BOTH
async def test_always_corrupt_raises_integrity_error(hub: FakeHub, tmp_path: Path,
                                                     name: str) -> None:
    hub.add_fault(Fault("corrupt", after_bytes=1234, server="cdn", path_glob=f"*{sha(hub, name)}"))
    async with client_for(hub, tmp_path) as client:
        with pytest.raises(hubasync.IntegrityError) as direct:
            await client.hf_hub_download(REPO, name)
        assert direct.value.path == name
        assert_not_committed(hub, tmp_path, name)
        per_try = len(cdn_gets(hub, name))
        assert per_try == 2 * (1 if name == SINGLE else len(DATA[RANGED]) // CHUNK)
        with pytest.raises(hubasync.SnapshotError) as wrapped:
            await client.snapshot_download(REPO)
    assert list(wrapped.value.errors) == [name]
    assert isinstance(wrapped.value.errors[name], hubasync.IntegrityError)
    assert len(cdn_gets(hub, name)) == 2 * per_try  # one clean retry, then give up
    assert_not_committed(hub, tmp_path, name)
    other = SINGLE if name == RANGED else RANGED
    assert (storage(tmp_path) / "blobs" / sha(hub, other)).read_bytes() == DATA[other]


# -- 6. a HEAD that lies about the size ----------------------------------------------------------


@pytest.mark.parametrize("shift", [4096, -4096])
@BOTH
async def test_lie_size_raises_and_never_overwrites(
    hub: FakeHub, tmp_path: Path, name: str, shift: int, writes: list[tuple[int, int]],
) -> None:
    claimed = len(DATA[name]) + shift
    hub.add_fault(Fault("lie_size", after_bytes=shift, server="hub", method="HEAD"))
    async with client_for(hub, tmp_path) as client:
        with pytest.raises(hubasync.IntegrityError):
            await client.hf_hub_download(REPO, name)
    assert all(offset + n <= claimed for offset, n in writes)
    assert_not_committed(hub, tmp_path, name)


# -- 7. servers that answer ranges badly -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ignore_range", "wrong_range"])
async def test_bad_range_answer_on_resume(hub: FakeHub, tmp_path: Path,
                                          kind: FaultKind) -> None:
    hub.add_fault(Fault.drop(after_bytes=100_000, server="cdn", method="GET", times=1))
    hub.add_fault(Fault(kind, server="cdn", times=1))  # hits the resume, the first 206
    async with client_for(hub, tmp_path) as client:
        path = await client.hf_hub_download(REPO, SINGLE)
    assert Path(path).read_bytes() == DATA[SINGLE]
    assert any(r.fault == kind for r in hub.requests)
    assert_cache_valid(tmp_path)


@pytest.mark.parametrize(("kind", "times"),
                         [("ignore_range", 2), ("ignore_range", None), ("wrong_range", 2)])
async def test_bad_range_answers_on_ranged_file(hub: FakeHub, tmp_path: Path, kind: FaultKind,
                                                times: int | None) -> None:
    hub.add_fault(Fault(kind, server="cdn", times=times))
    async with client_for(hub, tmp_path) as client:
        folder = await client.snapshot_download(REPO)
    assert Path(folder, RANGED).read_bytes() == DATA[RANGED]
    assert sum(r.fault == kind for r in hub.requests) >= (times or 6)
    assert_cache_valid(tmp_path)


async def test_always_wrong_range_fails_without_commit(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_fault(Fault("wrong_range", after_bytes=7, server="cdn"))
    async with client_for(hub, tmp_path) as client:
        with pytest.raises(hubasync.TransientError):
            await client.hf_hub_download(REPO, RANGED)
    assert_not_committed(hub, tmp_path, RANGED)


# -- 8. signed CDN URLs that expire mid-way ------------------------------------------------------


async def test_expired_cdn_url_is_re_resolved(hub: FakeHub, tmp_path: Path) -> None:
    def travel(event: hubasync.Event) -> None:  # after the first range: two hours later
        if isinstance(event, hubasync.BytesReceived):
            hub.now = lambda: time.time() + 7200

    async with client_for(hub, tmp_path, token=DEFAULT_TOKEN, max_connections=2) as client:
        client.bus.add_callback(travel)
        folder = await client.snapshot_download(REPO, allow_patterns=[RANGED])
    assert Path(folder, RANGED).read_bytes() == DATA[RANGED]
    log = hub.requests
    assert all("authorization" not in r.headers for r in log if r.server == "cdn")
    assert all("authorization" in r.headers for r in log if r.server == "hub")
    first_403 = next(i for i, r in enumerate(log) if r.server == "cdn" and r.status == 403)
    heads = [r for r in log[first_403:] if r.method == "HEAD" and r.server == "hub"]
    assert len(heads) == 1  # one fresh HEAD, shared by every range that saw the 403
    assert any(r.status == 206 for r in log[first_403:] if r.server == "cdn")
    assert_cache_valid(tmp_path)


# -- 9. cancellation ---------------------------------------------------------------------------------


async def test_cancel_mid_transfer_leaves_a_valid_cache(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_fault(Fault.stall(after_bytes=64 * KiB, seconds=5, server="cdn", method="GET"))
    async with client_for(hub, tmp_path, max_connections=4) as client:
        events = record(client)
        with anyio.move_on_after(0.5) as scope:
            await client.snapshot_download(REPO)
        assert scope.cancelled_caught
        assert [e.ok for e in events if isinstance(e, hubasync.RunDone)] == [False]
        assert time.monotonic() - scope.deadline < 1.0
        assert any(r.fault == "stall" for r in hub.requests)  # it was cut mid-transfer
        assert_cache_valid(tmp_path)  # once the call has returned: no temp file left
        assert not (storage(tmp_path) / "refs" / "main").exists()
        hub.clear_faults()  # the same client goes on, and finishes the job
        folder = await client.snapshot_download(REPO)
    for name, data in DATA.items():
        assert Path(folder, name).read_bytes() == data
    assert_cache_valid(tmp_path)


# -- 10. everything at once --------------------------------------------------------------------------


IN_FLIGHT = 0.3  # seconds for a request sent before the 429 arrived to reach the server


@pytest.mark.parametrize("connections", [8, 1])
async def test_mixed_fault_soak(tmp_path: Path, connections: int) -> None:
    """5% 429 (Retry-After: 1), 5% 503, 20% of CDN bodies cut: every file lands verified. With
    one connection every request is sent after the previous answer, so "no request reaches a
    host before its Retry-After has passed" is checked exactly."""
    rng = random.Random(10)
    files: dict[str, bytes] = {}
    for i in range(20):
        size = rng.choice([200, 30 * KiB, 300 * KiB, 1200 * KiB]) if i % 5 else 1300 * KiB
        suffix = ".json" if size < 100_000 and i % 2 else ".bin"
        files[f"part-{i:02d}{suffix}"] = rng.randbytes(size)
    repo = FakeRepo("org/soak")
    repo.commit(files)
    async with FakeHub(repos=[repo], seed=3) as hub:
        faults = [
            Fault.rate_limit(1, method="GET", probability=0.05, times=2),
            Fault.server_error(503, method="GET", probability=0.05, times=10),
            Fault.drop(after_bytes=40_000, server="cdn", probability=0.2),
        ]
        for fault in faults:
            hub.add_fault(fault)
        cache = tmp_path / "cache"
        async with client_for(hub, cache, max_connections=connections) as client:
            events = record(client)
            folder = await client.snapshot_download("org/soak")
        assert all(hub.fault_hits(fault) for fault in faults[1:])
        if connections == 1:
            assert hub.fault_hits(faults[0])
        # Requests already on their way when the 429 was answered may still arrive (with one
        # connection there are none); after that, nothing reaches the host until Retry-After.
        in_flight = 0.0 if connections == 1 else IN_FLIGHT
        for i, limited in enumerate(hub.requests):
            if limited.status == 429:
                later = [r for r in hub.requests[i + 1:] if r.server == limited.server
                         and r.time > limited.time + in_flight]
                assert min(r.time for r in later) >= limited.time + 1.0
    for name, data in files.items():
        assert Path(folder, name).read_bytes() == data
    assert any(isinstance(e, hubasync.Retrying) for e in events)
    assert not list(cache.rglob("*.incomplete"))


# -- 11. bandwidth cap ----------------------------------------------------------------------------


@BOTH
async def test_bandwidth_cap_is_applied(hub: FakeHub, tmp_path: Path, name: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[int] = []
    original = TokenBucket.acquire

    async def spy(self: TokenBucket, n: int) -> None:
        taken.append(n)
        await original(self, n)

    monkeypatch.setattr(TokenBucket, "acquire", spy)
    async with client_for(hub, tmp_path, max_bandwidth=MiB) as client:
        path = await client.hf_hub_download(REPO, name)
    assert Path(path).read_bytes() == DATA[name]
    assert sum(taken) >= len(DATA[name])


# -- 12. disk space ---------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["snapshot", "file"])
async def test_insufficient_disk_space_before_any_get(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: str,
) -> None:
    def tiny(path: object) -> shutil._ntuple_diskusage:
        return shutil._ntuple_diskusage(10 * MiB, 10 * MiB - 4096, 4096)

    monkeypatch.setattr("hubasync._fileio.shutil.disk_usage", tiny)
    async with client_for(hub, tmp_path) as client:
        events = record(client)
        download = (client.snapshot_download(REPO) if api == "snapshot"
                    else client.hf_hub_download(REPO, RANGED))
        with pytest.raises(hubasync.InsufficientDiskSpaceError) as info:
            await download
    assert [e.ok for e in events if isinstance(e, hubasync.RunDone)] == [False]
    expected = sum(map(len, DATA.values())) if api == "snapshot" else len(DATA[RANGED])
    assert info.value.needed == expected
    assert info.value.available == 4096
    assert not [r for r in hub.requests
                if r.method == "GET" and (r.server == "cdn" or "/resolve/" in r.path)]
    assert temp_files(tmp_path) == []


@pytest.mark.anyio
async def test_disk_full_mid_download_is_a_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while writing: InsufficientDiskSpaceError, nothing at a final path."""
    real_pwritev = os.pwritev
    calls = {"n": 0}

    def full_disk(fd: int, buffers: Sequence[memoryview], offset: int) -> int:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwritev(fd, buffers, offset)

    repo = FakeRepo("org/full")
    repo.commit({"weights.bin": FakeFile(bytes(range(256)) * 12_000, lfs=True)})
    async with FakeHub(repos=[repo]) as hub:
        monkeypatch.setattr(os, "pwritev", full_disk)  # the call in hubasync._fileio
        config = HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=tmp_path, token=False)
        async with HubClient(config) as client:
            with pytest.raises(hubasync.InsufficientDiskSpaceError):
                await client.hf_hub_download("org/full", "weights.bin")
    monkeypatch.undo()
    storage = tmp_path / "models--org--full"
    assert not [p for p in (storage / "blobs").glob("*") if not p.name.endswith(".incomplete")]
    assert not list((storage / "snapshots").rglob("weights.bin"))
