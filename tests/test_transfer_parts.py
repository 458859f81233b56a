"""The transfer path's parts: vectored writes, windowed hashing, one-step small files, deferred
directory fsyncs, the cache writer's batches, the in-order hash follower and in-process blob locks
(blocking helpers called directly; the rest through real downloads against FakeHub)."""

from __future__ import annotations

import errno
import hashlib
import itertools
import mmap
import os
import random
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import nullcontext, suppress
from functools import partial
from pathlib import Path

import anyio
import pytest

import hubasync
from hubasync import HubClient, HubConfig, RetryConfig
from hubasync import _fileio as fileio
from hubasync._cache_writer import CacheWriter
from hubasync._fileio import Chunk, TempFile
from hubasync._scheduler import SMALL_FILE, KeyedLocks
from hubasync._threads import DiskIO
from hubasync.fastapi import download_status, sse_events
from hubasync.testing import FakeFile, FakeHub, FakeRepo, Fault, RecordedRequest

KiB = 1024
G = mmap.ALLOCATIONGRANULARITY
REPO, STORAGE = "org/parts", "models--org--parts"
BIG, SMALL, NOTES = "big.bin", "small.bin", "notes.txt"  # ranged LFS, small LFS, small regular
TWINS = ("twin-a.bin", "twin-b.bin")  # LFS, the same content
GIT_TWINS = ("a.txt", "sub/b.txt")  # regular files, the same git blob
DATA = {BIG: random.Random(1).randbytes(1536 * KiB), SMALL: random.Random(2).randbytes(100 * KiB),
        NOTES: b"some notes\n" * 300}
DATA |= dict.fromkeys(TWINS, random.Random(3).randbytes(50 * KiB))
DATA |= dict.fromkeys(GIT_TWINS, b"same words\n" * 500)
REGULAR = {*GIT_TWINS, NOTES}


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    repo = FakeRepo(REPO)
    repo.commit({name: FakeFile(data, lfs=name not in REGULAR) for name, data in DATA.items()})
    async with FakeHub(repos=[repo], seed=5) as fake:
        yield fake


def client_for(hub: FakeHub, cache: Path, **overrides: object) -> HubClient:
    retry = RetryConfig(backoff_base=0.01, backoff_max=0.05, max_attempts=5)
    options = {"range_threshold": 1024 * KiB, "chunk_size": 256 * KiB, "retry": retry} | overrides
    return HubClient(HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=cache,
                                        token=False, **options))


def etag(hub: FakeHub, name: str) -> str:
    return hub.repo(REPO).files_at("main")[name].etag


def body_gets(hub: FakeHub, *names: str) -> list[RecordedRequest]:
    """GETs that carried bytes of `names`: CDN blobs (LFS) or resolve-cache (regular files)."""
    tags = {etag(hub, n) for n in names if n not in REGULAR}
    ends = tuple(f"/{n}" for n in names)
    return [r for r in hub.requests if r.method == "GET" and (
        (r.server == "cdn" and r.path.rsplit("/", 1)[-1] in tags)
        or (r.path.startswith("/api/resolve-cache/") and r.path.endswith(ends)))]


def leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.name.endswith((".incomplete", ".tmp"))]


def assert_not_committed(hub: FakeHub, cache: Path, name: str) -> None:
    assert not (cache / STORAGE / "blobs" / etag(hub, name)).exists()
    assert not list(cache.glob(f"{STORAGE}/snapshots/*/{name}"))
    assert leftovers(cache) == []


def record(client: HubClient) -> list[hubasync.Event]:
    events: list[hubasync.Event] = []
    client.bus.add_callback(events.append)
    return events


# -- 1. TempFile.pwrite / _pwrite_all ----------------------------------------------------------


BUFFERS: list[Chunk] = [b"abc", bytearray(b"defghijklmnop"), memoryview(b"0123456789")[2:],
                        b"", b"xyz" * 7]
JOINED = b"".join(bytes(b) for b in BUFFERS)


