"""Pure rules: repo ids, cache paths, unsafe names, patterns, tree files, error mapping."""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

import hubasync
from hubasync._cache_layout import (
    LocalDirLayout,
    RepoCache,
    check_relative_path,
    format_local_metadata,
    normalize_etag,
    parse_local_metadata,
    relative_link_target,
)
from hubasync._download import filter_paths, parse_tree_json, tree_json
from hubasync._hub_api import next_page_url, raise_for_status
from hubasync._models import BlobLfsInfo, RepoFile, RepoRef, check_repo_id
from hubasync._transport import Response

COMMIT = "a" * 40


@pytest.mark.parametrize("repo_id", ["gpt2", "org/name", "Org-1/na.me_2", "123"])
def test_valid_repo_ids(repo_id: str) -> None:
    assert check_repo_id(repo_id) == repo_id


@pytest.mark.parametrize(
    "repo_id", ["", "a/b/c", "org--x/y", "a..b", ".hidden", "name-", "x.git", "café", "a b"]
)
def test_invalid_repo_ids(repo_id: str) -> None:
    with pytest.raises(hubasync.InvalidRepoIdError):
        check_repo_id(repo_id)
    with pytest.raises(ValueError, match="repo id"):  # also a ValueError, for porting
        RepoRef(repo_id=repo_id)


def test_folder_names_and_resolve_paths() -> None:
    assert RepoRef(repo_id="julien-c/EsperBERTo-small").folder_name == (
        "models--julien-c--EsperBERTo-small"
    )
    assert RepoRef(repo_id="glue", repo_type="dataset").folder_name == "datasets--glue"
    space = RepoRef(repo_id="org/app", repo_type="space")
    assert space.resolve_path("refs/pr/1", "sub/awful?name%x:y,z") == (
        "/spaces/org/app/resolve/refs%2Fpr%2F1/sub/awful%3Fname%25x%3Ay%2Cz"
    )
    assert RepoRef(repo_id="a/b").resolve_path("v1.0", "a b.txt") == "/a/b/resolve/v1.0/a%20b.txt"


@pytest.mark.parametrize(
    "name", ["../../evil", "/etc/x", "a/../b", "a//b", "./a", "C:\\x", "\\\\host\\share\\x",
             "a/..\\..\\b", "", "x\x00y", "D:foo"]
)
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(hubasync.UnsafePathError):
        check_relative_path(name)


def test_cache_paths(tmp_path: object) -> None:
    cache = RepoCache("/c", RepoRef(repo_id="org/m"))
    assert cache.blob("b" * 64) == "/c/models--org--m/blobs/" + "b" * 64
    assert cache.pointer(COMMIT, "sub/dir/f.bin") == f"/c/models--org--m/snapshots/{COMMIT}/sub/dir/f.bin"
    assert cache.ref("refs/pr/1") == "/c/models--org--m/refs/refs/pr/1"
    assert cache.lock("c" * 40) == "/c/.locks/models--org--m/" + "c" * 40 + ".lock"
    assert cache.tree(COMMIT) == f"/c/models--org--m/trees/{COMMIT}.json"
    assert cache.no_exist(COMMIT, "x/y") == f"/c/models--org--m/.no_exist/{COMMIT}/x/y"
    assert cache.blob_temp("d" * 40).endswith(".incomplete")
    assert not cache.blob_temp("d" * 40).endswith("d" * 40 + ".incomplete")
    with pytest.raises(hubasync.UnsafePathError):
        cache.ref("../../../etc")
    with pytest.raises(hubasync.UnsafePathError):
        cache.snapshot("main")
    with pytest.raises(hubasync.UnsafePathError):
        cache.blob("../x")


def test_relative_links_climb_one_level_per_folder() -> None:
    cache = RepoCache("/c", RepoRef(repo_id="m"))
    blob = cache.blob("e" * 64)
    assert relative_link_target(blob, cache.pointer(COMMIT, "f")) == "../../blobs/" + "e" * 64
    assert relative_link_target(blob, cache.pointer(COMMIT, "a/b/f")) == (
        "../../../../blobs/" + "e" * 64
    )


def test_local_dir_paths() -> None:
    layout = LocalDirLayout("/l")
    assert layout.file("a/b.txt") == "/l/a/b.txt"
    assert layout.metadata("a/b.txt") == "/l/.cache/huggingface/download/a/b.txt.metadata"
    assert layout.lock("a/b.txt") == "/l/.cache/huggingface/download/a/b.txt.lock"
    temp = layout.temp("a/b.txt", "f" * 40)
    assert temp.startswith("/l/.cache/huggingface/download/a/") and temp.endswith(".incomplete")
    assert format_local_metadata(COMMIT, "f" * 40, 1712656091.123456) == (
        f"{COMMIT}\n{'f' * 40}\n1712656091.123456\n"
    )
    assert parse_local_metadata(format_local_metadata(COMMIT, "e", 1.5)) == (COMMIT, "e", 1.5)
    assert parse_local_metadata("garbage") is None


@pytest.mark.parametrize(
    ("raw", "expected"), [('W/"abc"', "abc"), ('"abc"', "abc"), ("abc", "abc"), (None, None)]
)
def test_normalize_etag(raw: str | None, expected: str | None) -> None:
    assert normalize_etag(raw) == expected


