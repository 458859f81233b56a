"""HTTP transport: a small fixed pool of aiohttp sessions behind the per-host gate.

Three rules live here and nowhere else:

* ``Authorization`` is attached only to requests whose origin is the Hub endpoint's origin, so a
  token can never reach a CDN, a storage bucket or any other host, whatever redirect led there.
* Every request first waits at the :class:`HostGate`; a 429 closes the gate of its host for the
  Retry-After the server asked for, so one rate limit pauses every worker on that host.
* aiohttp exceptions are translated at this boundary; no aiohttp type escapes this module.

URLs are sent exactly as given (``encoded=True``): signed CDN URLs break if re-quoted.
Redirects are never followed here: callers decide (relative Hub redirects are followed, absolute
CDN redirects are read).
"""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from typing import TYPE_CHECKING, Final, Protocol

import aiohttp
import msgspec
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from hubasync._exceptions import ConnectError, OfflineModeIsEnabled, ReadError, ReadTimeout
from hubasync._http11 import Unframed, is_encoded
from hubasync._rawhttp import RawPool
from hubasync._retry import server_wait
from hubasync._urls import Origin, host_key, origin, redact_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping

    from hubasync._ratelimit import HostGate
    from hubasync._types import Secret

log = logging.getLogger("hubasync")

__version__: Final = "0.1.0"
DEFAULT_RATE_LIMIT_WAIT: Final = 1.0


class Response(msgspec.Struct, frozen=True, kw_only=True):
    """A fully read HTTP answer (metadata and API calls)."""

    status: int
    headers: CIMultiDictProxy[str]
    url: str
    body: bytes = b""

    @property
    def is_redirect(self) -> bool:
        return self.status in (301, 302, 303, 307, 308) and "Location" in self.headers


class StreamResponse(Protocol):
    """A GET whose body is read incrementally (`chunks`) or whole (`read_all`)."""

    status: int
    headers: CIMultiDictProxy[str]
    url: str

    @property
    def encoded(self) -> bool: ...

    async def read_all(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes | memoryview]: ...

    def recycle(self, chunks: Iterable[object]) -> None:
        """`chunks` (from `chunks()`) are written and no longer read: their memory may be
        reused for the bytes still to come."""


