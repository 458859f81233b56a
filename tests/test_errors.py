"""Bad input gets a clear, typed error and loses nothing; tokens never leak."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import hubasync
from hubasync import HubClient, HubConfig
from hubasync.testing import FakeHub, FakeRepo

pytestmark = pytest.mark.anyio

TOKEN = "hf_SuperSecretToken123"
OTHER = "hf_ValidButNotAllowed"


def make_repos() -> list[FakeRepo]:
    public = FakeRepo("org/public")
    public.commit({"config.json": b"{}", "weights.bin": b"W" * 4096})
    gated = FakeRepo("org/gated", gated="auto")
    gated.commit({"config.json": b'{"gated": true}', "weights.bin": b"G" * 4096})
    gated.allow(TOKEN)
    private = FakeRepo("org/private", private=True)
    private.commit({"config.json": b'{"private": true}'})
    private.allow(TOKEN)
    evil = FakeRepo("org/evil")
    evil.commit({"ok.txt": b"fine", "../../evil": b"pwned"})
    absolute = FakeRepo("org/absolute")
    absolute.commit({"ok.txt": b"fine", "/etc/x": b"pwned"})
    return [public, gated, private, evil, absolute]


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    async with FakeHub(repos=make_repos(), tokens={TOKEN, OTHER}) as fake:
        yield fake


def cfg(hub: FakeHub, cache: Path, token: str | bool = False) -> HubConfig:
    return HubConfig.from_env({}, endpoint=hub.endpoint, cache_dir=cache, token=token)


async def test_gated_without_token(hub: FakeHub, tmp_path: Path) -> None:
    async with HubClient(cfg(hub, tmp_path)) as client:
        with pytest.raises(hubasync.GatedRepoError) as info:
            await client.hf_hub_download("org/gated", "config.json")
        assert info.value.status == 401
        assert info.value.server_message and "restricted" in info.value.server_message
        assert info.value.request_id
        with pytest.raises(hubasync.RepositoryNotFoundError):  # catchable as the parent
            await client.snapshot_download("org/gated")
    assert not list(tmp_path.rglob("*.incomplete"))


async def test_gated_with_tokens(hub: FakeHub, tmp_path: Path) -> None:
    async with HubClient(cfg(hub, tmp_path, OTHER)) as client:
        with pytest.raises(hubasync.GatedRepoError) as info:
            await client.hf_hub_download("org/gated", "config.json")
        assert info.value.status == 403
    async with HubClient(cfg(hub, tmp_path, TOKEN)) as client:
        folder = await client.snapshot_download("org/gated")
    assert Path(folder, "weights.bin").read_bytes() == b"G" * 4096
    authed = [r for r in hub.requests if "authorization" in r.headers]
    assert authed
    assert all(r.server == "hub" for r in authed)


async def test_private_missing_repo_revision_and_file(hub: FakeHub, tmp_path: Path) -> None:
    async with HubClient(cfg(hub, tmp_path)) as client:
        with pytest.raises(hubasync.RepositoryNotFoundError) as private:
            await client.snapshot_download("org/private")
        assert type(private.value) is hubasync.RepositoryNotFoundError
        with pytest.raises(hubasync.RepositoryNotFoundError):
            await client.hf_hub_download("org/nope", "config.json")
        with pytest.raises(hubasync.RevisionNotFoundError) as rev:
            await client.snapshot_download("org/public", revision="no-such-branch")
        assert rev.value.server_message
        with pytest.raises(hubasync.RevisionNotFoundError):
            await client.hf_hub_download("org/public", "config.json", revision="v9")
        with pytest.raises(hubasync.RemoteEntryNotFoundError) as entry:
            await client.hf_hub_download("org/public", "missing.txt")
        assert isinstance(entry.value, hubasync.EntryNotFoundError)
    commit = hub.repos["org/public"].resolve("main")
    assert (tmp_path / "models--org--public" / ".no_exist" / commit / "missing.txt").is_file()
    async with HubClient(cfg(hub, tmp_path, TOKEN)) as client:
        folder = await client.snapshot_download("org/private")
        assert Path(folder, "config.json").read_bytes() == b'{"private": true}'


@pytest.mark.parametrize("repo_id", ["org/evil", "org/absolute"])
async def test_server_listing_escaping_names(hub: FakeHub, tmp_path: Path, repo_id: str) -> None:
    cache = tmp_path / "deep" / "cache"
    async with HubClient(cfg(hub, cache)) as client:
        with pytest.raises(hubasync.UnsafePathError):
            await client.snapshot_download(repo_id)
        with pytest.raises(hubasync.UnsafePathError):
            await client.snapshot_download(repo_id, local_dir=tmp_path / "deep" / "out")
        with pytest.raises(hubasync.UnsafePathError):
            await client.hf_hub_download(repo_id, "../../evil")
    outside = [p for p in tmp_path.rglob("*") if cache not in p.parents and p != cache
               and p.is_file()]
    assert outside == []
    assert not Path("/etc/x").exists()
    assert not [r for r in hub.requests if r.server == "cdn" or "/resolve/" in r.path]


@pytest.mark.parametrize("repo_id", ["a/b/c", "bad--id", "../x", "org/name.git", ""])
async def test_bad_repo_ids_fail_before_any_request(hub: FakeHub, tmp_path: Path,
                                                    repo_id: str) -> None:
    with pytest.raises(hubasync.InvalidRepoIdError):
        await hubasync.snapshot_download(repo_id, cache_dir=tmp_path, endpoint=hub.endpoint,
                                         token=False)
    with pytest.raises(ValueError, match="repo"):
        await hubasync.hf_hub_download(repo_id, "x", cache_dir=tmp_path, endpoint=hub.endpoint,
                                       token=False)
    assert hub.requests == []


async def test_bad_arguments(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(hubasync.UsageError):
        await hubasync.snapshot_download("org/public", repo_type="kernel", cache_dir=tmp_path,
                                         endpoint=hub.endpoint, token=False)
    with pytest.raises(hubasync.UnsafePathError):
        await hubasync.hf_hub_download("org/public", "config.json", revision="../../../x",
                                       cache_dir=tmp_path, endpoint=hub.endpoint, token=False)
    client = HubClient(cfg(hub, tmp_path))
    with pytest.raises(hubasync.ClientClosedError):
        await client.snapshot_download("org/public")
    async with client:
        pass
    with pytest.raises(hubasync.ClientClosedError):
        await client.snapshot_download("org/public")
    with pytest.raises(hubasync.ClientClosedError):
        async with client:
            pass


async def test_token_never_leaks(hub: FakeHub, tmp_path: Path,
                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with HubClient(cfg(hub, tmp_path, TOKEN)) as client:
        client.bus.add_callback(lambda e: seen.append(repr(e)))
        seen.append(repr(client))
        seen.append(repr(client.config))
        await client.snapshot_download("org/gated")
        for call in (client.hf_hub_download("org/gated", "missing.txt"),
                     client.snapshot_download("org/gated", revision="nope")):
            with pytest.raises(hubasync.HubError) as info:
                await call
            seen.extend([str(info.value), repr(info.value), repr(info.value.__dict__)])
    hub.add_fault(hubasync.testing.Fault.server_error(500, server="hub", path_glob="*/resolve/*"))
    fast = cfg(hub, tmp_path / "other", TOKEN).replace(
        retry=hubasync.RetryConfig(backoff_base=0.01, backoff_max=0.02, max_attempts=3))
    async with HubClient(fast) as client:
        with pytest.raises(hubasync.HubError) as info:
            await client.hf_hub_download("org/gated", "weights.bin")
        seen.append(str(info.value))
    text = "\n".join([*seen, caplog.text])
    assert TOKEN not in text
    assert not any("authorization" in r.headers for r in hub.requests if r.server == "cdn")


async def test_wrong_token_is_a_clear_error(hub: FakeHub, tmp_path: Path) -> None:
    async with HubClient(cfg(hub, tmp_path, "hf_not_a_token")) as client:
        with pytest.raises(hubasync.HubHTTPError) as info:
            await client.hf_hub_download("org/public", "config.json")
    assert info.value.status == 401
    assert "Invalid credentials" in str(info.value)
    assert "hf_not_a_token" not in str(info.value)
