"""hubasync and the official huggingface_hub client share one cache, in both directions.

What hubasync writes, the official client reads offline (same paths, same bytes, a clean
`scan_cache_dir`, its own `trees/` reader agrees); what the official client writes, hubasync reads
offline without a single request; and for the same repo and revision both write the very same
files, links, refs, tags and tree listings (cache_dir and local_dir modes).

The official client reads its environment once, at import: every call passes `endpoint=`,
`cache_dir=` and `token=` explicitly, and runs in a worker thread (it blocks).
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import anyio
import anyio.to_thread
import pytest

import hubasync
from hubasync import HubClient, HubConfig
from hubasync.testing import FakeFile, FakeHub, FakeRepo, Fault

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

hf: Any = pytest.importorskip("huggingface_hub")

pytestmark = [pytest.mark.interop, pytest.mark.anyio]


def _data(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


CONFIG = b'{"model_type": "demo"}'


def build_repos() -> list[FakeRepo]:
    model = FakeRepo("org/model")
    v1 = model.commit({
        "config.json": CONFIG,
        "dup/same-as-config.json": CONFIG,  # one blob, two paths
        "model.safetensors": _data(1, 300_000),  # LFS (suffix and size)
        "sub/deep/weights.bin": FakeFile(b"W" * 4096, lfs=True),  # nested LFS
        "sub/awful?name.txt": b"awful",
        "with space/a b?.txt": b"a space and a question mark",
        "big-regular.txt": FakeFile(_data(2, 150_000), lfs=False),  # large, but a git blob
    }, message="init")
    model.tag("v1.0", v1)
    model.create_branch("dev", v1)
    model.commit({"dev notes.md": b"on dev"}, branch="dev", message="dev")
    model.commit({"config.json": b'{"model_type": "demo", "v": 2}'}, message="bump")
    model.create_pr({"extra.txt": b"from a PR"})
    dataset = FakeRepo("org/data", repo_type="dataset")
    dataset.commit({
        "train/part-0.parquet": FakeFile(_data(3, 5000), lfs=True),
        "README.md": b"# data",
        "data/sub dir/x?.csv": b"a,b\n1,2\n",
    })
    space = FakeRepo("org/app", repo_type="space")
    space.commit({
        "app.py": b"print('hi')",
        "requirements.txt": b"gradio",
        "assets/logo.png": FakeFile(_data(4, 2048), lfs=True),
    })
    return [model, dataset, space]


# (repo_id, repo_type, revision); "@v1.0" means "the commit hash v1.0 points to"
CASES = [
    pytest.param("org/model", None, None, id="model-default-branch"),
    pytest.param("org/model", "model", "dev", id="model-branch"),
    pytest.param("org/model", "model", "v1.0", id="model-tag"),
    pytest.param("org/model", "model", "@v1.0", id="model-commit-hash"),
    pytest.param("org/model", "model", "refs/pr/1", id="model-pr"),
    pytest.param("org/data", "dataset", "main", id="dataset"),
    pytest.param("org/app", "space", None, id="space"),
]


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    async with FakeHub(repos=build_repos(), page_size=2) as fake:
        yield fake


class Case:
    """One parametrized repo + revision, resolved against the hub."""

    def __init__(self, hub: FakeHub, repo_id: str, repo_type: str | None,
                 revision: str | None) -> None:
        self.repo_id = repo_id
        self.repo_type = repo_type
        self.repo = hub.repo(repo_id, repo_type or "model")  # type: ignore[arg-type]
        if revision is not None and revision.startswith("@"):
            revision = self.repo.resolve(revision[1:])
        self.revision = revision
        self.commit = self.repo.resolve(revision or "main")
        self.files = self.repo.files_at(self.commit)
        self.storage = f"{repo_type or 'model'}s--{repo_id.replace('/', '--')}"

    @property
    def refs(self) -> frozenset[str]:
        rev = self.revision or "main"
        return frozenset() if rev == self.commit else frozenset({rev})

    @property
    def blobs(self) -> dict[str, int]:
        return {f.etag: f.size for f in self.files.values()}

    def kw(self) -> dict[str, Any]:
        return {"repo_type": self.repo_type, "revision": self.revision}


def opts(hub: FakeHub, cache: Path) -> dict[str, Any]:
    return {"endpoint": hub.endpoint, "cache_dir": cache, "token": False}


async def official(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking official-client call (or a check using it) off the event loop."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def config(hub: FakeHub, cache: Path, **overrides: Any) -> HubConfig:
    return HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=cache, token=False,
                              **overrides)


def local(folder: str | Path, name: str) -> str:
    return os.path.join(folder, *name.split("/"))


def fetched_files(hub: FakeHub, case: Case) -> set[str]:
    """The repo files whose content was requested (resolve, resolve-cache or CDN GETs)."""
    prefix = "" if case.repo.repo_type == "model" else f"{case.repo.repo_type}s/"
    lfs = {f.sha256: name for name, f in case.files.items() if f.lfs}
    resolve = re.compile(rf"/{prefix}{case.repo_id}/resolve/[^/]+/(.+)")
    cached = re.compile(rf"/api/resolve-cache/{case.repo.repo_type}s/{case.repo_id}/[^/]+/(.+)")
    names = set()
    for r in hub.requests:
        if r.method != "GET":
            continue
        if r.server == "cdn":
            names.add(lfs[r.path.rsplit("/", 1)[-1]])
        elif match := resolve.fullmatch(r.path) or cached.fullmatch(r.path):
            names.add(unquote(match[1]))
    return names


Entry = tuple[str, str | bytes | None, int | None]


def layout(root: Path) -> dict[str, Entry]:
    """Every path under `root`: links with their target, files with their bytes and mode.

    The mode of `trees/<commit>.json` is left out: the official client writes it with mkstemp
    (0600), hubasync with the umask like every other file (0644), which is the better choice
    for a cache shared between users.
    """
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path), None)
            elif path.is_dir():
                out[rel] = ("dir", None, None)
            else:
                tree = rel.endswith(".json") and path.parent.name == "trees"
                mode = None if tree else stat.S_IMODE(path.stat().st_mode)
                out[rel] = ("file", path.read_bytes(), mode)
    return out


def assert_same_layout(ours: dict[str, Entry], theirs: dict[str, Entry]) -> None:
    only_ours = sorted(set(ours) - set(theirs))
    only_theirs = sorted(set(theirs) - set(ours))
    assert (only_ours, only_theirs) == ([], []), "paths only hubasync / only official writes"
    different = sorted(k for k in ours if ours[k] != theirs[k])
    assert different == [], "same paths, different kind, link target or bytes"


# -- 1. hubasync writes, the official client reads offline ---------------------------------------


def official_reads_cache(case: Case, cache: Path, folder: str, endpoint: str) -> None:
    """Blocking: every way the official client looks into a cache, offline."""
    common = {"repo_type": case.repo_type, "cache_dir": cache, "endpoint": endpoint,
              "token": False, "local_files_only": True}
    for name, fake in case.files.items():
        for revision in {case.revision, case.commit}:
            path = hf.hf_hub_download(case.repo_id, name, revision=revision, **common)
            assert path == local(folder, name)
            assert Path(path).read_bytes() == fake.data
            found = hf.try_to_load_from_cache(case.repo_id, name, cache_dir=cache,
                                              revision=revision, repo_type=case.repo_type)
            assert found == local(folder, name)
    assert hf.snapshot_download(case.repo_id, revision=case.revision, **common) == folder

    report = hf.scan_cache_dir(cache)
    assert report.warnings == []
    (repo,) = report.repos
    assert (repo.repo_id, repo.repo_type) == (case.repo_id, case.repo_type or "model")
    assert repo.nb_files == len(case.blobs)
    assert repo.size_on_disk == sum(case.blobs.values())
    (revision,) = repo.revisions
    assert revision.commit_hash == case.commit
    assert revision.refs == case.refs
    assert revision.nb_files == len(case.files)
    assert str(revision.snapshot_path) == folder

    listed = hf.get_cached_repo_tree(case.repo_id, repo_type=case.repo_type,
                                     revision=case.revision, cache_dir=cache)
    assert {f.path: (f.size, f.blob_id) for f in listed} == {
        name: (fake.size, fake.git_oid) for name, fake in case.files.items()
    }


@pytest.mark.parametrize(("repo_id", "repo_type", "revision"), CASES)
async def test_official_reads_a_hubasync_snapshot(
    hub: FakeHub, tmp_path: Path, repo_id: str, repo_type: str | None, revision: str | None
) -> None:
    case = Case(hub, repo_id, repo_type, revision)
    folder = await hubasync.snapshot_download(repo_id, **case.kw(), **opts(hub, tmp_path))
    assert folder == str(tmp_path / case.storage / "snapshots" / case.commit)
    await official(official_reads_cache, case, tmp_path, folder, hub.endpoint)

    # the LFS part of the listing, which get_cached_repo_tree does not return
    tree = json.loads((tmp_path / case.storage / "trees" / f"{case.commit}.json").read_bytes())
    for name, fake in case.files.items():
        lfs = {k: v for k, v in tree["files"][name].items() if k.startswith("lfs_")}
        assert lfs == ({"lfs_sha256": fake.sha256, "lfs_size": fake.size} if fake.lfs else {})

    hub.clear_requests()
    for name in case.files:  # and hubasync answers its own cache with the same paths, offline
        path = await hubasync.hf_hub_download(repo_id, name, repo_type=repo_type,
                                              revision=case.commit, **opts(hub, tmp_path))
        assert path == local(folder, name)
    assert hub.requests == []


async def test_official_reads_files_from_hubasync_hf_hub_download(hub: FakeHub,
                                                                  tmp_path: Path) -> None:
    """File by file (no snapshot): refs/<revision> is written by each download."""
    for revision in ("refs/pr/1", "v1.0", None):
        case = Case(hub, "org/model", None, revision)
        paths = {}
        for name in sorted(case.files)[::2]:
            paths[name] = await hubasync.hf_hub_download("org/model", name, revision=revision,
                                                         **opts(hub, tmp_path))
        for name, path in paths.items():
            theirs = await official(hf.hf_hub_download, "org/model", name, revision=revision,
                                    local_files_only=True, **opts(hub, tmp_path))
            assert theirs == path == str(tmp_path / case.storage / "snapshots" / case.commit
                                         / name)
            assert Path(theirs).read_bytes() == case.files[name].data
    report = await official(hf.scan_cache_dir, tmp_path)
    assert report.warnings == []
    (repo,) = report.repos
    assert {r.commit_hash: r.refs for r in repo.revisions} == {
        hub.repo("org/model").resolve(rev): frozenset({rev})
        for rev in ("refs/pr/1", "v1.0", "main")
    }


# -- 2. the official client writes, hubasync reads offline ---------------------------------------


@pytest.mark.parametrize(("repo_id", "repo_type", "revision"), CASES)
async def test_hubasync_reads_an_official_snapshot_offline(
    hub: FakeHub, tmp_path: Path, repo_id: str, repo_type: str | None, revision: str | None
) -> None:
    case = Case(hub, repo_id, repo_type, revision)
    folder = await official(hf.snapshot_download, repo_id, **case.kw(), **opts(hub, tmp_path))
    hub.clear_requests()
    for overrides, lookup in (({"offline": True}, False), ({}, True)):
        async with HubClient(config(hub, tmp_path, **overrides)) as client:
            got = await client.snapshot_download(repo_id, **case.kw(), local_files_only=lookup)
            assert got == folder
            for name, fake in case.files.items():
                path = await client.hf_hub_download(repo_id, name, **case.kw(),
                                                    local_files_only=lookup)
                assert path == local(folder, name)
                assert Path(path).read_bytes() == fake.data
            assert client.request_count == 0
    assert hub.requests == []


async def test_hubasync_completes_a_partial_official_download(hub: FakeHub,
                                                              tmp_path: Path) -> None:
    case = Case(hub, "org/model", None, None)
    first = await official(hf.snapshot_download, "org/model", allow_patterns=["*.json", "*.txt"],
                           **opts(hub, tmp_path))
    have = {p.relative_to(first).as_posix() for p in Path(first).rglob("*") if p.is_symlink()}
    assert have and have != set(case.files)
    blobs = tmp_path / case.storage / "blobs"
    before = {p.name: p.stat().st_ino for p in blobs.iterdir()}
    hub.clear_requests()

    folder = await hubasync.snapshot_download("org/model", **opts(hub, tmp_path))
    assert folder == first
    assert fetched_files(hub, case) == set(case.files) - have  # only the missing files
    assert not [r for r in hub.requests if "/tree/" in r.path]  # the official listing is reused
    after = {p.name: p.stat().st_ino for p in blobs.iterdir()}
    assert set(after) == set(case.blobs)  # one blob per content, shared by both clients
    assert {name: after[name] for name in before} == before  # existing blobs untouched
    for name, fake in case.files.items():
        assert Path(folder, name).read_bytes() == fake.data
    assert await official(hf.snapshot_download, "org/model", local_files_only=True,
                          **opts(hub, tmp_path)) == folder
    assert (await official(hf.scan_cache_dir, tmp_path)).warnings == []


@pytest.mark.parametrize(("repo_id", "repo_type", "revision"), CASES)
async def test_warm_cache_online_costs_at_most_the_revision_lookup(
    hub: FakeHub, tmp_path: Path, repo_id: str, repo_type: str | None, revision: str | None
) -> None:
    """Online, each client trusts the other's listing and files: no tree, no HEAD, no GET."""
    case = Case(hub, repo_id, repo_type, revision)
    lookup = [] if case.revision == case.commit else ["GET"]  # repo info, unless a hash
    ours, theirs = tmp_path / "a", tmp_path / "b"
    folder = await hubasync.snapshot_download(repo_id, **case.kw(), **opts(hub, ours))
    other = await official(hf.snapshot_download, repo_id, **case.kw(), **opts(hub, theirs))
    hub.clear_requests()
    assert await official(hf.snapshot_download, repo_id, **case.kw(), **opts(hub, ours)) == folder
    assert [r.method for r in hub.requests] == lookup
    hub.clear_requests()
    assert await hubasync.snapshot_download(repo_id, **case.kw(), **opts(hub, theirs)) == other
    assert [r.method for r in hub.requests] == lookup


