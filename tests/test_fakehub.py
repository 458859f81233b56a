"""FakeHub at the protocol level, with a plain aiohttp client (no hubasync engine involved)."""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from hubasync.testing import FakeFile, FakeHub, FakeRepo, Fault, RecordedRequest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TOKEN = "hf_valid_token"
OTHER = "hf_other_token"
WEIGHTS = bytes(range(256)) * 40  # 10_240 bytes, LFS by suffix
AWFUL = "sub/awful?name.txt"
FILES: dict[str, bytes] = {
    "config.json": b'{"model_type": "demo"}',
    "model.safetensors": WEIGHTS,
    AWFUL: b"awful",
    "with space/a b.txt": b"spaced",
    "sub/deep/x.txt": b"deep",
    "README.md": b"# readme",
}


def make_model() -> FakeRepo:
    repo = FakeRepo("org/model")
    first = repo.commit(FILES, message="init")
    repo.tag("v1.0", first)
    repo.create_pr({"extra.txt": b"from a PR"})
    return repo


def locked(repo_id: str, **kwargs: Any) -> FakeRepo:
    repo = FakeRepo(repo_id, **kwargs)
    repo.commit({"config.json": b"{}", "model.safetensors": WEIGHTS})
    return repo


@pytest.fixture
def model() -> FakeRepo:
    return make_model()


@pytest.fixture
async def hub(model: FakeRepo) -> AsyncIterator[FakeHub]:
    private = locked("org/private", private=True)
    private.allow(TOKEN)
    gated = locked("org/gated", gated="manual")
    gated.allow(TOKEN)
    repos = [model, private, gated, locked("org/data", repo_type="dataset"),
             locked("org/app", repo_type="space")]  # fmt: skip
    async with FakeHub(repos=repos, tokens={TOKEN, OTHER}, page_size=3) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def fetch(
    http: aiohttp.ClientSession, method: str, url: str | URL, **kwargs: Any
) -> tuple[int, CIMultiDict[str], bytes]:
    kwargs.setdefault("allow_redirects", False)
    async with http.request(method, url, **kwargs) as response:
        return response.status, CIMultiDict(response.headers), await response.read()


async def lfs_url(
    http: aiohttp.ClientSession, hub: FakeHub, path: str = "model.safetensors"
) -> URL:
    status, headers, _ = await fetch(http, "HEAD", f"{hub.endpoint}/org/model/resolve/main/{path}")
    assert status == 302
    return URL(headers["Location"], encoded=True)  # keep the signed query verbatim


async def read_into(response: aiohttp.ClientResponse, sink: bytearray) -> None:
    async for chunk in response.content.iter_any():
        sink += chunk


# -- FakeRepo / FakeFile ------------------------------------------------------------------------


def test_commits_are_deterministic_snapshots() -> None:
    a, b = make_model(), make_model()
    assert a.resolve("main") == b.resolve("main")
    assert len(a.resolve("main")) == 40
    assert a.resolve("refs/pr/1") != a.resolve("main")
    assert set(a.files_at("refs/pr/1")) == {*FILES, "extra.txt"}
    c2 = a.commit({"new.txt": b"n"}, delete=["README.md"], message="second")
    assert set(a.files_at("main")) == ({*FILES, "new.txt"} - {"README.md"})
    assert a.resolve(c2) == c2
    assert a.resolve("v1.0") == b.resolve("main")
    a.create_branch("dev", from_revision="v1.0")
    assert a.resolve("dev") == a.resolve("refs/tags/v1.0")
    with pytest.raises(KeyError):
        a.resolve("nope")


def test_file_hashes_and_auto_lfs(tmp_path: Path) -> None:
    files = make_model().files_at("main")
    config, weights = files["config.json"], files["model.safetensors"]
    assert not config.lfs
    assert config.git_oid == hashlib.sha1(b"blob 22\0" + FILES["config.json"]).hexdigest()
    assert config.etag == config.git_oid
    assert weights.lfs
    assert weights.etag == weights.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    pointer = (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{weights.sha256}\nsize 10240\n"
    )
    blob = b"blob %d\0%s" % (len(pointer), pointer.encode())
    assert weights.git_oid == hashlib.sha1(blob).hexdigest()
    assert FakeFile(b"x" * 100_000).lfs
    assert not FakeFile(b"x", lfs=False).lfs
    on_disk = tmp_path / "big.bin"
    on_disk.write_bytes(b"z" * 5000)
    disk = FakeFile.from_path(on_disk)
    assert (disk.size, disk.lfs, disk.hashed) == (5000, True, False)
    assert disk.sha256 == hashlib.sha256(b"z" * 5000).hexdigest()
    given = FakeFile.from_path(on_disk, sha256="ab" * 32)
    assert given.etag == "ab" * 32


