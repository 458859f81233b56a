"""Fetch one file into a temp file, whole or as parallel byte ranges, verified and resumable.

Transfer code publishes events and raises typed errors; how long to wait before a retry is the
retry policy's decision, and every request goes through the transport's host gate. A range that
drops or stalls mid-way keeps the bytes that arrived and resumes from there. A 200 answered to a
Range request is read from the byte the range stands at (what comes before is skipped, so an
in-order hash stays valid); a Content-Range that does not match is refused before any byte is
written; a size that disagrees with the expected one (Content-Length, Content-Range total, 416)
is an IntegrityError, and no byte is ever written past the expected end. A signed URL that stops
working after it has worked (expiry) is renewed with one fresh HEAD shared by every range; a
fresh URL that is refused is a permanent refusal.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final
from urllib.parse import urljoin

import anyio

from hubasync._events import BytesReceived, FileStarted, Retrying
from hubasync._exceptions import HubHTTPError, IntegrityError, ReadError, TransientError
from hubasync._fileio import DiskIO, TempFile, git_blob_header, hash_file, new_hasher, oserror
from hubasync._hub_api import HubApi, raise_for_status
from hubasync._retry import RetryConfig, RetryPolicy
from hubasync._transport import AiohttpTransport, Response, origin, redact_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from hashlib import _Hash

    from hubasync._bus import ProgressBus
    from hubasync._models import RemoteFile
    from hubasync._ratelimit import TokenBucket
    from hubasync._transport import StreamResponse

log = logging.getLogger("hubasync")

FLUSH_SIZE: Final = 1024 * 1024
MAX_REDIRECTS: Final = 10
_EXPIRED: Final = frozenset({401, 403, 410})
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_SMALL_BODY: Final = 64 * 1024


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """`bytes a-b/total` -> (a, b, total or None)."""
    if not value or not value.startswith("bytes "):
        return None
    try:
        span, _, total = value[6:].partition("/")
        first, _, last = span.partition("-")
        return int(first), int(last), (None if total in ("", "*") else int(total))
    except ValueError:
        return None


def _announced_total(resp: StreamResponse) -> int | None:
    """The full size of the file as this answer states it, when it states one."""
    if resp.status == 206:
        got = parse_content_range(resp.headers.get("Content-Range"))
        return None if got is None else got[2]
    length = resp.headers.get("Content-Length")
    if resp.status == 200 and not resp.encoded and length and length.isdigit():
        return int(length)
    return None


def _size_mismatch(remote: RemoteFile, actual: int | None) -> IntegrityError:
    return IntegrityError(
        f"{remote.path}: the server has {actual if actual is not None else 'another'} bytes, "
        f"expected {remote.size}", path=remote.path, expected=str(remote.size),
        actual=None if actual is None else str(actual),
    )


class _RangeState:
    """Where one range stands: [start, end) with `done` bytes written from `start`.

    `hasher` (single streams only) has seen exactly the bytes written so far, in order.
    """

    __slots__ = ("done", "end", "hasher", "start")

    def __init__(self, start: int, end: int | None, hasher: _Hash | None = None) -> None:
        self.start = start
        self.end = end
        self.done = 0
        self.hasher = hasher

    @property
    def next_byte(self) -> int:
        return self.start + self.done

    @property
    def complete(self) -> bool:
        return self.end is not None and self.next_byte >= self.end

    @property
    def room(self) -> int | None:
        """Bytes still wanted (None: until the body ends)."""
        return None if self.end is None else self.end - self.next_byte


class _Source:
    """The URL a file's bytes come from, shared by its ranges.

    A URL that has answered (or came from the caller, possibly aged) may expire: a refusal then
    renews it with one HEAD, shared by every range that saw it. A URL just renewed that is refused
    before it ever answered is refused for good.
    """

    __slots__ = ("_lock", "may_expire", "url")

    def __init__(self, url: str, *, may_expire: bool) -> None:
        self.url = url
        self.may_expire = may_expire
        self._lock = anyio.Lock()

    def answered(self, started: str, url: str, home: str) -> None:
        """`url` answered 2xx to a request that started at `started`; a redirect to another
        host than `home` is kept for the next requests (unless the source was renewed since)."""
        if started != self.url:
            return
        if url == started:
            self.may_expire = True
        elif origin(url) != origin(home):
            self.url, self.may_expire = url, True

    async def renew(self, failed: str, locate: Callable[[], Awaitable[str]]) -> bool:
        """After `failed` was refused: False if the refusal is final, else True (renewed)."""
        async with self._lock:
            if self.url != failed:
                return True  # another range renewed it meanwhile
            if not self.may_expire:
                return False
            self.url, self.may_expire = await locate(), False
            return True


class Fetcher:
    """Downloads into temp files; shared by every run of a HubClient."""

    def __init__(
        self,
        *,
        transport: AiohttpTransport,
        api: HubApi,
        disk: DiskIO,
        bus: ProgressBus,
        retry: RetryConfig,
        connections: anyio.CapacityLimiter,
        download_timeout: float,
        chunk_size: int,
        range_threshold: int,
        verify_hashes: bool = True,
        bandwidth: TokenBucket | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._transport = transport
        self._api = api
        self._disk = disk
        self._bus = bus
        self._retry = retry
        self._connections = connections
        self._timeout = download_timeout
        self.chunk_size = chunk_size
        self.range_threshold = range_threshold
        self._verify = verify_hashes
        self._bandwidth = bandwidth
        self._sleep = sleep

    def __repr__(self) -> str:
        return (f"<Fetcher [connections: {self._connections.borrowed_tokens}/"
                f"{self._connections.total_tokens}]>")

    async def fetch(self, run_id: int, remote: RemoteFile, temp_path: str) -> int:
        """Download `remote` to `temp_path`, verified; return its size. One clean retry on a
        hash or size mismatch, then IntegrityError (the temp file is removed either way)."""
        for attempt in range(2):
            temp = await self._disk.run(TempFile, temp_path)
            try:
                size = await self._fetch_once(run_id, remote, temp)
                await self._disk.run(temp.finish)
                if self._verify and remote.size is not None and len(remote.etag) in (40, 64):
                    hashed = size >= self.range_threshold
                    if hashed:  # ranges were written out of order: hash the file now
                        digest = await self._disk.run(hash_file, temp_path, remote.etag)
                        self._check_digest(remote, digest)
                return size
            except IntegrityError as exc:
                await self._disk.run(temp.discard)
                if attempt == 1:
                    raise
                self._bus.publish(Retrying(run_id=run_id, path=remote.path, attempt=1,
                                           delay=0.0, reason=str(exc)))
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._disk.run(temp.discard)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _check_digest(remote: RemoteFile, digest: str | None) -> None:
        if digest is not None and digest != remote.etag:
            raise IntegrityError(
                f"{remote.path}: content hash {digest} does not match the expected {remote.etag}",
                path=remote.path, expected=remote.etag, actual=digest,
            )

    async def _fetch_once(self, run_id: int, remote: RemoteFile, temp: TempFile) -> int:
        self._bus.publish(FileStarted(run_id=run_id, path=remote.path, size=remote.size or 0))
        progress = _Progress(self._bus, run_id, remote)
        size = remote.size
        if size is not None and size >= self.range_threshold:
            source = (_Source(remote.location, may_expire=True) if remote.location
                      else _Source(await self._locate(remote), may_expire=False))
            await self._fetch_ranges(remote, source, temp, progress, size)
            return size
        state = _RangeState(0, size, self._stream_hasher(remote))
        source = _Source(remote.location or remote.url, may_expire=True)
        await self._fetch_range(remote, source, temp, state, progress)
        if size is not None and state.done != size:
            raise _size_mismatch(remote, state.done)
        if state.hasher is not None:
            self._check_digest(remote, state.hasher.hexdigest())
        elif self._verify and size is None and len(remote.etag) in (40, 64):
            await self._disk.run(temp.finish)
            self._check_digest(remote, await self._disk.run(hash_file, temp.path, remote.etag))
        return state.done

    def _stream_hasher(self, remote: RemoteFile) -> _Hash | None:
        """The in-order hasher of a single stream (primed with the git header for git blobs)."""
        if not self._verify or remote.size is None:
            return None
        hasher = new_hasher(remote.etag)
        if hasher is not None and len(remote.etag) == 40:
            hasher.update(git_blob_header(remote.size))
        return hasher

    async def _fetch_ranges(self, remote: RemoteFile, source: _Source, temp: TempFile,
                            progress: _Progress, size: int) -> None:
        """All ranges in parallel; the first failure cancels the others and is raised as
        itself (never as an ExceptionGroup)."""
        failures: list[Exception] = []

        async def run(state: _RangeState) -> None:
            try:
                await self._fetch_range(remote, source, temp, state, progress)
            except Exception as exc:
                failures.append(exc)
                tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            for start in range(0, size, self.chunk_size):
                tg.start_soon(run, _RangeState(start, min(start + self.chunk_size, size)))
        if failures:
            raise failures[0]

    async def _locate(self, remote: RemoteFile) -> str:
        """A fresh download URL (the CDN location) from a HEAD; the file must not have changed."""
        meta = await self._api.file_metadata(remote.url)
        if meta.etag != remote.etag:
            raise IntegrityError(f"{remote.path} changed on the Hub: etag {meta.etag}, expected "
                                 f"{remote.etag}", path=remote.path, expected=remote.etag,
                                 actual=meta.etag)
        if meta.size is not None and remote.size is not None and meta.size != remote.size:
            raise _size_mismatch(remote, meta.size)
        return meta.location

    async def _fetch_range(self, remote: RemoteFile, source: _Source, temp: TempFile,
                           state: _RangeState, progress: _Progress) -> None:
        policy = RetryPolicy(self._retry)
        while not state.complete:
            before, url = state.done, source.url
            try:
                async with self._connections:
                    await self._stream_into(remote, source, temp, state, progress)
                if state.end is None or state.complete:
                    return
                raise ReadError(f"{remote.path}: body ended at byte {state.next_byte}, "
                                f"expected {state.end}")
            except HubHTTPError as exc:
                if exc.status in _EXPIRED and url != remote.url:
                    policy = await self._renew(remote, source, url, policy, progress, exc)
                    continue
                policy = await self._backoff(policy, progress, exc, progressed=False)
            except (TransientError, OSError, TimeoutError) as exc:
                policy = await self._backoff(policy, progress, exc,
                                             progressed=state.done > before)

    async def _renew(self, remote: RemoteFile, source: _Source, failed: str,
                     policy: RetryPolicy, progress: _Progress, exc: HubHTTPError) -> RetryPolicy:
        """A signed URL was refused: renew it (once per expiry), or give up."""
        if policy.exhausted or not await source.renew(failed, lambda: self._locate(remote)):
            raise exc
        policy = policy.increment()
        self._bus.publish(Retrying(run_id=progress.run_id, path=progress.path,
                                   attempt=policy.attempt, delay=0.0,
                                   reason=f"{type(exc).__name__}: {exc} (URL renewed)"))
        return policy

    async def _backoff(self, policy: RetryPolicy, progress: _Progress, exc: Exception,
                       *, progressed: bool) -> RetryPolicy:
        if progressed:
            policy = policy.reset()
        delay = policy.next_delay(exc)
        if delay is None:
            raise exc
        policy = policy.increment()
        self._bus.publish(Retrying(run_id=progress.run_id, path=progress.path,
                                   attempt=policy.attempt,
                                   delay=delay, reason=f"{type(exc).__name__}: {exc}"))
        await self._sleep(delay)
        return policy

    @staticmethod
    def _range_headers(remote: RemoteFile, state: _RangeState) -> dict[str, str]:
        if state.next_byte == 0 and (state.end is None or state.end == remote.size):
            return {}
        last = "" if state.end is None else str(state.end - 1)
        return {"Range": f"bytes={state.next_byte}-{last}", "Accept-Encoding": "identity"}

    async def _stream_into(self, remote: RemoteFile, source: _Source, temp: TempFile,
                           state: _RangeState, progress: _Progress) -> None:
        headers = self._range_headers(remote, state)
        url = started = source.url
        for _ in range(MAX_REDIRECTS):
            async with self._transport.stream(url, headers=headers,
                                              read_timeout=self._timeout) as resp:
                if resp.status in _REDIRECTS and "Location" in resp.headers:
                    await _drain(resp)
                    url = urljoin(url, resp.headers["Location"])
                    continue
                if resp.status >= 400:
                    await self._raise_for(remote, resp, bool(headers))
                skip = self._check_answer(remote, resp, state, bool(headers))
                source.answered(started, url, remote.url)
                await self._copy_body(remote, resp.chunks(), temp, state, progress, skip)
                return
        raise ReadError(f"too many redirects for {redact_url(remote.url)}")

    @staticmethod
    async def _raise_for(remote: RemoteFile, resp: StreamResponse, ranged: bool) -> None:
        body = await resp.read_all()
        if resp.status == 416 and ranged and remote.size is not None:
            total = resp.headers.get("Content-Range", "").rpartition("/")[2]  # bytes */total
            raise _size_mismatch(remote, int(total) if total.isdigit() else None)
        raise_for_status(Response(status=resp.status, headers=resp.headers, url=resp.url,
                                  body=body))

    @staticmethod
    def _check_answer(remote: RemoteFile, resp: StreamResponse, state: _RangeState,
                      ranged: bool) -> int | None:
        """Refuse an answer that cannot be used. None: the body is the range asked for; an int:
        the body is the whole file (a 200 to a Range request), skip that many bytes of it."""
        total = _announced_total(resp)
        if total is not None and remote.size is not None and total != remote.size:
            raise _size_mismatch(remote, total)
        if resp.status == 200:
            return state.next_byte if ranged else None
        if not ranged or resp.status != 206:
            raise ReadError(f"{remote.path}: unexpected status {resp.status}")
        got = parse_content_range(resp.headers.get("Content-Range"))
        want_last = None if state.end is None else state.end - 1
        if got is None or got[0] != state.next_byte or (
                want_last is not None and got[1] != want_last):
            raise ReadError(f"{remote.path}: Content-Range {got} does not match the request")
        return None

    async def _copy_body(self, remote: RemoteFile, chunks: AsyncIterator[bytes], temp: TempFile,
                         state: _RangeState, progress: _Progress, skip: int | None) -> None:
        """Write the body at the range's position; a body longer than the range is an
        IntegrityError. A whole-file body (`skip` is not None) is read from byte `skip` and cut
        at the range's end. Bytes that arrived before a transport failure are kept, so the
        retry resumes after them."""
        whole, skip = skip is not None, skip or 0
        buf = bytearray()
        try:
            async for chunk in chunks:
                if self._bandwidth is not None:
                    await self._bandwidth.acquire(len(chunk))
                used = min(skip, len(chunk))
                skip -= used
                buf += memoryview(chunk)[used:]
                room = state.room
                if room is not None and len(buf) > room and not whole:
                    raise IntegrityError(f"{remote.path}: server sent more bytes than announced",
                                         path=remote.path)
                if whole and room is not None and len(buf) >= room:
                    del buf[room:]
                    break  # the rest belongs to other ranges (the connection is dropped)
                if len(buf) >= FLUSH_SIZE:
                    await self._flush(temp, state, buf, progress)
                    buf = bytearray()
        except TransientError:
            if buf:
                await self._flush(temp, state, buf, progress)
            raise
        if buf:
            await self._flush(temp, state, buf, progress)

    async def _flush(self, temp: TempFile, state: _RangeState, buf: bytearray,
                     progress: _Progress) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await self._disk.run(temp.pwrite, buf, state.next_byte, state.hasher)
        except OSError as exc:
            raise oserror(exc, "write the download") from None
        state.done += len(buf)
        progress.add(len(buf))


async def _drain(resp: StreamResponse) -> None:
    """Read a small redirect body, so the connection goes back to the pool."""
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) <= _SMALL_BODY:
        await resp.read_all()


class _Progress:
    """Per-file progress, published once per flush (about one event per MiB)."""

    __slots__ = ("_bus", "_remote", "downloaded", "path", "run_id", "started")

    def __init__(self, bus: ProgressBus, run_id: int, remote: RemoteFile) -> None:
        self._bus = bus
        self.run_id = run_id
        self.path = remote.path
        self._remote = remote
        self.downloaded = 0
        self.started = time.monotonic()

    def add(self, n: int) -> None:
        self.downloaded += n
        self._bus.publish(BytesReceived(run_id=self.run_id, path=self.path, delta=n,
                                        downloaded=self.downloaded,
                                        total=self._remote.size or 0))
