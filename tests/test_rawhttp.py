"""The lean body client (`_rawhttp`): framing, keep-alive, faults, flow control, fallback.

Most tests talk to a scripted asyncio server on 127.0.0.1 that answers each request with the
exact bytes a test gives it, so every framing case (interim answers, bodies longer or shorter
than announced, chunked, close-delimited) is on the wire for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from hubasync import HubClient, HubConfig
from hubasync._exceptions import ConnectError, ReadError, ReadTimeout
from hubasync._http11 import Unframed, parse_head, request_bytes
from hubasync._ratelimit import HostGate
from hubasync._rawhttp import BODY_BUFFER, QUEUED_BUFFERS, RawPool
from hubasync._transport import AiohttpTransport
from hubasync._urls import origin
from hubasync.testing import DEFAULT_TOKEN, FakeHub, FakeRepo

pytestmark = pytest.mark.anyio

Answer = Callable[[bytes], bytes | None]  # request head -> bytes to send (None: close at once)


@dataclass
class Script:
    """A server that answers request n with answers[n] (the last one repeats)."""

    answers: list[bytes | None]
    close_after: bool = False  # close each connection after its first answer
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                answer = self.answers[min(len(self.requests) - 1, len(self.answers) - 1)]
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serve(script: Script) -> AsyncIterator[str]:
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in script.writers:
            writer.close()
        server.close()
        await server.wait_closed()


def ok(body: bytes, *, status: str = "200 OK", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


async def fetch(pool: RawPool, url: str, *, read_timeout: float = 5.0,
                headers: dict[str, str] | None = None) -> tuple[int, list[bytes]]:
    async with pool.stream(url, origin(url), headers or {}, read_timeout=read_timeout) as resp:
        return resp.status, [bytes(chunk) async for chunk in resp.chunks()]


async def collect(pool: RawPool, url: str, into: bytearray, *, read_timeout: float = 5.0) -> None:
    """Read the body into `into` as it arrives (what came before an error stays there)."""
    async with pool.stream(url, origin(url), {}, read_timeout=read_timeout) as resp:
        async for chunk in resp.chunks():
            into += chunk


# -- request and head, pure ---------------------------------------------------------------------


def test_request_is_sent_as_given() -> None:
    raw = request_bytes("https://cdn.example:8443/a%27b/c?x=%2F&sig=1",
                        {"User-Agent": "t/1", "Range": "bytes=0-9", "Accept-Encoding": "gzip"})
    assert raw == (b"GET /a%27b/c?x=%2F&sig=1 HTTP/1.1\r\nHost: cdn.example:8443\r\n"
                   b"User-Agent: t/1\r\nRange: bytes=0-9\r\nAccept-Encoding: identity\r\n\r\n")


@pytest.mark.parametrize(("url", "headers"), [
    ("http://h/a b", {}),
    ("http://h/é", {}),
    ("http://user:pw@h/a", {}),
    ("ftp://h/a", {}),
    ("http://h/a", {"X-Evil": "a\r\nInjected: 1"}),
    ("http://h/a", {"Bad Name": "v"}),
])
def test_odd_requests_are_left_to_the_full_client(url: str, headers: dict[str, str]) -> None:
    with pytest.raises(Unframed):
        request_bytes(url, headers)


def test_head_parsing() -> None:
    head = parse_head(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n"
                      b"Content-Range: bytes 0-9/100\r\nX-A: 1\r\nx-a: 2")
    assert (head.status, head.length, head.keep_alive) == (206, 10, True)
    assert head.headers["content-range"] == "bytes 0-9/100"
    assert head.headers.getall("X-A") == ["1", "2"]
    assert not parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1").keep_alive
    assert not parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close").keep_alive
    until_close = parse_head(b"HTTP/1.1 200 OK")
    assert (until_close.length, until_close.keep_alive) == (None, False)
    assert parse_head(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99").length == 0


@pytest.mark.parametrize("raw", [
    b"HTTP/2 200 OK", b"HTTP/1.1 2000 OK", b"HTTP/1.1 abc", b"garbage",
    b"HTTP/1.1 200 OK\r\nno colon", b"HTTP/1.1 200 OK\r\n folded: x",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1",
])
def test_malformed_heads_are_read_errors(raw: bytes) -> None:
    with pytest.raises(ReadError):
        parse_head(raw)


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Encoding: gzip",
])
def test_bodies_it_does_not_frame(raw: bytes) -> None:
    with pytest.raises(Unframed):
        parse_head(raw)


# -- on the wire --------------------------------------------------------------------------------


async def test_body_in_large_buffers_and_keep_alive() -> None:
    big = bytes(range(256)) * (BODY_BUFFER * 3 // 256 + 7)
    script = Script([ok(big), ok(b"second")])
    pool = RawPool(max_idle=4)
    async with serve(script) as base:
        status, chunks = await fetch(pool, f"{base}/big")
        assert status == 200
        assert b"".join(chunks) == big
        assert all(len(c) <= BODY_BUFFER for c in chunks)
        assert len(chunks) <= len(big) // BODY_BUFFER + 2  # handed over in large pieces
        assert await fetch(pool, f"{base}/small") == (200, [b"second"])
    await pool.aclose()
    assert (script.connections, pool.opened) == (1, 1)
    assert b"Accept-Encoding: identity" in script.requests[0]


async def test_pooled_buffers_are_reused_then_freed_when_idle() -> None:
    script = Script([ok(bytes(BODY_BUFFER * 3)), ok(b"x")])
    pool = RawPool(max_idle=2, idle_release=0.2)
    async with serve(script) as base:
        async with pool.stream(f"{base}/", origin(base), {}, read_timeout=5) as resp:
            resp.recycle([chunk async for chunk in resp.chunks()])
        assert pool.buffers.idle == 3  # kept for the next body
        async with pool.stream(f"{base}/", origin(base), {}, read_timeout=5) as resp:
            await asyncio.sleep(0.4)  # a body in flight: nothing is freed meanwhile
            assert pool.buffers.idle >= 2
            resp.recycle([chunk async for chunk in resp.chunks()])
        assert pool.buffers.idle == 3
        await asyncio.sleep(0.4)
        assert pool.buffers.idle == 0  # idle long enough: handed back
    await pool.aclose()


async def test_buffers_released_outside_a_loop_are_freed_at_once() -> None:
    pool = RawPool(max_idle=1)
    pool.buffers.give([memoryview(pool.buffers.take())])
    assert pool.buffers.idle == 1
    await asyncio.to_thread(pool._release_later)  # no running loop in that thread
    assert pool.buffers.idle == 0
    await pool.aclose()


async def test_interim_answer_is_skipped_and_body_that_came_with_the_head_kept() -> None:
    script = Script([b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"hello", extra="X-Y: z\r\n")])
    pool = RawPool(max_idle=1)
    async with serve(script) as base, pool.stream(f"{base}/", origin(base), {},
                                                  read_timeout=5) as resp:
        assert resp.headers["X-Y"] == "z"
        assert await resp.read_all() == b"hello"
    await pool.aclose()


async def test_more_bytes_than_announced_never_reach_the_reader_or_the_pool() -> None:
    script = Script([ok(b"abc")[:-3] + b"abcEXTRA", ok(b"next")])
    pool = RawPool(max_idle=2)
    async with serve(script) as base:
        status, chunks = await fetch(pool, f"{base}/")
        assert (status, b"".join(chunks)) == (200, b"abc")
        assert await fetch(pool, f"{base}/") == (200, [b"next"])
    await pool.aclose()
    assert script.connections == 2  # the connection with stray bytes was not reused


async def test_short_body_hands_over_what_came_then_raises() -> None:
    head = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 1000\r\n\r\n"
    script = Script([head + b"x" * 300], close_after=True)
    pool = RawPool(max_idle=1)
    got = bytearray()
    async with serve(script) as base:
        with pytest.raises(ReadError, match=r"closed before a body was complete \(http://127") as info:
            await collect(pool, f"{base}/f?sig=secret", got)
    await pool.aclose()
    assert bytes(got) == b"x" * 300  # every byte that arrived is usable for the resume
    assert "secret" not in str(info.value)  # signed queries are redacted


async def test_stall_is_a_read_timeout_with_the_bytes_kept() -> None:
    script = Script([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"y" * 10])
    pool = RawPool(max_idle=1)
    got = bytearray()
    async with serve(script) as base:
        with pytest.raises(ReadTimeout):
            await collect(pool, f"{base}/", got, read_timeout=0.3)
    await pool.aclose()
    assert bytes(got) == b"y" * 10


async def test_no_answer_at_all_is_a_read_timeout() -> None:
    script = Script([b""])  # reads the request, never answers
    pool = RawPool(max_idle=1)
    async with serve(script) as base:
        with pytest.raises(ReadTimeout):
            await fetch(pool, f"{base}/", read_timeout=0.2)
    await pool.aclose()


async def test_close_delimited_body() -> None:
    script = Script([b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"z" * 5000],
                    close_after=True)
    pool = RawPool(max_idle=1)
    async with serve(script) as base:
        status, chunks = await fetch(pool, f"{base}/")
    await pool.aclose()
    assert (status, b"".join(chunks)) == (200, b"z" * 5000)


async def test_idle_connection_closed_by_the_server_is_replaced_transparently() -> None:
    script = Script([ok(b"one"), ok(b"two")], close_after=True)  # no keep-alive honoured
    pool = RawPool(max_idle=1)
    async with serve(script) as base:
        assert await fetch(pool, f"{base}/") == (200, [b"one"])
        await asyncio.sleep(0.05)  # the server's FIN arrives while the connection is idle
        assert await fetch(pool, f"{base}/") == (200, [b"two"])
    await pool.aclose()
    assert script.connections == 2


async def test_connection_refused_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = RawPool(max_idle=1)
    with pytest.raises(ConnectError):
        await fetch(pool, f"http://127.0.0.1:{port}/")


async def test_slow_reader_pauses_the_socket() -> None:
    size = BODY_BUFFER * 12
    script = Script([ok(b"q" * size)])
    pool = RawPool(max_idle=1)
    async with serve(script) as base, pool.stream(f"{base}/", origin(base), {},
                                                  read_timeout=5) as resp:
        chunks = resp.chunks()
        first = await anext(chunks)
        await asyncio.sleep(0.3)  # the server could send everything meanwhile
        conn = resp._conn
        assert len(conn._ready) <= QUEUED_BUFFERS
        assert conn._paused
        total = len(first) + sum([len(c) async for c in chunks])
    await pool.aclose()
    assert total == size


async def test_leaving_mid_body_closes_the_connection() -> None:
    script = Script([ok(b"w" * (BODY_BUFFER * 4)), ok(b"after")])
    pool = RawPool(max_idle=2)
    async with serve(script) as base:
        async with pool.stream(f"{base}/", origin(base), {}, read_timeout=5) as resp:
            await anext(resp.chunks())
        assert await fetch(pool, f"{base}/") == (200, [b"after"])
    await pool.aclose()
    assert script.connections == 2


async def test_cancelled_reader_closes_the_connection() -> None:
    script = Script([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"])  # then silence
    pool = RawPool(max_idle=2)
    async with serve(script) as base:
        task = asyncio.ensure_future(fetch(pool, f"{base}/"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not pool._idle.get(origin(base))
    await pool.aclose()


async def test_transport_falls_back_to_aiohttp_for_chunked_bodies() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    script = Script([chunked])
    transport = AiohttpTransport(endpoint="http://hub.invalid", token=None, max_connections=4,
                                 gate=HostGate())
    try:
        async with serve(script) as base:
            for _ in range(2):
                async with transport.stream(f"{base}/f", read_timeout=5) as resp:
                    assert await resp.read_all() == b"hello world"
    finally:
        await transport.aclose()
    # the raw client asked once, then aiohttp asked (twice: the origin is remembered)
    assert len(script.requests) == 3
    assert transport.request_count == 3


async def test_a_private_snapshot_goes_through_the_lean_client(tmp_path: Path) -> None:
    """Every file body (a ranged LFS file on the CDN, regular files on the Hub) is read by the
    lean client; the token goes to the Hub origin only (the fake CDN refuses a request that
    carries one)."""
    blob = random.Random(3).randbytes(3 * 1024 * 1024 + 11)
    repo = FakeRepo("org/private", private=True)
    repo.allow(DEFAULT_TOKEN)
    repo.commit({"weights.safetensors": blob, "config.json": b'{"a": 1}',
                 "sub/notes.txt": b"hello\n" * 100})
    async with FakeHub(repos=[repo]) as fake:
        config = HubConfig.from_env({}, endpoint=fake.endpoint, cache_dir=str(tmp_path),
                                    token=DEFAULT_TOKEN, chunk_size=1024 * 1024,
                                    range_threshold=1024 * 1024, progress="none")
        async with HubClient(config) as hub:
            folder = await hub.snapshot_download("org/private")
            transport = hub._transport
            assert transport is not None
            assert transport._raw.opened >= 1
            assert "cdn" not in transport._sessions  # aiohttp never fetched a CDN body
        requests = fake.requests
    assert Path(folder, "weights.safetensors").read_bytes() == blob
    assert Path(folder, "sub/notes.txt").read_bytes() == b"hello\n" * 100
    cdn = [r for r in requests if r.server == "cdn"]
    assert len(cdn) >= 3  # the ranges
    assert all("authorization" not in {k.lower() for k in r.headers} for r in cdn)
    hub_gets = [r for r in requests if r.server == "hub" and r.method == "GET"
                and "/resolve" in r.path]
    assert hub_gets
    assert all(r.headers.get("authorization") == f"Bearer {DEFAULT_TOKEN}" for r in hub_gets)


async def test_tls_with_certificate_checks(tmp_path: Path) -> None:
    """Over TLS the body is received the same way (the loop's SSL transport feeds the buffered
    protocol), and a certificate that the client does not trust is a ConnectError."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    body = random.Random(5).randbytes(3 * BODY_BUFFER + 99)
    script = Script([ok(body), ok(b"again")])
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0, ssl=server_ctx)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/blob?sig=x"
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    pool = RawPool(max_idle=2, ssl_context=trusting)
    stranger = RawPool(max_idle=2, ssl_context=ssl.create_default_context())
    try:
        status, chunks = await fetch(pool, url)
        assert (status, b"".join(chunks)) == (200, body)
        assert await fetch(pool, url) == (200, [b"again"])
        assert pool.opened == 1
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch(stranger, url)
    finally:
        await pool.aclose()
        await stranger.aclose()
        for writer in script.writers:
            writer.close()
        server.close()
        await server.wait_closed()