# -- repo info, tree, paths-info ------------------------------------------------------------------


@pytest.mark.anyio
async def test_repo_info(hub: FakeHub, http: aiohttp.ClientSession, model: FakeRepo) -> None:
    status, headers, body = await fetch(http, "GET", f"{hub.endpoint}/api/models/org/model")
    info = json.loads(body)
    assert status == 200
    assert headers["X-Request-Id"]
    assert info["id"] == "org/model"
    assert info["sha"] == model.resolve("main")
    assert {s["rfilename"] for s in info["siblings"]} == set(FILES)
    assert (info["private"], info["gated"], info["disabled"]) == (False, False, False)
    url = f"{hub.endpoint}/api/models/org/model/revision/{quote('refs/pr/1', safe='')}?blobs=true"
    info = json.loads((await fetch(http, "GET", url))[2])
    assert info["sha"] == model.resolve("refs/pr/1")
    siblings = {s["rfilename"]: s for s in info["siblings"]}
    weights = model.files_at("main")["model.safetensors"]
    assert siblings["model.safetensors"]["lfs"]["sha256"] == weights.sha256
    assert siblings["model.safetensors"]["blobId"] == weights.git_oid
    assert "lfs" not in siblings["config.json"]
    for kind in ("datasets", "spaces"):
        name = "data" if kind == "datasets" else "app"
        status, _, body = await fetch(
            http, "GET", f"{hub.endpoint}/api/{kind}/org/{name}/revision/main"
        )
        assert status == 200
        assert json.loads(body)["id"] == f"org/{name}"
    space = json.loads((await fetch(http, "GET", f"{hub.endpoint}/api/spaces/org/app"))[2])
    assert space["sdk"]


@pytest.mark.anyio
async def test_tree_pagination_follows_link(hub: FakeHub, http: aiohttp.ClientSession) -> None:
    url: str | None = f"{hub.endpoint}/api/models/org/model/tree/main?recursive=true&expand=false"
    seen: list[str] = []
    pages = 0
    while url is not None:
        async with http.get(URL(url, encoded=True)) as response:
            assert response.status == 200
            entries = await response.json()
            assert len(entries) <= 3
            seen += [entry["path"] for entry in entries]
            link = response.headers.get("Link")
        pages += 1
        url = None
        if link is not None:
            url = link.split(";")[0].strip("<>")
            assert url.startswith(hub.endpoint + "/api/models/org/model/tree/main?")
            assert "recursive=true&expand=false&cursor=" in url
    dirs = {"sub", "sub/deep", "with space"}
    assert sorted(seen) == sorted({*FILES, *dirs})
    assert pages == 3


@pytest.mark.anyio
async def test_tree_entries_and_subpaths(
    hub: FakeHub, http: aiohttp.ClientSession, model: FakeRepo
) -> None:
    hub.page_size = 100
    base = f"{hub.endpoint}/api/models/org/model/tree/main"
    top = json.loads((await fetch(http, "GET", f"{base}?recursive=false"))[2])
    folders_first = ["sub", "with space", "README.md", "config.json", "model.safetensors"]
    assert [e["path"] for e in top] == folders_first
    weights = next(e for e in top if e["path"] == "model.safetensors")
    file = model.files_at("main")["model.safetensors"]
    pointer_size = len(file.pointer)
    assert weights == {
        "type": "file",
        "oid": file.git_oid,
        "size": len(WEIGHTS),
        "path": "model.safetensors",
        "lfs": {"oid": file.sha256, "size": len(WEIGHTS), "pointerSize": pointer_size},
    }
    folder = next(e for e in top if e["path"] == "sub")
    assert folder["type"] == "directory"
    assert len(folder["oid"]) == 40
    sub = json.loads((await fetch(http, "GET", f"{base}/{quote('sub/deep', safe='')}"))[2])
    assert [e["path"] for e in sub] == ["sub/deep/x.txt"]
    for missing in ("config.json", "nope"):
        status, headers, _ = await fetch(http, "GET", f"{base}/{missing}")
        assert (status, headers["X-Error-Code"]) == (404, "EntryNotFound")
    expanded = json.loads((await fetch(http, "GET", f"{base}?expand=true"))[2])
    assert expanded[-1]["lastCommit"]["id"] == model.resolve("main")