class AiohttpStream:
    """A GET answered through aiohttp."""

    def __init__(self, resp: aiohttp.ClientResponse, url: str) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers
        self.url = url

    def __repr__(self) -> str:
        return f"<AiohttpStream [{self.status}] {redact_url(self.url)}>"

    @property
    def encoded(self) -> bool:
        return is_encoded(self.headers)

    async def read_all(self) -> bytes:
        with map_exceptions(self.url):
            return await self._resp.read()

    def recycle(self, chunks: Iterable[object]) -> None:
        pass  # aiohttp's chunks are fresh bytes objects

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, one received buffer at a time (`readany` would join what is
        buffered into a new bytes object: a copy of every byte on a fast link)."""
        content = self._resp.content
        while True:
            with map_exceptions(self.url):
                chunk, boundary = await content.readchunk()
            if chunk:
                yield chunk
            elif not boundary:  # (b"", True) is only the end of an HTTP chunk
                return


@contextlib.contextmanager
def map_exceptions(url: str) -> Iterator[None]:
    """aiohttp / asyncio errors -> the hubasync tree."""
    shown = redact_url(url)
    try:
        yield
    except aiohttp.ClientConnectorError as exc:
        message = f"cannot connect to {host_key(url)}: {exc.os_error}"
        raise ConnectError(message, url=shown) from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise ReadTimeout(f"timed out waiting for {shown}", url=shown) from None
    except aiohttp.ClientPayloadError:
        raise ReadError(f"body of {shown} ended early or was malformed", url=shown) from None
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise ReadError(f"connection to {host_key(url)} failed: {type(exc).__name__}",
                        url=shown) from None


class AiohttpTransport:
    """Two aiohttp sessions (Hub API and everything else) with connector limits, and the lean
    body client (`_rawhttp`) for downloads: file bodies go through it, unless an origin has
    answered in a form it does not read (chunked, compressed), which then gets aiohttp."""

    def __init__(
        self,
        *,
        endpoint: str,
        token: Secret | None,
        max_connections: int,
        gate: HostGate,
        offline: bool = False,
        user_agent: str | None = None,
        on_rate_limited: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.time,
        max_wait: float = 300.0,
    ) -> None:
        self._max_wait = max_wait
        self._raw = RawPool(max_idle=max_connections)
        self._full_client: set[Origin] = set()  # origins that need aiohttp
        self._endpoint_origin = origin(endpoint)
        self._token = token
        self._max_connections = max_connections
        self._gate = gate
        self._offline = offline
        self._on_rate_limited = on_rate_limited
        self._clock = clock
        ua = f"hubasync/{__version__}; python/{platform.python_version()}"
        self._user_agent = f"{ua}; {user_agent}" if user_agent else ua
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self.request_count = 0

    def __repr__(self) -> str:
        state = "open" if self._sessions else "closed"
        return f"<AiohttpTransport [{state} | requests: {self.request_count}]>"

    async def aclose(self) -> None:
        await self._raw.aclose()
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()

    def _session(self, url: str) -> aiohttp.ClientSession:
        kind = "api" if origin(url) == self._endpoint_origin else "cdn"
        session = self._sessions.get(kind)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=self._max_connections,
                ttl_dns_cache=300,
            )
            session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, raise_for_status=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._sessions[kind] = session
        return session

    def _headers(self, url: str, extra: Mapping[str, str] | None) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict({"User-Agent": self._user_agent})
        if extra:
            headers.update(extra)
        headers.popall("Authorization", None)
        if self._token and origin(url) == self._endpoint_origin:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        return headers

    async def _before(self, url: str) -> None:
        if self._offline:
            raise OfflineModeIsEnabled(
                f"cannot reach {redact_url(url)}: offline mode is enabled (HF_HUB_OFFLINE=1)"
            )
        await self._gate.wait(host_key(url))
        self.request_count += 1

    def _after(self, url: str, status: int, headers: Mapping[str, str]) -> None:
        if status != 429:
            return
        wait = server_wait(headers, now=self._clock())
        wait = DEFAULT_RATE_LIMIT_WAIT if wait is None else min(wait, self._max_wait)
        self._gate.block(host_key(url), wait)
        if self._on_rate_limited is not None:
            self._on_rate_limited(host_key(url), wait)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | list[tuple[str, str]] | None = None,
        read_timeout: float,
    ) -> Response:
        """Send one request (no redirect following) and read the whole body."""
        await self._before(url)
        client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=read_timeout,
                                               sock_read=read_timeout)
        with map_exceptions(url):
            async with self._session(url).request(
                method, URL(url, encoded=True), headers=self._headers(url, headers), data=data,
                allow_redirects=False, timeout=client_timeout,
            ) as resp:
                body = await resp.read() if method != "HEAD" else b""
                self._after(url, resp.status, resp.headers)
                return Response(status=resp.status, headers=resp.headers, url=url, body=body)

    @contextlib.asynccontextmanager
    async def stream(
        self, url: str, *, headers: Mapping[str, str] | None = None,
        read_timeout: float,
    ) -> AsyncIterator[StreamResponse]:
        """GET `url` (no redirect following); the body is read through `.chunks()`."""
        key = origin(url)
        if key not in self._full_client:
            await self._before(url)
            try:
                async with self._raw.stream(url, key, self._headers(url, headers),
                                            read_timeout=read_timeout) as raw:
                    self._after(url, raw.status, raw.headers)
                    yield raw
                return
            except Unframed as exc:  # only ever raised before the body
                log.debug("%s: %s; using aiohttp for this host", host_key(url), exc)
                self._full_client.add(key)
        async with self._aiohttp_stream(url, headers, read_timeout) as resp:
            yield resp

    @contextlib.asynccontextmanager
    async def _aiohttp_stream(
        self, url: str, headers: Mapping[str, str] | None, read_timeout: float,
    ) -> AsyncIterator[AiohttpStream]:
        await self._before(url)
        client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=read_timeout,
                                               sock_read=read_timeout)
        with map_exceptions(url):
            resp = await self._session(url).get(
                URL(url, encoded=True), headers=self._headers(url, headers), allow_redirects=False,
                timeout=client_timeout,
            )
        try:
            self._after(url, resp.status, resp.headers)
            yield AiohttpStream(resp, url)
        finally:
            if resp.content.at_eof():
                resp.release()
            else:
                resp.close()  # unread body: drop the connection rather than drain it
