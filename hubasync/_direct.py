"""Direct I/O for the ranges of large downloads (``HubConfig(page_cache="bypass")``): bytes go
from the receive buffers to the disk without passing through the page cache, and are read back
(direct too) for the hash.

Why: every page-cache page a download fills is a new page of memory, and a multi-GiB download
also evicts what the cache held. On the benchmark VM, whose free memory is handed back to the
host, those new pages cost 0.8-2.5 s of kernel time per GiB written; direct writes from reused,
aligned buffers cost about 0.1 s. Reading the file back for the hash costs disk bandwidth
instead, overlapped with the hash one block ahead; on that VM's disk this made the default,
drop-behind (`Partial.hash_range`), the faster of the two.

Linux only (``O_DIRECT``), and only on local disk file systems (LOCAL_FS): on a network file
system the read-back would double the traffic, and tmpfs has no disk to bypass to. A write whose
offset, length or buffer address is not aligned to ALIGN goes through the page cache instead.
The kernel keeps both views coherent: a direct read first writes back the dirty cached pages of
its range, a direct write drops the cached pages of its range.
Blocking functions: run them off the event loop.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import mmap
import os
import threading
from typing import TYPE_CHECKING, Final

from hubasync._exceptions import CacheError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from hashlib import _Hash

    from hubasync._fileio import Chunk

O_DIRECT: Final = getattr(os, "O_DIRECT", 0)
ALIGN: Final = 4096  # offsets, lengths and addresses of direct I/O (covers 512-byte devices)
LOCAL_FS: Final = frozenset({"ext4", "ext3", "xfs", "btrfs", "f2fs"})
READ_BLOCK: Final = 4 * 1024 * 1024  # one of the two read-back buffers of a file
_readers: concurrent.futures.ThreadPoolExecutor | None = None
_readers_lock = threading.Lock()


def open_direct(path: str) -> int | None:
    """A second descriptor of `path` for direct I/O, or None where it should not have one."""
    if not O_DIRECT:
        return None
    try:
        if fs_type(os.stat(path).st_dev) not in LOCAL_FS:
            return None
        return os.open(path, os.O_RDWR | O_DIRECT | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


@functools.lru_cache(maxsize=64)
def fs_type(device: int) -> str | None:
    """The type of the file system mounted from `device` (from /proc/self/mountinfo)."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and fields[2] == wanted and "-" in fields:
                    return fields[fields.index("-") + 1]
    except OSError:
        pass
    return None


def address(buffer: Chunk) -> int | None:
    """Where a writable buffer's bytes start in memory (None for read-only or empty ones)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    except (TypeError, ValueError, BufferError):
        return None


def aligned(buffers: Sequence[Chunk], offset: int) -> bool:
    """True when `buffers` written at `offset` meet the alignment of direct I/O."""
    if offset % ALIGN or not buffers:
        return False
    for buffer in buffers:
        start = address(buffer)
        if start is None or start % ALIGN or memoryview(buffer).nbytes % ALIGN:
            return False
    return True


def read_buffers() -> tuple[mmap.mmap, mmap.mmap]:
    """Two aligned buffers for `feed_direct` (anonymous maps are page-aligned)."""
    return mmap.mmap(-1, READ_BLOCK), mmap.mmap(-1, READ_BLOCK)


def feed_direct(fd: int, hasher: _Hash, start: int, end: int, path: str,
                buffers: tuple[mmap.mmap, mmap.mmap]) -> None:
    """Feed bytes [start, end) of a file opened for direct I/O to `hasher`, reading whole
    aligned blocks into `buffers` (one read ahead of the hash, in a helper thread)."""
    if start >= end:
        return
    first = start - start % ALIGN
    last = -(-end // ALIGN) * ALIGN
    offsets = range(first, last, READ_BLOCK)
    readers = _reader_pool()
    pending = readers.submit(_read, fd, buffers[0], first, last)
    try:
        for i, offset in enumerate(offsets):
            got = pending.result()
            if i + 1 < len(offsets):
                pending = readers.submit(_read, fd, buffers[(i + 1) % 2], offsets[i + 1], last)
            if offset + got < min(end, offset + READ_BLOCK):
                raise CacheError(f"{path} is shorter than {end} bytes")
            lo, hi = max(start, offset) - offset, min(end, offset + got) - offset
            with memoryview(buffers[i % 2]) as view, view[lo:hi] as part:
                hasher.update(part)
    finally:
        concurrent.futures.wait([pending])  # never leave a read landing in a reused buffer


def _read(fd: int, buffer: mmap.mmap, offset: int, last: int) -> int:
    with memoryview(buffer) as view, view[: min(READ_BLOCK, last - offset)] as part:
        return os.preadv(fd, [part], offset)


def _reader_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _readers
    with _readers_lock:
        if _readers is None:
            _readers = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="hubasync-readback")
        return _readers