@pytest.mark.anyio
async def test_paths_info(hub: FakeHub, http: aiohttp.ClientSession) -> None:
    form = [("paths", "config.json"), ("paths", "sub"), ("paths", "missing"), ("expand", "false")]
    url = f"{hub.endpoint}/api/models/org/model/paths-info/main"
    status, _, body = await fetch(http, "POST", url, data=form)
    assert status == 200
    assert [(e["type"], e["path"]) for e in json.loads(body)] == [
        ("file", "config.json"),
        ("directory", "sub"),
    ]


# -- resolve and CDN ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_resolve_regular_file(
    hub: FakeHub, http: aiohttp.ClientSession, model: FakeRepo
) -> None:
    commit = model.resolve("main")
    file = model.files_at("main")["config.json"]
    status, headers, _ = await fetch(
        http,
        "HEAD",
        f"{hub.endpoint}/org/model/resolve/main/config.json",
        headers={"Accept-Encoding": "identity"},
    )
    assert status == 307
    assert headers["X-Repo-Commit"] == commit
    location = headers["Location"]
    assert location.startswith(f"/api/resolve-cache/models/org/model/{commit}/config.json?")
    assert "etag=" in location
    status, headers, _ = await fetch(http, "HEAD", URL(hub.endpoint + location, encoded=True))
    assert status == 200
    assert headers["ETag"] == f'"{file.git_oid}"'
    assert headers["Content-Length"] == str(len(FILES["config.json"]))
    assert (headers["X-Repo-Commit"], headers["Accept-Ranges"]) == (commit, "bytes")
    status, _, body = await fetch(http, "GET", URL(hub.endpoint + location, encoded=True))
    assert (status, body) == (200, FILES["config.json"])
    status, _, body = await fetch(
        http, "GET", f"{hub.endpoint}/org/model/resolve/main/config.json", allow_redirects=True
    )
    assert (status, body) == (200, FILES["config.json"])


@pytest.mark.anyio
async def test_resolve_lfs_file_redirects_to_cdn(
    hub: FakeHub, http: aiohttp.ClientSession, model: FakeRepo
) -> None:
    sha256 = hashlib.sha256(WEIGHTS).hexdigest()
    status, headers, body = await fetch(
        http, "HEAD", f"{hub.endpoint}/org/model/resolve/main/model.safetensors"
    )
    assert status == 302
    location = urlsplit(headers["Location"])
    assert f"{location.scheme}://{location.netloc}" == hub.cdn_endpoint
    assert location.netloc.split(":")[0] in ("127.0.0.2", "127.0.0.1")
    assert location.netloc != urlsplit(hub.endpoint).netloc
    assert location.path.endswith(sha256)
    assert "expires=" in location.query
    assert "sig=" in location.query
    assert headers["X-Linked-Etag"] == f'"{sha256}"'
    assert headers["X-Linked-Size"] == str(len(WEIGHTS))
    assert headers["X-Repo-Commit"] == model.resolve("main")
    status, headers, body = await fetch(http, "GET", await lfs_url(http, hub))
    assert (status, body) == (200, WEIGHTS)
    assert headers["ETag"] != f'"{sha256}"'  # the CDN's own etag


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("header", "status", "content_range", "expected"),
    [
        ("bytes=10-19", 206, "bytes 10-19/10240", WEIGHTS[10:20]),
        ("bytes=10000-", 206, "bytes 10000-10239/10240", WEIGHTS[10000:]),
        ("bytes=-5", 206, "bytes 10235-10239/10240", WEIGHTS[-5:]),
        ("bytes=10200-99999", 206, "bytes 10200-10239/10240", WEIGHTS[10200:]),
        ("bytes=10240-", 416, "bytes */10240", None),
    ],
)
async def test_cdn_ranges(
    hub: FakeHub, http: aiohttp.ClientSession, header: str, status: int,
    content_range: str, expected: bytes | None,
) -> None:  # fmt: skip
    got, headers, body = await fetch(
        http, "GET", await lfs_url(http, hub), headers={"Range": header}
    )
    assert (got, headers["Content-Range"]) == (status, content_range)
    if expected is not None:
        assert body == expected
        assert headers["Content-Length"] == str(len(expected))


