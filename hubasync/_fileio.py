"""The only code that touches the disk.

Blocking primitives are plain functions; `_threads.DiskIO` runs them off the event loop, so it
never blocks on hashing, fsync, rename or symlink. Every final path is created by a rename or a
replace of a fully written temp file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import shutil
import threading
from typing import TYPE_CHECKING, Final

from hubasync._cache_layout import unique_suffix
from hubasync._direct import aligned, feed_direct, open_direct, read_buffers
from hubasync._exceptions import CacheError, InsufficientDiskSpaceError
from hubasync._fallocate import reserve

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from hashlib import _Hash


READ_BLOCK: Final = 4 * 1024 * 1024
HASH_WINDOW: Final = 16 * 1024 * 1024  # mapped at once while hashing (counts in RSS)
Chunk = bytes | bytearray | memoryview
IOV_MAX: Final = 512
_symlink_support: dict[str, bool] = {}


def oserror(exc: OSError, action: str) -> CacheError:
    """Translate an OSError into our tree (full disk gets its own type)."""
    path = exc.filename if isinstance(exc.filename, str) else "?"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientDiskSpaceError(
            f"disk full while trying to {action} ({path})", needed=0, available=0, path=path
        )
    return CacheError(f"could not {action}: {exc.strerror or exc} ({path})")


def makedirs(path: str) -> None:
    os.makedirs(path, exist_ok=True)


_deferred = threading.local()


def fsync_dir(path: str) -> None:
    """fsync a directory (what makes a rename in it durable); inside `deferred_dir_syncs()`,
    once per directory when that block ends."""
    pending: set[str] | None = getattr(_deferred, "dirs", None)
    if pending is not None:
        pending.add(path)
        return
    _fsync_dir_now(path)


@contextlib.contextmanager
def deferred_dir_syncs() -> Iterator[None]:
    """Collect the `fsync_dir` calls of this thread, and make each directory durable once at
    the end (a batch of renames into one folder costs one fsync, not one each)."""
    if getattr(_deferred, "dirs", None) is not None:  # nested: the outer block syncs
        yield
        return
    _deferred.dirs = set()
    try:
        yield
    finally:
        dirs, _deferred.dirs = _deferred.dirs, None
        for path in sorted(dirs):
            _fsync_dir_now(path)


def _fsync_dir_now(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp_name(path: str, scratch: str | None) -> str:
    """A unique temp path for `path`: beside it, or in `scratch` (same filesystem) so that a
    process killed mid-write leaves nothing where readers look (snapshots/, refs/, the root)."""
    if scratch is None:
        return f"{path}.{unique_suffix()}.tmp"
    os.makedirs(scratch, exist_ok=True)
    return os.path.join(scratch, f"{os.path.basename(path)}.{unique_suffix()}.tmp")


def _publish(path: str, fill: Callable[[str], object], *, durable: bool,
             scratch: str | None) -> None:
    """Fill a unique temp (`fill(tmp)` creates it), fsync it, then `os.replace` onto `path`;
    on any failure the temp is removed and `path` is untouched."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = _temp_name(path, scratch)
    try:
        fill(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(folder)


def write_atomic(path: str, data: bytes, *, durable: bool = True,
                 scratch: str | None = None) -> None:
    """Write `data` to a unique temp, fsync, then `os.replace` onto `path`."""

    def fill(tmp: str) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    _publish(path, fill, durable=durable, scratch=scratch)


def write_if_changed(path: str, data: bytes, *, scratch: str | None = None) -> bool:
    """Atomic write that skips identical content (read-only caches stay usable)."""
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except OSError:
        pass
    write_atomic(path, data, scratch=scratch)
    return True


def create_if_missing(path: str, data: bytes) -> None:
    """Create a small marker file (CACHEDIR.TAG, .gitignore) in place, never replacing one."""
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def exists(path: str) -> bool:
    return os.path.exists(path)


def file_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def symlinks_supported(folder: str) -> bool:
    """Probe once per folder: can a relative symlink be created there?"""
    if folder in _symlink_support:
        return _symlink_support[folder]
    os.makedirs(folder, exist_ok=True)
    probe = os.path.join(folder, f".symlink-probe.{unique_suffix()}")
    try:
        os.symlink("target-that-does-not-exist", probe)
    except OSError:
        supported = False
    else:
        supported = True
        os.unlink(probe)
    _symlink_support[folder] = supported
    return supported


def symlink_atomic(target: str, link: str, *, scratch: str | None = None) -> None:
    """Point `link` at `target` (relative). A new link is one atomic `symlink`; an existing one
    is replaced by renaming a temp link made in `scratch` (so a kill leaves no stray link)."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    try:
        os.symlink(target, link)
        return
    except FileExistsError:
        if os.path.islink(link) and os.readlink(link) == target:
            return
    tmp = _temp_name(link, scratch)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def copy_atomic(src: str, dst: str, *, scratch: str | None = None) -> None:
    """Copy `src` to a temp, fsync, then replace `dst`."""
    _publish(dst, lambda tmp: shutil.copyfile(src, tmp), durable=True, scratch=scratch)


def move_into_place(src: str, dst: str) -> None:
    """Rename a finished temp file onto its final path (same filesystem by construction)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.replace(src, dst)
    fsync_dir(os.path.dirname(dst))


def leave_lock_file(path: str) -> None:
    """Create the (empty) lock file the official client leaves at `path`, as `filelock` makes
    it (mode 0o664), without locking it: best effort, for an identical cache layout."""
    flags = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_NONBLOCK", 0))
    try:
        try:
            fd = os.open(path, flags, 0o664)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, flags, 0o664)
    except OSError:  # there already, or not ours to make: nothing depends on it
        return
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o664)
    os.close(fd)


def remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def free_space(folder: str) -> int:
    probe = folder
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return shutil.disk_usage(probe).free


def new_hasher(etag: str) -> _Hash | None:
    """sha256 for LFS etags, git-sha1 (primed later with the header) for git blobs, else None."""
    if len(etag) == 64:
        return hashlib.sha256()
    if len(etag) == 40:
        return hashlib.sha1(usedforsecurity=False)
    return None


def git_blob_header(size: int) -> bytes:
    return b"blob %d\x00" % size


def primed_hasher(etag: str, size: int) -> _Hash | None:
    """The hasher of a file of `size` bytes whose etag is a digest (git blobs: header fed)."""
    hasher = new_hasher(etag)
    if hasher is not None and len(etag) == 40:
        hasher.update(git_blob_header(size))
    return hasher


def hash_file(path: str, etag: str) -> str | None:
    """Hash a whole file the way its etag was made (None when the etag is not a digest)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        hasher = primed_hasher(etag, size)
        if hasher is None:
            return None
        feed_file(fd, hasher, 0, size, path)
    finally:
        os.close(fd)
    return hasher.hexdigest()


def store_new(path: str, buffers: Sequence[Chunk], etag: str | None, size: int) -> str | None:
    """Hash `buffers` the way `etag` was made (when one is given) and, unless the digest differs
    from it, write them to a new file at `path`, fsynced: a small download in one step.

    Returns the digest (None when not hashed). Nothing is written on a mismatch; a failed write
    removes what it created.
    """
    digest = None
    if etag is not None and (hasher := primed_hasher(etag, size)) is not None:
        for buffer in buffers:
            hasher.update(buffer)
        digest = hasher.hexdigest()
        if digest != etag:
            return digest
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, flags, 0o666)
    try:
        _pwrite_all(fd, buffers, 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        remove_quietly(path)
        raise
    os.close(fd)
    return digest


def _pwrite_all(fd: int, buffers: Sequence[Chunk], offset: int) -> int:
    """`pwritev` until every buffer is written (a short write continues where it stopped)."""
    views = [memoryview(b) for b in buffers]
    total = 0
    while views:
        batch = views[:IOV_MAX]
        written = os.pwritev(fd, batch, offset + total)
        if not written and any(v.nbytes for v in batch):
            raise OSError(errno.EIO, "the write made no progress")
        total += written
        while views and written >= views[0].nbytes:
            written -= views.pop(0).nbytes
        if written:
            views[0] = views[0][written:]
    return total


def feed_file(fd: int, hasher: _Hash, start: int, end: int, path: str) -> None:
    """Feed bytes [start, end) of an open file to `hasher`.

    Through read-only memory maps of at most HASH_WINDOW bytes (no copy out of the page cache,
    and the process holds at most one window), or `pread` where a file cannot be mapped.
    """
    offset = start
    while offset < end:
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        stop = min(end, max(base + HASH_WINDOW, offset + mmap.ALLOCATIONGRANULARITY))
        if os.fstat(fd).st_size < stop:  # never map past the end (that would be a SIGBUS)
            raise CacheError(f"{path} is shorter than {end} bytes")
        try:
            window = mmap.mmap(fd, stop - base, offset=base, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            _pread_into(fd, hasher, offset, stop, path)
        else:
            with window, memoryview(window) as view, view[offset - base:] as part:
                hasher.update(part)
        offset = stop


def _pread_into(fd: int, hasher: _Hash, start: int, end: int, path: str) -> None:
    offset = start
    while offset < end:
        block = os.pread(fd, min(READ_BLOCK, end - offset), offset)
        if not block:
            raise CacheError(f"{path} is shorter than {end} bytes")
        hasher.update(block)
        offset += len(block)


class TempFile:
    """A temp file written at positions, optionally hashed in order, closed exactly once.

    New (truncated), or with `reopen` an existing one whose content is kept (a resume). With
    `direct`, aligned writes and the reads for `feed` bypass the page cache (`_direct`).
    """

    def __init__(self, path: str, *, reopen: bool = False, direct: bool = False) -> None:
        self.path = path
        if reopen:
            self._fd: int | None = os.open(path, os.O_RDWR)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        self._direct = open_direct(path) if direct else None
        self._direct_writes = self._direct is not None
        self._read_buffers: tuple[mmap.mmap, mmap.mmap] | None = None

    @property
    def direct(self) -> bool:
        return self._direct is not None

    def __repr__(self) -> str:
        return f"<TempFile {self.path}>"

    def pwrite(self, buffers: Sequence[Chunk], offset: int, hasher: _Hash | None = None) -> int:
        """Write `buffers` one after another from `offset` (one `pwritev` when it can), feed them
        to `hasher` in order, and return how many bytes that was."""
        assert self._fd is not None, "write after close"
        if self._direct_writes and hasher is None and aligned(buffers, offset):
            assert self._direct is not None
            try:
                return _pwrite_all(self._direct, buffers, offset)
            except OSError as exc:  # refused after all: the page cache it is, from now on
                if exc.errno != errno.EINVAL:
                    raise
                self._direct_writes = False
        total = _pwrite_all(self._fd, buffers, offset)
        if hasher is not None:
            for b in buffers:
                hasher.update(b)
        return total

    def reserve(self, size: int) -> bool:
        """Reserve the disk blocks of bytes [0, size) up front, keeping the length (best effort:
        see `_fallocate`)."""
        assert self._fd is not None
        return reserve(self._fd, size)

    def length(self) -> int:
        assert self._fd is not None
        return os.fstat(self._fd).st_size

    def feed(self, hasher: _Hash, end: int, start: int = 0) -> None:
        """Feed bytes [start, end) of the file to `hasher` (see `feed_file`)."""
        assert self._fd is not None
        if self._direct is None:
            feed_file(self._fd, hasher, start, end, self.path)
            return
        if self._read_buffers is None:
            self._read_buffers = read_buffers()
        feed_direct(self._direct, hasher, start, end, self.path, self._read_buffers)

    def sync(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)

    def drop_cache(self, start: int, end: int) -> None:
        """Let the kernel drop the cached (clean) pages of bytes [start, end)."""
        assert self._fd is not None
        if hasattr(os, "posix_fadvise") and self._direct is None:
            os.posix_fadvise(self._fd, start, end - start, os.POSIX_FADV_DONTNEED)

    def truncate(self, size: int = 0) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, size)

    def finish(self) -> int:
        """fsync and close; return the final size."""
        assert self._fd is not None
        try:
            os.fsync(self._fd)
            return os.fstat(self._fd).st_size
        finally:
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._direct is not None:
            fd, self._direct = self._direct, None
            os.close(fd)
        if self._read_buffers is not None:
            buffers, self._read_buffers = self._read_buffers, None
            for buffer in buffers:
                buffer.close()

    def discard(self) -> None:
        self.close()
        remove_quietly(self.path)
