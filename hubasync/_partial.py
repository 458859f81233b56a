"""The temp file a download writes into, and what is known to be in it.

A file of known size larger than one flush gets a *resumable* partial download: a data file
named by a random generation (`blobs/<etag>.<gen>.incomplete` while it is written, parked in
`.locks/<repo>/` between attempts; see `ResumeFiles`), a state file naming it, and the owner file
of the process writing them (`_claim`). The state (JSON) records the expected etag and size, the
range layout, and for each range how many bytes from its start were written (`written`) and
fsynced (`durable`). A download killed at any instant is continued by the next attempt, in any
process, if the state matches the expected etag and size: every range is fetched from its first
missing byte. A cancelled or failed download keeps its state; a hash or size mismatch discards it
(the bytes are bad); so does `force_download`. Smaller files, and a process that finds a live
owner, use a process-unique temp that is deleted on failure (no resume).

Two processes (the official flock is a no-op on some network filesystems): only the owner writes
into a data file or its state; the other downloads into its own unique temp. An owner taken over
(judged dead while it was not) notices before its next state write or its commit and starts again
in a unique temp; at most the one flush it was writing then lands in the data file: bytes of the
same blob, at their own offsets (and the file is hash-checked before any commit).

What survives what:
- The process is killed (SIGKILL, OOM, crash): every `pwrite` that returned is in the page
  cache, and the state only ever counts bytes whose write returned, so it is exact. It is
  rewritten (temp + `os.replace`, no fsync) at most every RECORD_INTERVAL while bytes arrive (the
  Fetcher's recorder calls `record`), when a range completes and when an attempt ends; writes
  are coalesced (one at a time, the latest counts win), so a resume refetches per range at most
  the unflushed buffer (< 1 MiB) plus what arrived in one interval and one state write (at
  1 GiB/s over 16 connections, about 4 MiB per range: less than one range).
- The machine loses power: unsynced data may be lost. The data file is fsynced whenever a range
  completes (coalesced, off the transfer path) and at the end, and `durable` records what that
  fsync covered. The state names the boot it was written in; after a reboot only `durable` counts
  are trusted. A state file that did not survive (no fsync) is discarded, an older one is still
  true. A data file shorter than the state claims is trusted only up to its length.
- Anything else (a lying disk, a filesystem that reorders): the sha256 / git-sha1 check at the
  end catches it, and the partial download is discarded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Final, NamedTuple

import msgspec

from hubasync._cache_layout import GEN_RE, PARKED_SUFFIX, ResumeFiles, unique_suffix
from hubasync._claim import Owner, boot_id, claim, holds, release
from hubasync._exceptions import HubError
from hubasync._fileio import TempFile, remove_quietly, write_atomic
from hubasync._spans import STATE_VERSION, ResumeState, Span, layout, resume_point

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from collections.abc import Set as AbstractSet
    from hashlib import _Hash

    from hubasync._fileio import Chunk
    from hubasync._types import PageCache

log = logging.getLogger("hubasync")

FLUSH_SIZE: Final = 1024 * 1024
RECORD_INTERVAL: Final = 0.05  # seconds between two state writes while bytes arrive
LEFTOVER_AGE: Final = 600.0  # a state temp older than this was left by a killed writer
STALE_AFTER: Final = 7 * 24 * 3600.0  # a partial download not touched for a week is dropped
_STATE_SUFFIX: Final = ".hubasync.state"


class ClaimLost(Exception):
    """Another process took the partial download over: stop writing into it (internal: the
    Fetcher starts again in a unique temp, callers never see it)."""


class Where(NamedTuple):
    """The two temp options of one download: a process-unique path, or resumable files."""

    unique: str
    resume: ResumeFiles


_STATE: Final = msgspec.json.Decoder(ResumeState)


class _Resume:
    """The persistent side of a resumable partial download (thread-safe, blocking)."""

    def __init__(self, files: ResumeFiles, owner: Owner, state: ResumeState,
                 durable: list[int]) -> None:
        self.files = files
        self.owner = owner
        self.state = state  # etag, size, layout, gen
        self.durable = durable
        self.lost = False
        self._record_lock = threading.Lock()
        self._record_wanted = False
        self._sync_lock = threading.Lock()
        self._sync_wanted = False

    def record(self, spans: list[Span]) -> None:
        """Persist the counts; calls made while one is being written coalesce into one more."""
        self._record_wanted = True
        while self._record_wanted and self._record_lock.acquire(blocking=False):
            try:
                self._record_wanted = False
                self._write(spans)
            finally:
                self._record_lock.release()

    def _write(self, spans: list[Span]) -> None:
        if self.lost or not holds(self.files.owner, self.owner):
            self.lost = True
            raise ClaimLost(self.files.stem)
        state = msgspec.structs.replace(self.state, boot=boot_id(),
                                        written=[s.done for s in spans],
                                        durable=list(self.durable))
        write_atomic(self.files.state, msgspec.json.encode(state), durable=False)

    def sync(self, temp: TempFile, spans: list[Span]) -> None:
        """fsync the data, then record what that covered as durable (coalesced)."""
        self._sync_wanted = True
        while self._sync_wanted and self._sync_lock.acquire(blocking=False):
            try:
                self._sync_wanted = False
                covered = [s.done for s in spans]
                temp.sync()
                self.durable = covered
            finally:
                self._sync_lock.release()
        self.record(spans)

    def park(self) -> None:
        """Move the data file out of sight until the next attempt (its state is kept)."""
        gen = self.state.gen
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.files.active(gen), self.files.parked(gen))

    def remove(self, *paths: str) -> None:
        """Remove the state (and `paths`), unless another process owns them now; release."""
        if not self.lost and holds(self.files.owner, self.owner):
            for path in (*paths, self.files.state):
                remove_quietly(path)
        self.release()

    def release(self) -> None:
        release(self.files.owner, self.owner)


class Partial:
    """A temp file being filled, range by range. Its blocking methods run off the loop."""

    def __init__(self, temp: TempFile, spans: list[Span], *, ranged: bool,
                 resume: _Resume | None = None) -> None:
        self.drop_behind = False  # set by `open_partial` for page_cache="drop"
        self.temp = temp
        self.spans = spans
        self.ranged = ranged
        self._resume = resume
        self._first_open = 0  # the spans before this one are complete
        self._unrecorded = False
        self._hashed = 0  # bytes from 0 hashed in order (`hash_range`)
        self._dropped = 0  # bytes from 0 whose cached pages were let go of
        self._drop_lock = threading.Lock()

    def __repr__(self) -> str:
        kind = "resumable" if self._resume is not None else "unique"
        return f"<Partial {kind} {self.temp.path} [{self.present} bytes present]>"

    @property
    def path(self) -> str:
        return self.temp.path

    @property
    def present(self) -> int:
        return sum(s.done for s in self.spans)

    @property
    def resumable(self) -> bool:
        return self._resume is not None

    @property
    def frontier(self) -> int:
        """How far from byte 0 the file is written without a gap (ranges are in file order)."""
        while self._first_open < len(self.spans) and self.spans[self._first_open].complete:
            self._first_open += 1
        if self._first_open == len(self.spans):
            return self.spans[-1].next_byte
        return self.spans[self._first_open].next_byte

    @property
    def unrecorded(self) -> bool:
        """Bytes were written since the state was last recorded (resumable files only)."""
        return self._unrecorded

    def write(self, span: Span, buffers: Sequence[Chunk]) -> None:
        """Write at the span's next byte (hashing in order if it has a hasher) and count; the
        state is recorded by `record`, not here."""
        if self._resume is not None and self._resume.lost:
            raise ClaimLost(self.path)
        span.done += self.temp.pwrite(buffers, span.next_byte, span.hasher)
        self._unrecorded = self._resume is not None

    def record(self) -> None:
        """Persist how much of each range is written (coalesced with concurrent calls)."""
        if self._resume is not None:
            self._unrecorded = False
            self._resume.record(self.spans)

    def span_done(self) -> None:
        """A range is complete: make it durable (resumable files only)."""
        if self._resume is not None:
            self._resume.sync(self.temp, self.spans)
            self._drop_behind()

    def hash_range(self, hasher: _Hash, end: int, start: int) -> None:
        """Feed bytes [start, end) to `hasher` (in order: `start` is where the last call ended),
        then let go of the cached pages that are both hashed and durable."""
        self.temp.feed(hasher, end, start)
        self._hashed = end
        self._drop_behind()

    def _drop_behind(self) -> None:
        """Drop-behind: pages that are hashed and durable are not needed again by this download,
        and new pages cost more than reused ones (on a VM whose free memory goes back to the
        host, a new page is a host fault), so they are handed back at once. Resumable files only
        (the others are not made durable range by range)."""
        if self._resume is None or not self.drop_behind:
            return
        with self._drop_lock:
            limit = min(self._hashed, self._durable_prefix())
            if limit > self._dropped:
                self.temp.drop_cache(self._dropped, limit)
                self._dropped = limit

    def _durable_prefix(self) -> int:
        assert self._resume is not None
        end = 0
        for span, durable in zip(self.spans, self._resume.durable, strict=True):
            end = span.start + durable
            if span.end is None or end < span.end:
                break
        return end

    def finish(self) -> None:
        """fsync and close; a resumable file records itself as complete (and still ours)."""
        try:
            self.temp.sync()
            if self._resume is not None:
                self._resume.durable = [s.done for s in self.spans]
                self._resume.record(self.spans)
        finally:
            self.temp.close()

    def abandon(self) -> None:
        """Failed or cancelled: a resumable file is recorded and parked for the next attempt
        (no `*.incomplete` is left behind), any other one is removed."""
        if self._resume is None:
            self.temp.discard()
            return
        self.temp.close()
        try:
            self._resume.record(self.spans)
        except ClaimLost:  # the files are another process's now: leave them be
            self._resume.release()
            return
        except OSError:  # the state on disk is older, still true
            log.debug("could not record the partial download %s", self.path, exc_info=True)
        try:
            self._resume.park()
        except OSError:
            log.debug("could not park the partial download %s", self.path, exc_info=True)
        self._resume.release()

    def discard(self) -> None:
        """The bytes are bad (or unwanted): remove the file and its state."""
        if self._resume is None:
            self.temp.discard()
            return
        self.temp.close()
        self._resume.remove(self.temp.path)

    def drop(self) -> None:
        """The claim was lost: close, and leave the files to their new owner."""
        self.temp.close()
        if self._resume is not None:
            self._resume.release()

    def committed(self) -> None:
        """The data file was moved to its final path: the state has nothing left to say."""
        if self._resume is not None:
            self._resume.remove()


class InMemory:
    """A small file's body, held until it is verified and written in one go."""

    __slots__ = ("buffers", "spans")

    def __init__(self, size: int) -> None:
        self.spans = [Span(0, size)]
        self.buffers: list[Chunk] = []

    def __repr__(self) -> str:
        return f"<InMemory [{self.spans[0].done} bytes]>"

    def write(self, span: Span, buffers: Sequence[Chunk]) -> None:
        self.buffers.extend(buffers)
        span.done += sum(len(b) for b in buffers)