@pytest.mark.anyio
async def test_regular_file_ranges(hub: FakeHub, http: aiohttp.ClientSession) -> None:
    url = f"{hub.endpoint}/org/model/resolve/main/config.json"
    status, headers, body = await fetch(
        http, "GET", url, headers={"Range": "bytes=2-5"}, allow_redirects=True
    )
    assert (status, headers["Content-Range"]) == (206, "bytes 2-5/22")
    assert body == FILES["config.json"][2:6]
    status, _, _ = await fetch(
        http, "GET", url, headers={"Range": "bytes=50-"}, allow_redirects=True
    )
    assert status == 416


@pytest.mark.anyio
async def test_cdn_rejects_expired_tampered_and_authorized(
    hub: FakeHub, http: aiohttp.ClientSession
) -> None:
    url = await lfs_url(http, hub)
    status, _, body = await fetch(http, "GET", url, headers=auth())
    assert status == 400
    assert b"Only one auth mechanism allowed" in body
    tampered = URL(str(url).replace("expires=", "expires=1"), encoded=True)
    status, _, body = await fetch(http, "GET", tampered)
    assert (status, b"AccessDenied" in body) == (403, True)
    requoted = URL(str(url))  # yarl normalises %27 to ' : not the signed query any more
    assert (await fetch(http, "GET", requoted))[0] == 403
    hub.now = lambda: time.time() + 7200
    status, _, body = await fetch(http, "GET", url)
    assert (status, b"Request has expired" in body) == (403, True)
    hub.url_ttl = -1.0
    hub.now = time.time
    status, _, _ = await fetch(http, "GET", await lfs_url(http, hub))
    assert status == 403


@pytest.mark.anyio
async def test_pr_revision_and_awful_paths(
    hub: FakeHub, http: aiohttp.ClientSession, model: FakeRepo
) -> None:
    pr = quote("refs/pr/1", safe="")
    assert pr == "refs%2Fpr%2F1"
    status, headers, _ = await fetch(
        http, "HEAD", f"{hub.endpoint}/org/model/resolve/{pr}/extra.txt"
    )
    assert (status, headers["X-Repo-Commit"]) == (307, model.resolve("refs/pr/1"))
    status, headers, _ = await fetch(
        http, "HEAD", f"{hub.endpoint}/org/model/resolve/main/extra.txt"
    )
    assert (status, headers["X-Error-Code"]) == (404, "EntryNotFound")
    for path in (AWFUL, "with space/a b.txt"):
        url = URL(f"{hub.endpoint}/org/model/resolve/main/{quote(path)}", encoded=True)
        status, _, body = await fetch(http, "GET", url, allow_redirects=True)
        assert (status, body) == (200, FILES[path])
    assert any(r.path.endswith("sub/awful%3Fname.txt") for r in hub.requests)


@pytest.mark.anyio
async def test_gzip_for_regular_files(model: FakeRepo, http: aiohttp.ClientSession) -> None:
    async with FakeHub(repos=[model], gzip=True) as hub:
        url = f"{hub.endpoint}/org/model/resolve/main/README.md"
        head = await fetch(
            http, "HEAD", url, allow_redirects=True, headers={"Accept-Encoding": "identity"}
        )
        assert head[1]["Content-Length"] == str(len(FILES["README.md"]))
        status, headers, body = await fetch(
            http,
            "GET",
            url,
            allow_redirects=True,
            headers={"Accept-Encoding": "gzip"},
            auto_decompress=False,
        )
        assert (status, headers["Content-Encoding"]) == (200, "gzip")
        assert gzip.decompress(body) == FILES["README.md"]
        assert headers["Content-Length"] == str(len(body))
        _, headers, body = await fetch(
            http,
            "GET",
            url,
            allow_redirects=True,
            headers={"Accept-Encoding": "gzip", "Range": "bytes=0-1"},
        )
        assert "Content-Encoding" not in headers
        assert body == b"# "