def test_patterns_follow_fnmatch_semantics() -> None:
    paths = ["config.json", "data/x.json", "data/sub/y.json", "model.bin", "Data/z.json"]
    assert filter_paths(paths, "*.json", None) == [
        "config.json", "data/x.json", "data/sub/y.json", "Data/z.json"]
    assert filter_paths(paths, "data/*.json", None) == ["data/x.json", "data/sub/y.json"]
    assert filter_paths(paths, ["data/"], None) == ["data/x.json", "data/sub/y.json"]
    assert filter_paths(paths, None, ["*.bin", "data/"]) == ["config.json", "Data/z.json"]
    assert filter_paths(paths, "*.json", "data/sub/*") == ["config.json", "data/x.json", "Data/z.json"]
    assert filter_paths(paths, "model.bi?", None) == ["model.bin"]


def test_tree_file_matches_the_official_format() -> None:
    files = [
        RepoFile(path="b.bin", size=5, blob_id="1" * 40,
                 lfs=BlobLfsInfo(size=5, sha256="2" * 64, pointer_size=130)),
        RepoFile(path="a.json", size=2, blob_id="3" * 40),
    ]
    data = json.loads(tree_json(files))
    assert data == {"format_version": 1, "files": {
        "a.json": {"size": 2, "blob_id": "3" * 40},
        "b.bin": {"size": 5, "blob_id": "1" * 40, "lfs_sha256": "2" * 64, "lfs_size": 5},
    }}
    assert list(data["files"]) == ["a.json", "b.bin"]
    parsed = parse_tree_json(tree_json(files).decode())
    assert parsed is not None
    assert {f.path: f.etag for f in parsed} == {"b.bin": "2" * 64, "a.json": "3" * 40}
    assert parse_tree_json('{"format_version": 2, "files": {}}') is None
    assert parse_tree_json("not json") is None


def _resp(status: int, url: str, *, body: bytes = b"",
          headers: dict[str, str] | None = None) -> Response:
    return Response(status=status, headers=CIMultiDictProxy(CIMultiDict(headers or {})), url=url,
                    body=body)


HUB = "https://hub.example"


@pytest.mark.parametrize(
    ("status", "headers", "url", "cls"),
    [
        (404, {"X-Error-Code": "RevisionNotFound"}, f"{HUB}/api/models/a/b", hubasync.RevisionNotFoundError),
        (404, {"X-Error-Code": "EntryNotFound"}, f"{HUB}/a/b/resolve/main/x", hubasync.RemoteEntryNotFoundError),
        (401, {"X-Error-Code": "GatedRepo"}, f"{HUB}/a/b/resolve/main/x", hubasync.GatedRepoError),
        (403, {"X-Error-Code": "GatedRepo"}, f"{HUB}/a/b/resolve/main/x", hubasync.GatedRepoError),
        (403, {"X-Error-Message": "Access to this resource is disabled."}, f"{HUB}/api/models/a", hubasync.DisabledRepoError),
        (404, {"X-Error-Code": "RepoNotFound"}, f"{HUB}/api/models/a", hubasync.RepositoryNotFoundError),
        (401, {}, f"{HUB}/a/b/resolve/main/x", hubasync.RepositoryNotFoundError),
        (401, {"X-Error-Message": "Invalid credentials in Authorization header"}, f"{HUB}/a/b/resolve/main/x", hubasync.HubHTTPError),
        (400, {}, f"{HUB}/api/x", hubasync.BadRequestError),
        (429, {"Retry-After": "7"}, f"{HUB}/api/x", hubasync.RateLimitedError),
        (503, {}, f"{HUB}/api/x", hubasync.ServerError),
        (403, {}, f"{HUB}/api/x", hubasync.HubHTTPError),
    ],
)
def test_error_mapping(status: int, headers: dict[str, str], url: str,
                       cls: type[hubasync.HubHTTPError]) -> None:
    with pytest.raises(cls) as info:
        raise_for_status(_resp(status, url, body=b'{"error": "server says no"}',
                               headers={"X-Request-Id": "req-1", **headers}))
    assert type(info.value) is cls
    assert info.value.status == status
    assert info.value.request_id == "req-1"
    assert info.value.server_message in ("server says no", headers.get("X-Error-Message"))
    assert "req-1" in str(info.value)


def test_gated_is_catchable_as_repo_not_found_and_429_carries_retry_after() -> None:
    assert issubclass(hubasync.GatedRepoError, hubasync.RepositoryNotFoundError)
    with pytest.raises(hubasync.RateLimitedError) as info:
        raise_for_status(_resp(429, f"{HUB}/x", headers={"Retry-After": "7"}))
    assert info.value.retry_after == 7
    assert isinstance(info.value, hubasync.TransientError)
    with pytest.raises(hubasync.RemoteEntryNotFoundError) as missing:
        raise_for_status(_resp(404, f"{HUB}/a/resolve/main/x",
                               headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}))
    assert missing.value.commit_hash == COMMIT
    assert isinstance(missing.value, hubasync.EntryNotFoundError)


def test_signed_query_never_in_error_messages() -> None:
    with pytest.raises(hubasync.HubHTTPError) as info:
        raise_for_status(_resp(403, "https://cdn.example/blob?X-Amz-Signature=secret"))
    assert "secret" not in str(info.value) and "secret" not in info.value.url


def test_next_page_link() -> None:
    resp = _resp(200, HUB, headers={"Link": '<https://hub.example/api/x?cursor=abc&recursive=true>; rel="next"'})
    assert next_page_url(resp) == "https://hub.example/api/x?cursor=abc&recursive=true"
    assert next_page_url(_resp(200, HUB)) is None