async def test_patterns_and_incomplete_snapshots_agree(hub: FakeHub, tmp_path: Path) -> None:
    """A filtered download is complete for its patterns, incomplete without them (both ways)."""
    patterns: dict[str, Any] = {"allow_patterns": ["*.json", "sub/"], "ignore_patterns": "*awful*"}
    wanted = {"config.json", "dup/same-as-config.json", "sub/deep/weights.bin"}
    ours, theirs = tmp_path / "a", tmp_path / "b"
    folder = await hubasync.snapshot_download("org/model", **patterns, **opts(hub, ours))
    other = await official(hf.snapshot_download, "org/model", **patterns, **opts(hub, theirs))
    for root in (folder, other):
        assert {p.relative_to(root).as_posix() for p in Path(root).rglob("*")
                if not p.is_dir()} == wanted
    hub.clear_requests()
    assert await official(hf.snapshot_download, "org/model", local_files_only=True,
                          **patterns, **opts(hub, ours)) == folder
    with pytest.raises(hf.errors.IncompleteSnapshotError):
        await official(hf.snapshot_download, "org/model", local_files_only=True,
                       **opts(hub, ours))
    async with HubClient(config(hub, theirs, offline=True)) as client:
        assert await client.snapshot_download("org/model", **patterns) == other
        with pytest.raises(hubasync.IncompleteSnapshotError):
            await client.snapshot_download("org/model")
    assert hub.requests == []


