"""The learned resolve -> resolve-cache shortcut for regular files (`hubasync._shortcuts`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from hubasync import HubClient, HubConfig
from hubasync._shortcuts import Shortcuts
from hubasync.testing import FakeFile, FakeHub, FakeRepo, Fault

HUB = "http://127.0.0.1:8000"
COMMIT = "c" * 40
OTHER_COMMIT = "d" * 40
ETAG, ETAG2 = "a" * 40, "b" * 40
RESOLVE = f"{HUB}/org/model/resolve/{COMMIT}/sub/my%20file.json"
CACHED = f"{HUB}/api/resolve-cache/models/org/model/{COMMIT}/sub/my%20file.json?etag=%22{ETAG}%22"


def learned() -> Shortcuts:
    shortcuts = Shortcuts()
    shortcuts.learn(RESOLVE, ETAG, CACHED)
    return shortcuts


def test_a_learned_shape_is_reused_for_other_files_and_commits_of_the_repo() -> None:
    shortcuts = learned()
    assert shortcuts.guess(f"{HUB}/org/model/resolve/{COMMIT}/a/b.txt", ETAG2) == (
        f"{HUB}/api/resolve-cache/models/org/model/{COMMIT}/a/b.txt?etag=%22{ETAG2}%22")
    assert shortcuts.guess(f"{HUB}/org/model/resolve/{OTHER_COMMIT}/x", ETAG2) == (
        f"{HUB}/api/resolve-cache/models/org/model/{OTHER_COMMIT}/x?etag=%22{ETAG2}%22")


@pytest.mark.parametrize("url", [
    f"{HUB}/org/model/resolve/main/x.txt",  # a branch name, not a commit
    f"{HUB}/org/other/resolve/{COMMIT}/x.txt",  # another repo
    f"{HUB}/datasets/org/model/resolve/{COMMIT}/x.txt",  # another repo type
])
def test_no_guess_outside_what_was_seen(url: str) -> None:
    assert learned().guess(url, ETAG2) is None


def test_no_guess_for_lfs_files() -> None:
    assert learned().guess(f"{HUB}/org/model/resolve/{COMMIT}/w.bin", "e" * 64) is None


@pytest.mark.parametrize("final", [
    f"https://cdn.example/api/resolve-cache/models/org/model/{COMMIT}/sub/my%20file.json",
    f"{HUB}/api/resolve-cache/models/org/model/{COMMIT}/sub/my%20file.json?sig=123",
    f"{HUB}/api/resolve-cache/models/org/model/{COMMIT}/sub/my%20file.json?e={ETAG}&f={ETAG}",
    f"{HUB}/api/resolve-cache/models/org/model/{COMMIT}/sub/other.json?etag={ETAG}",
    RESOLVE,
])
def test_shapes_that_cannot_be_rebuilt_are_not_learned(final: str) -> None:
    shortcuts = Shortcuts()
    shortcuts.learn(RESOLVE, ETAG, final)
    assert shortcuts.guess(f"{HUB}/org/model/resolve/{COMMIT}/x.txt", ETAG2) is None


def test_disabled_for_good() -> None:
    shortcuts = learned()
    shortcuts.disable()
    shortcuts.learn(RESOLVE, ETAG, CACHED)
    assert shortcuts.guess(RESOLVE, ETAG2) is None
    assert "off" in repr(shortcuts)


# -- against FakeHub ------------------------------------------------------------------------------


def many_files() -> FakeRepo:
    repo = FakeRepo("org/many")
    # distinct sizes: with one worker, files are fetched largest first
    repo.commit({f"f{i}.txt": FakeFile(b"%02d" % i * (100 - i), lfs=False) for i in range(10)})
    return repo


def client(hub: FakeHub, cache: Path) -> HubClient:
    return HubClient(HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=cache,
                                        token=False, max_workers=1))


def body_requests(hub: FakeHub) -> Counter[tuple[str, int]]:
    return Counter(("cache" if r.path.startswith("/api/resolve-cache/") else "resolve", r.status)
                   for r in hub.requests if r.method == "GET" and not r.path.startswith("/api/m"))


@pytest.mark.anyio
async def test_one_redirect_then_direct_requests(tmp_path: Path) -> None:
    repo = many_files()
    async with FakeHub(repos=[repo]) as hub, client(hub, tmp_path) as hubclient:
        folder = Path(await hubclient.snapshot_download("org/many"))
        assert body_requests(hub) == {("resolve", 307): 1, ("cache", 200): 10}
    for name, fake in repo.files_at("main").items():
        assert (folder / name).read_bytes() == fake.data


@pytest.mark.anyio
async def test_a_refused_guess_falls_back_and_guessing_stops(tmp_path: Path) -> None:
    repo = many_files()
    async with FakeHub(repos=[repo]) as hub, client(hub, tmp_path) as hubclient:
        # f7 is fetched eighth (largest first): by then the shortcut is learned
        hub.add_fault(Fault("status", status=404, times=1, method="GET",
                            path_glob="/api/resolve-cache/*/f7.txt"))
        folder = Path(await hubclient.snapshot_download("org/many"))
        # the first file and f7 (fallback) and the two after it (no more guesses) go the long way
        assert body_requests(hub) == {("resolve", 307): 4, ("cache", 200): 10, ("cache", 404): 1}
    for name, fake in repo.files_at("main").items():
        assert (folder / name).read_bytes() == fake.data