def open_partial(where: Where, etag: str, size: int | None, *, ranged: bool, chunk: int,
                 fresh: bool = False, shared: bool = True, page_cache: PageCache = "keep",
                 ) -> Partial:
    """A resumable partial download when possible (continued unless `fresh`), else a unique
    temp file; what a ranged one does with the page cache is `page_cache` (see `PageCache`).
    Blocking: run it off the loop.

    A file of a known size gets its disk blocks reserved at once (`TempFile.reserve`): bytes
    written into reserved blocks cost less kernel time than bytes that need new ones."""
    partial = _open(where, etag, size, ranged=ranged, chunk=chunk, fresh=fresh, shared=shared,
                    direct=ranged and page_cache == "bypass")
    partial.drop_behind = partial.ranged and page_cache == "drop"  # takes effect on resumable ones
    if size is not None and size > FLUSH_SIZE:
        partial.temp.reserve(size)
    return partial


def _open(where: Where, etag: str, size: int | None, *, ranged: bool, chunk: int, fresh: bool,
          shared: bool, direct: bool) -> Partial:
    if not shared or size is None or size <= FLUSH_SIZE:
        return _unique(where.unique, size, ranged=ranged, chunk=chunk, direct=direct)
    files = where.resume
    try:
        owner = claim(files.owner, files.state)
    except OSError as exc:  # e.g. a `.locks/` this user cannot write: no resume, no failure
        log.debug("cannot claim %s (%s): using a unique temp file", files.owner, exc)
        owner = None
    if owner is None:
        log.info("%s is being downloaded by another process: not resuming it", files.stem)
        return _unique(where.unique, size, ranged=ranged, chunk=chunk, direct=direct)
    try:
        found = None if fresh else _continue(files, owner, etag, size, direct=direct)
        return found or _start(files, owner, etag, size, ranged=ranged, chunk=chunk,
                               direct=direct)
    except OSError as exc:
        release(files.owner, owner)
        log.debug("cannot keep resumable files for %s (%s)", files.stem, exc)
        return _unique(where.unique, size, ranged=ranged, chunk=chunk, direct=direct)
    except BaseException:
        release(files.owner, owner)
        raise