# -- 3. the same bytes on disk -------------------------------------------------------------------


@pytest.mark.parametrize(("repo_id", "repo_type", "revision"), CASES)
async def test_same_cache_layout_as_official(
    hub: FakeHub, tmp_path: Path, repo_id: str, repo_type: str | None, revision: str | None
) -> None:
    case = Case(hub, repo_id, repo_type, revision)
    ours, theirs = tmp_path / "hubasync", tmp_path / "official"
    await hubasync.snapshot_download(repo_id, **case.kw(), **opts(hub, ours))
    await official(hf.snapshot_download, repo_id, **case.kw(), **opts(hub, theirs))
    mine, reference = layout(ours), layout(theirs)
    # spot checks of what the comparison covers
    assert reference["CACHEDIR.TAG"][1] == mine["CACHEDIR.TAG"][1]
    assert f"{case.storage}/trees/{case.commit}.json" in mine
    assert any(k.startswith(f".locks/{case.storage}/") for k in reference)
    if case.refs:
        (ref,) = case.refs
        assert mine[f"{case.storage}/refs/{ref}"][:2] == ("file", case.commit.encode())
    assert_same_layout(mine, reference)


def split_metadata(tree: dict[str, Entry]) -> dict[str, Entry]:
    """local_dir bookkeeping: keep commit and etag of each .metadata, drop the timestamp."""
    out = {}
    for rel, (kind, value, mode) in tree.items():
        if rel.endswith(".metadata"):
            assert isinstance(value, bytes)
            lines = value.decode().split("\n")
            assert len(lines) == 4 and lines[3] == "", rel  # 3 newline-terminated lines
            float(lines[2])
            value = "\n".join(lines[:2])
        out[rel] = (kind, value, mode)
    return out


