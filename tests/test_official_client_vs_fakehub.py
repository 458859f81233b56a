"""The official huggingface_hub client (the referee) against FakeHub.

If the official client cannot use FakeHub, FakeHub is wrong. Every call passes `endpoint=`,
`cache_dir=` and `token=` explicitly: the client reads its environment once, at import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from hubasync.testing import FakeFile, FakeHub, FakeRepo, Fault

if TYPE_CHECKING:
    from collections.abc import Iterator

hf = pytest.importorskip("huggingface_hub")
errors = pytest.importorskip("huggingface_hub.errors")

pytestmark = pytest.mark.interop

TOKEN = "hf_valid_token"
OTHER = "hf_other_token"
LFS_DATA = os.urandom(150_000)
FILES: dict[str, bytes | FakeFile] = {
    "config.json": b'{"model_type": "demo"}',
    "model.safetensors": LFS_DATA,
    "tokenizer/vocab.txt": b"a\nb\nc\n",
    "sub/deep/weights.bin": FakeFile(b"W" * 4096, lfs=True),
    "sub/awful?name.txt": b"awful",
    "with space/a b.txt": b"spaced",
}


def build_repos() -> list[FakeRepo]:
    model = FakeRepo("org/model")
    first = model.commit(FILES, message="init")
    model.tag("v1.0", first)
    model.commit({"config.json": b'{"model_type": "demo", "v": 2}'}, message="bump")
    model.create_pr({"extra.txt": b"from a PR"})
    dataset = FakeRepo("org/data", repo_type="dataset")
    dataset.commit({"train/part-0.parquet": b"P" * 5000, "README.md": b"# data"})
    space = FakeRepo("org/app", repo_type="space")
    space.commit({"app.py": b"print('hi')", "requirements.txt": b"gradio"})
    gated = FakeRepo("org/gated", gated="auto")
    gated.commit({"config.json": b"{}", "model.safetensors": b"G" * 2048})
    gated.allow(TOKEN)
    private = FakeRepo("org/private", private=True)
    private.commit({"config.json": b"{}"})
    private.allow(TOKEN)
    return [model, dataset, space, gated, private]


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(repos=build_repos(), tokens={TOKEN, OTHER}, page_size=2).run_in_thread() as fake:
        yield fake
        assert not [r for r in fake.requests if r.server == "cdn" and "authorization" in r.headers]


def opts(hub: FakeHub, tmp_path: Path, token: str | bool = False) -> dict[str, Any]:
    return {"endpoint": hub.endpoint, "cache_dir": tmp_path, "token": token}


def snapshot_files(folder: str) -> dict[str, bytes]:
    root = Path(folder)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def expected_files(repo: FakeRepo, revision: str) -> dict[str, bytes]:
    return {path: file.data for path, file in repo.files_at(revision).items()}


def test_hf_hub_download_regular_and_lfs(hub: FakeHub, tmp_path: Path) -> None:
    repo = hub.repos["org/model"]
    for name in ("config.json", "model.safetensors", "sub/deep/weights.bin", "sub/awful?name.txt"):
        path = hf.hf_hub_download("org/model", name, **opts(hub, tmp_path, TOKEN))
        assert Path(path).read_bytes() == repo.files_at("main")[name].data
    sha256 = repo.files_at("main")["model.safetensors"].sha256
    assert (tmp_path / "models--org--model" / "blobs" / sha256).read_bytes() == LFS_DATA
    assert any(r.server == "cdn" for r in hub.requests)


@pytest.mark.parametrize("revision", ["main", "v1.0", "commit", "refs/pr/1"])
def test_snapshot_download_revisions(hub: FakeHub, tmp_path: Path, revision: str) -> None:
    repo = hub.repos["org/model"]
    rev = repo.resolve("v1.0") if revision == "commit" else revision
    folder = hf.snapshot_download("org/model", revision=rev, **opts(hub, tmp_path, TOKEN))
    assert Path(folder).name == repo.resolve(rev)
    assert snapshot_files(folder) == expected_files(repo, rev)
    tree_pages = [r for r in hub.requests if "/tree/" in r.path]
    assert any("cursor=" in r.query for r in tree_pages)  # pagination was exercised
    report = hf.scan_cache_dir(tmp_path)
    assert report.warnings == []
    assert [r.repo_id for r in report.repos] == ["org/model"]


@pytest.mark.parametrize(("repo_id", "repo_type"), [("org/data", "dataset"), ("org/app", "space")])
def test_snapshot_download_dataset_and_space(
    hub: FakeHub, tmp_path: Path, repo_id: str, repo_type: str
) -> None:
    folder = hf.snapshot_download(repo_id, repo_type=repo_type, **opts(hub, tmp_path))
    assert snapshot_files(folder) == expected_files(hub.repos[repo_id], "main")
    info = hf.HfApi(endpoint=hub.endpoint, token=False).repo_info(repo_id, repo_type=repo_type)
    assert info.sha == hub.repos[repo_id].resolve("main")
    assert hf.scan_cache_dir(tmp_path).warnings == []


def test_gated_repo(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(errors.GatedRepoError):
        hf.hf_hub_download("org/gated", "config.json", **opts(hub, tmp_path))
    with pytest.raises(errors.GatedRepoError):
        hf.hf_hub_download("org/gated", "model.safetensors", **opts(hub, tmp_path, OTHER))
    path = hf.hf_hub_download("org/gated", "model.safetensors", **opts(hub, tmp_path, TOKEN))
    assert Path(path).read_bytes() == b"G" * 2048
    folder = hf.snapshot_download("org/gated", **opts(hub, tmp_path, TOKEN))
    assert set(snapshot_files(folder)) == {"config.json", "model.safetensors"}


def test_private_and_missing_repos(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(errors.RepositoryNotFoundError):
        hf.snapshot_download("org/private", **opts(hub, tmp_path))
    with pytest.raises(errors.RepositoryNotFoundError):
        hf.hf_hub_download("org/private", "config.json", **opts(hub, tmp_path, OTHER))
    assert hf.hf_hub_download("org/private", "config.json", **opts(hub, tmp_path, TOKEN))
    with pytest.raises(errors.RepositoryNotFoundError):
        hf.hf_hub_download("org/missing", "config.json", **opts(hub, tmp_path))
    with pytest.raises(errors.RepositoryNotFoundError):
        hf.snapshot_download("org/missing", **opts(hub, tmp_path, TOKEN))


def test_missing_revision_and_file(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(errors.RevisionNotFoundError):
        hf.hf_hub_download("org/model", "config.json", revision="nope", **opts(hub, tmp_path))
    with pytest.raises(errors.RevisionNotFoundError):
        hf.snapshot_download("org/model", revision="nope", **opts(hub, tmp_path))
    with pytest.raises(errors.RemoteEntryNotFoundError):
        hf.hf_hub_download("org/model", "missing.txt", **opts(hub, tmp_path))
    commit = hub.repos["org/model"].resolve("main")
    assert (tmp_path / "models--org--model" / ".no_exist" / commit / "missing.txt").is_file()
    assert (tmp_path / "models--org--model" / "refs" / "main").read_text() == commit


def test_survives_one_rate_limited_cdn_get(hub: FakeHub, tmp_path: Path) -> None:
    fault = Fault.rate_limit(retry_after=1, server="cdn", method="GET", times=1)
    hub.add_fault(fault)
    path = hf.hf_hub_download("org/model", "model.safetensors", **opts(hub, tmp_path, TOKEN))
    assert Path(path).read_bytes() == LFS_DATA
    assert hub.fault_hits(fault) == 1
    assert [r.status for r in hub.requests if r.server == "cdn"] == [429, 200]


def test_list_repo_tree_recursive(hub: FakeHub) -> None:
    api = hf.HfApi(endpoint=hub.endpoint, token=False)
    entries = list(api.list_repo_tree("org/model", recursive=True))
    files = {e.path: e for e in entries if isinstance(e, hf.hf_api.RepoFile)}
    repo_files = hub.repos["org/model"].files_at("main")
    assert set(files) == set(repo_files)
    for path, entry in files.items():
        fake = repo_files[path]
        assert (entry.size, entry.blob_id) == (fake.size, fake.git_oid)
        assert (entry.lfs.sha256 if entry.lfs else None) == (fake.sha256 if fake.lfs else None)
    folders = {e.path for e in entries if isinstance(e, hf.hf_api.RepoFolder)}
    assert folders == {"tokenizer", "sub", "sub/deep", "with space"}
    infos = api.get_paths_info("org/model", ["config.json", "sub", "nope"])
    assert [i.path for i in infos] == ["config.json", "sub"]


def test_renamed_repo(hub: FakeHub, tmp_path: Path) -> None:
    hub.rename_repo("org/data", "org/data-v2")
    path = hf.hf_hub_download("org/data", "README.md", repo_type="dataset", **opts(hub, tmp_path))
    assert Path(path).read_bytes() == b"# data"
    assert any(r.status == 307 and r.path.startswith("/datasets/org/data/") for r in hub.requests)
