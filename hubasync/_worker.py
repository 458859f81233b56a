"""Fetch one file into a temp file, whole or as parallel byte ranges, verified and resumable.

Transfer code publishes events and raises typed errors; how long to wait before a retry is the
retry policy's decision, and every request goes through the transport's host gate. A range that
drops mid-way resumes from its last written byte. A 200 answered to a Range request, a
Content-Range that does not match, a short or an over-long body never corrupt the file: the bytes
are discarded and the range starts again.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final
from urllib.parse import urljoin, urlsplit

import anyio

from hubasync._events import BytesReceived, FileStarted, Retrying
from hubasync._exceptions import HubHTTPError, IntegrityError, ReadError
from hubasync._fileio import DiskIO, TempFile, git_blob_header, hash_file, new_hasher
from hubasync._hub_api import HubApi, raise_for_status
from hubasync._retry import RetryConfig, RetryPolicy
from hubasync._transport import AiohttpTransport, Response, origin, redact_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
    from hashlib import _Hash

    from hubasync._bus import ProgressBus
    from hubasync._models import RemoteFile
    from hubasync._ratelimit import TokenBucket

log = logging.getLogger("hubasync")

FLUSH_SIZE: Final = 1024 * 1024
MAX_REDIRECTS: Final = 10
_EXPIRED: Final = frozenset({401, 403, 410})


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


class _RangeState:
    """Where one range stands: [start, end) with `done` bytes written from `start`."""

    __slots__ = ("done", "end", "start")

    def __init__(self, start: int, end: int | None) -> None:
        self.start = start
        self.end = end
        self.done = 0

    @property
    def next_byte(self) -> int:
        return self.start + self.done

    @property
    def complete(self) -> bool:
        return self.end is not None and self.next_byte >= self.end


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
            location = [remote.location] if remote.location else await self._locate(remote.url)
            states = [_RangeState(start, min(start + self.chunk_size, size))
                      for start in range(0, size, self.chunk_size)]
            async with anyio.create_task_group() as tg:
                for state in states:
                    tg.start_soon(self._fetch_range, remote, location, temp, state, None,
                                  progress)
            return size
        hasher = new_hasher(remote.etag) if self._verify and size is not None else None
        if hasher is not None and len(remote.etag) == 40 and size is not None:
            hasher.update(git_blob_header(size))
        state = _RangeState(0, size)
        await self._fetch_range(remote, [remote.location or remote.url], temp, state, hasher,
                                progress)
        if size is not None and state.done != size:
            raise IntegrityError(f"{remote.path}: got {state.done} bytes, expected {size}",
                                 path=remote.path, expected=str(size), actual=str(state.done))
        if hasher is not None:
            self._check_digest(remote, hasher.hexdigest())
        elif self._verify and size is None and len(remote.etag) in (40, 64):
            await self._disk.run(temp.finish)
            self._check_digest(remote, await self._disk.run(hash_file, temp.path, remote.etag))
        return state.done

    async def _locate(self, url: str) -> list[str]:
        """The URL ranges are fetched from (the CDN location from a HEAD), shared by ranges."""
        meta = await self._api.file_metadata(url)
        return [meta.location]

    async def _fetch_range(
        self,
        remote: RemoteFile,
        location: list[str],
        temp: TempFile,
        state: _RangeState,
        hasher: _Hash | None,
        progress: _Progress,
    ) -> None:
        policy = RetryPolicy(self._retry)
        while not state.complete:
            before = state.done
            try:
                async with self._connections:
                    await self._stream_into(remote, location, temp, state, hasher, progress)
                if state.end is None or state.complete:
                    return
                raise ReadError(f"{remote.path}: body ended at byte {state.next_byte}, "
                                f"expected {state.end}")
            except HubHTTPError as exc:
                if exc.status in _EXPIRED and location[0] != remote.url:
                    location[:] = await self._locate(remote.url)  # signed URL expired
                    policy = policy.increment()
                    continue
                policy = await self._backoff(policy, progress, exc, progressed=False)
            except (ReadError, OSError, TimeoutError) as exc:
                if isinstance(exc, HubHTTPError):  # pragma: no cover (handled above)
                    raise
                policy = await self._backoff(policy, progress, exc,
                                             progressed=state.done > before)

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

    async def _stream_into(
        self,
        remote: RemoteFile,
        location: list[str],
        temp: TempFile,
        state: _RangeState,
        hasher: _Hash | None,
        progress: _Progress,
    ) -> None:
        headers: dict[str, str] = {}
        ranged = state.next_byte > 0 or (state.end is not None and state.end != remote.size)
        if ranged:
            last = "" if state.end is None else str(state.end - 1)
            headers["Range"] = f"bytes={state.next_byte}-{last}"
            headers["Accept-Encoding"] = "identity"
        url = location[0]
        for _ in range(MAX_REDIRECTS):
            async with self._transport.stream(url, headers=headers,
                                              read_timeout=self._timeout) as resp:
                if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                    url = urljoin(url, resp.headers["Location"])
                    continue
                if resp.status >= 400:
                    body = await resp.read_all()
                    raise_for_status(Response(status=resp.status, headers=resp.headers,
                                              url=resp.url, body=body))
                await self._check_answer(remote, resp.status, resp.headers, state, temp, hasher,
                                         ranged)
                await self._copy_body(remote, resp.chunks(), temp, state, hasher, progress)
                if urlsplit(url).netloc and origin(url) != origin(remote.url):
                    location[0] = url  # reuse the CDN URL for the next attempt
                return
        raise ReadError(f"too many redirects for {redact_url(remote.url)}")

    async def _check_answer(self, remote: RemoteFile, status: int, headers: Mapping[str, str],
                            state: _RangeState, temp: TempFile, hasher: _Hash | None,
                            ranged: bool) -> None:
        if not ranged:
            if status != 200:
                raise ReadError(f"{remote.path}: unexpected status {status}")
            return
        if status == 200:
            if state.start != 0:  # a 200 to a mid-file range: cannot use it
                raise ReadError(f"{remote.path}: server ignored the Range request")
            state.done = 0  # whole body coming: restart this file from byte 0
            await self._disk.run(temp.truncate, 0)
            if hasher is not None:
                raise IntegrityError("restart needed", path=remote.path)  # re-hash from scratch
            return
        got = parse_content_range(headers.get("Content-Range"))
        want_last = None if state.end is None else state.end - 1
        if (status != 206 or got is None or got[0] != state.next_byte
                or (want_last is not None and got[1] != want_last)):
            raise ReadError(f"{remote.path}: Content-Range {got} does not match the request")

    async def _copy_body(self, remote: RemoteFile, chunks: AsyncIterator[bytes], temp: TempFile,
                         state: _RangeState, hasher: _Hash | None, progress: _Progress) -> None:
        buf = bytearray()
        async for chunk in chunks:
            if self._bandwidth is not None:
                await self._bandwidth.acquire(len(chunk))
            buf += chunk
            limit = state.end - state.start if state.end is not None else None
            if limit is not None and state.done + len(buf) > limit:
                raise IntegrityError(f"{remote.path}: server sent more bytes than announced",
                                     path=remote.path)
            if len(buf) >= FLUSH_SIZE:
                await self._flush(temp, state, buf, hasher, progress)
                buf = bytearray()
        if buf:
            await self._flush(temp, state, buf, hasher, progress)

    async def _flush(self, temp: TempFile, state: _RangeState, buf: bytearray,
                     hasher: _Hash | None, progress: _Progress) -> None:
        with anyio.CancelScope(shield=True):
            await self._disk.run(temp.pwrite, buf, state.next_byte, hasher)
        state.done += len(buf)
        progress.add(len(buf))


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
