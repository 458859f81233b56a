"""Fetch one file into a temp file, whole or as parallel byte ranges, verified and resumable.

Transfer code publishes events and raises typed errors; how long to wait before a retry is the
retry policy's decision, and every request goes through the transport's host gate. A range that
drops or stalls mid-way keeps the bytes that arrived and resumes from there; a download killed or
cancelled is continued by the next attempt, in this process or another, from what its partial
download records (`_partial`). Answers are checked strictly (`_answers`), and no byte is ever
written past the expected end. A signed URL that stops working after it has worked (expiry) is
renewed with one fresh HEAD shared by every range; a fresh URL that is refused is a permanent
refusal.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import urljoin

import anyio

from hubasync._answers import Source, check_answer, drain, range_headers, size_mismatch
from hubasync._bus import FileProgress
from hubasync._events import FileStarted, Retrying
from hubasync._exceptions import HubError, HubHTTPError, IntegrityError, ReadError, TransientError
from hubasync._fileio import IOV_MAX, leave_lock_file, oserror, primed_hasher, store_new
from hubasync._follower import Follower
from hubasync._hub_api import raise_for_status
from hubasync._partial import (
    FLUSH_SIZE,
    RECORD_INTERVAL,
    ClaimLost,
    InMemory,
    Partial,
    Where,
    open_partial,
)
from hubasync._retry import RetryPolicy
from hubasync._shortcuts import Shortcuts
from hubasync._transport import Response
from hubasync._urls import redact_url

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from hashlib import _Hash

    from hubasync._bus import ProgressBus
    from hubasync._fileio import Chunk
    from hubasync._hub_api import HubApi
    from hubasync._models import RemoteFile
    from hubasync._ratelimit import TokenBucket
    from hubasync._retry import RetryConfig
    from hubasync._spans import Span
    from hubasync._threads import DiskIO
    from hubasync._transport import AiohttpTransport, StreamResponse
    from hubasync._types import PageCache

log = logging.getLogger("hubasync")

MAX_REDIRECTS: Final = 10
_EXPIRED: Final = frozenset({401, 403, 410})
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


@dataclass(slots=True)
class _Job:
    """One attempt at one file: where its bytes come from and go to."""

    remote: RemoteFile
    partial: Partial | InMemory
    progress: FileProgress
    source: Source | None = None
    follower: Follower | None = None
    final_url: str | None = None  # where the last answer came from (after redirects)


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
        page_cache: PageCache = "keep",
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
        self._page_cache = page_cache
        self._bandwidth = bandwidth
        self._sleep = sleep
        self.shortcuts = Shortcuts()

    def __repr__(self) -> str:
        return (f"<Fetcher [connections: {self._connections.borrowed_tokens}/"
                f"{self._connections.total_tokens}]>")

    async def fetch(self, run_id: int, remote: RemoteFile, where: Where, *,
                    force: bool = False) -> Partial:
        """Download `remote` into a temp file, verified, and return it (closed; the caller
        commits it, then calls `committed()`, or `abandon()` if the commit fails).

        A partial download left by an earlier attempt (this process or another) is continued
        when it matches; `force` starts from zero. A hash or size mismatch discards the partial
        download and is retried once from zero, then raised. A failure or a cancellation keeps
        what is resumable. If another process takes the partial download over, this one starts
        again in a process-unique temp file.
        """
        fresh, shared, retried = force, True, False
        while True:
            with anyio.CancelScope(shield=True):  # never leave a claim behind half-opened
                partial = await self._open(remote, where, fresh=fresh, shared=shared)
            try:
                await self._fetch_verified(run_id, remote, partial)
            except IntegrityError as exc:
                await self._settle(partial.discard)
                if retried:
                    raise
                retried = fresh = True
                self._bus.publish(Retrying(run_id=run_id, path=remote.path, attempt=1,
                                           delay=0.0, reason=str(exc)))
            except ClaimLost:
                await self._settle(partial.drop)
                log.warning("another process took over the partial download of %s: starting "
                            "again in a private temp file", remote.path)
                shared = False
            except BaseException:
                await self._settle(partial.abandon)
                raise
            else:
                return partial

    async def fetch_small(self, run_id: int, remote: RemoteFile, temp: str,
                          lock_file: str | None = None) -> None:
        """Download a file of known, small size into memory, verify it, and write it to the
        new file `temp` (fsynced) in one step off the loop, leaving `lock_file` (the official
        client's marker) in the same step. Nothing is kept between attempts: a failure fetches
        it whole again. A hash mismatch is retried once from zero, then raised (nothing is
        written)."""
        assert remote.size is not None
        retried = False
        guess = None if remote.location else self.shortcuts.guess(remote.url, remote.etag)
        while True:
            self._bus.publish(FileStarted(run_id=run_id, path=remote.path, size=remote.size,
                                          resumed_from=0))
            body = InMemory(remote.size)
            job = _Job(remote, body, FileProgress(self._bus, run_id, remote))
            job.source = Source(guess or remote.location or remote.url, may_expire=not guess)
            span = body.spans[0]
            try:
                await self._fetch_range(job, span)
            except HubError as exc:
                if guess is None:
                    raise
                log.debug("%s: the direct URL failed (%s: %s); no more shortcuts", remote.path,
                          type(exc).__name__, exc)
                self.shortcuts.disable()
                guess = None
                continue
            if guess is None and job.final_url is not None:
                self.shortcuts.learn(remote.url, remote.etag, job.final_url)
            if span.done != remote.size:
                raise size_mismatch(remote, span.done)
            etag = remote.etag if self._verify else None

            def store(buffers: list[Chunk] = body.buffers, etag: str | None = etag) -> str | None:
                if lock_file is not None:
                    leave_lock_file(lock_file)
                return store_new(temp, buffers, etag, remote.size or 0)

            try:
                digest = await self._disk.run(store)
            except OSError as exc:
                raise oserror(exc, "write the download") from None
            try:
                self._check_digest(remote, digest)
            except IntegrityError as exc:
                if retried:
                    raise
                retried = True
                if guess is not None:  # bad bytes from a guessed URL: stop guessing
                    self.shortcuts.disable()
                    guess = None
                self._bus.publish(Retrying(run_id=run_id, path=remote.path, attempt=1,
                                           delay=0.0, reason=str(exc)))
            else:
                return

    async def _open(self, remote: RemoteFile, where: Where, *, fresh: bool,
                    shared: bool) -> Partial:
        ranged = remote.size is not None and remote.size >= self.range_threshold
        try:
            return await self._disk.run(open_partial, where, remote.etag, remote.size,
                                        ranged=ranged, chunk=self.chunk_size, fresh=fresh,
                                        shared=shared, page_cache=self._page_cache)
        except OSError as exc:
            raise oserror(exc, "create the download's temp file") from None

    async def _settle(self, fn: Callable[[], None]) -> None:
        with anyio.CancelScope(shield=True):
            await self._disk.run(fn)

    async def _fetch_verified(self, run_id: int, remote: RemoteFile, partial: Partial) -> None:
        await self._fetch_once(run_id, remote, partial)
        await self._disk.run(partial.finish)

    @staticmethod
    def _check_digest(remote: RemoteFile, digest: str | None) -> None:
        if digest is not None and digest != remote.etag:
            raise IntegrityError(
                f"{remote.path}: content hash {digest} does not match the expected {remote.etag}",
                path=remote.path, expected=remote.etag, actual=digest,
            )

    async def _fetch_once(self, run_id: int, remote: RemoteFile, partial: Partial) -> None:
        present = partial.present
        self._bus.publish(FileStarted(run_id=run_id, path=remote.path, size=remote.size or 0,
                                      resumed_from=present))
        job = _Job(remote, partial, FileProgress(self._bus, run_id, remote, present))
        if partial.ranged:
            digest = await self._fetch_ranges(job, partial)
            if digest is not None:
                self._check_digest(remote, digest)
            return
        span = partial.spans[0]
        span.hasher = await self._stream_hasher(remote, partial)
        job.source = Source(remote.location or remote.url, may_expire=True)
        await self._together([lambda: self._fetch_range(job, span)], partial)
        size = remote.size
        if size is not None and span.done != size:
            raise size_mismatch(remote, span.done)
        if span.hasher is not None:
            self._check_digest(remote, span.hasher.hexdigest())
        elif self._verify and size is None and len(remote.etag) in (40, 64):
            self._check_digest(remote, await self._digest(remote, partial, span.done))

    async def _stream_hasher(self, remote: RemoteFile, partial: Partial) -> _Hash | None:
        """The in-order hasher of a single stream, primed with the git header for git blobs
        and, when resuming, with the bytes already on disk (read off the loop)."""
        if not self._verify or remote.size is None:
            return None
        hasher = primed_hasher(remote.etag, remote.size)
        if hasher is not None and partial.spans[0].done:
            await self._disk.run(partial.temp.feed, hasher, partial.spans[0].done)
        return hasher

    async def _digest(self, remote: RemoteFile, partial: Partial, size: int) -> str | None:
        hasher = primed_hasher(remote.etag, size)
        if hasher is None:
            return None
        await self._disk.run(partial.temp.feed, hasher, size)
        return hasher.hexdigest()

    async def _fetch_ranges(self, job: _Job, partial: Partial) -> str | None:
        """The missing ranges in parallel, hashed in order as they arrive; return the digest
        (None when not verifying). The first failure cancels the others and is raised as
        itself (never as an ExceptionGroup). A completed range is made durable."""
        remote = job.remote
        size = remote.size
        hasher = primed_hasher(remote.etag, size) if self._verify and size is not None else None
        if hasher is not None and size is not None:
            job.follower = Follower(self._disk, partial, hasher, size)
        todo = [span for span in partial.spans if not span.complete]
        if todo:
            job.source = (Source(remote.location, may_expire=True) if remote.location
                          else Source(await self._locate(remote), may_expire=False))

        async def fetch(span: Span) -> None:
            await self._fetch_range(job, span)
            await self._disk.run(partial.span_done)

        digest: list[str] = []

        async def follow(follower: Follower) -> None:
            try:
                digest.append(await follower.run())
            except OSError as exc:
                raise oserror(exc, "hash the download") from None

        jobs = [functools.partial(fetch, span) for span in todo]
        if job.follower is not None:
            jobs.append(functools.partial(follow, job.follower))
        await self._together(jobs, partial)
        return digest[0] if digest else None

    async def _together(self, jobs: Sequence[Callable[[], Awaitable[None]]],
                        partial: Partial) -> None:
        """Run `jobs` at once, with the partial download's recorder beside them until they are
        done; the first failure cancels the rest and is raised as itself (never as an
        ExceptionGroup)."""
        if not jobs:
            return
        if len(jobs) == 1 and not partial.resumable:
            await jobs[0]()
            return
        failures: list[Exception] = []
        running = len(jobs)

        async def guard(fn: Callable[[], Awaitable[None]], *, main: bool) -> None:
            nonlocal running
            try:
                await fn()
            except Exception as exc:
                failures.append(exc)
                tg.cancel_scope.cancel()
            finally:
                if main:
                    running -= 1
                    if not running:  # the recorder's work is done too
                        tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            if partial.resumable:
                tg.start_soon(functools.partial(guard, lambda: self._recorder(partial),
                                                main=False))
            for fn in jobs:
                tg.start_soon(functools.partial(guard, fn, main=True))
        if failures:
            raise failures[0]

    async def _recorder(self, partial: Partial) -> None:
        """Record the partial download's state every RECORD_INTERVAL while bytes arrive (the
        last state is recorded when the attempt ends, however it ends)."""
        while True:
            await anyio.sleep(RECORD_INTERVAL)
            if partial.unrecorded:
                await self._disk.run(partial.record)

    async def _locate(self, remote: RemoteFile) -> str:
        """A fresh download URL (the CDN location) from a HEAD; the file must not have changed."""
        meta = await self._api.file_metadata(remote.url)
        if meta.etag != remote.etag:
            raise IntegrityError(f"{remote.path} changed on the Hub: etag {meta.etag}, expected "
                                 f"{remote.etag}", path=remote.path, expected=remote.etag,
                                 actual=meta.etag)
        if meta.size is not None and remote.size is not None and meta.size != remote.size:
            raise size_mismatch(remote, meta.size)
        return meta.location

    async def _fetch_range(self, job: _Job, span: Span) -> None:
        source = job.source
        assert source is not None
        policy = RetryPolicy(self._retry)
        while not span.complete:
            before, url = span.done, source.url
            try:
                async with self._connections:
                    await self._stream_into(job, source, span)
                if span.end is None or span.complete:
                    return
                raise ReadError(f"{job.remote.path}: body ended at byte {span.next_byte}, "
                                f"expected {span.end}")
            except HubHTTPError as exc:
                if exc.status in _EXPIRED and url != job.remote.url:
                    policy = await self._renew(job, source, url, policy, exc)
                    continue
                policy = await self._backoff(policy, job.progress, exc, progressed=False)
            except (TransientError, OSError, TimeoutError) as exc:
                policy = await self._backoff(policy, job.progress, exc,
                                             progressed=span.done > before)

    async def _renew(self, job: _Job, source: Source, failed: str, policy: RetryPolicy,
                     exc: HubHTTPError) -> RetryPolicy:
        """A signed URL was refused: renew it (once per expiry), or give up."""
        if policy.exhausted or not await source.renew(failed, lambda: self._locate(job.remote)):
            raise exc
        policy = policy.increment()
        self._bus.publish(Retrying(run_id=job.progress.run_id, path=job.progress.path,
                                   attempt=policy.attempt, delay=0.0,
                                   reason=f"{type(exc).__name__}: {exc} (URL renewed)"))
        return policy

    async def _backoff(self, policy: RetryPolicy, progress: FileProgress, exc: Exception,
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

    async def _stream_into(self, job: _Job, source: Source, span: Span) -> None:
        remote = job.remote
        headers = range_headers(remote, span)
        url = started = source.url
        for _ in range(MAX_REDIRECTS):
            async with self._transport.stream(url, headers=headers,
                                              read_timeout=self._timeout) as resp:
                if resp.status in _REDIRECTS and "Location" in resp.headers:
                    await drain(resp)
                    url = urljoin(url, resp.headers["Location"])
                    continue
                if resp.status >= 400:
                    await self._raise_for(remote, resp, bool(headers))
                skip = check_answer(remote, resp, span, bool(headers))
                source.answered(started, url, remote.url)
                job.final_url = url
                await self._copy_body(job, resp, span, skip)
                return
        raise ReadError(f"too many redirects for {redact_url(remote.url)}")

    @staticmethod
    async def _raise_for(remote: RemoteFile, resp: StreamResponse, ranged: bool) -> None:
        body = await resp.read_all()
        if resp.status == 416 and ranged and remote.size is not None:
            total = resp.headers.get("Content-Range", "").rpartition("/")[2]  # bytes */total
            raise size_mismatch(remote, int(total) if total.isdigit() else None)
        raise_for_status(Response(status=resp.status, headers=resp.headers, url=resp.url,
                                  body=body))

    async def _copy_body(self, job: _Job, resp: StreamResponse, span: Span,
                         skip: int | None) -> None:
        """Write the body at the range's position; a body longer than the range is an
        IntegrityError. A whole-file body (`skip` is not None) is read from byte `skip` and cut
        at the range's end. Chunks are written as they came (one `pwritev` per flush, no
        copy). Bytes that arrived before a transport failure or a cancellation are kept, so the
        retry (or the next attempt) resumes after them."""
        whole, skip = skip is not None, skip or 0
        buffers: list[Chunk] = []
        size = 0
        try:
            async for chunk in resp.chunks():
                if self._bandwidth is not None:
                    await self._bandwidth.acquire(len(chunk))
                data: Chunk = chunk
                if skip:
                    used = min(skip, len(chunk))
                    skip -= used
                    data = memoryview(chunk)[used:]
                room = span.room
                if room is not None and size + len(data) >= room:
                    if size + len(data) > room and not whole:
                        raise IntegrityError(f"{job.remote.path}: server sent more bytes than "
                                             "announced", path=job.remote.path)
                    buffers.append(memoryview(data)[: room - size])
                    size = room
                    if whole:
                        break  # the rest belongs to other ranges (the connection is dropped)
                    continue
                buffers.append(data)
                size += len(data)
                if size >= FLUSH_SIZE or len(buffers) >= IOV_MAX:
                    await self._flush(job, span, buffers, size, resp)
                    buffers, size = [], 0
        except TransientError:
            if size:
                await self._flush(job, span, buffers, size)
            raise
        except anyio.get_cancelled_exc_class():
            if size:  # what arrived is kept for the resume (best effort: cancelling wins)
                with contextlib.suppress(Exception):
                    await self._flush(job, span, buffers, size)
            raise
        if size:
            await self._flush(job, span, buffers, size, resp)

    async def _flush(self, job: _Job, span: Span, buffers: list[Chunk], size: int,
                     resp: StreamResponse | None = None) -> None:
        """Write (off the loop, and a cancellation never leaves a write half-counted; a small
        file's body is only kept in memory), hand the written buffers back to `resp` for reuse,
        then publish the progress."""
        partial = job.partial
        if isinstance(partial, InMemory):
            partial.write(span, buffers)
        else:
            try:  # on the file's write thread; a cancellation waits for the write
                await self._disk.write(partial.path, partial.write, span, buffers)
            except OSError as exc:
                raise oserror(exc, "write the download") from None
            if resp is not None:
                resp.recycle(buffers)
        job.progress.add(size)
        if job.follower is not None:
            job.follower.poke()
