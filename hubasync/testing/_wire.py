"""HTTP plumbing shared by the Hub and CDN apps: replies, byte ranges, faults, the request log.

Handlers never write responses themselves: they return a `Reply` (status, headers, and either a
small body or a slice of a `FakeFile`). `send` then applies the fault picked for it and writes it,
with sendfile for disk-backed files when no fault is in the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import msgspec
from aiohttp import web

from hubasync.testing._faults import Fault, ServerName, Target

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterable

    from hubasync.testing._repo import FakeFile

__all__ = [
    "RecordedRequest",
    "Reply",
    "RequestLog",
    "content_reply",
    "ensure_hashed",
    "error_reply",
    "json_reply",
    "parse_range",
    "send",
]

RangeSpec: TypeAlias = tuple[int, int] | Literal["unsatisfiable"] | None


class RecordedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One request as FakeHub saw it (either server), in arrival order.

    `status` is 0 until the response headers are sent; `fault` names the fault kind that fired.
    """

    method: str
    server: ServerName
    path: str
    query: str
    headers: dict[str, str]
    time: float
    status: int = 0
    range: str | None = None
    fault: str | None = None
    request_id: str = ""


class RequestLog:
    """Thread-safe list of `RecordedRequest`, updated in place when a response starts."""

    def __init__(self) -> None:
        self._items: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def arrive(self, request: web.BaseRequest, server: ServerName) -> RecordedRequest:
        raw_path, _, query = request.raw_path.partition("?")
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            low = key.lower()
            headers[low] = f"{headers[low]}, {value}" if low in headers else value
        record = RecordedRequest(
            method=request.method,
            server=server,
            path=raw_path,
            query=query,
            headers=headers,
            time=time.monotonic(),
            range=request.headers.get("Range"),
            request_id=f"Root=1-{int(time.time()):08x}-{next(self._ids):024x}",
        )
        with self._lock:
            self._items.append(record)
        return record

    def complete(self, record: RecordedRequest, status: int, fault: str | None) -> RecordedRequest:
        done = msgspec.structs.replace(record, status=status, fault=fault)
        with self._lock:
            for index in range(len(self._items) - 1, -1, -1):
                if self._items[index] is record:
                    self._items[index] = done
                    break
        return done


@dataclass(kw_only=True)
class Reply:
    """A response to send: a small `body`, or `length` bytes of `file` from `start`."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: FakeFile | None = None
    start: int = 0
    length: int = 0
    total: int = 0
    ranged: bool = False

    @property
    def content_length(self) -> int:
        return self.length if self.file is not None else len(self.body)


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(payload).encode()
    return Reply(status=status, headers={"Content-Type": "application/json", **(headers or {})},
                 body=body)  # fmt: skip


def error_reply(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> Reply:
    """A Hub-style error: JSON `{"error": message}` plus X-Error-Message (and X-Error-Code)."""
    extra = {"X-Error-Message": message, **(headers or {})}
    if code is not None:
        extra["X-Error-Code"] = code
    return json_reply(status, {"error": message}, extra)


def parse_range(header: str | None, total: int) -> RangeSpec:
    """`bytes=a-b`, `bytes=a-`, `bytes=-n` -> inclusive (start, end); None if absent/ignored."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:
        start, end = max(total - int(last), 0), total - 1
        return (start, end) if int(last) > 0 and total > 0 else "unsatisfiable"
    start = int(first)
    end = min(int(last), total - 1) if last.isdigit() else total - 1
    if last.isdigit() and int(last) < start:
        return None
    return (start, end) if start < total else "unsatisfiable"


def content_reply(request: web.BaseRequest, file: FakeFile, headers: dict[str, str]) -> Reply:
    """200, 206 or 416 for `file`, following the request's Range header."""
    total = file.size
    base = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", **headers}
    spec = parse_range(request.headers.get("Range"), total)
    if spec == "unsatisfiable":
        reply = error_reply(416, "Requested Range Not Satisfiable", headers=headers)
        reply.headers["Content-Range"] = f"bytes */{total}"
        return reply
    if spec is None:
        return Reply(status=200, headers=base, file=file, length=total, total=total)
    start, end = spec
    base["Content-Range"] = f"bytes {start}-{end}/{total}"
    return Reply(status=206, headers=base, file=file, start=start, length=end - start + 1,
                 total=total, ranged=True)  # fmt: skip


def target_of(request: web.BaseRequest, server: ServerName, path: str, reply: Reply) -> Target:
    return Target(
        server=server,
        method=request.method,
        path=path,
        status=reply.status,
        has_body=request.method != "HEAD" and reply.content_length > 0,
        ranged=reply.ranged,
        has_linked_size="X-Linked-Size" in reply.headers,
    )


