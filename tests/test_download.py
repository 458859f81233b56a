"""End to end against FakeHub: what lands in the cache, and how few requests it takes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import hubasync
from hubasync import HubClient, HubConfig
from hubasync.testing import FakeFile, FakeHub, FakeRepo

pytestmark = pytest.mark.anyio

FILES = {
    "config.json": b'{"model_type": "demo"}',
    "tokenizer.json": b"{" + b'"t": 1, ' * 2000 + b"}",
    "sub/dir/weights.safetensors": bytes(range(256)) * 1200,
    "a b?.txt": b"odd name",
}


def make_repos() -> list[FakeRepo]:
    model = FakeRepo("org/model")
    first = model.commit(FILES, message="init")
    model.tag("v1.0", first)
    model.commit({"config.json": b'{"model_type": "demo", "v": 2}'}, message="bump")
    model.create_pr({"extra.txt": b"from a PR"})
    dataset = FakeRepo("org/data", repo_type="dataset")
    dataset.commit({"train/part-0.parquet": FakeFile(b"P" * 5000, lfs=True), "README.md": b"# d"})
    space = FakeRepo("org/app", repo_type="space")
    space.commit({"app.py": b"print('hi')", "requirements.txt": b"gradio"})
    return [model, dataset, space]


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    async with FakeHub(repos=make_repos(), page_size=2) as fake:
        yield fake


def config(hub: FakeHub, cache: Path, **overrides: object) -> HubConfig:
    return HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=cache, token=False,
                              **overrides)


def repo_of(hub: FakeHub, repo_id: str) -> FakeRepo:
    return hub.repos[repo_id]


def assert_snapshot_matches(folder: str, repo: FakeRepo, revision: str) -> None:
    files = repo.files_at(revision)
    on_disk = {
        str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file()
    }
    assert on_disk == set(files)
    for name, fake in files.items():
        path = Path(folder, name)
        assert path.read_bytes() == fake.data
        assert path.is_symlink()
        target = os.readlink(path)
        assert not os.path.isabs(target)
        assert target.endswith(f"blobs/{fake.etag}")
        assert target.startswith("../" * (name.count("/") + 2))


@pytest.mark.parametrize(
    ("repo_id", "repo_type", "revision"),
    [
        ("org/model", None, None),
        ("org/model", "model", "v1.0"),
        ("org/model", "model", "refs/pr/1"),
        ("org/data", "dataset", "main"),
        ("org/app", "space", None),
    ],
)
async def test_snapshot_layout(hub: FakeHub, tmp_path: Path, repo_id: str,
                               repo_type: str | None, revision: str | None) -> None:
    folder = await hubasync.snapshot_download(
        repo_id, repo_type=repo_type, revision=revision, cache_dir=tmp_path,
        endpoint=hub.endpoint, token=False,
    )
    repo = repo_of(hub, repo_id)
    rev = revision or "main"
    commit = repo.resolve(rev)
    storage = tmp_path / f"{repo_type or 'model'}s--{repo_id.replace('/', '--')}"
    assert folder == str(storage / "snapshots" / commit)
    assert_snapshot_matches(folder, repo, rev)
    assert (storage / "refs" / rev).read_bytes() == commit.encode()  # no newline
    assert (tmp_path / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f")
    assert (storage / "trees" / f"{commit}.json").is_file()
    assert not list(storage.rglob("*.incomplete"))
    assert not any(r.server == "cdn" and "authorization" in r.headers for r in hub.requests)


async def test_snapshot_by_commit_hash_writes_no_ref(hub: FakeHub, tmp_path: Path) -> None:
    repo = repo_of(hub, "org/model")
    commit = repo.resolve("v1.0")
    folder = await hubasync.snapshot_download("org/model", revision=commit, cache_dir=tmp_path,
                                              endpoint=hub.endpoint, token=False)
    assert_snapshot_matches(folder, repo, commit)
    assert not (tmp_path / "models--org--model" / "refs").exists()
    assert not any(r.path.startswith("/api/models/org/model/revision") for r in hub.requests)


async def test_warm_snapshot_costs_one_request_then_none(hub: FakeHub, tmp_path: Path) -> None:
    async with HubClient(config(hub, tmp_path)) as client:
        folder = await client.snapshot_download("org/model")
        hub.clear_requests()
        assert await client.snapshot_download("org/model") == folder
        assert len(hub.requests) == 1
        hub.clear_requests()
        commit = Path(folder).name
        assert await client.snapshot_download("org/model", revision=commit) == folder
        assert hub.requests == []
    async with HubClient(config(hub, tmp_path, offline=True)) as client:
        assert await client.snapshot_download("org/model") == folder
        assert await client.hf_hub_download("org/model", "config.json") == f"{folder}/config.json"
        assert client.request_count == 0
    assert hub.requests == []


async def test_hf_hub_download_regular_and_lfs(hub: FakeHub, tmp_path: Path) -> None:
    repo = repo_of(hub, "org/model")
    commit = repo.resolve("main")
    for name in ("config.json", "sub/dir/weights.safetensors", "a b?.txt"):
        path = await hubasync.hf_hub_download("org/model", name, cache_dir=tmp_path,
                                              endpoint=hub.endpoint, token=False)
        assert path == str(tmp_path / "models--org--model" / "snapshots" / commit / name)
        assert Path(path).read_bytes() == repo.files_at("main")[name].data
    lfs = repo.files_at("main")["sub/dir/weights.safetensors"]
    assert (tmp_path / "models--org--model" / "blobs" / lfs.sha256).is_file()
    assert any(r.server == "cdn" for r in hub.requests)
    # subfolder is prepended; a commit hash with the file cached costs nothing
    hub.clear_requests()
    path = await hubasync.hf_hub_download("org/model", "weights.safetensors",
                                          subfolder="sub/dir", revision=commit,
                                          cache_dir=tmp_path, endpoint=hub.endpoint, token=False)
    assert path.endswith("sub/dir/weights.safetensors")
    assert hub.requests == []


async def test_shared_blobs_across_revisions(hub: FakeHub, tmp_path: Path) -> None:
    async with HubClient(config(hub, tmp_path)) as client:
        await client.snapshot_download("org/model", revision="v1.0")
        hub.clear_requests()
        await client.snapshot_download("org/model", revision="main")
    main = hub.repos["org/model"].resolve("main")
    fetched = [r.path for r in hub.requests if r.method == "GET" and r.status == 200
               and ("/resolve/" in r.path or r.path.startswith("/api/resolve-cache/"))]
    assert len(fetched) == 1  # straight from resolve-cache: the shortcut learned in run one
    assert fetched[0].endswith(f"/{main}/config.json")
    assert not [r for r in hub.requests if r.server == "cdn"]  # only the changed config.json
    storage = tmp_path / "models--org--model"
    assert len(list((storage / "snapshots").iterdir())) == 2


async def test_force_download_refetches(hub: FakeHub, tmp_path: Path) -> None:
    async with HubClient(config(hub, tmp_path)) as client:
        await client.hf_hub_download("org/model", "config.json")
        hub.clear_requests()
        await client.hf_hub_download("org/model", "config.json", force_download=True)
    assert any(r.method == "GET" for r in hub.requests)


async def test_patterns(hub: FakeHub, tmp_path: Path) -> None:
    folder = await hubasync.snapshot_download(
        "org/model", allow_patterns=["*.json", "sub/"], ignore_patterns="tokenizer*",
        cache_dir=tmp_path, endpoint=hub.endpoint, token=False,
    )
    names = sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())
    assert names == ["config.json", "sub/dir/weights.safetensors"]


async def test_list_files_and_tree(hub: FakeHub, tmp_path: Path) -> None:
    files = await hubasync.list_repo_files("org/model", endpoint=hub.endpoint, token=False)
    assert sorted(files) == sorted(repo_of(hub, "org/model").files_at("main"))
    top = await hubasync.list_repo_tree("org/model", endpoint=hub.endpoint, token=False)
    assert {e.path for e in top} == {"config.json", "tokenizer.json", "sub", "a b?.txt"}
    assert any(isinstance(e, hubasync.RepoFolder) for e in top)
    deep = await hubasync.list_repo_tree("org/model", "sub", recursive=True,
                                         endpoint=hub.endpoint, token=False)
    lfs = [e for e in deep if isinstance(e, hubasync.RepoFile)]
    assert [e.path for e in lfs] == ["sub/dir/weights.safetensors"]
    assert lfs[0].lfs is not None
    assert lfs[0].lfs.sha256 == repo_of(hub, "org/model").files_at("main")[lfs[0].path].sha256


async def test_local_dir_snapshot_and_rerun(hub: FakeHub, tmp_path: Path) -> None:
    target = tmp_path / "out"
    cache = tmp_path / "cache"
    repo = repo_of(hub, "org/model")
    commit = repo.resolve("main")
    async with HubClient(config(hub, cache)) as client:
        folder = await client.snapshot_download("org/model", local_dir=target)
        assert folder == str(target.resolve())
        for name, fake in repo.files_at("main").items():
            path = target / name
            assert not path.is_symlink()
            assert path.read_bytes() == fake.data
            meta = target / ".cache/huggingface/download" / f"{name}.metadata"
            lines = meta.read_text().split("\n")
            assert lines[:2] == [commit, fake.etag]
            assert float(lines[2]) >= path.stat().st_mtime - 1
            assert lines[3] == ""
        assert (target / ".cache/huggingface/.gitignore").read_text() == "*"
        assert not (cache / "models--org--model" / "blobs").exists()
        hub.clear_requests()
        await client.snapshot_download("org/model", local_dir=target)
        assert not [r for r in hub.requests if "/resolve/" in r.path or r.server == "cdn"]
        (target / "config.json").write_bytes(b"tampered")
        os.utime(target / "config.json", (1e10, 1e10))
        await client.snapshot_download("org/model", local_dir=target)
        assert (target / "config.json").read_bytes() == repo.files_at("main")["config.json"].data
        local = await client.hf_hub_download("org/model", "tokenizer.json", local_dir=target,
                                             revision=commit)
        assert local == str(target.resolve() / "tokenizer.json")


async def test_local_dir_copies_from_cache_without_download(hub: FakeHub,
                                                            tmp_path: Path) -> None:
    async with HubClient(config(hub, tmp_path / "cache")) as client:
        await client.snapshot_download("org/model")
        hub.clear_requests()
        await client.snapshot_download("org/model", local_dir=tmp_path / "out")
    assert not [r for r in hub.requests if "/resolve/" in r.path or r.server == "cdn"]
    assert (tmp_path / "out" / "config.json").is_file()


async def test_degraded_mode_without_symlinks(hub: FakeHub, tmp_path: Path) -> None:
    async with HubClient(config(hub, tmp_path, disable_symlinks=True)) as client:
        folder = await client.snapshot_download("org/model")
    repo = repo_of(hub, "org/model")
    for name, fake in repo.files_at("main").items():
        path = Path(folder, name)
        assert not path.is_symlink()
        assert path.read_bytes() == fake.data


async def test_hub_down_falls_back_to_cache(tmp_path: Path) -> None:
    repos = make_repos()
    async with FakeHub(repos=repos) as hub:
        endpoint = hub.endpoint
        folder = await hubasync.snapshot_download("org/model", cache_dir=tmp_path,
                                                  endpoint=endpoint, token=False)
    # the server is gone: connection refused -> answered from the cache
    assert await hubasync.snapshot_download("org/model", cache_dir=tmp_path, endpoint=endpoint,
                                            token=False) == folder
    path = await hubasync.hf_hub_download("org/model", "config.json", cache_dir=tmp_path,
                                          endpoint=endpoint, token=False)
    assert path == f"{folder}/config.json"
    with pytest.raises(hubasync.LocalEntryNotFoundError):
        await hubasync.snapshot_download("org/data", repo_type="dataset", cache_dir=tmp_path,
                                         endpoint=endpoint, token=False)
    with pytest.raises(hubasync.LocalEntryNotFoundError):
        await hubasync.hf_hub_download("org/model", "missing.txt", cache_dir=tmp_path,
                                       endpoint=endpoint, token=False)


async def test_local_files_only_and_incomplete_snapshot(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(hubasync.LocalEntryNotFoundError):
        await hubasync.snapshot_download("org/model", cache_dir=tmp_path, local_files_only=True,
                                         endpoint=hub.endpoint, token=False)
    await hubasync.snapshot_download("org/model", allow_patterns="*.json", cache_dir=tmp_path,
                                     endpoint=hub.endpoint, token=False)
    hub.clear_requests()
    folder = await hubasync.snapshot_download("org/model", allow_patterns="*.json",
                                              cache_dir=tmp_path, local_files_only=True,
                                              endpoint=hub.endpoint, token=False)
    assert Path(folder, "config.json").is_file()
    with pytest.raises(hubasync.IncompleteSnapshotError):
        await hubasync.snapshot_download("org/model", cache_dir=tmp_path, local_files_only=True,
                                         endpoint=hub.endpoint, token=False)
    assert hub.requests == []
