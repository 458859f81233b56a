"""Resume across processes: a download that is killed (SIGKILL), cancelled or fails is continued by
the next attempt from what is on disk, and only from there; what cannot be trusted is discarded.

Children run tests/_download_child.py, or this very file (``python tests/test_resume.py ARGS``),
which is the same child without the blob lock, as on a filesystem where flock is a no-op. The
FakeHub stalls every body after a set number of bytes, so a kill lands at a known point: each range
has flushed (and recorded) whole MiBs and holds the rest in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import pytest

import hubasync
import hubasync._fallocate
from hubasync import HubClient, HubConfig
from hubasync._cache_layout import PARKED_SUFFIX
from hubasync._claim import (
    FOREIGN_TTL,
    UNREADABLE_GRACE,
    Owner,
    boot_id,
    claim,
    holds,
    host_id,
    is_stale,
    process_start,
    release,
)
from hubasync._scheduler import DISK_MARGIN
from hubasync._spans import STATE_VERSION, ResumeState, resume_point
from hubasync.testing import FakeFile, FakeHub, FakeRepo, Fault

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

hf: Any = pytest.importorskip("huggingface_hub")

MiB = 1 << 20
CHUNK = 4 * MiB
RANGES = 6
REPO_ID = "org/resume"
STORAGE = "models--org--resume"
NAME = "model.safetensors"  # LFS, 6 ranges of 4 MiB with RANGED
RANGED = {"chunk_size": CHUNK, "range_threshold": CHUNK}
HERE = Path(__file__)
DOWNLOAD_CHILD = HERE.with_name("_download_child.py")
ROOT = HERE.parent.parent
WAIT = 30.0


def _random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def make_repo() -> FakeRepo:
    repo = FakeRepo(REPO_ID)
    repo.commit({
        NAME: _random_bytes(1, RANGES * CHUNK),
        "stream.bin": FakeFile(_random_bytes(2, 3 * MiB + 12_345), lfs=True),  # one stream
        "regular.bin": FakeFile(_random_bytes(3, 3 * MiB + 777), lfs=False),  # git blob
    })
    return repo


def file_of(hub: FakeHub, name: str = NAME) -> FakeFile:
    return hub.repo(REPO_ID).files_at("main")[name]


# -- what is on disk -----------------------------------------------------------------------------


def states(root: Path) -> list[Path]:
    return sorted(root.rglob("*.hubasync.state"))


def read_state(root: Path) -> dict[str, Any] | None:
    found = states(root)
    if not found:
        return None
    with contextlib.suppress(OSError, ValueError):
        data: dict[str, Any] = json.loads(found[0].read_bytes())
        return data
    return None


def recorded(root: Path) -> int:
    state = read_state(root)
    return sum(state["written"]) if state else 0


def least_recorded(root: Path) -> int:
    state = read_state(root)
    return min(state["written"]) if state else 0


def leftovers(root: Path) -> list[str]:
    """Temp and resume files (none may stay once a download has succeeded)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if ".hubasync." in p.name or p.name.endswith((".incomplete", ".tmp")))


def assert_blob(cache: Path, fake: FakeFile) -> None:
    blob = cache / STORAGE / "blobs" / fake.etag
    assert blob.read_bytes() == fake.data
    report = hf.scan_cache_dir(cache)
    assert report.warnings == []


# -- what was asked for --------------------------------------------------------------------------


def body_gets(hub: FakeHub, fake: FakeFile) -> list[tuple[int, int]]:
    """The inclusive byte spans of the GETs that carried `fake`'s bytes, in arrival order."""
    spans = []
    for r in hub.requests:
        if r.method != "GET" or not r.status:
            continue
        lfs_body = r.server == "cdn" and r.path.endswith(fake.sha256)
        git_body = r.server == "hub" and r.path.startswith("/api/resolve-cache/") and \
            not fake.lfs and r.path.endswith("/regular.bin")
        if lfs_body or git_body:
            spans.append(_span(r.range, fake.size))
    return spans


def _span(header: str | None, size: int) -> tuple[int, int]:
    if header is None:
        return 0, size - 1
    first, _, last = header.removeprefix("bytes=").partition("-")
    return int(first), int(last) if last else size - 1


def asked(spans: list[tuple[int, int]]) -> int:
    return sum(b - a + 1 for a, b in spans)


def full_ranges(size: int = RANGES * CHUNK) -> list[tuple[int, int]]:
    return [(s, min(s + CHUNK, size) - 1) for s in range(0, size, CHUNK)]