def apply_header_fault(reply: Reply, fault: Fault | None) -> Reply:
    """The faults that change what is announced: status, lie_size, ignore_range, wrong_range."""
    if fault is None:
        return reply
    if fault.kind == "status":
        return error_reply(fault.status, fault.message, headers=dict(fault.headers))
    if fault.kind == "lie_size":
        return _lie_size(reply, fault.shift)
    if fault.kind == "ignore_range":
        headers = {k: v for k, v in reply.headers.items() if k != "Content-Range"}
        return replace(reply, status=200, headers=headers, start=0, length=reply.total,
                       ranged=False)  # fmt: skip
    if fault.kind == "wrong_range":
        return _wrong_range(reply, fault.shift)
    return reply


def _lie_size(reply: Reply, shift: int) -> Reply:
    headers = dict(reply.headers)
    key = "X-Linked-Size" if "X-Linked-Size" in headers else "Content-Length"
    if key in headers:
        headers[key] = str(int(headers[key]) + shift)
        return replace(reply, headers=headers)
    headers["Content-Length"] = str(reply.content_length + shift)
    return replace(reply, headers=headers)


def _wrong_range(reply: Reply, shift: int) -> Reply:
    end = reply.start + reply.length - 1
    start = min(reply.start + shift, reply.total - 1)
    end = min(end + shift, reply.total - 1)
    if start == reply.start:  # nothing to shift into: shift backwards instead
        start, end = max(reply.start - shift, 0), max(end - shift, 0)
    headers = {**reply.headers, "Content-Range": f"bytes {start}-{end}/{reply.total}"}
    return replace(reply, headers=headers, start=start, length=end - start + 1)


async def send(
    request: web.BaseRequest, reply: Reply, fault: Fault | None, closing: asyncio.Event
) -> web.StreamResponse:
    """Write `reply`, acting out a body fault (drop, stall, corrupt) if one was picked."""
    headers = {k: v for k, v in reply.headers.items() if k != "Content-Length"}
    response = web.StreamResponse(status=reply.status, headers=headers)
    response.content_length = int(reply.headers.get("Content-Length", reply.content_length))
    try:
        await response.prepare(request)
        if request.method != "HEAD" and reply.content_length:
            await _write_body(request, response, reply, fault, closing)
    except ConnectionError:
        pass
    return response


async def _write_body(
    request: web.BaseRequest,
    response: web.StreamResponse,
    reply: Reply,
    fault: Fault | None,
    closing: asyncio.Event,
) -> None:
    file = reply.file
    if fault is None and file is not None and file.path is not None:
        await _sendfile(request, reply)
        return
    cut = fault.after_bytes if fault is not None and fault.kind in ("drop", "stall") else None
    sent = 0
    async with contextlib.aclosing(_chunks(reply)) as chunks:
        async for chunk in chunks:
            data = _corrupt(chunk, sent, fault)
            if fault is not None and cut is not None and sent <= cut < sent + len(data):
                await response.write(data[: cut - sent])
                if not await _interrupt(request, fault, closing):
                    return
                data, cut = data[cut - sent :], None
            await response.write(data)
            sent += len(chunk)


def _corrupt(chunk: bytes, sent: int, fault: Fault | None) -> bytes:
    if fault is None or fault.kind != "corrupt":
        return chunk
    offset = fault.after_bytes - sent
    if not 0 <= offset < len(chunk):
        return chunk
    flipped = bytearray(chunk)
    flipped[offset] ^= 0xFF
    return bytes(flipped)


async def _interrupt(request: web.BaseRequest, fault: Fault, closing: asyncio.Event) -> bool:
    """Drop now, or stall; True when the body should go on after the stall."""
    transport = request.transport
    if fault.kind == "stall":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), fault.stall_seconds)
        if not closing.is_set():
            return True
    if transport is not None:
        transport.close()  # flushes what was written, then FIN: a short body
    return False


async def _chunks(reply: Reply) -> AsyncGenerator[bytes, None]:
    file = reply.file
    if file is None:
        yield reply.body
        return
    if file.path is None:
        for chunk in file.iter_chunks(reply.start, reply.length):
            yield chunk
        return
    reader = iter(file.iter_chunks(reply.start, reply.length))
    try:
        while chunk := await asyncio.to_thread(next, reader, b""):
            yield chunk
    finally:
        await asyncio.to_thread(_close_generator, reader)


async def ensure_hashed(files: Iterable[FakeFile]) -> None:
    """Hash, in a worker thread, whichever of `files` still needs it."""
    pending = [file for file in files if not file.hashed]
    if pending:
        await asyncio.to_thread(_hash_all, pending)


def _hash_all(files: list[FakeFile]) -> None:
    for file in files:
        file.compute_hashes()


def _close_generator(reader: Any) -> None:
    close = getattr(reader, "close", None)
    if close is not None:
        close()


async def _sendfile(request: web.BaseRequest, reply: Reply) -> None:
    assert reply.file is not None
    assert reply.file.path is not None
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("Connection lost")
    loop = asyncio.get_running_loop()
    fobj = await asyncio.to_thread(reply.file.path.open, "rb")
    try:
        await loop.sendfile(transport, fobj, reply.start, reply.length)
    finally:
        await asyncio.to_thread(fobj.close)