def _unique(path: str, size: int | None, *, ranged: bool, chunk: int, direct: bool) -> Partial:
    spans = [Span(start, end) for start, end in layout(size, ranged=ranged, chunk=chunk)]
    return Partial(TempFile(path, direct=direct), spans, ranged=ranged)


def _continue(files: ResumeFiles, owner: Owner, etag: str, size: int, *,
              direct: bool) -> Partial | None:
    state = _load(files.state)
    if state is None or not GEN_RE.fullmatch(state.gen):
        return None
    with contextlib.suppress(FileNotFoundError):  # kept by a failed or cancelled attempt
        os.replace(files.parked(state.gen), files.active(state.gen))
    try:
        temp = TempFile(files.active(state.gen), reopen=True, direct=direct and state.ranged)
    except OSError:
        return None
    points = resume_point(state, etag=etag, size=size, boot=boot_id(), length=temp.length())
    if points is None:
        temp.discard()
        return None
    _clear(files, keep=state.gen)
    spans = [Span(start, end, done) for (start, end), done in
             zip(layout(size, ranged=state.ranged, chunk=state.chunk), points, strict=True)]
    durable = [min(d, p) for d, p in zip(state.durable, points, strict=True)]
    log.info("resuming %s: %d of %d bytes are on disk", temp.path, sum(points), size)
    return Partial(temp, spans, ranged=state.ranged,
                   resume=_Resume(files, owner, state, durable))


