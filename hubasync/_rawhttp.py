"""A lean HTTP/1.1 client for file bodies: from the socket straight into large buffers.

aiohttp hands a body over in 64 KiB pieces, each through its parser, a stream reader and an
awaited read: on a fast link that is about a second of the event loop per GiB. Here a body is
received with `recv_into` (an asyncio ``BufferedProtocol``) into buffers of up to `BODY_BUFFER`
bytes that are then handed over whole, so the loop does a few thousand cheap steps per GiB.

It only does what file downloads need: one GET at a time per connection, keep-alive per origin
(at most `max_idle` idle connections each), bodies framed by Content-Length or by the end of the
connection, TLS through the loop's own transport. An answer it does not frame itself (chunked,
compressed) raises :class:`Unframed` before any body byte is handed over, so the caller can ask
again through a full client. Request validation is strict: a URL or header value that is not
plain ASCII without control characters is never sent (:class:`Unframed` again).

Flow control: at most `QUEUED_BUFFERS` full buffers wait for the reader; past that, reading
pauses, so memory stays bounded and TCP pushes back on the server. A read timeout applies only
while the reader is waiting for bytes (not while reading is paused for a slow reader). Errors are
hubasync's (`ConnectError`, `ReadError`, `ReadTimeout`), never raw socket errors.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import mmap
import ssl
import weakref
from typing import TYPE_CHECKING, Final

import anyio.to_thread

from hubasync._exceptions import ConnectError, ReadError, ReadTimeout, TransportError
from hubasync._http11 import Head, Unframed, labelled, parse_head, request_bytes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping

    from hubasync._urls import Origin

BODY_BUFFER: Final = 1024 * 1024  # the most one handed-over buffer holds
QUEUED_BUFFERS: Final = 2  # full buffers waiting for the reader before reading pauses
MAX_HEAD: Final = 64 * 1024  # status line and headers
IDLE_RELEASE: Final = 2.0  # seconds with no body in flight before pooled buffers are freed
_HEAD_END: Final = b"\r\n\r\n"


class BufferPool:
    """Body buffers of BODY_BUFFER bytes, page-aligned (anonymous maps) and reused.

    A reused buffer costs no new memory (no page faults), and its alignment lets the disk take
    it with direct I/O. A reader gives a buffer back with `give` once nothing reads it any more;
    one never given back is simply freed when its last view goes.
    """

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._free: list[mmap.mmap] = []
        self._made: weakref.WeakSet[mmap.mmap] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"<BufferPool [free: {len(self._free)} | made: {len(self._made)}]>"

    @property
    def idle(self) -> int:
        """Buffers kept for reuse."""
        return len(self._free)

    def take(self) -> mmap.mmap:
        if self._free:
            return self._free.pop()
        buffer = mmap.mmap(-1, BODY_BUFFER)
        self._made.add(buffer)
        return buffer

    def give(self, chunks: Iterable[object]) -> None:
        for chunk in chunks:
            buffer = chunk.obj if isinstance(chunk, memoryview) else None
            if (isinstance(buffer, mmap.mmap) and buffer in self._made
                    and len(self._free) < self._keep
                    and not any(free is buffer for free in self._free)):
                self._free.append(buffer)

    def clear(self) -> None:
        self._free.clear()


class _Connection(asyncio.BufferedProtocol):
    """One HTTP/1.1 connection: a head, then a body in large buffers, then idle again."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float,
                 buffers: BufferPool) -> None:
        self._loop = loop
        self._buffers = buffers
        self.timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._head = bytearray(MAX_HEAD)
        self._head_view = memoryview(self._head)
        self._head_len = 0
        self._state = "idle"  # idle | head | body | closed
        self.head: Head | None = None
        self._remaining: int | None = None
        self._buffer: mmap.mmap | bytearray | None = None
        self._filled = 0
        self._ready: collections.deque[memoryview] = collections.deque()
        self._ended = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.received = 0  # bytes of the current answer (head included)

    # -- the transport's side --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        state, self._state = self._state, "closed"
        self._cancel_timer()
        self._transport = None
        if state == "body" and self._remaining is None and exc is None:
            self._end_body()  # framed by the end of the connection
            return
        self._salvage()
        if state in ("head", "body") and self._error is None:
            got = "a body" if state == "body" else "an answer"
            self._error = ReadError(f"connection closed before {got} was complete")
        self._wake()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._state != "body":
            return self._head_view[self._head_len:]
        if self._buffer is None:
            small = self._remaining is not None and self._remaining < BODY_BUFFER
            self._buffer = bytearray(self._remaining or 0) if small else self._buffers.take()
            self._filled = 0
        return memoryview(self._buffer)[self._filled:]

    def buffer_updated(self, nbytes: int) -> None:
        self._last = self._loop.time()
        self.received += nbytes
        if self._state == "body":
            self._body_received(nbytes)
            return
        self._head_len += nbytes
        if self._state != "head":  # bytes nobody asked for: this connection is not usable
            self._fail(ReadError("unexpected bytes from the server"))
            return
        self._parse_head()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost tells the rest

    # -- the reader's side -----------------------------------------------------------------

    def send(self, request: bytes) -> None:
        assert self._transport is not None
        assert self._state == "idle"
        assert not self._paused
        self._state, self.head, self._error, self._ended = "head", None, None, False
        self._head_len = self.received = 0
        self._ready.clear()
        self._last = self._loop.time()
        self._transport.write(request)
        self._arm_timer()

    async def read_head(self) -> Head:
        while self.head is None:
            await self._wait()
        return self.head

    async def next_chunk(self) -> memoryview | None:
        """The next buffer of the body, or None at its end."""
        while not self._ready:
            if self._ended:
                return None
            await self._wait()
        chunk = self._ready.popleft()
        if self._paused and len(self._ready) < QUEUED_BUFFERS and self._transport is not None:
            self._paused = False
            self._last = self._loop.time()
            self._transport.resume_reading()
            self._arm_timer()
        return chunk

    @property
    def reusable(self) -> bool:
        return (self._state == "idle" and self._ended and self._error is None
                and self.head is not None and self.head.keep_alive and self._transport is not None
                and not self._transport.is_closing())

    def close(self) -> None:
        self._state = "closed"
        self._cancel_timer()
        if self._transport is not None:
            self._transport.close()

    # -- internals -------------------------------------------------------------------------

    def _parse_head(self) -> None:
        while (end := self._head.find(_HEAD_END, 0, self._head_len)) >= 0:
            try:
                head = parse_head(bytes(self._head[:end]))
            except (ReadError, Unframed) as exc:
                self._fail(exc)
                return
            start = end + len(_HEAD_END)
            if not 100 <= head.status < 200:
                self._start_body(head, self._head_view[start:self._head_len])
                return
            extra = self._head_len - start  # an interim answer: the real one follows
            self._head[:extra] = self._head[start:self._head_len]
            self._head_len = extra
        if self._head_len >= MAX_HEAD:
            self._fail(ReadError("HTTP head too large"))

    def _start_body(self, head: Head, data: memoryview) -> None:
        """The head is complete; `data` is what arrived after it."""
        self.head, self._remaining, self._state = head, head.length, "body"
        self._head_len = 0
        if head.length == 0:
            self._end_body()
        while data and self._state == "body":
            target = self.get_buffer(-1)
            n = min(len(target), len(data))
            target[:n] = data[:n]
            data = data[n:]
            self._body_received(n)
        if data:
            self._fail(ReadError("server sent more bytes than announced"))
        self._wake()

    def _body_received(self, nbytes: int) -> None:
        self._filled += nbytes
        if self._remaining is not None:
            self._remaining -= nbytes
        if self._filled == len(self._buffer or b"") or self._remaining == 0:
            self._hand_over()

    def _hand_over(self) -> None:
        assert self._buffer is not None
        self._ready.append(memoryview(self._buffer)[: self._filled])
        self._buffer, self._filled = None, 0
        if self._remaining == 0:
            self._end_body()
        elif len(self._ready) >= QUEUED_BUFFERS and not self._paused and self._transport:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def _salvage(self) -> None:
        """Keep the bytes of a body cut short: the reader gets them before the error."""
        if self._buffer is not None and self._filled:
            self._ready.append(memoryview(self._buffer)[: self._filled])
        self._buffer, self._filled = None, 0

    def _end_body(self) -> None:
        self._salvage()
        self._ended = True
        if self._state == "body":
            self._state = "idle"
        self._cancel_timer()
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._salvage()
        self.close()
        self._wake()

    async def _wait(self) -> None:
        """Until the connection has news; raises its error once nothing is left to read."""
        if self._error is None and self._state != "closed":
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._ready:
            return
        error = self._error
        if error is not None:
            raise error
        if self._state == "closed" and not self._ended:
            raise ReadError("connection closed")

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _arm_timer(self) -> None:
        if self._timer is None and self.timeout > 0:
            self._timer = self._loop.call_at(self._last + self.timeout, self._check_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_timer(self) -> None:
        self._timer = None
        if self._paused or self._state not in ("head", "body"):
            return
        if self._loop.time() - self._last >= self.timeout:
            self._fail(ReadTimeout(f"no data for {self.timeout:g} s"))
        else:
            self._arm_timer()


class RawResponse:
    """An answer whose body is read as large buffers (`chunks`) or whole (`read_all`)."""

    def __init__(self, conn: _Connection, head: Head, url: str, buffers: BufferPool) -> None:
        self._conn = conn
        self._buffers = buffers
        self.status = head.status
        self.headers = head.headers
        self.url = url

    def __repr__(self) -> str:
        return f"<RawResponse [{self.status}]>"

    @property
    def encoded(self) -> bool:
        return False  # an encoded answer is Unframed

    async def chunks(self) -> AsyncIterator[memoryview]:
        while True:
            try:
                chunk = await self._conn.next_chunk()
            except TransportError as exc:
                raise labelled(exc, self.url) from None
            if chunk is None:
                return
            yield chunk

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def recycle(self, chunks: Iterable[object]) -> None:
        """`chunks` of this body are no longer read by anyone: their buffers may be reused."""
        self._buffers.give(chunks)


class RawPool:
    """Keep-alive connections per origin for `stream`; `aclose` closes them all."""

    def __init__(self, *, max_idle: int, ssl_context: ssl.SSLContext | None = None,
                 idle_release: float = IDLE_RELEASE) -> None:
        self._max_idle = max_idle
        self._idle: dict[Origin, list[_Connection]] = {}
        self.buffers = BufferPool(keep=2 * max_idle)
        self._ssl = ssl_context  # None: the system's trust store, loaded on first use
        self.opened = 0  # connections made, for tests and statistics
        # A long-lived client keeps no idle buffers: once no body has been in flight for
        # `idle_release` seconds, the pooled ones are freed (the next download maps new ones).
        self._idle_release = idle_release
        self._streaming = 0
        self._release: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        idle = sum(len(conns) for conns in self._idle.values())
        return f"<RawPool [idle: {idle} | opened: {self.opened}]>"

    async def aclose(self) -> None:
        if self._release is not None:
            self._release.cancel()
        self.buffers.clear()
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    @contextlib.asynccontextmanager
    async def stream(self, url: str, key: Origin, headers: Mapping[str, str], *,
                     read_timeout: float) -> AsyncIterator[RawResponse]:
        """GET `url` (`key`: its scheme, host and port); raises Unframed (before any body
        byte) when a full client must ask."""
        request = request_bytes(url, headers)
        self._streaming += 1
        if self._release is not None:
            self._release.cancel()
            self._release = None
        try:
            try:
                conn, head = await self._exchange(key, request, read_timeout)
            except TransportError as exc:
                raise labelled(exc, url) from None
            try:
                yield RawResponse(conn, head, url, self.buffers)
            finally:
                if conn.reusable and len(self._idle.setdefault(key, [])) < self._max_idle:
                    self._idle[key].append(conn)
                else:
                    conn.close()
        finally:
            self._streaming -= 1
            if not self._streaming:
                self._release_later()

    def _release_later(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # closed outside a loop (a late finalizer): free them now
            self.buffers.clear()
        else:
            self._release = loop.call_later(self._idle_release, self.buffers.clear)

    async def _exchange(self, key: Origin, request: bytes,
                        read_timeout: float) -> tuple[_Connection, Head]:
        """Send on an idle connection, or a new one; a reused connection the server closed
        meanwhile (nothing received) is retried once on a new one."""
        while True:
            conn = self._take_idle(key)
            fresh = conn is None
            if conn is None:
                conn = await self._connect(key, read_timeout)
            conn.timeout = read_timeout
            try:
                conn.send(request)
                return conn, await conn.read_head()
            except ReadError:
                conn.close()
                if fresh or conn.received:
                    raise
            except BaseException:
                conn.close()
                raise

    def _take_idle(self, key: Origin) -> _Connection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.reusable:
                return conn
            conn.close()
        return None

    async def _connect(self, key: Origin, connect_timeout: float) -> _Connection:
        scheme, host, port = key
        context = await self._context() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        conn = _Connection(loop, connect_timeout, self.buffers)
        try:
            with anyio.fail_after(connect_timeout if connect_timeout > 0 else None):
                await loop.create_connection(lambda: conn, host, port, ssl=context,
                                             server_hostname=host if context else None)
        except TimeoutError:
            raise ReadTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as exc:  # ssl.SSLError (a refused certificate) is one too
            raise ConnectError(f"cannot connect to {host}:{port}: {exc}") from None
        self.opened += 1
        return conn

    async def _context(self) -> ssl.SSLContext:
        if self._ssl is None:  # loading the CA store reads files: not on the loop
            self._ssl = await anyio.to_thread.run_sync(ssl.create_default_context)
        return self._ssl