@pytest.mark.parametrize(("repo_id", "repo_type", "revision"), CASES)
async def test_same_local_dir_layout_as_official(
    hub: FakeHub, tmp_path: Path, repo_id: str, repo_type: str | None, revision: str | None
) -> None:
    case = Case(hub, repo_id, repo_type, revision)
    ours, theirs = tmp_path / "hubasync", tmp_path / "official"
    got = await hubasync.snapshot_download(repo_id, **case.kw(), local_dir=ours,
                                           **opts(hub, tmp_path / "cache-a"))
    expected = await official(hf.snapshot_download, repo_id, **case.kw(), local_dir=theirs,
                              **opts(hub, tmp_path / "cache-b"))
    assert (got, expected) == (str(ours), str(theirs))
    mine, reference = split_metadata(layout(ours)), split_metadata(layout(theirs))
    gitignore = ".cache/huggingface/.gitignore"
    assert mine[gitignore][:2] == reference[gitignore][:2] == ("file", b"*")
    for name, fake in case.files.items():
        assert mine[name][:2] == ("file", fake.data)
        assert mine[f".cache/huggingface/download/{name}.metadata"][:2] == (
            "file", f"{case.commit}\n{fake.etag}")
    assert_same_layout(mine, reference)


async def test_each_reads_the_others_local_dir_without_downloading(hub: FakeHub,
                                                                   tmp_path: Path) -> None:
    case = Case(hub, "org/model", None, None)
    ours, theirs = tmp_path / "hubasync", tmp_path / "official"
    await hubasync.snapshot_download("org/model", local_dir=ours, **opts(hub, tmp_path / "a"))
    await official(hf.snapshot_download, "org/model", local_dir=theirs, **opts(hub, tmp_path / "b"))

    hub.clear_requests()
    for name, fake in case.files.items():
        path = await official(hf.hf_hub_download, "org/model", name, revision=case.commit,
                              local_dir=ours, **opts(hub, tmp_path / "b"))
        assert path == local(ours, name)
        assert Path(path).read_bytes() == fake.data
    assert await official(hf.snapshot_download, "org/model", revision=case.commit,
                          local_dir=ours, **opts(hub, tmp_path / "b")) == str(ours)
    assert hub.requests == []  # not even a HEAD

    for name in case.files:
        path = await hubasync.hf_hub_download("org/model", name, revision=case.commit,
                                              local_dir=theirs, **opts(hub, tmp_path / "a"))
        assert path == local(theirs, name)
    assert await hubasync.snapshot_download("org/model", revision=case.commit, local_dir=theirs,
                                            **opts(hub, tmp_path / "a")) == str(theirs)
    assert hub.requests == []

    # by branch: each asks which commit main is, and downloads nothing
    await hubasync.snapshot_download("org/model", local_dir=theirs, **opts(hub, tmp_path / "a"))
    await official(hf.snapshot_download, "org/model", local_dir=ours, **opts(hub, tmp_path / "b"))
    assert fetched_files(hub, case) == set()
    assert [r.method for r in hub.requests] == ["GET", "GET"]  # one repo info each
    for folder in (ours, theirs):
        for name, fake in case.files.items():
            assert Path(folder, name).read_bytes() == fake.data