@pytest.mark.anyio
async def test_disk_file_served_with_sendfile(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "w.bin").write_bytes(data)
    repo = FakeRepo("org/disk")
    repo.commit({"w.bin": FakeFile.from_path(tmp_path / "w.bin")})
    async with FakeHub(repos=[repo]) as hub:
        status, headers, _ = await fetch(
            http, "HEAD", f"{hub.endpoint}/org/disk/resolve/main/w.bin"
        )
        assert headers["X-Linked-Etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        url = URL(headers["Location"], encoded=True)
        assert (await fetch(http, "GET", url))[2] == data
        status, _, body = await fetch(http, "GET", url, headers={"Range": "bytes=1000-2000999"})
        assert (status, body) == (206, data[1000:2001000])


# -- errors and access ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "token", "status", "code"),
    [
        ("/api/models/org/private", None, 401, "RepoNotFound"),
        ("/api/models/org/private", OTHER, 404, "RepoNotFound"),
        ("/api/models/org/private", TOKEN, 200, None),
        ("/api/models/org/missing", None, 401, "RepoNotFound"),
        ("/api/models/org/missing", TOKEN, 404, "RepoNotFound"),
        ("/api/models/org/model", "hf_bogus", 401, None),
        ("/api/datasets/org/model", None, 401, "RepoNotFound"),
        ("/api/models/org/gated/tree/main", None, 200, None),
        ("/api/models/org/gated", OTHER, 200, None),
        ("/org/gated/resolve/main/config.json", None, 401, "GatedRepo"),
        ("/org/gated/resolve/main/config.json", OTHER, 403, "GatedRepo"),
        ("/org/gated/resolve/main/config.json", TOKEN, 307, None),
        ("/org/private/resolve/main/model.safetensors", None, 401, "RepoNotFound"),
        ("/org/private/resolve/main/model.safetensors", TOKEN, 302, None),
        ("/org/model/resolve/nope/config.json", None, 404, "RevisionNotFound"),
        ("/api/models/org/model/revision/nope", None, 404, "RevisionNotFound"),
        ("/api/models/org/model/tree/nope", None, 404, "RevisionNotFound"),
        ("/org/model/resolve/main/missing.txt", None, 404, "EntryNotFound"),
    ],
)
async def test_access_and_errors(
    hub: FakeHub, http: aiohttp.ClientSession, path: str, token: str | None, status: int,
    code: str | None,
) -> None:  # fmt: skip
    headers = auth(token) if token else {}
    got, response_headers, body = await fetch(http, "GET", hub.endpoint + path, headers=headers)
    assert got == status
    assert response_headers["X-Request-Id"]
    assert response_headers.get("X-Error-Code") == code
    if status >= 400:
        message = json.loads(body)["error"]
        assert response_headers["X-Error-Message"] == message
    if token == "hf_bogus":
        assert response_headers["X-Error-Message"] == "Invalid credentials in Authorization header"
    if code == "GatedRepo" and status == 401:
        assert "Access to model org/gated is restricted" in response_headers["X-Error-Message"]
    if code == "RevisionNotFound":
        assert response_headers["X-Error-Message"] == "Invalid rev id: nope"
    if code == "EntryNotFound":
        assert response_headers["X-Repo-Commit"] == hub.repos["org/model"].resolve("main")


@pytest.mark.anyio
async def test_renamed_repo_redirects(hub: FakeHub, http: aiohttp.ClientSession) -> None:
    hub.rename_repo("org/model", "org/renamed")
    status, headers, _ = await fetch(
        http, "HEAD", f"{hub.endpoint}/org/model/resolve/main/config.json?x=1"
    )
    assert (status, headers["Location"]) == (307, "/org/renamed/resolve/main/config.json?x=1")
    status, headers, _ = await fetch(
        http, "GET", f"{hub.endpoint}/api/models/org/model/revision/main"
    )
    assert (status, headers["Location"]) == (307, "/api/models/org/renamed/revision/main")
    status, _, body = await fetch(
        http, "GET", f"{hub.endpoint}/api/models/org/model", allow_redirects=True
    )
    assert (status, json.loads(body)["id"]) == (200, "org/renamed")


@pytest.mark.anyio
async def test_traversal_names_are_served_in_listings(http: aiohttp.ClientSession) -> None:
    repo = FakeRepo("org/evil")
    repo.commit({"../../evil": b"x", "/etc/x": b"y", "ok.txt": b"z"})
    async with FakeHub(repos=[repo]) as hub:
        url = f"{hub.endpoint}/api/models/org/evil/tree/main?recursive=true"
        paths = {e["path"] for e in json.loads((await fetch(http, "GET", url))[2])}
        assert {"../../evil", "/etc/x", "ok.txt"} <= paths


