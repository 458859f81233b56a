"""The Hub host: repo info, tree, paths-info, refs, resolve and resolve-cache, with Hub errors.

Access rules (as on huggingface.co): a token not known to the hub gets 401 "Invalid credentials";
a private repo without an allowed token looks exactly like a missing one (401 anonymous, 404 with
a valid token); a gated repo's info and tree are public, its files are not (401 anonymous, 403
with a token that is not allowed).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, quote, unquote

from hubasync.testing._cdn import sign_url
from hubasync.testing._listing import (
    decode_cursor,
    encode_cursor,
    list_tree,
    path_entries,
    refs_json,
    repo_info_json,
)
from hubasync.testing._routes import Route, parse_route, split_revision
from hubasync.testing._wire import Reply, content_reply, ensure_hashed, error_reply, json_reply

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiohttp import web

    from hubasync._types import RepoType
    from hubasync.testing._repo import FakeFile, FakeRepo
    from hubasync.testing._server import FakeHub

__all__ = ["HubHandler"]

_INVALID_TOKEN: Final = "Invalid credentials in Authorization header"  # noqa: S105
_METHODS: Final = {
    "info": ("GET", "HEAD"),
    "tree": ("GET", "HEAD"),
    "refs": ("GET", "HEAD"),
    "paths_info": ("POST",),
    "resolve": ("GET", "HEAD"),
    "cache": ("GET", "HEAD"),
}


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def _no_revision(revision: str) -> Reply:
    return error_reply(404, f"Invalid rev id: {revision}", "RevisionNotFound")


def _no_entry(sha: str) -> Reply:
    return error_reply(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})


async def _file_at(repo: FakeRepo, revision: str, path: str) -> tuple[str, FakeFile] | Reply:
    """(commit, file) at `revision`, hashed; or the RevisionNotFound / EntryNotFound reply."""
    sha = repo.try_resolve(revision)
    if sha is None:
        return _no_revision(revision)
    file = repo.commits[sha].files.get(path)
    if file is None:
        return _no_entry(sha)
    await ensure_hashed([file])
    return sha, file


def _redirect(status: int, location: str, headers: dict[str, str] | None = None) -> Reply:
    reason = "Temporary Redirect" if status == 307 else "Found"
    body = f"{reason}. Redirecting to {location}".encode()
    return Reply(
        status=status,
        headers={
            "Location": location,
            "Content-Type": "text/plain; charset=utf-8",
            **(headers or {}),
        },
        body=body,
    )


class HubHandler:
    """Turns one Hub request into a `Reply` (faults and sending are the server's job)."""

    def __init__(self, hub: FakeHub) -> None:
        self._hub = hub
        self._handlers: dict[str, Callable[[web.Request, Route, FakeRepo, str | None],
                                           Awaitable[Reply]]] = {
            "info": self._info,
            "tree": self._tree,
            "refs": self._refs,
            "paths_info": self._paths_info,
            "resolve": self._resolve,
            "cache": self._cache,
        }  # fmt: skip

    async def reply(self, request: web.Request) -> Reply:
        token, invalid = self._token(request)
        if invalid is not None:
            return invalid
        raw_path, _, query = request.raw_path.partition("?")
        route = parse_route(raw_path, self._known)
        if route is None:
            return error_reply(404, "Sorry, we can't find the page you are looking for.")
        if request.method not in _METHODS[route.kind]:
            return error_reply(405, f"Method {request.method} not allowed")
        moved = self._moved(route, query)
        if moved is not None:
            return moved
        repo = self._hub.lookup(route.repo_type, route.repo_id)
        if repo is None or (repo.private and token not in repo.allowed_tokens):
            status = 401 if token is None else 404
            return error_reply(status, "Repository not found", "RepoNotFound")
        return await self._handlers[route.kind](request, route, repo, token)

    def _token(self, request: web.Request) -> tuple[str | None, Reply | None]:
        header = request.headers.get("Authorization")
        if header is None:
            return None, None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self._hub.tokens:
            return None, error_reply(401, _INVALID_TOKEN)
        return token.strip(), None

    def _known(self, repo_type: RepoType, repo_id: str) -> bool:
        hub = self._hub
        return (
            hub.lookup(repo_type, repo_id) is not None
            or hub.renamed(repo_type, repo_id) is not None
        )

    def _moved(self, route: Route, query: str) -> Reply | None:
        if self._hub.lookup(route.repo_type, route.repo_id) is not None:
            return None
        new_id = self._hub.renamed(route.repo_type, route.repo_id)
        if new_id is None:
            return None
        return _redirect(307, route.with_repo_id(new_id) + (f"?{query}" if query else ""))

    def _gate(self, repo: FakeRepo, token: str | None) -> Reply | None:
        if not repo.gated or token in repo.allowed_tokens:
            return None
        what = f"Access to {repo.repo_type} {repo.repo_id} is restricted"
        if token is None:
            message = (
                f"{what}. You must have access to it and be authenticated to access it."
                " Please log in."
            )
            return error_reply(401, message, "GatedRepo")
        message = (
            f"{what} and you are not in the authorized list. "
            f"Visit {self._hub.endpoint}/{_prefix(repo)}{repo.repo_id} to ask for access."
        )
        return error_reply(403, message, "GatedRepo")

    async def _info(
        self, request: web.Request, route: Route, repo: FakeRepo, token: str | None
    ) -> Reply:
        params = parse_qsl(request.raw_path.partition("?")[2], keep_blank_values=True)
        revision = unquote("/".join(route.rest)) if route.rest else "main"
        sha = repo.try_resolve(revision)
        if sha is None and route.rest:
            return _no_revision(revision)
        commit = repo.commits[sha] if sha is not None else None
        if commit is not None:
            await ensure_hashed(commit.files.values())
        info = repo_info_json(
            repo,
            commit,
            blobs=_truthy(dict(params).get("blobs")),
            security=_truthy(dict(params).get("securityStatus")),
            expand=[value for key, value in params if key in ("expand", "expand[]")],
        )
        return json_reply(200, info)

    async def _tree(
        self, request: web.Request, route: Route, repo: FakeRepo, token: str | None
    ) -> Reply:
        query = request.raw_path.partition("?")[2]
        params = dict(parse_qsl(query, keep_blank_values=True))
        revision, folder = split_revision(
            route.rest, lambda r: repo.try_resolve(r) is not None, need_path=False
        )
        sha, offset = repo.try_resolve(revision), 0
        if sha is None:
            return _no_revision(revision)
        if "cursor" in params:
            cursor = decode_cursor(params["cursor"])
            if cursor is None or cursor[0] not in repo.commits:
                return error_reply(400, "Invalid cursor")
            sha, offset = cursor
        commit = repo.commits[sha]
        await ensure_hashed(commit.files.values())
        entries = list_tree(
            repo, commit, folder.strip("/"),
            recursive=_truthy(params.get("recursive")), expand=_truthy(params.get("expand")),
        )  # fmt: skip
        if entries is None:
            return _no_entry(sha)
        size = self._hub.page_size if self._hub.page_size > 0 else len(entries) + 1
        headers = {}
        if offset + size < len(entries):
            headers["Link"] = f'<{_next_url(request, query, sha, offset + size)}>; rel="next"'
        return json_reply(200, entries[offset : offset + size], headers)

    async def _refs(
        self, request: web.Request, route: Route, repo: FakeRepo, token: str | None
    ) -> Reply:
        params = dict(parse_qsl(request.raw_path.partition("?")[2]))
        return json_reply(200, refs_json(repo, include_prs=_truthy(params.get("include_prs"))))

    async def _paths_info(
        self, request: web.Request, route: Route, repo: FakeRepo, token: str | None
    ) -> Reply:
        revision = unquote("/".join(route.rest))
        sha = repo.try_resolve(revision)
        if sha is None:
            return _no_revision(revision)
        paths, expand = await _paths_form(request)
        commit = repo.commits[sha]
        await ensure_hashed(commit.files.values())
        return json_reply(200, path_entries(repo, commit, paths, expand=expand))

    async def _resolve(
        self, request: web.Request, route: Route, repo: FakeRepo, token: str | None
    ) -> Reply:
        gated = self._gate(repo, token)
        if gated is not None:
            return gated
        revision, path = split_revision(
            route.rest, lambda r: repo.try_resolve(r) is not None, need_path=True
        )
        found = await _file_at(repo, revision, path)
        if isinstance(found, Reply):
            return found
        sha, file = found
        if file.lfs:
            return self._lfs_redirect(repo, sha, path, file)
        location = (
            f"/api/resolve-cache/{repo.repo_type}s/{repo.repo_id}/{sha}/{quote(path)}"
            f"?etag=%22{file.git_oid}%22"
        )
        return _redirect(307, location, {"X-Repo-Commit": sha})

    async def _cache(
        self, request: web.Request, route: Route, repo: FakeRepo, token: str | None
    ) -> Reply:
        gated = self._gate(repo, token)
        if gated is not None:
            return gated
        path = unquote("/".join(route.rest[1:]))
        found = await _file_at(repo, route.rest[0], path)
        if isinstance(found, Reply):
            return found
        sha, file = found
        if file.lfs:
            return self._lfs_redirect(repo, sha, path, file)
        headers = {"ETag": f'"{file.git_oid}"', "X-Repo-Commit": sha}
        if self._wants_gzip(request):
            body = await _gzipped(file)
            headers.update({"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
            return Reply(status=200, headers={"Content-Type": "application/octet-stream",
                                              **headers}, body=body)  # fmt: skip
        return content_reply(request, file, headers)

    def _wants_gzip(self, request: web.Request) -> bool:
        if not self._hub.gzip or request.method != "GET" or "Range" in request.headers:
            return False
        accepted = request.headers.get("Accept-Encoding", "")
        return any(
            part.split(";")[0].strip().lower() == "gzip" and "q=0" not in part.replace(" ", "")
            for part in accepted.split(",")
        )

    def _lfs_redirect(self, repo: FakeRepo, sha: str, path: str, file: FakeFile) -> Reply:
        repo.register_blob(file)
        expires = math.floor(self._hub.now() + self._hub.url_ttl)
        location = sign_url(self._hub.secret, self._hub.cdn_endpoint, file.sha256, path, expires)
        headers = {
            "Location": location,
            "X-Repo-Commit": sha,
            "X-Linked-Etag": f'"{file.sha256}"',
            "X-Linked-Size": str(file.size),
            "ETag": f'"{file.sha256}"',
        }
        return Reply(status=302, headers=headers)


def _prefix(repo: FakeRepo) -> str:
    return "" if repo.repo_type == "model" else f"{repo.repo_type}s/"


def _next_url(request: web.Request, query: str, sha: str, offset: int) -> str:
    kept = [part for part in query.split("&") if part and not part.startswith("cursor=")]
    kept.append(f"cursor={encode_cursor(sha, offset)}")
    raw_path = request.raw_path.partition("?")[0]
    return f"{request.scheme}://{request.host}{raw_path}?{'&'.join(kept)}"


async def _paths_form(request: web.Request) -> tuple[list[str], bool]:
    if request.content_type == "application/json":
        payload = json.loads(await request.read() or b"{}")
        return [str(p) for p in payload.get("paths", [])], bool(payload.get("expand"))
    form = await request.post()
    paths = [value for value in form.getall("paths", []) if isinstance(value, str)]
    expand = form.get("expand")
    return paths, _truthy(expand if isinstance(expand, str) else None)


async def _gzipped(file: FakeFile) -> bytes:
    return await asyncio.to_thread(file.gzipped)