def _start(files: ResumeFiles, owner: Owner, etag: str, size: int, *, ranged: bool,
           chunk: int, direct: bool) -> Partial:
    """A new data file, and at once a state naming it (so it is never left nameless)."""
    _clear(files, keep=None)
    spans = [Span(start, end) for start, end in layout(size, ranged=ranged, chunk=chunk)]
    state = ResumeState(version=STATE_VERSION, etag=etag, size=size, ranged=ranged,
                        chunk=chunk if ranged else max(size, 1), gen=unique_suffix(),
                        boot=boot_id(), written=[0] * len(spans), durable=[0] * len(spans))
    temp = TempFile(files.active(state.gen), direct=direct)
    resume = _Resume(files, owner, state, list(state.durable))
    try:
        resume.record(spans)
    except BaseException:
        temp.discard()
        raise
    return Partial(temp, spans, ranged=ranged, resume=resume)


def bytes_held(files: ResumeFiles, etag: str, size: int) -> int:
    """How much disk an earlier attempt of this download already holds, which the disk-space
    check need not count again: the bytes its state records, or the blocks its data file holds
    (reserved ones too), whichever is more; 0 when nothing usable is recorded. Blocking."""
    state = _load(files.state)
    if state is None or (state.version, state.etag, state.size) != (STATE_VERSION, etag, size):
        return 0
    held = sum(max(0, n) for n in state.written)
    if GEN_RE.fullmatch(state.gen):  # the disk blocks the data file holds (reserved ones too)
        for path in (files.active(state.gen), files.parked(state.gen)):
            with contextlib.suppress(OSError):
                held = max(held, os.stat(path).st_blocks * 512)
    return min(size, held)


def collect_stale(folder: str, files_for: Callable[[str], ResumeFiles], *,
                  keep: AbstractSet[str] = frozenset(), age: float = STALE_AFTER,
                  now: Callable[[], float] = time.time) -> int:
    """Remove the partial downloads in `folder` that nobody has touched for `age` seconds and no
    live process owns: their state, their data file (parked or active) and their owner file.
    `files_for(etag)` names the files of one blob; the etags in `keep` (about to be resumed) are
    left alone. Returns how many went; blocking, best effort. (A download interrupted and never
    retried would otherwise keep its bytes forever.)"""
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    states = {n[: -len(_STATE_SUFFIX)] for n in names if n.endswith(_STATE_SUFFIX)}
    removed = 0
    for etag in sorted(states.difference(keep)):
        try:
            files = files_for(etag)
            if now() - os.stat(files.state).st_mtime < age:
                continue
            owner = claim(files.owner, files.state)
        except (OSError, HubError):  # not an etag of ours, or gone meanwhile
            continue
        if owner is None:  # a live process is on it
            continue
        try:
            _clear(files, keep=None)
            removed += 1
        finally:
            release(files.owner, owner)
    for name in names:  # parked data files whose state was lost
        stem = name.partition(".")[0]
        if stem not in states and stem not in keep and name.endswith(PARKED_SUFFIX):
            removed += _remove_if_older(os.path.join(folder, name), age, now)
    return removed


def _load(path: str) -> ResumeState | None:
    try:
        with open(path, "rb") as f:
            return _STATE.decode(f.read(1 << 20))
    except (OSError, msgspec.DecodeError):
        return None


def _clear(files: ResumeFiles, *, keep: str | None) -> None:
    """Remove what belongs to no usable state: parked files of other generations, old
    leftovers of state writes, and (unless its generation is kept) the state and its files."""
    if keep is None:
        state = _load(files.state)
        if state is not None and GEN_RE.fullmatch(state.gen):
            remove_quietly(files.active(state.gen))
        remove_quietly(files.state)
    folder, state_name = os.path.split(files.state)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        gen = files.parked_gen(name)
        if gen is not None and gen != keep:
            remove_quietly(os.path.join(folder, name))
        elif name.startswith(f"{state_name}.") and name.endswith(".tmp"):
            _remove_if_older(os.path.join(folder, name), LEFTOVER_AGE)


def _remove_if_older(path: str, seconds: float, now: Callable[[], float] = time.time) -> bool:
    with contextlib.suppress(OSError):
        if now() - os.stat(path).st_mtime > seconds:
            os.unlink(path)
            return True
    return False