@pytest.mark.anyio
async def test_requests_are_recorded(hub: FakeHub, http: aiohttp.ClientSession) -> None:
    hub.clear_requests()
    url = URL(f"{hub.endpoint}/org/model/resolve/refs%2Fpr%2F1/config.json?a=b", encoded=True)
    await fetch(http, "GET", url, headers={**auth(), "Range": "bytes=0-3"})
    first = hub.requests[0]
    assert isinstance(first, RecordedRequest)
    assert (first.method, first.server) == ("GET", "hub")
    assert first.path == "/org/model/resolve/refs%2Fpr%2F1/config.json"
    assert (first.query, first.status, first.range) == ("a=b", 307, "bytes=0-3")
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.time <= time.monotonic()
    hub.clear_requests()
    assert hub.requests == []


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fault_status_rate_limit(hub: FakeHub, http: aiohttp.ClientSession) -> None:
    fault = Fault.rate_limit(retry_after=1, server="cdn", times=1)
    hub.add_fault(fault)
    url = await lfs_url(http, hub)
    status, headers, body = await fetch(http, "GET", url)
    assert (status, headers["Retry-After"], "error" in json.loads(body)) == (429, "1", True)
    assert (await fetch(http, "GET", url))[0] == 200
    assert hub.fault_hits(fault) == 1
    assert [r.fault for r in hub.requests if r.server == "cdn"] == ["status", None]
    hub.add_fault(Fault.server_error(503, method="HEAD", path_glob="/org/model/resolve/*"))
    resolve = f"{hub.endpoint}/org/model/resolve/main/config.json"
    assert (await fetch(http, "HEAD", resolve))[0] == 503
    assert (await fetch(http, "GET", f"{hub.endpoint}/api/models/org/model"))[0] == 200
    hub.clear_faults()
    hub.add_fault(Fault("status", status=500, probability=0.0))
    assert (await fetch(http, "GET", f"{hub.endpoint}/api/models/org/model"))[0] == 200


@pytest.mark.anyio
async def test_fault_drop(hub: FakeHub, http: aiohttp.ClientSession) -> None:
    hub.add_fault(Fault.drop(after_bytes=100, server="cdn", times=1))
    url = await lfs_url(http, hub)
    received = bytearray()
    async with http.get(url) as response:
        assert response.headers["Content-Length"] == str(len(WEIGHTS))
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_into(response, received)
    assert bytes(received) == WEIGHTS[:100]
    assert hub.requests[-1].fault == "drop"
    assert (await fetch(http, "GET", url))[2] == WEIGHTS


@pytest.mark.anyio
async def test_fault_stall_ends_on_read_timeout_and_shutdown(
    model: FakeRepo, http: aiohttp.ClientSession
) -> None:
    started = time.monotonic()
    async with FakeHub(repos=[model]) as hub:
        hub.add_fault(Fault.stall(after_bytes=10, seconds=30, server="cdn"))
        url = await lfs_url(http, hub)
        with pytest.raises(TimeoutError):
            async with http.get(url, timeout=aiohttp.ClientTimeout(sock_read=0.3)) as response:
                await response.read()
        async with http.get(url, timeout=aiohttp.ClientTimeout(sock_read=5)) as response:
            first = await response.content.readexactly(10)
            assert first == WEIGHTS[:10]
        # the hub shuts down while both responses are stalled
    assert time.monotonic() - started < 10


@pytest.mark.anyio
async def test_fault_short_stall_then_rest_of_body(
    hub: FakeHub, http: aiohttp.ClientSession
) -> None:
    hub.add_fault(Fault.stall(after_bytes=10, seconds=0.2, server="cdn", times=1))
    started = time.monotonic()
    assert (await fetch(http, "GET", await lfs_url(http, hub)))[2] == WEIGHTS
    assert time.monotonic() - started >= 0.2


@pytest.mark.anyio
async def test_fault_probability_is_seeded(model: FakeRepo, http: aiohttp.ClientSession) -> None:
    patterns = []
    for _ in range(2):
        async with FakeHub(repos=[model], seed=7) as hub:
            hub.add_fault(Fault.server_error(503, probability=0.5))
            url = f"{hub.endpoint}/api/models/org/model"
            patterns.append([(await fetch(http, "GET", url))[0] for _ in range(20)])
    assert patterns[0] == patterns[1]
    assert 0 < patterns[0].count(503) < 20


