"""The Hub's metadata API: revision -> commit, tree listing, HEAD -> etag/size/location.

Errors are classified exactly as the official client's ``hf_raise_for_status`` does (first match
wins): X-Error-Code, then the "disabled" message, then "401 on a repo or resolve URL means the repo
is not found", then the status. Server message and request id are kept on the error.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import anyio
import msgspec

from hubasync._cache_layout import normalize_etag
from hubasync._exceptions import (
    BadRequestError,
    ConnectError,
    DisabledRepoError,
    FileMetadataError,
    GatedRepoError,
    HubHTTPError,
    OfflineModeIsEnabled,
    RateLimitedError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    ServerError,
)
from hubasync._models import (
    FileMetadata,
    RepoFile,
    RepoFolder,
    RepoInfo,
    RepoRef,
    decode_repo_info,
    decode_tree_page,
)
from hubasync._retry import RetryConfig, RetryPolicy, server_wait
from hubasync._urls import redact_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from hubasync._transport import AiohttpTransport, Response

log = logging.getLogger("hubasync")
T = TypeVar("T")

_REPO_URL_RE: Final = re.compile(
    r"^https?://[^/]+(/api/(models|datasets|spaces)/(.+)|/(.+)/resolve/(.+))"
)
_LINK_NEXT_RE: Final = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
_INVALID_CREDENTIALS: Final = "Invalid credentials in Authorization header"
_DISABLED: Final = "Access to this resource is disabled."


class _ErrorBody(msgspec.Struct):
    error: str | list[str] | None = None
    error_description: str | None = None


def _server_message(resp: Response) -> str | None:
    header = resp.headers.get("X-Error-Message")
    if header:
        return header
    body = resp.body.strip()
    if not body:
        return None
    try:
        parsed = msgspec.json.decode(body, type=_ErrorBody)
    except msgspec.DecodeError:
        text = body.decode("utf-8", "replace")
        return None if text.lstrip().startswith("<") else text[:500]
    if isinstance(parsed.error, list):
        return "\n".join(parsed.error)
    return parsed.error or parsed.error_description


def raise_for_status(resp: Response) -> None:
    """Raise the hubasync error for an error answer; do nothing for 1xx-3xx."""
    if resp.status < 400:
        return
    code = resp.headers.get("X-Error-Code")
    message = _server_message(resp)
    request_id = (resp.headers.get("X-Request-Id") or resp.headers.get("X-Amzn-Trace-Id")
                  or resp.headers.get("X-Amz-Cf-Id"))
    url = redact_url(resp.url)
    cls: type[HubHTTPError] = HubHTTPError
    what = "HTTP error"
    if code == "RevisionNotFound":
        cls, what = RevisionNotFoundError, "Revision not found"
    elif code == "EntryNotFound":
        cls, what = RemoteEntryNotFoundError, "Entry not found"
    elif code == "GatedRepo":
        cls, what = GatedRepoError, "Gated repository: access is restricted"
    elif message == _DISABLED:
        cls, what = DisabledRepoError, "Repository disabled"
    elif code == "RepoNotFound" or (
        resp.status == 401 and message != _INVALID_CREDENTIALS and _REPO_URL_RE.search(url)
    ):
        cls, what = RepositoryNotFoundError, (
            "Repository not found (it may be private or gated: check the repo id, repo_type "
            "and that your token grants access)"
        )
    elif resp.status == 400:
        cls, what = BadRequestError, "Bad request"
    elif resp.status == 429:
        cls, what = RateLimitedError, "Rate limited (429)"
    elif resp.status >= 500 or resp.status == 408:
        cls, what = ServerError, "Server error"
    elif resp.status == 403:
        what = "Forbidden: check your token's permissions"
    text = f"{what} [{resp.status}] for {url}"
    if message:
        text += f": {message}"
    if request_id:
        text += f" (request id: {request_id})"
    error = cls(text, status=resp.status, url=url, request_id=request_id,
                server_message=message, error_code=code)
    if isinstance(error, RemoteEntryNotFoundError):
        error.commit_hash = resp.headers.get("X-Repo-Commit")
    if isinstance(error, RateLimitedError):
        error.retry_after = server_wait(resp.headers, now=time.time())
    raise error


def next_page_url(resp: Response) -> str | None:
    link = resp.headers.get("Link")
    if not link:
        return None
    match = _LINK_NEXT_RE.search(link)
    return match.group(1) if match else None


class HubApi:
    """Metadata calls, with the retry policy applied (connection failures fail fast)."""

    def __init__(
        self,
        transport: AiohttpTransport,
        *,
        endpoint: str,
        etag_timeout: float,
        api_timeout: float,
        retry: RetryConfig,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._transport = transport
        self.endpoint = endpoint
        self._etag_timeout = etag_timeout
        self._api_timeout = api_timeout
        self._retry = retry
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"<HubApi {self.endpoint}>"

    def resolve_url(self, repo: RepoRef, revision: str, filename: str) -> str:
        return self.endpoint + repo.resolve_path(revision, filename)

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        policy = RetryPolicy(self._retry)
        while True:
            try:
                return await call()
            except (ConnectError, OfflineModeIsEnabled):
                raise  # fail fast: the caller may answer from the cache
            except Exception as exc:
                delay = policy.next_delay(exc)
                if delay is None:
                    raise
                log.info("retrying %s in %.1fs", type(exc).__name__, delay)
                policy = policy.increment()
                await self._sleep(delay)

    async def _get(self, url: str) -> Response:
        resp = await self._transport.request("GET", url, read_timeout=self._api_timeout)
        raise_for_status(resp)
        return resp

    async def repo_info(self, repo: RepoRef, revision: str | None = None) -> RepoInfo:
        url = f"{self.endpoint}{repo.api_path}"
        if revision is not None:
            url += f"/revision/{quote(revision, safe='')}"
        resp = await self._retrying(lambda: self._get(url))
        try:
            return decode_repo_info(resp.body, repo.repo_type)
        except msgspec.DecodeError as exc:
            raise FileMetadataError(f"unreadable repo info from {redact_url(url)}: {exc}") from None

    async def list_tree(
        self, repo: RepoRef, revision: str, path: str | None = None, *, recursive: bool = False
    ) -> AsyncIterator[RepoFile | RepoFolder]:
        """Every entry of the tree, following `Link: rel="next"` pages verbatim."""
        url = f"{self.endpoint}{repo.api_path}/tree/{quote(revision, safe='')}"
        if path:
            url += f"/{quote(path, safe='')}"
        url += f"?recursive={'true' if recursive else 'false'}&expand=false"
        next_url: str | None = url
        while next_url is not None:
            page_url = next_url
            resp = await self._retrying(lambda url=page_url: self._get(url))  # type: ignore[misc]
            try:
                entries = decode_tree_page(resp.body)
            except msgspec.DecodeError as exc:
                raise FileMetadataError(f"unreadable tree page {redact_url(page_url)}: {exc}"
                                        ) from None
            for entry in entries:
                yield entry
            next_url = next_page_url(resp)

    async def _head_once(self, url: str) -> Response:
        """HEAD, following relative redirects only (same scheme and host, the new path and query,
        as huggingface_hub 2.x does; its 0.x/1.x versions dropped the query)."""
        current = url
        for _ in range(20):
            resp = await self._transport.request(
                "HEAD", current, headers={"Accept-Encoding": "identity"},
                read_timeout=self._etag_timeout,
            )
            raise_for_status(resp)
            if not resp.is_redirect:
                return resp
            location = urlsplit(resp.headers["Location"])
            if location.netloc:
                return resp  # absolute (CDN): read, never followed
            base = urlsplit(current)
            current = urlunsplit((base.scheme, base.netloc, location.path, location.query, ""))
        raise FileMetadataError(f"too many redirects for {redact_url(url)}")

    async def file_metadata(self, url: str) -> FileMetadata:
        resp = await self._retrying(lambda: self._head_once(url))
        commit = resp.headers.get("X-Repo-Commit")
        if not commit:
            raise FileMetadataError(
                f"answer from {redact_url(resp.url)} has no X-Repo-Commit header: the endpoint "
                "does not look like a Hugging Face Hub (check HF_ENDPOINT, proxy and firewall)"
            )
        etag = normalize_etag(resp.headers.get("X-Linked-Etag") or resp.headers.get("ETag"))
        if not etag:
            raise FileMetadataError(f"answer from {redact_url(resp.url)} has no ETag")
        raw_size = resp.headers.get("X-Linked-Size") or (
            None if resp.is_redirect else resp.headers.get("Content-Length")
        )
        size = int(raw_size) if raw_size and raw_size.isdigit() else None
        location = resp.headers.get("Location") or resp.url
        if not urlsplit(location).netloc:
            base = urlsplit(resp.url)
            rel = urlsplit(location)
            location = urlunsplit((base.scheme, base.netloc, rel.path, rel.query, ""))
        return FileMetadata(commit_hash=commit, etag=etag, location=location, size=size)