async def test_official_and_hubasync_download_into_one_cache_at_once(hub: FakeHub,
                                                                     tmp_path: Path) -> None:
    """Same lock files, same primitive (flock), unique temp names: both succeed, one cache."""
    case = Case(hub, "org/model", None, None)
    hub.add_fault(Fault.stall(after_bytes=1000, seconds=0.3, server="cdn", method="GET"))
    folders: dict[str, str] = {}

    async def ours() -> None:
        folders["ours"] = await hubasync.snapshot_download("org/model", **opts(hub, tmp_path))

    async def theirs() -> None:
        folders["theirs"] = await official(hf.snapshot_download, "org/model",
                                           **opts(hub, tmp_path))

    async with anyio.create_task_group() as tg:
        tg.start_soon(ours)
        tg.start_soon(theirs)
    assert folders["ours"] == folders["theirs"]
    for name, fake in case.files.items():
        assert Path(folders["ours"], name).read_bytes() == fake.data
    blobs = tmp_path / case.storage / "blobs"
    assert {p.name for p in blobs.iterdir()} == set(case.blobs)  # no temp file left over
    assert (await official(hf.scan_cache_dir, tmp_path)).warnings == []


# -- 4. .no_exist --------------------------------------------------------------------------------


async def test_official_sees_the_no_exist_markers(hub: FakeHub, tmp_path: Path) -> None:
    model = Case(hub, "org/model", None, None)
    storage = tmp_path / model.storage
    # an empty cache, asked by commit hash
    with pytest.raises(hubasync.EntryNotFoundError):
        await hubasync.hf_hub_download("org/model", "missing.txt", revision=model.commit,
                                       **opts(hub, tmp_path))
    marker = storage / ".no_exist" / model.commit / "missing.txt"
    assert marker.is_file() and marker.read_bytes() == b""
    found = await official(hf.try_to_load_from_cache, "org/model", "missing.txt",
                           cache_dir=tmp_path, revision=model.commit)
    assert found is hf._CACHED_NO_EXIST

    # a cached snapshot, asked by branch (nested path), for a model and a dataset
    data = Case(hub, "org/data", "dataset", None)
    for case in (model, data):
        await hubasync.snapshot_download(case.repo_id, repo_type=case.repo_type,
                                         **opts(hub, tmp_path))
        with pytest.raises(hubasync.RemoteEntryNotFoundError):
            await hubasync.hf_hub_download(case.repo_id, "not/there?.bin",
                                           repo_type=case.repo_type, **opts(hub, tmp_path))
        assert (tmp_path / case.storage / ".no_exist" / case.commit / "not/there?.bin").is_file()
        for revision in (None, case.commit):
            found = await official(hf.try_to_load_from_cache, case.repo_id, "not/there?.bin",
                                   cache_dir=tmp_path, revision=revision,
                                   repo_type=case.repo_type)
            assert found is hf._CACHED_NO_EXIST
        present = next(iter(case.files))
        found = await official(hf.try_to_load_from_cache, case.repo_id, present,
                               cache_dir=tmp_path, repo_type=case.repo_type)
        assert found == local(tmp_path / case.storage / "snapshots" / case.commit, present)
    assert (await official(hf.scan_cache_dir, tmp_path)).warnings == []