def test_short_writes_continue(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real, calls = os.pwritev, []

    def at_most_5(fd: int, buffers: Sequence[Chunk], offset: int) -> int:
        calls.append(offset)
        return real(fd, [b"".join(bytes(b) for b in buffers)[:5]], offset)

    monkeypatch.setattr(os, "pwritev", at_most_5)
    temp, hasher = TempFile(str(tmp_path / "t")), hashlib.sha256()
    assert temp.pwrite(BUFFERS, 3, hasher) == len(JOINED)
    temp.close()
    assert (tmp_path / "t").read_bytes() == b"\0" * 3 + JOINED
    assert calls == list(range(3, 3 + len(JOINED), 5))  # each call from where the last stopped
    assert hasher.hexdigest() == hashlib.sha256(JOINED).hexdigest()  # every buffer, in order


def test_more_buffers_than_iov_max(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real, sizes = os.pwritev, []

    def spy(fd: int, buffers: Sequence[Chunk], offset: int) -> int:
        sizes.append(len(buffers))
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", spy)
    parts = [bytes([i % 251]) * 3 for i in range(2 * fileio.IOV_MAX + 7)]
    temp = TempFile(str(tmp_path / "t"))
    assert temp.pwrite(parts, 0) == 3 * len(parts)
    assert temp.pwrite([b"", bytearray()], 0) == 0  # nothing to write is not "no progress"
    temp.close()
    assert (tmp_path / "t").read_bytes() == b"".join(parts)
    assert sizes[:3] == [fileio.IOV_MAX, fileio.IOV_MAX, 7]


def test_no_progress_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[int] = []

    def stuck(fd: int, buffers: Sequence[Chunk], offset: int) -> int:
        calls.append(offset)
        if len(calls) > 3:  # looping: fail with something that is not an OSError
            raise RuntimeError("pwritev called again after no progress")
        return 0

    monkeypatch.setattr(os, "pwritev", stuck)
    temp = TempFile(str(tmp_path / "t"))
    with pytest.raises(OSError, match="no progress") as info:
        temp.pwrite(BUFFERS, 0)
    temp.close()
    assert (info.value.errno, calls) == (errno.EIO, [0])


# -- 2. feed_file / hash_file ------------------------------------------------------------------


BLOB = random.Random(9).randbytes(10 * G + 123)


@pytest.fixture(params=["mmap", "pread"])
def maps(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
         tmp_path: Path) -> list[tuple[int, int]]:
    """BLOB at tmp_path/blob, a 3-granule HASH_WINDOW, and every mmap made (offset, length);
    with "pread" every mmap fails (the fallback is used)."""
    (tmp_path / "blob").write_bytes(BLOB)
    monkeypatch.setattr(fileio, "HASH_WINDOW", 3 * G)
    made, real = list[tuple[int, int]](), mmap.mmap

    def spy(fd: int, length: int, *, offset: int = 0, access: int = 0) -> mmap.mmap:
        made.append((offset, length))
        if request.param == "pread":
            raise OSError(errno.ENODEV, "no mmap here")
        return real(fd, length, offset=offset, access=access)

    monkeypatch.setattr(mmap, "mmap", spy)
    return made


def fed(path: Path, start: int, end: int) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        fileio.feed_file(f.fileno(), hasher, start, end, str(path))
    return hasher.hexdigest()


@pytest.mark.parametrize("start", [0, 1, G - 1, G + 5, 4 * G + 7])
@pytest.mark.parametrize("tail", [0, 17])
def test_feed_file_in_windows(tmp_path: Path, maps: list[tuple[int, int]], start: int,
                              tail: int) -> None:
    end = len(BLOB) - tail
    assert fed(tmp_path / "blob", start, end) == hashlib.sha256(BLOB[start:end]).hexdigest()
    assert len(maps) >= 3  # one window at a time, each aligned and at most HASH_WINDOW long
    assert all(offset % G == 0 and length <= 3 * G for offset, length in maps)
    assert maps[0][0] <= start < maps[0][0] + maps[0][1]


def test_hash_file_digests(tmp_path: Path, maps: list[tuple[int, int]]) -> None:
    path, sha256 = str(tmp_path / "blob"), hashlib.sha256(BLOB).hexdigest()
    git = hashlib.sha1(b"blob %d\0" % len(BLOB) + BLOB, usedforsecurity=False).hexdigest()
    assert [fileio.hash_file(path, e) for e in (sha256, git, "weak")] == [sha256, git, None]


def test_short_file_is_a_cache_error(tmp_path: Path, maps: list[tuple[int, int]]) -> None:
    with pytest.raises(hubasync.CacheError, match="shorter than") as info:
        fed(tmp_path / "blob", 5, len(BLOB) + 1)
    assert type(info.value) is hubasync.CacheError
    assert all(offset + length <= len(BLOB) for offset, length in maps)  # none past the end


# -- 3. store_new ----------------------------------------------------------------------------------


PARTS: list[Chunk] = [b"hello ", memoryview(b"small "), bytearray(b"world")]
WHOLE = b"hello small world"
SHA = hashlib.sha256(WHOLE).hexdigest()
GIT = hashlib.sha1(b"blob 17\0" + WHOLE, usedforsecurity=False).hexdigest()
HEADLESS = hashlib.sha1(WHOLE, usedforsecurity=False).hexdigest()  # a git etag without header


@pytest.mark.parametrize(("right", "wrong"), [(SHA, hashlib.sha256(b"x").hexdigest()),
                                              (GIT, HEADLESS)])
def test_store_new_writes_only_verified_bytes(tmp_path: Path, right: str, wrong: str) -> None:
    path = tmp_path / "a" / "b" / "file"  # missing folders are made
    assert fileio.store_new(str(path), PARTS, right, len(WHOLE)) == right
    assert path.read_bytes() == WHOLE
    assert fileio.store_new(str(tmp_path / "no"), PARTS, wrong, len(WHOLE)) == right
    assert not (tmp_path / "no").exists()
    assert fileio.store_new(str(tmp_path / "raw"), PARTS, None, len(WHOLE)) is None  # unhashed
    assert (tmp_path / "raw").read_bytes() == WHOLE


def test_store_new_never_overwrites(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "old").write_bytes(b"old")
    with pytest.raises(FileExistsError):  # O_EXCL
        fileio.store_new(str(tmp_path / "old"), PARTS, SHA, len(WHOLE))
    assert (tmp_path / "old").read_bytes() == b"old"
    monkeypatch.setattr(os, "pwritev", lambda *_: os.write(-1, b""))  # EBADF: a failed write
    with pytest.raises(OSError, match="Bad file descriptor"):
        fileio.store_new(str(tmp_path / "new"), PARTS, SHA, len(WHOLE))
    assert [p.name for p in tmp_path.iterdir()] == ["old"]  # ...leaves nothing


# -- 4. deferred directory fsyncs ------------------------------------------------------------


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    log: list[str] = []
    monkeypatch.setattr(fileio, "_fsync_dir_now", log.append)
    return log


def test_dir_syncs_are_deferred_once_per_folder(synced: list[str]) -> None:
    with fileio.deferred_dir_syncs():
        for path in ("/b", "/a", "/b", "/a", "/b"):
            fileio.fsync_dir(path)
        with fileio.deferred_dir_syncs():  # nested: the outer block syncs
            fileio.fsync_dir("/c")
        assert synced == []
    assert synced == ["/a", "/b", "/c"]
    fileio.fsync_dir("/d")  # outside a block: at once
    assert synced == ["/a", "/b", "/c", "/d"]


def test_deferral_is_per_thread_and_survives_errors(synced: list[str]) -> None:
    with suppress(ValueError), fileio.deferred_dir_syncs():
        fileio.fsync_dir("/a")
        worker = threading.Thread(target=fileio.fsync_dir, args=("/other",))
        worker.start()
        worker.join()
        assert synced == ["/other"]  # another thread is not deferred
        raise ValueError("an error inside the block")
    fileio.fsync_dir("/b")
    assert synced == ["/other", "/a", "/b"]


# -- 5. the cache writer's batches -------------------------------------------------------------


Step = Callable[[], object]
Job = tuple[Step | None, Step]  # (place, link) for commit(), (None, fn) for submit()


def step(log: list[str], name: str, fails: bool = False, folder: str = "") -> Callable[[], str]:
    def run() -> str:
        log.append(name)
        if folder:
            fileio.fsync_dir(folder)  # as move_into_place does
        if fails:
            raise OSError(errno.EACCES, f"{name} refused")
        return name

    return run


async def run_batched(jobs: Sequence[Job]) -> tuple[CacheWriter, list[object]]:
    """Queue every job behind a first one that blocks, then let it go (they make one batch);
    each job's result or error."""
    outcome: list[object] = [None] * len(jobs)
    gate, busy = threading.Event(), threading.Event()
    writer = CacheWriter(DiskIO(2))

    def blocked() -> None:
        busy.set()
        gate.wait(5)

    async def call(i: int) -> None:
        place, fn = jobs[i]
        try:
            outcome[i] = await (writer.submit(fn) if place is None else writer.commit(place, fn))
        except Exception as exc:
            outcome[i] = exc

    async with anyio.create_task_group() as tg:
        await tg.start(writer.serve)
        tg.start_soon(writer.submit, blocked)
        await anyio.to_thread.run_sync(busy.wait, 5)
        async with anyio.create_task_group() as callers:
            for i in range(len(jobs)):
                callers.start_soon(call, i)
            await anyio.wait_all_tasks_blocked()  # every job is queued behind the gate
            gate.set()
        await writer.aclose()
    return writer, outcome


@pytest.mark.anyio
async def test_jobs_queued_meanwhile_run_in_one_batch() -> None:
    writer, outcome = await run_batched([(None, partial(pow, i, 2)) for i in range(20)])
    assert outcome == [i * i for i in range(20)]
    assert (writer.commits, writer.batches) == (21, 2)
    assert "commits: 21 in 2 batches" in repr(writer)


@pytest.mark.anyio
async def test_every_place_runs_before_any_link(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    monkeypatch.setattr(fileio, "_fsync_dir_now", order.append)

    _, outcome = await run_batched([(step(order, f"p{i}", folder=f"/dir{i % 2}"),
                                     step(order, f"l{i}")) for i in range(4)])
    assert outcome == ["l0", "l1", "l2", "l3"]
    assert order == ["p0", "p1", "p2", "p3", "/dir0", "/dir1", "l0", "l1", "l2", "l3"]


@pytest.mark.anyio
async def test_a_failing_step_fails_only_its_own_job() -> None:
    ran: list[str] = []
    jobs: list[Job] = [(step(ran, f"p{i}", i == 1), step(ran, f"l{i}", i == 2)) for i in range(4)]
    jobs += [(None, step(ran, "bad", True)), (None, step(ran, "plain"))]
    writer, outcome = await run_batched(jobs)
    assert [str(o) if isinstance(o, OSError) else o for o in outcome] == [
        "l0", "[Errno 13] p1 refused", "[Errno 13] l2 refused", "l3",
        "[Errno 13] bad refused", "plain"]
    assert ran == ["p0", "p1", "p2", "p3", "l0", "l2", "l3", "bad", "plain"]  # no l1
    assert (writer.commits, writer.batches) == (4, 2)  # the blocking job, l0, l3, plain


# -- 6. ranged files hashed in order as they arrive ----------------------------------------------


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """A 64 KiB HASH_STEP, and every span the follower hashed, as (start, end)."""
    monkeypatch.setattr("hubasync._follower.HASH_STEP", 64 * KiB)
    spans, original = list[tuple[int, int]](), TempFile.feed

    def spy(self: TempFile, hasher: hashlib._Hash, end: int, start: int = 0) -> None:
        spans.append((start, end))
        original(self, hasher, end, start)

    monkeypatch.setattr(TempFile, "feed", spy)
    return spans


@pytest.mark.anyio
async def test_ranged_file_is_hashed_in_order_in_steps(hub: FakeHub, tmp_path: Path,
                                                       small_steps: list[tuple[int, int]]) -> None:
    async with client_for(hub, tmp_path, max_connections=1) as client:
        path = await client.hf_hub_download(REPO, BIG)
    assert Path(path).read_bytes() == DATA[BIG]
    assert len(small_steps) > 1
    assert (small_steps[0][0], small_steps[-1][1]) == (0, len(DATA[BIG]))
    assert all(a[1] == b[0] for a, b in itertools.pairwise(small_steps))
    assert all(start < end for start, end in small_steps)


@pytest.mark.anyio
async def test_corrupt_ranged_body_is_caught(hub: FakeHub, tmp_path: Path,
                                             small_steps: list[tuple[int, int]]) -> None:
    hub.add_fault(Fault("corrupt", after_bytes=4321, server="cdn", path_glob=f"*{etag(hub, BIG)}"))
    async with client_for(hub, tmp_path) as client:
        events = record(client)
        with pytest.raises(hubasync.IntegrityError):
            await client.hf_hub_download(REPO, BIG)
    assert [e.attempt for e in events if isinstance(e, hubasync.Retrying)] == [1]
    assert len(body_gets(hub, BIG)) == 2 * 6  # six ranges, one clean retry
    assert_not_committed(hub, tmp_path, BIG)


# -- 7. small files: in memory, one step ----------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("twins", [TWINS, GIT_TWINS])
@pytest.mark.parametrize("workers", [None, 1])  # at once, or one after the other
async def test_small_twins_are_fetched_once(hub: FakeHub, tmp_path: Path,
                                            twins: tuple[str, str], workers: int | None) -> None:
    assert len(DATA[twins[0]]) <= SMALL_FILE
    async with client_for(hub, tmp_path) as client:
        folder = await client.snapshot_download(REPO, allow_patterns=list(twins),
                                                 max_workers=workers)
    a, b = (Path(folder, name) for name in twins)
    assert a.read_bytes() == b.read_bytes() == DATA[twins[0]]
    assert a.resolve() == b.resolve() == tmp_path / STORAGE / "blobs" / etag(hub, twins[0])
    assert len(body_gets(hub, *twins)) == 1
    lock = tmp_path / ".locks" / STORAGE / f"{etag(hub, twins[0])}.lock"  # as the official
    assert lock.stat().st_mode & 0o777 == 0o664  # client leaves it (made by filelock)
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
@pytest.mark.parametrize("during", ["body", "commit"])
async def test_small_download_cancelled(hub: FakeHub, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, during: str) -> None:
    temps: list[Path] = []

    async def stuck(*args: object) -> None:  # the written temp file waits for its commit
        temps.extend(await anyio.to_thread.run_sync(leftovers, tmp_path))
        await anyio.sleep_forever()

    monkeypatch.setattr(CacheWriter, "commit", stuck)
    if during == "body":
        hub.add_fault(Fault.stall(after_bytes=1000, seconds=5, server="cdn"))
    async with client_for(hub, tmp_path) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.hf_hub_download, REPO, SMALL)
        with anyio.fail_after(5):
            while not temps and not any(r.fault == "stall" for r in hub.requests):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert len(temps) == (during == "commit")
    assert_not_committed(hub, tmp_path, SMALL)


@pytest.mark.anyio
@pytest.mark.parametrize("name", [SMALL, NOTES])
@pytest.mark.parametrize("times", [1, None])
async def test_small_corrupt_body(hub: FakeHub, tmp_path: Path, name: str,
                                  times: int | None) -> None:
    glob = f"/api/resolve-cache/*/{name}" if name in REGULAR else f"*{etag(hub, name)}"
    hub.add_fault(Fault("corrupt", after_bytes=77, method="GET", path_glob=glob, times=times))
    async with client_for(hub, tmp_path) as client:
        events = record(client)
        with pytest.raises(hubasync.IntegrityError) if times is None else nullcontext():
            path = await client.hf_hub_download(REPO, name)
            assert Path(path).read_bytes() == DATA[name]
    assert [e.attempt for e in events if isinstance(e, hubasync.Retrying)] == [1]
    assert len(body_gets(hub, name)) == 2
    if times is None:
        assert_not_committed(hub, tmp_path, name)
    assert leftovers(tmp_path) == []


# -- 8. KeyedLocks -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_keyed_locks_say_who_waited_and_forget_free_keys() -> None:
    locks, seen, release = KeyedLocks(), list[tuple[str, bool]](), anyio.Event()

    async def hold(name: str, key: str) -> None:
        async with locks.hold(key) as waited:
            seen.append((name, waited))
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold, "first", "k")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(hold, "waiter", "k")
        tg.start_soon(hold, "other", "j")
        await anyio.wait_all_tasks_blocked()
        assert seen == [("first", False), ("other", False)]
        assert repr(locks) == "<KeyedLocks [keys: 2]>"
        release.set()
    assert seen[2] == ("waiter", True)
    assert (locks._locks, repr(locks)) == ({}, "<KeyedLocks [keys: 0]>")


# -- 9. Download state through the SSE view -----------------------------------------------------


@pytest.mark.anyio
async def test_sse_final_status_is_cancelled(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_fault(Fault.stall(after_bytes=1000, seconds=30, server="cdn"))
    frames: list[str] = []
    async with client_for(hub, tmp_path) as client:
        download = await client.start_snapshot(REPO)
        with anyio.fail_after(5):
            async for frame in sse_events(client, download):
                frames.append(frame)
                if len(frames) == 1:
                    download.cancel()
                    assert download_status(download)["state"] == "cancelling"
    assert {frames[0].split("\n")[0], frames[-1].split("\n")[0]} == {"event: status"}
    assert '"state":"cancelled"' in frames[-1]
    assert [download_status(download)[k] for k in ("state", "error")] == ["cancelled", None]