@pytest.mark.anyio
async def test_fault_corrupt(hub: FakeHub, http: aiohttp.ClientSession) -> None:
    hub.add_fault(Fault("corrupt", after_bytes=5, server="cdn"))
    body = (await fetch(http, "GET", await lfs_url(http, hub)))[2]
    assert len(body) == len(WEIGHTS)
    assert body[5] != WEIGHTS[5]
    assert body[:5] + body[6:] == WEIGHTS[:5] + WEIGHTS[6:]


@pytest.mark.anyio
async def test_fault_lie_size(hub: FakeHub, http: aiohttp.ClientSession) -> None:
    hub.add_fault(Fault("lie_size"))
    url = f"{hub.endpoint}/org/model/resolve/main/model.safetensors"
    headers = (await fetch(http, "HEAD", url))[1]
    assert headers["X-Linked-Size"] == str(len(WEIGHTS) + 1)
    url = f"{hub.endpoint}/org/model/resolve/main/config.json"
    headers = (await fetch(http, "HEAD", url, allow_redirects=True))[1]
    assert headers["Content-Length"] == str(len(FILES["config.json"]) + 1)


@pytest.mark.anyio
async def test_fault_ignore_and_wrong_range(hub: FakeHub, http: aiohttp.ClientSession) -> None:
    url = await lfs_url(http, hub)
    hub.add_fault(Fault("ignore_range", times=1))
    status, headers, body = await fetch(http, "GET", url, headers={"Range": "bytes=10-19"})
    assert (status, body, "Content-Range" in headers) == (200, WEIGHTS, False)
    hub.add_fault(Fault("wrong_range", times=1))
    status, headers, body = await fetch(http, "GET", url, headers={"Range": "bytes=10-19"})
    assert (status, headers["Content-Range"], body) == (206, "bytes 11-20/10240", WEIGHTS[11:21])
    # no Range asked: range faults do not apply (and are not counted down)
    hub.add_fault(Fault("wrong_range", times=1))
    assert (await fetch(http, "GET", url))[0] == 200
    headers = (await fetch(http, "GET", url, headers={"Range": "bytes=0-0"}))[1]
    assert headers["Content-Range"] == "bytes 1-1/10240"


# -- threads and processes ------------------------------------------------------------------------


def test_run_in_thread_from_sync_code() -> None:
    with FakeHub(repos=[make_model()]).run_in_thread() as hub:
        with urllib.request.urlopen(f"{hub.endpoint}/api/models/org/model", timeout=10) as response:
            assert json.load(response)["id"] == "org/model"
        url = f"{hub.endpoint}/org/model/resolve/main/model.safetensors"
        with urllib.request.urlopen(url, timeout=10) as response:  # follows 302 to the CDN
            assert response.read() == WEIGHTS
        endpoint = hub.endpoint
        assert [r.server for r in hub.requests] == ["hub", "hub", "cdn"]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{endpoint}/api/models/org/model", timeout=2)


def test_serve_cli_subprocess(tmp_path: Path) -> None:
    (tmp_path / "repo" / "sub").mkdir(parents=True)
    (tmp_path / "repo" / "config.json").write_bytes(b"{}")
    (tmp_path / "repo" / "sub" / "w.safetensors").write_bytes(WEIGHTS)
    spec = f"org/cli={tmp_path / 'repo'}"
    command = [sys.executable, "-m", "hubasync.testing", "serve", "--repo", spec]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, env=env) as proc:
        try:
            assert proc.stdout is not None
            line = json.loads(proc.stdout.readline())
            assert set(line) == {"endpoint", "cdn_endpoint"}
            url = f"{line['endpoint']}/org/cli/resolve/main/sub/w.safetensors"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.read() == WEIGHTS
            with urllib.request.urlopen(
                f"{line['endpoint']}/org/cli/resolve/main/config.json"
            ) as response:
                assert response.read() == b"{}"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            proc.kill()


def test_public_api_is_complete() -> None:
    import hubasync.testing as testing

    exported = {n for n, v in vars(testing).items() if not n.startswith("_") and n != "annotations"}
    assert set(testing.__all__) == {
        n for n in exported if not inspect.ismodule(getattr(testing, n))
    }
    for name in testing.__all__:
        obj = getattr(testing, name)
        if isinstance(obj, type):
            assert obj.__module__ == "hubasync.testing"
    public = {"FakeHub", "FakeRepo", "FakeFile", "Fault", "RecordedRequest"}
    assert public <= set(testing.__all__)