# -- 5. degraded mode (no symlinks) --------------------------------------------------------------


async def test_official_reads_a_cache_written_without_symlinks(hub: FakeHub,
                                                               tmp_path: Path) -> None:
    async with HubClient(config(hub, tmp_path, disable_symlinks=True)) as client:
        folders = {rev: await client.snapshot_download("org/model", revision=rev)
                   for rev in ("v1.0", "main")}  # most blobs are shared by the two
        single = await client.hf_hub_download("org/model", "extra.txt", revision="refs/pr/1")
    cases = {rev: Case(hub, "org/model", None, rev) for rev in ("v1.0", "main", "refs/pr/1")}

    def check() -> None:
        for rev, folder in folders.items():
            case = cases[rev]
            assert hf.snapshot_download("org/model", revision=rev, local_files_only=True,
                                        **opts(hub, tmp_path)) == folder
            for name, fake in case.files.items():
                path = hf.hf_hub_download("org/model", name, revision=rev,
                                          local_files_only=True, **opts(hub, tmp_path))
                assert path == local(folder, name)
                assert not Path(path).is_symlink()
                assert Path(path).read_bytes() == fake.data
                assert hf.try_to_load_from_cache("org/model", name, cache_dir=tmp_path,
                                                 revision=rev) == path
        path = hf.hf_hub_download("org/model", "extra.txt", revision="refs/pr/1",
                                  local_files_only=True, **opts(hub, tmp_path))
        assert path == single
        report = hf.scan_cache_dir(tmp_path)
        assert report.warnings == []
        (repo,) = report.repos
        assert {r.commit_hash: (r.refs, r.nb_files) for r in repo.revisions} == {
            case.commit: (frozenset({rev}), len(case.files) if rev != "refs/pr/1" else 1)
            for rev, case in cases.items()
        }

    await official(check)
