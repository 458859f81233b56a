"""Kill the process at any point: no partial file at a final path, no dangling link, no ref to a
missing snapshot; the next run completes the download.

A child process (tests/_download_child.py) downloads from a FakeHub run by the test; it is
SIGKILLed mid-transfer (FakeHub stalls the bodies so the kill lands where we want it), or ended
with ``os._exit`` at an exact step of the commit sequence. The cache left behind is then checked
file by file, and by the official client's own ``scan_cache_dir``. Cancellation inside one
process, and concurrent downloaders sharing a cache, must keep the same invariants.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import anyio
import pytest

import hubasync
from hubasync import HubClient, HubConfig
from hubasync.testing import FakeFile, FakeHub, FakeRepo, Fault

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

hf: Any = pytest.importorskip("huggingface_hub")
hf_errors: Any = pytest.importorskip("huggingface_hub.errors")

CHILD = Path(__file__).with_name("_download_child.py")
ROOT = CHILD.parent.parent
DIED = 97  # _download_child.DIED
MiB = 1 << 20
REPO_ID = "org/crash"
STORAGE = "models--org--crash"
CACHEDIR_TAG = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file is a cache directory tag created by huggingface_hub.\n"
    b"# For information about cache directory tags, see:\n"
    b"#\thttps://bford.info/cachedir/\n"
)
HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
TEMP_BLOB = re.compile(r"^([0-9a-f]{40}|[0-9a-f]{64})\.[0-9a-f]{8}\.incomplete$")
WAIT = 30.0


def _random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def make_files(scale: int = MiB) -> dict[str, bytes | FakeFile]:
    """Small regular files, a regular (git) file and LFS files of a few `scale`s."""
    return {
        "config.json": b'{"model_type": "crash"}',
        "copy/config.json": b'{"model_type": "crash"}',  # the same blob as config.json
        "a/b/notes v2?.md": b"# notes with a space and a question mark\n",
        "tokenizer.json": FakeFile(_random_bytes(1, 200_000), lfs=False),
        "sub/big-regular.bin": FakeFile(_random_bytes(2, 2 * scale + 12_345), lfs=False),
        "model-00001-of-00002.safetensors": _random_bytes(3, 2 * scale),
        "model-00002-of-00002.safetensors": _random_bytes(4, 2 * scale + 7),
    }


FILES = make_files()
SMALL_FILES = make_files(scale=64 * 1024)  # for the kill points that do not need big files


def make_repo(files: dict[str, bytes | FakeFile] = FILES) -> FakeRepo:
    repo = FakeRepo(REPO_ID)
    repo.commit(files, message="weights")
    return repo


# -- the invariants ------------------------------------------------------------------------------


def content_id(path: Path, name: str) -> str:
    """Hash a blob the way its name was made: sha256 (64 hex) or git blob sha1 (40 hex)."""
    data = path.read_bytes()
    if HEX64.fullmatch(name):
        return hashlib.sha256(data).hexdigest()
    assert HEX40.fullmatch(name), f"unexpected blob name {name!r}"
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def check_snapshots(repo_dir: Path) -> None:
    blobs = (repo_dir / "blobs").resolve()
    for path in sorted((repo_dir / "snapshots").rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        assert path.is_symlink(), f"{path} is a regular file in snapshots/, not a link"
        target = os.readlink(path)
        assert not os.path.isabs(target), f"{path} -> {target} is an absolute link"
        resolved = (path.parent / target).resolve()
        assert resolved.exists(), f"dangling link {path} -> {target}"
        assert resolved.parent == blobs, f"{path} -> {target} points outside blobs/"
        assert content_id(resolved, resolved.name) == resolved.name, f"{path}: content != name"


def check_blobs(repo_dir: Path) -> None:
    for path in sorted((repo_dir / "blobs").glob("*")) if (repo_dir / "blobs").exists() else []:
        if path.name.endswith(".incomplete"):
            # process-unique temp names only: never `<etag>.incomplete`, which 0.x-1.17 clients
            # would resume from (hub-protocol.md, pitfall 9)
            assert TEMP_BLOB.fullmatch(path.name), f"unexpected temp name {path.name}"
            continue
        assert path.is_file() and not path.is_symlink(), f"{path} is not a regular file"
        assert content_id(path, path.name) == path.name, f"partial or corrupt blob {path.name}"


def check_refs(repo_dir: Path) -> None:
    refs = repo_dir / "refs"
    for path in sorted(refs.rglob("*")) if refs.exists() else []:
        if path.is_dir():
            continue
        commit = path.read_bytes()
        name = path.relative_to(refs).as_posix()
        assert HEX40.fullmatch(commit.decode(errors="replace")), f"refs/{name}: {commit!r}"
        assert (repo_dir / "snapshots" / commit.decode()).is_dir(), (
            f"refs/{name} names {commit.decode()}, which has no snapshot folder"
        )


def check_trees(repo_dir: Path) -> None:
    for path in sorted((repo_dir / "trees").glob("*.json")) if (repo_dir / "trees").exists() else []:
        data = json.loads(path.read_bytes())  # a partial listing would not parse
        assert data["format_version"] == 1
        assert data["files"], f"{path} lists no files"


def assert_cache_valid(cache: Path) -> None:
    """Everything a kill must never break (and what the official `scan_cache_dir` checks)."""
    if not cache.exists():
        return
    tag = cache / "CACHEDIR.TAG"
    if tag.exists():
        assert tag.read_bytes() == CACHEDIR_TAG
    for repo_dir in sorted(p for p in cache.iterdir() if "--" in p.name):
        assert (repo_dir / "snapshots").is_dir(), (
            f"{repo_dir.name} has {sorted(p.name for p in repo_dir.iterdir())} but no snapshots/ "
            "folder: the official scan_cache_dir reports the repo as corrupted"
        )
        check_snapshots(repo_dir)
        check_blobs(repo_dir)
        check_refs(repo_dir)
        check_trees(repo_dir)
    report = hf.scan_cache_dir(cache)
    assert report.warnings == [], [str(w) for w in report.warnings]


def assert_complete(folder: str, repo: FakeRepo) -> None:
    root = Path(folder)
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}
    files = repo.files_at("main")
    assert on_disk == set(files)
    for name, fake in files.items():
        assert (root / name).read_bytes() == fake.data, name
        assert os.readlink(root / name).endswith(f"blobs/{fake.etag}")


def temp_files(cache: Path) -> list[str]:
    return sorted(
        p.relative_to(cache).as_posix() for p in cache.rglob("*")
        if p.name.endswith((".incomplete", ".tmp"))
    )


# -- the child process ---------------------------------------------------------------------------


def start_child(hub: FakeHub, cache: Path, **options: Any) -> subprocess.Popen[str]:
    args = {"endpoint": hub.endpoint, "cache_dir": str(cache), "repo_id": REPO_ID, **options}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, str(CHILD), json.dumps(args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], *, kill: bool = False) -> tuple[int, str, str]:
    if kill:
        proc.kill()  # SIGKILL: no cleanup at all
    out, err = proc.communicate(timeout=WAIT)
    return proc.returncode, out, err


def wait_until(cond: Callable[[], bool], proc: subprocess.Popen[str] | None = None,
               what: str = "condition") -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        if proc is not None and proc.poll() is not None:
            _, out, err = finish(proc)
            pytest.fail(f"child exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            if proc is not None:
                finish(proc, kill=True)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def committed_blobs(cache: Path) -> list[Path]:
    blobs = cache / STORAGE / "blobs"
    return [p for p in blobs.glob("*") if not p.name.endswith(".incomplete")] if blobs.exists() \
        else []


def linked(cache: Path, name: str) -> bool:
    return any(p.is_symlink() for p in (cache / STORAGE / "snapshots").glob(f"*/{name}"))


def partial_bytes(cache: Path) -> int:
    return max((p.stat().st_size for p in cache.rglob("*.incomplete")), default=0)


def file_gets(hub: FakeHub) -> list[str]:
    """Body requests for file content that reached a server (CDN blobs and regular files)."""
    return [r.path for r in hub.requests if r.method == "GET" and r.status
            and (r.server == "cdn" or r.path.startswith("/api/resolve-cache/"))]


def fetched_files(hub: FakeHub, repo: FakeRepo) -> set[str]:
    """The repo files whose content was requested (by CDN blob id or resolve-cache path)."""
    files = repo.files_at("main")
    lfs = {f.sha256: name for name, f in files.items() if f.lfs}
    names = set()
    for path in file_gets(hub):
        if path.startswith("/repos/"):
            names.add(lfs[path.rsplit("/", 1)[-1]])
        elif match := re.fullmatch(rf"/api/resolve-cache/models/{REPO_ID}/[0-9a-f]{{40}}/(.+)",
                                   path):
            names.add(unquote(match[1]))
    return names


def complete_in_process(hub: FakeHub, cache: Path) -> str:
    download = functools.partial(hubasync.snapshot_download, REPO_ID, cache_dir=cache,
                                 endpoint=hub.endpoint, token=False, progress="none")
    return anyio.run(download)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(repos=[make_repo()]).run_in_thread() as fake:
        yield fake


@pytest.fixture
def small_hub() -> Iterator[FakeHub]:
    with FakeHub(repos=[make_repo(SMALL_FILES)]).run_in_thread() as fake:
        yield fake


def stall_lfs(after: int, *, sha256: str = "*", times: int | None = None) -> Fault:
    return Fault.stall(after_bytes=after, seconds=60, server="cdn", method="GET",
                       path_glob=f"/repos/*/{sha256}", times=times)


def stall_regular(after: int) -> Fault:
    return Fault.stall(after_bytes=after, seconds=60, server="hub", method="GET",
                       path_glob="/api/resolve-cache/*")


# -- SIGKILL mid-transfer ------------------------------------------------------------------------


def _before_any_blob(hub: FakeHub, cache: Path) -> Callable[[], bool]:
    hub.add_fault(stall_lfs(0))
    hub.add_fault(stall_regular(0))
    return lambda: len(file_gets(hub)) >= 5


def _first_blobs_and_mid_lfs(hub: FakeHub, cache: Path) -> Callable[[], bool]:
    hub.add_fault(stall_lfs(3 * MiB // 2))
    hub.add_fault(stall_regular(3 * MiB // 2))
    return lambda: (linked(cache, "config.json") and len(committed_blobs(cache)) >= 1
                    and partial_bytes(cache) >= MiB)


def _one_lfs_done_one_mid_transfer(hub: FakeHub, cache: Path) -> Callable[[], bool]:
    files = hub.repos[REPO_ID].files_at("main")
    hub.add_fault(stall_lfs(3 * MiB // 2,
                            sha256=files["model-00002-of-00002.safetensors"].sha256))
    return lambda: (linked(cache, "model-00001-of-00002.safetensors")
                    and linked(cache, "sub/big-regular.bin") and partial_bytes(cache) >= MiB)


@pytest.mark.parametrize(
    "scenario", [_before_any_blob, _first_blobs_and_mid_lfs, _one_lfs_done_one_mid_transfer],
    ids=["before-any-blob", "first-blobs-and-mid-lfs", "one-lfs-done-one-mid-transfer"],
)
def test_sigkill_mid_transfer_then_resume(
    hub: FakeHub, tmp_path: Path, scenario: Callable[[FakeHub, Path], Callable[[], bool]]
) -> None:
    repo = hub.repos[REPO_ID]
    commit = repo.resolve("main")
    cache = tmp_path / "cache"
    ready = scenario(hub, cache)
    child = start_child(hub, cache)
    wait_until(ready, child, "the kill point")
    code, _, _ = finish(child, kill=True)
    assert code == -9
    files = repo.files_at("main")
    blobs_before = {p.name for p in committed_blobs(cache)}

    assert_cache_valid(cache)
    # The official client never takes the partial snapshot for a complete one.
    with pytest.raises(hf_errors.LocalEntryNotFoundError):
        hf.snapshot_download(REPO_ID, revision=commit, cache_dir=cache, local_files_only=True)

    hub.clear_faults()
    hub.clear_requests()
    folder = complete_in_process(hub, cache)
    assert_complete(folder, repo)
    assert_cache_valid(cache)
    assert (cache / STORAGE / "refs" / "main").read_bytes() == commit.encode()
    assert hf.snapshot_download(REPO_ID, cache_dir=cache, local_files_only=True) == folder
    # what was committed before the kill is not fetched again; the rest is, once per blob
    missing = {f.etag for f in files.values()} - blobs_before
    assert {files[name].etag for name in fetched_files(hub, repo)} == missing
    assert len(file_gets(hub)) == len(missing)


@pytest.mark.interop
def test_official_client_completes_after_a_kill(hub: FakeHub, tmp_path: Path) -> None:
    """The official client, too, takes over a cache hubasync was killed in."""
    repo = hub.repos[REPO_ID]
    cache = tmp_path / "cache"
    ready = _first_blobs_and_mid_lfs(hub, cache)
    child = start_child(hub, cache)
    wait_until(ready, child, "the kill point")
    finish(child, kill=True)
    hub.clear_faults()
    folder = hf.snapshot_download(REPO_ID, cache_dir=cache, endpoint=hub.endpoint, token=False)
    assert_complete(folder, repo)
    assert_cache_valid(cache)


def test_repeated_kills_at_arbitrary_points_then_resume(hub: FakeHub, tmp_path: Path) -> None:
    """Throttled downloads killed after growing delays: each kill lands somewhere else."""
    repo = hub.repos[REPO_ID]
    cache = tmp_path / "cache"
    throttled = {"config": {"max_bandwidth": 4 * MiB}}
    for delay in (0.0, 0.4, 1.0):
        hub.clear_requests()
        child = start_child(hub, cache, **throttled)
        wait_until(lambda: bool(file_gets(hub)), child, "the first file request")
        time.sleep(delay)
        code, _, err = finish(child, kill=True)
        assert code in (-9, 0), err
        assert_cache_valid(cache)
    folder = complete_in_process(hub, cache)
    assert_complete(folder, repo)
    assert_cache_valid(cache)


# -- os._exit at exact steps of the commit sequence ----------------------------------------------


@pytest.mark.parametrize(
    ("call", "dest", "when"),
    [
        ("replace", "/trees/", "before"),
        ("symlink", ".symlink-probe", "after"),
        ("replace", "/blobs/", "before"),
        ("replace", "/blobs/", "after"),
        ("symlink", "/snapshots/", "before"),
        ("symlink", "/snapshots/", "after"),
        ("replace", "/refs/", "before"),
        ("replace", "/refs/", "after"),
    ],
)
def test_killed_at_each_commit_step(small_hub: FakeHub, tmp_path: Path, call: str, dest: str,
                                    when: str) -> None:
    hub = small_hub
    cache = tmp_path / "cache"
    child = start_child(hub, cache, die_at={"call": call, "dest": dest, "when": when})
    code, out, err = finish(child)
    assert code == DIED, f"the child never reached os.{call}(..., '*{dest}*'):\n{out}\n{err}"

    assert_cache_valid(cache)
    folder = complete_in_process(hub, cache)
    assert_complete(folder, hub.repos[REPO_ID])
    assert_cache_valid(cache)


# -- cancellation inside one process -------------------------------------------------------------


async def _cancel_when(scope: anyio.CancelScope, cond: Callable[[], bool]) -> None:
    with anyio.fail_after(WAIT):
        while not cond():
            await anyio.sleep(0.01)
    scope.cancel()


@pytest.mark.anyio
async def test_cancelled_one_shot_snapshot_leaves_a_valid_cache(tmp_path: Path) -> None:
    repo = make_repo()
    cache = tmp_path / "cache"
    async with FakeHub(repos=[repo]) as hub:
        hub.add_fault(stall_lfs(3 * MiB // 2))
        hub.add_fault(stall_regular(3 * MiB // 2))
        ready = lambda: linked(cache, "config.json") and partial_bytes(cache) >= MiB  # noqa: E731
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as scope:
                tg.start_soon(_cancel_when, scope, ready)
                await hubasync.snapshot_download(REPO_ID, cache_dir=cache, endpoint=hub.endpoint,
                                                 token=False, progress="none")
        assert scope.cancelled_caught
        assert temp_files(cache) == []  # the cancelled transfers removed their temp files
        await anyio.to_thread.run_sync(assert_cache_valid, cache)

        hub.clear_faults()
        folder = await hubasync.snapshot_download(REPO_ID, cache_dir=cache, endpoint=hub.endpoint,
                                                  token=False, progress="none")
    await anyio.to_thread.run_sync(assert_complete, folder, repo)
    await anyio.to_thread.run_sync(assert_cache_valid, cache)
    assert temp_files(cache) == []


@pytest.mark.anyio
async def test_move_on_after_in_a_long_lived_client(tmp_path: Path) -> None:
    repo = make_repo()
    cache = tmp_path / "cache"
    async with FakeHub(repos=[repo]) as hub:
        hub.add_fault(stall_lfs(3 * MiB // 2))  # the LFS files cannot finish before the deadline
        config = HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=cache, token=False)
        async with HubClient(config) as client:
            with anyio.move_on_after(0.5) as scope:
                await client.snapshot_download(REPO_ID)
            assert scope.cancelled_caught
            # once the cancelled call has returned, nothing runs on its behalf any more
            assert temp_files(cache) == [], "the cancelled download was still cleaning up"
            await anyio.to_thread.run_sync(assert_cache_valid, cache)

            hub.clear_faults()
            folder = await client.snapshot_download(REPO_ID)  # the client is still usable
    await anyio.to_thread.run_sync(assert_complete, folder, repo)
    await anyio.to_thread.run_sync(assert_cache_valid, cache)


@pytest.mark.anyio
async def test_cancelled_hf_hub_download_leaves_a_valid_cache(tmp_path: Path) -> None:
    """A single-file download into an empty cache, cancelled mid-transfer."""
    repo = make_repo()
    cache = tmp_path / "cache"
    name = "model-00001-of-00002.safetensors"
    async with FakeHub(repos=[repo]) as hub:
        hub.add_fault(stall_lfs(3 * MiB // 2))
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as scope:
                tg.start_soon(_cancel_when, scope, lambda: partial_bytes(cache) >= MiB)
                await hubasync.hf_hub_download(REPO_ID, name, cache_dir=cache,
                                               endpoint=hub.endpoint, token=False)
        assert scope.cancelled_caught
        assert temp_files(cache) == []
        await anyio.to_thread.run_sync(assert_cache_valid, cache)

        hub.clear_faults()
        path = await hubasync.hf_hub_download(REPO_ID, name, cache_dir=cache,
                                              endpoint=hub.endpoint, token=False)
    assert Path(path).read_bytes() == repo.files_at("main")[name].data
    await anyio.to_thread.run_sync(assert_cache_valid, cache)


@pytest.mark.anyio
async def test_failed_hf_hub_download_leaves_a_valid_cache(tmp_path: Path) -> None:
    """Not a kill: the transfer fails for good (connection dropped, no retry left)."""
    repo = make_repo(SMALL_FILES)
    cache = tmp_path / "cache"
    async with FakeHub(repos=[repo]) as hub:
        hub.add_fault(Fault.drop(after_bytes=100, server="cdn", method="GET"))
        config = HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=cache, token=False,
                                    retry=hubasync.RetryConfig(max_attempts=1))
        async with HubClient(config) as client:
            with pytest.raises(hubasync.ReadError):
                await client.hf_hub_download(REPO_ID, "model-00001-of-00002.safetensors")
    assert temp_files(cache) == []
    await anyio.to_thread.run_sync(assert_cache_valid, cache)


# -- concurrent downloaders sharing one cache ----------------------------------------------------


def test_two_processes_download_the_same_snapshot(hub: FakeHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # every blob body pauses half-way, so both processes are mid-transfer at the same time
    hub.add_fault(Fault.stall(after_bytes=MiB, seconds=0.3, server="cdn", method="GET"))
    first, second = start_child(hub, cache), start_child(hub, cache)
    results = [finish(first), finish(second)]
    for code, _, err in results:
        assert code == 0, err
    folders = {out.strip().splitlines()[-1] for _, out, _ in results}
    assert len(folders) == 1
    assert_complete(folders.pop(), hub.repos[REPO_ID])
    assert_cache_valid(cache)


def test_killing_the_lock_holder_does_not_block_the_other_process(
    hub: FakeHub, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    repo = hub.repos[REPO_ID]
    hub.add_fault(stall_lfs(3 * MiB // 2, times=2))  # only the first process's two LFS bodies
    holder = start_child(hub, cache)
    wait_until(lambda: partial_bytes(cache) >= MiB, holder, "the holder's partial download")
    other = start_child(hub, cache)
    info_path = f"/api/models/{REPO_ID}/revision/main"
    wait_until(lambda: sum(r.path == info_path for r in hub.requests) >= 2, other,
               "the second process's repo info")
    time.sleep(0.3)  # let it reach the blob locks (the outcome does not depend on it)
    code, _, _ = finish(holder, kill=True)
    assert code == -9
    code, out, err = finish(other)
    assert code == 0, err
    assert_complete(out.strip().splitlines()[-1], repo)
    assert_cache_valid(cache)


@pytest.mark.anyio
async def test_two_clients_in_one_process_share_a_cache(tmp_path: Path) -> None:
    repo = make_repo()
    cache = tmp_path / "cache"
    async with FakeHub(repos=[repo]) as hub:
        hub.add_fault(Fault.stall(after_bytes=MiB, seconds=0.3, server="cdn", method="GET"))
        config = HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=cache, token=False)
        folders: list[str] = []

        async def download(client: HubClient) -> None:
            folders.append(await client.snapshot_download(REPO_ID))

        async with HubClient(config) as one, HubClient(config) as two, \
                anyio.create_task_group() as tg:
            for client in (one, two, one):  # two clients, and two calls on one of them
                tg.start_soon(download, client)
    assert len(set(folders)) == 1
    assert len(folders) == 3
    await anyio.to_thread.run_sync(assert_complete, folders[0], repo)
    await anyio.to_thread.run_sync(assert_cache_valid, cache)