def stall(fake: FakeFile, after: int, seconds: float = 60) -> Fault:
    if fake.lfs:
        return Fault.stall(after_bytes=after, seconds=seconds, server="cdn", method="GET",
                           path_glob=f"/repos/*/{fake.sha256}")
    return Fault.stall(after_bytes=after, seconds=seconds, server="hub", method="GET",
                       path_glob="/api/resolve-cache/*")


# -- child processes -----------------------------------------------------------------------------


def start_child(hub: FakeHub, cache: Path, *, name: str = NAME, locked: bool = True,
                config: dict[str, Any] | None = None) -> subprocess.Popen[str]:
    args = {"endpoint": hub.endpoint, "cache_dir": str(cache), "repo_id": REPO_ID,
            "filename": name, "config": RANGED if config is None else config}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    script = DOWNLOAD_CHILD if locked else HERE
    return subprocess.Popen([sys.executable, str(script), json.dumps(args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], *, kill: bool = False) -> tuple[int, str, str]:
    if kill:
        proc.kill()
    out, err = proc.communicate(timeout=WAIT)
    return proc.returncode, out, err


def wait_until(cond: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        if proc.poll() is not None:
            _, out, err = finish(proc)
            pytest.fail(f"child exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            finish(proc, kill=True)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(repos=[make_repo()]).run_in_thread() as fake:
        yield fake


# -- SIGKILL, then another process ---------------------------------------------------------------


def test_sigkill_at_half_then_resume_refetches_only_the_unflushed_tails(
    hub: FakeHub, tmp_path: Path
) -> None:
    fake = file_of(hub)
    cut = 2 * MiB + MiB // 2  # per range: 2 MiB flushed and recorded, 0.5 MiB in memory
    hub.add_fault(stall(fake, cut))
    cache = tmp_path / "cache"
    child = start_child(hub, cache)
    wait_until(lambda: least_recorded(cache) >= 2 * MiB, child, "half of the file recorded")
    assert finish(child, kill=True)[0] == -9

    state = read_state(cache)
    assert state is not None
    written = state["written"]
    assert all(2 * MiB <= w <= cut for w in written)  # about 50% of the file
    # what a kill leaves: a temp shaped like the official client's, which it lists as incomplete
    (partial,) = (cache / STORAGE / "blobs").glob("*.incomplete")
    assert partial.name.startswith(f"{fake.etag}.") and partial.name != f"{fake.etag}.incomplete"
    report = hf.scan_cache_dir(cache)
    assert report.warnings == []
    assert [f.file_path.name for f in report.incomplete_files] == [partial.name]

    hub.clear_faults()
    hub.clear_requests()
    code, out, err = finish(start_child(hub, cache))
    assert code == 0, err
    spans = body_gets(hub, fake)
    assert sorted(spans) == [(s + w, e) for (s, e), w in zip(full_ranges(), written, strict=True)]
    received_before = RANGES * cut
    again = asked(spans) - (fake.size - received_before)
    print(f"killed with {sum(written) / fake.size:.1%} recorded; fetched again: {again} bytes, "
          f"{again / RANGES / CHUNK:.3f} chunk per connection")  # shown with -s / -rP
    assert again == sum(cut - w for w in written)  # only the tails that were still in memory
    assert again / RANGES < MiB // 2 + 1  # the target is one chunk (4 MiB) per connection
    assert out.strip().splitlines()[-1].endswith(f"/{NAME}")
    assert_blob(cache, fake)
    assert leftovers(cache) == []


@pytest.mark.parametrize("name", ["stream.bin", "regular.bin"], ids=["lfs-sha256", "git-sha1"])
def test_single_stream_resume_after_sigkill_hashes_the_prefix(hub: FakeHub, tmp_path: Path,
                                                             name: str) -> None:
    fake = file_of(hub, name)
    hub.add_fault(stall(fake, 2 * MiB + MiB // 2))  # 2 MiB or more flushed, the rest in memory
    cache = tmp_path / "cache"
    child = start_child(hub, cache, name=name)
    wait_until(lambda: recorded(cache) >= 2 * MiB, child, "2 MiB recorded")
    assert finish(child, kill=True)[0] == -9
    kept = recorded(cache)

    hub.clear_faults()
    hub.clear_requests()
    code, _, err = finish(start_child(hub, cache, name=name))
    assert code == 0, err
    # one request, for the rest; a wrong in-order hash would have refetched it all
    assert body_gets(hub, fake) == [(kept, fake.size - 1)]
    assert_blob(cache, fake)
    assert leftovers(cache) == []


def test_resume_after_repeated_kills_at_arbitrary_points(hub: FakeHub, tmp_path: Path) -> None:
    """Throttled, killed after growing delays: each resume asks only for what is not recorded,
    and what it asks again of what was on disk is at most one chunk per connection."""
    fake = file_of(hub)
    cache = tmp_path / "cache"
    config = {**RANGED, "max_bandwidth": 12 * MiB}
    for delay in (0.3, 0.6, 0.6):
        hub.clear_requests()
        child = start_child(hub, cache, config=config)
        wait_until(lambda: bool(body_gets(hub, fake)), child, "the first body request")
        time.sleep(delay)
        finish(child, kill=True)
        on_disk = _correct_bytes(cache, fake)
        state = read_state(cache)
        if state is None:
            continue
        starts = [s + w for (s, _), w in zip(full_ranges(), state["written"], strict=True)]
        hub.clear_requests()
        code, _, err = finish(start_child(hub, cache))  # the resume runs at full speed
        assert code == 0, err
        spans = body_gets(hub, fake)
        assert sorted(a for a, _ in spans) == [s for s, (_, e) in
                                               zip(starts, full_ranges(), strict=True) if s <= e]
        again = asked(spans) - (fake.size - on_disk)  # on disk, but not recorded
        assert again <= RANGES * 2 * MiB  # the target is one chunk (4 MiB) per connection
        assert_blob(cache, fake)
        (cache / STORAGE / "blobs" / fake.etag).unlink()
        for link in (cache / STORAGE / "snapshots").rglob(NAME):
            link.unlink()


def _correct_bytes(cache: Path, fake: FakeFile) -> int:
    """How many bytes of the partial download on disk are right (each range from its start)."""
    found = [*(cache / STORAGE / "blobs").glob("*.incomplete"),
             *(cache / ".locks" / STORAGE).glob("*.hubasync.part")]
    if not found:
        return 0
    data = found[0].read_bytes()
    return sum(_common_prefix(data[s:e + 1], fake.data[s:e + 1]) for s, e in full_ranges())


def _common_prefix(got: bytes, want: bytes, block: int = 64 * 1024) -> int:
    n = 0
    while n < min(len(got), len(want)) and got[n:n + block] == want[n:n + block]:
        n += block
    tail = zip(got[n:n + block], want[n:n + block], strict=False)
    return min(n + next((i for i, (a, b) in enumerate(tail) if a != b), block),
               len(got), len(want))


# -- cancellation, failures, discarded states (in process) ---------------------------------------


async def fetch(hub: FakeHub, cache: Path, *, name: str = NAME, local_dir: Path | None = None,
                force: bool = False, events: list[hubasync.Event] | None = None) -> str:
    config = HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=cache, token=False,
                                **RANGED)
    async with HubClient(config) as client:
        if events is not None:
            client.bus.add_callback(events.append)
        return await client.hf_hub_download(REPO_ID, name, local_dir=local_dir,
                                            force_download=force)


async def _cancel_when(scope: anyio.CancelScope, cond: Callable[[], bool]) -> None:
    with anyio.fail_after(WAIT):
        while not cond():
            await anyio.sleep(0.01)
    scope.cancel()


async def cancelled_fetch(hub: FakeHub, root: Path, *, local_dir: Path | None = None) -> list[int]:
    """Start a download whose bodies stall after 1.5 MiB, cancel it once each range has
    recorded 1 MiB; return what the kept state records per range."""
    hub.add_fault(stall(file_of(hub), 3 * MiB // 2))
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as scope:
            tg.start_soon(_cancel_when, scope, lambda: recorded(root) >= RANGES * MiB)
            await fetch(hub, root / "cache", local_dir=local_dir)
    assert scope.cancelled_caught
    hub.clear_faults()
    hub.clear_requests()
    state = read_state(root)
    assert state is not None
    written: list[int] = state["written"]
    return written


@pytest.fixture
async def ahub() -> AsyncIterator[FakeHub]:
    async with FakeHub(repos=[make_repo()]) as fake:
        yield fake


def _parked(root: Path) -> Path:
    (parked,) = root.rglob("*.hubasync.part")
    return parked


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["cache", "local_dir"])
async def test_cancelled_download_keeps_its_state_and_the_rerun_resumes(
    ahub: FakeHub, tmp_path: Path, mode: str
) -> None:
    fake = file_of(ahub)
    local_dir = tmp_path / "local" if mode == "local_dir" else None
    written = await cancelled_fetch(ahub, tmp_path, local_dir=local_dir)
    # the buffer in memory was flushed on cancellation: up to 1.5 MiB per range
    assert all(MiB <= w <= 3 * MiB // 2 for w in written)
    # closed and out of sight: no temp file, no owner; the data file parked with its state
    assert [n for n in leftovers(tmp_path) if n.endswith((".incomplete", ".tmp", ".owner"))] == []
    assert _parked(tmp_path).stat().st_size >= (RANGES - 1) * CHUNK + written[-1]
    if local_dir is None:
        assert _parked(tmp_path).parent == tmp_path / "cache" / ".locks" / STORAGE
        assert hf.scan_cache_dir(tmp_path / "cache").warnings == []

    events: list[hubasync.Event] = []
    path = await fetch(ahub, tmp_path / "cache", local_dir=local_dir, events=events)
    started = [e for e in events if isinstance(e, hubasync.FileStarted)]
    assert [e.resumed_from for e in started] == [sum(written)]
    spans = body_gets(ahub, fake)
    assert sorted(spans) == [(s + w, e) for (s, e), w in zip(full_ranges(), written, strict=True)]
    assert asked(spans) == fake.size - sum(written)
    assert Path(path).read_bytes() == fake.data
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
@pytest.mark.parametrize("change", ["etag", "size", "version", "layout", "garbled", "no-data"])
async def test_a_state_that_does_not_match_is_discarded(ahub: FakeHub, tmp_path: Path,
                                                        change: str) -> None:
    fake = file_of(ahub)
    await cancelled_fetch(ahub, tmp_path)
    (state_file,) = states(tmp_path)
    state = json.loads(state_file.read_bytes())
    match change:
        case "etag":
            state["etag"] = "0" * 64
        case "size":
            state["size"] += 1
        case "version":
            state["version"] = 99
        case "layout":
            state["written"].append(0)
    if change == "no-data":
        _parked(tmp_path).unlink()
    else:
        state_file.write_bytes(b"{not json" if change == "garbled" else json.dumps(state).encode())

    await fetch(ahub, tmp_path / "cache")
    assert sorted(body_gets(ahub, fake)) == full_ranges()  # all of it, from zero
    assert_blob(tmp_path / "cache", fake)
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_a_truncated_partial_download_is_trusted_only_up_to_its_length(
    ahub: FakeHub, tmp_path: Path
) -> None:
    fake = file_of(ahub)
    written = await cancelled_fetch(ahub, tmp_path)
    length = 2 * CHUNK + MiB // 2
    os.truncate(_parked(tmp_path), length)

    await fetch(ahub, tmp_path / "cache")
    trusted = [min(w, max(0, length - s)) for (s, _), w in zip(full_ranges(), written,
                                                                strict=True)]
    assert trusted[2] == MiB // 2 and trusted[3:] == [0, 0, 0]
    assert sorted(body_gets(ahub, fake)) == [(s + t, e) for (s, e), t in
                                              zip(full_ranges(), trusted, strict=True)]
    assert_blob(tmp_path / "cache", fake)
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_bad_bytes_on_disk_fail_the_hash_and_everything_is_fetched_again(
    ahub: FakeHub, tmp_path: Path
) -> None:
    fake = file_of(ahub)
    written = await cancelled_fetch(ahub, tmp_path)
    _flip_byte(_parked(tmp_path), CHUNK + 100)  # a byte the state vouches for goes bad

    events: list[hubasync.Event] = []
    await fetch(ahub, tmp_path / "cache", events=events)
    spans = body_gets(ahub, fake)
    resumed = [(s + w, e) for (s, e), w in zip(full_ranges(), written, strict=True)]
    assert sorted(spans[:RANGES]) == resumed
    assert sorted(spans[RANGES:]) == full_ranges()  # the clean retry starts from zero
    assert any(isinstance(e, hubasync.Retrying) and "hash" in e.reason for e in events)
    assert_blob(tmp_path / "cache", fake)
    assert leftovers(tmp_path) == []


def _flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0xFF]))


@pytest.mark.anyio
async def test_force_download_starts_from_zero(ahub: FakeHub, tmp_path: Path) -> None:
    fake = file_of(ahub)
    await cancelled_fetch(ahub, tmp_path)
    await fetch(ahub, tmp_path / "cache", force=True)
    assert sorted(body_gets(ahub, fake)) == full_ranges()
    assert_blob(tmp_path / "cache", fake)
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_a_failed_download_keeps_its_state(ahub: FakeHub, tmp_path: Path) -> None:
    fake = file_of(ahub)
    cache = tmp_path / "cache"
    ahub.add_fault(Fault.drop(after_bytes=MiB + MiB // 2, server="cdn", method="GET"))
    config = HubConfig.from_env({}, endpoint=ahub.endpoint, cache_dir=cache, token=False,
                                retry=hubasync.RetryConfig(max_attempts=1), **RANGED)
    async with HubClient(config) as client:
        with pytest.raises(hubasync.ReadError):
            await client.hf_hub_download(REPO_ID, NAME)
    assert [n for n in leftovers(tmp_path) if n.endswith((".incomplete", ".tmp"))] == []
    kept = recorded(tmp_path)
    assert kept >= MiB  # at least the range that failed first had flushed its bytes
    ahub.clear_faults()
    ahub.clear_requests()
    await fetch(ahub, cache)
    assert asked(body_gets(ahub, fake)) == fake.size - kept
    assert_blob(cache, fake)
    assert leftovers(tmp_path) == []


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process of this machine, other than this one."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.anyio
async def test_a_live_owner_is_left_alone(ahub: FakeHub, tmp_path: Path,
                                          sleeper: subprocess.Popen[bytes]) -> None:
    """Another process (alive) owns the partial download: this one downloads into a private
    temp file and touches none of the other's files."""
    fake = file_of(ahub)
    await cancelled_fetch(ahub, tmp_path)
    (state_file,) = states(tmp_path)
    owner_file = state_file.with_name(state_file.name.replace(".state", ".owner"))
    before = {p: p.read_bytes() for p in (state_file, _parked(tmp_path))}
    theirs = await anyio.to_thread.run_sync(
        lambda: _owner(pid=sleeper.pid, start=process_start(sleeper.pid), token="theirs"))
    owner_file.write_bytes(msgspec.json.encode(theirs))
    await fetch(ahub, tmp_path / "cache")
    assert sorted(body_gets(ahub, fake)) == full_ranges()
    assert_blob(tmp_path / "cache", fake)
    assert {p: p.read_bytes() for p in before} == before
    assert owner_file.read_bytes() == msgspec.json.encode(theirs)


@pytest.mark.anyio
async def test_resume_files_that_cannot_be_written_are_not_an_error(
    ahub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `.locks/` folder this user may not write (the lock is optional there too)."""
    def refuse(path: str, heartbeat: str) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr("hubasync._partial.claim", refuse)
    fake = file_of(ahub)
    await fetch(ahub, tmp_path / "cache")
    assert sorted(body_gets(ahub, fake)) == full_ranges()
    assert_blob(tmp_path / "cache", fake)
    assert leftovers(tmp_path) == []


# -- two processes, no lock ----------------------------------------------------------------------


def test_two_processes_without_a_lock_never_share_a_partial_download(hub: FakeHub,
                                                                     tmp_path: Path) -> None:
    """As on a filesystem where flock does nothing: after a kill, two processes start at once.
    One takes the partial download over (its owner is dead) and resumes it; the other finds a
    live owner and downloads into a private temp. Both finish with the verified blob."""
    fake = file_of(hub)
    cache = tmp_path / "cache"
    hub.add_fault(stall(fake, 2 * MiB + MiB // 2))
    child = start_child(hub, cache)
    wait_until(lambda: least_recorded(cache) >= 2 * MiB, child, "half of the file recorded")
    finish(child, kill=True)
    state = read_state(cache)
    assert state is not None

    hub.clear_faults()
    hub.clear_requests()
    hub.add_fault(stall(fake, MiB, seconds=1.0))  # both are mid-transfer at the same time
    one, two = start_child(hub, cache, locked=False), start_child(hub, cache, locked=False)
    results = [finish(one), finish(two)]
    for code, _, err in results:
        assert code == 0, err
    assert len({out.strip().splitlines()[-1] for _, out, _ in results}) == 1
    spans = sorted(body_gets(hub, fake))
    resumed = [(s + w, e) for (s, e), w in zip(full_ranges(), state["written"], strict=True)]
    assert spans == sorted(resumed + full_ranges())
    assert_blob(cache, fake)
    assert leftovers(cache) == []


# -- the rules, without a server -----------------------------------------------------------------


def _state(**changes: Any) -> ResumeState:
    values: dict[str, Any] = {
        "version": STATE_VERSION, "etag": "e" * 64, "size": 10 * MiB, "ranged": True, "chunk": 4 * MiB,
        "gen": "0123abcd", "boot": "boot-1", "written": [4 * MiB, 3 * MiB, MiB],
        "durable": [4 * MiB, MiB, 0],
    }
    values.update(changes)
    return ResumeState(**values)


def _point(state: ResumeState, *, boot: str = "boot-1", length: int = 10 * MiB) -> list[int] | None:
    return resume_point(state, etag="e" * 64, size=10 * MiB, boot=boot, length=length)


def test_resume_point() -> None:
    assert _point(_state()) == [4 * MiB, 3 * MiB, MiB]
    assert _point(_state(), boot="boot-2") == [4 * MiB, MiB, 0]  # after a reboot: fsynced only
    assert _point(_state(), length=5 * MiB) == [4 * MiB, MiB, 0]  # not beyond the file's end
    assert _point(_state(ranged=False, chunk=10 * MiB, written=[7], durable=[0])) == [7]
    for bad in (_state(etag="f" * 64), _state(size=11 * MiB), _state(version=STATE_VERSION + 1),
                _state(written=[4 * MiB, 3 * MiB]), _state(written=[5 * MiB, 0, 0]),
                _state(durable=[4 * MiB, 3 * MiB + 1, 0]), _state(written=[-1, 0, 0]),
                _state(gen="../../x"), _state(chunk=0), _state(chunk=1)):
        assert _point(bad) is None, bad


def _owner(**changes: Any) -> Owner:
    pid = os.getpid()
    values: dict[str, Any] = {"host": host_id(), "boot": boot_id(), "pid": pid,
                              "start": process_start(pid), "token": "mine"}
    values.update(changes)
    return Owner(**values)


@pytest.mark.parametrize(
    ("claim_changes", "age", "held", "alive", "stale"),
    [
        ({"pid": 1, "token": "t"}, 0.0, set(), True, False),  # another live process here
        ({"pid": 1, "token": "t"}, 0.0, set(), False, True),  # it is gone
        ({"token": "t"}, 0.0, {"t"}, True, False),  # this process holds it
        ({"token": "t"}, 0.0, set(), True, True),  # this pid, but not a claim of ours
        ({"pid": 1, "boot": "other"}, 0.0, set(), True, True),  # the machine restarted
        ({"host": "elsewhere"}, 10.0, set(), False, False),  # another machine, heartbeat fresh
        ({"host": "elsewhere"}, FOREIGN_TTL + 1, set(), True, True),  # ... and silent
    ],
)
def test_is_stale(claim_changes: dict[str, Any], age: float, held: set[str], alive: bool,
                  stale: bool) -> None:
    other = _owner(**claim_changes)
    assert is_stale(other, _owner(), age=age, held=held,
                    alive=lambda pid, start: alive) is stale


def test_unreadable_owner_files_are_trusted_for_a_grace_period() -> None:
    assert not is_stale(None, _owner(), age=1.0, held=set(), alive=lambda p, s: True)
    assert is_stale(None, _owner(), age=UNREADABLE_GRACE + 1, held=set(),
                    alive=lambda p, s: True)


def test_claims_between_processes(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    path, heartbeat = str(tmp_path / "x.owner"), str(tmp_path / "x.state")
    theirs = _owner(pid=sleeper.pid, start=process_start(sleeper.pid), token="theirs")
    Path(path).write_bytes(msgspec.json.encode(theirs))
    assert claim(path, heartbeat) is None  # alive: not taken over
    sleeper.kill()
    sleeper.wait()
    mine = claim(path, heartbeat)  # dead: taken over
    assert mine is not None and holds(path, mine)
    assert claim(path, heartbeat) is None  # this process holds it already
    release(path, mine)
    assert not os.path.exists(path)
    again = claim(path, heartbeat)
    assert again is not None
    release(path, again)


def test_a_claim_from_another_machine_is_taken_over_only_when_silent(tmp_path: Path) -> None:
    path, heartbeat = tmp_path / "x.owner", tmp_path / "x.state"
    path.write_bytes(b'{"host":"elsewhere","boot":"b","pid":1,"start":null,"token":"t"}')
    heartbeat.write_bytes(b"{}")
    assert claim(str(path), str(heartbeat)) is None
    old = time.time() - FOREIGN_TTL - 10
    for p in (path, heartbeat):
        os.utime(p, (old, old))
    mine = claim(str(path), str(heartbeat))
    assert mine is not None
    release(str(path), mine)


def test_sha256_of_the_fixture() -> None:
    """The big file really is split in ranges of the configured size (guards the numbers)."""
    data = make_repo().files_at("main")[NAME]
    assert data.size == RANGES * CHUNK
    assert hashlib.sha256(data.data).hexdigest() == data.etag


# -- this file as a child process without the blob lock ------------------------------------------


@contextlib.asynccontextmanager
async def _no_lock(disk: object, path: str) -> AsyncIterator[None]:
    yield


if __name__ == "__main__":
    import asyncio

    import _download_child

    import hubasync._scheduler

    hubasync._scheduler.blob_lock = _no_lock
    print(asyncio.run(_download_child.main(json.loads(sys.argv[1]))), flush=True)


@pytest.mark.anyio
async def test_disk_space_is_checked_for_what_is_still_missing(
    ahub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed download needs room only for the bytes it has not recorded yet (where the
    file system reserves no blocks up front)."""
    monkeypatch.setattr("hubasync._fileio.reserve", lambda fd, size: False)
    fake = file_of(ahub)
    written = await cancelled_fetch(ahub, tmp_path)
    missing = fake.size - sum(written)
    free = {"bytes": DISK_MARGIN + missing - 1}

    def disk_usage(path: object) -> shutil._ntuple_diskusage:
        return shutil._ntuple_diskusage(1 << 40, (1 << 40) - free["bytes"], free["bytes"])

    monkeypatch.setattr("hubasync._fileio.shutil.disk_usage", disk_usage)
    with pytest.raises(hubasync.InsufficientDiskSpaceError) as info:
        await fetch(ahub, tmp_path / "cache")
    assert info.value.needed == missing  # not the whole file: the state vouches for the rest
    assert body_gets(ahub, fake) == []

    free["bytes"] += 1  # just enough
    await fetch(ahub, tmp_path / "cache")
    assert_blob(tmp_path / "cache", fake)


@pytest.mark.anyio
async def test_reserved_blocks_need_no_room_again(
    ahub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ranged download reserves its disk blocks before the first byte and keeps the file's
    length honest; resumed, it needs no room for the blocks it already holds."""
    fake = file_of(ahub)
    written = await cancelled_fetch(ahub, tmp_path)
    [data] = [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(PARKED_SUFFIX)]
    info = data.stat()
    assert info.st_blocks * 512 >= fake.size  # all of it reserved
    assert info.st_size <= max(s + n for s, n in zip(range(0, fake.size, CHUNK), written,
                                                      strict=True))  # only what was written

    def disk_usage(path: object) -> shutil._ntuple_diskusage:
        return shutil._ntuple_diskusage(1 << 40, (1 << 40) - DISK_MARGIN, DISK_MARGIN)

    monkeypatch.setattr("hubasync._fileio.shutil.disk_usage", disk_usage)
    await fetch(ahub, tmp_path / "cache")  # the missing bytes go into blocks it holds
    assert_blob(tmp_path / "cache", fake)
    assert sum(e - s + 1 for s, e in body_gets(ahub, fake)) == fake.size - sum(written)


def test_reserve_is_best_effort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where blocks cannot be reserved (an unsupported file system, a full disk), the file is
    left as it was and written the usual way."""
    path = tmp_path / "f"
    with path.open("wb") as f:
        assert hubasync._fallocate.reserve(f.fileno(), 3 * MiB)
        assert os.fstat(f.fileno()).st_size == 0
        assert os.fstat(f.fileno()).st_blocks * 512 >= 3 * MiB
        assert not hubasync._fallocate.reserve(f.fileno(), 0)
    with path.open("rb") as f:  # read-only: EBADF
        assert not hubasync._fallocate.reserve(f.fileno(), 8 * MiB)
    monkeypatch.setattr(hubasync._fallocate, "_fallocate", lambda: None)
    with path.open("r+b") as f:
        assert not hubasync._fallocate.reserve(f.fileno(), 8 * MiB)
    assert path.stat().st_size == 0


def _age_everything(root: Path, seconds: float) -> None:
    past = time.time() - seconds
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, (past, past))


@pytest.mark.anyio
@pytest.mark.parametrize("days", [8, 1])
async def test_partial_downloads_untouched_for_a_week_are_collected(
    ahub: FakeHub, tmp_path: Path, days: int
) -> None:
    """A download interrupted and never retried does not keep its bytes forever: the next run
    in that repo drops them once they are a week old (not before, and never the ones it is
    about to resume)."""
    fake = file_of(ahub)
    await cancelled_fetch(ahub, tmp_path)
    locks = tmp_path / "cache" / ".locks"
    kept = sorted(p.name for p in locks.rglob("*") if ".hubasync." in p.name)
    assert any(name.endswith(".hubasync.part") for name in kept)
    assert any(name.endswith(".hubasync.state") for name in kept)
    _age_everything(tmp_path, days * 86400)

    await fetch(ahub, tmp_path / "cache", name="stream.bin")  # another file of the repo
    left = sorted(p.name for p in locks.rglob("*") if ".hubasync." in p.name)
    if days >= 7:
        assert [n for n in left if n.startswith(fake.etag)] == []
        assert leftovers(tmp_path) == []
    else:
        assert [n for n in left if n.startswith(fake.etag)] == kept


@pytest.mark.anyio
async def test_an_old_partial_download_of_a_wanted_file_is_resumed_not_collected(
    ahub: FakeHub, tmp_path: Path
) -> None:
    fake = file_of(ahub)
    written = await cancelled_fetch(ahub, tmp_path)
    _age_everything(tmp_path, 30 * 86400)
    await fetch(ahub, tmp_path / "cache")
    assert sorted(body_gets(ahub, fake)) == [
        (s + w, e) for (s, e), w in zip(full_ranges(), written, strict=True)]
    assert_blob(tmp_path / "cache", fake)


def test_collect_stale_drops_orphan_parked_files_by_age(tmp_path: Path) -> None:
    from hubasync._cache_layout import ResumeFiles
    from hubasync._partial import collect_stale

    old, young, wanted = "a" * 64, "b" * 64, "c" * 64
    for etag in (old, young, wanted):  # parked data files whose state did not survive
        (tmp_path / f"{etag}.0123abcd.hubasync.part").write_bytes(b"x" * 10)
    os.utime(tmp_path / f"{old}.0123abcd.hubasync.part", (0, 0))
    os.utime(tmp_path / f"{wanted}.0123abcd.hubasync.part", (0, 0))

    def files_for(etag: str) -> ResumeFiles:
        return ResumeFiles(str(tmp_path / etag), str(tmp_path / "blobs" / etag))

    assert collect_stale(str(tmp_path), files_for, keep={wanted}) == 1
    assert sorted(p.name[:1] for p in tmp_path.iterdir()) == ["b", "c"]


def test_layout_tapers_the_tail_of_large_files() -> None:
    from hubasync._spans import TAPER_CHUNKS, TAPER_SPLIT, layout

    chunk = 16
    small = layout(chunk * (2 * TAPER_CHUNKS - 1), ranged=True, chunk=chunk)  # too few chunks
    assert {end - start for start, end in small[:-1] if end is not None} == {chunk}
    size = chunk * 2 * TAPER_CHUNKS + 3
    spans = layout(size, ranged=True, chunk=chunk)
    assert spans[0][0] == 0
    assert spans[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # no gap, no overlap
    cut = (2 * TAPER_CHUNKS + 1 - TAPER_CHUNKS) * chunk
    bulk = [(end or 0) - start for start, end in spans if start < cut]
    tail = [(end or 0) - start for start, end in spans if start >= cut]
    assert bulk == [chunk] * (TAPER_CHUNKS + 1)
    assert tail == [chunk // TAPER_SPLIT] * ((TAPER_CHUNKS - 1) * TAPER_SPLIT) + [3]
    assert layout(10, ranged=False, chunk=4) == [(0, 10)]
    # a state written with the tapered layout is trusted again, one with another count is not
    state = ResumeState(version=STATE_VERSION, etag="e" * 64, size=size, ranged=True,
                        chunk=chunk, gen="0123abcd", boot="b", written=[0] * len(spans),
                        durable=[0] * len(spans))
    assert resume_point(state, etag="e" * 64, size=size, boot="b", length=0) == [0] * len(spans)
    shorter = msgspec.structs.replace(state, written=[0] * (len(spans) - 1),
                                      durable=[0] * (len(spans) - 1))
    assert resume_point(shorter, etag="e" * 64, size=size, boot="b", length=0) is None
