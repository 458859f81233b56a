"""Reserving a download's disk blocks before its bytes arrive (Linux ``fallocate``).

Why: on ext4 a buffered write into a file that has no blocks yet pays for delayed allocation,
block by block (a reservation, a quota charge and an extent-status entry for every 4 KiB). On
the benchmark VM that cost about as much kernel time as copying the bytes into the page cache.
Written into blocks reserved up front, the same bytes skip it: 4 x 512 MiB shards took 1.77 s
instead of 1.88 s (medians of 4 alternating runs).

The file's length does not change (``FALLOC_FL_KEEP_SIZE``): it still grows with the bytes
written, so what reads the length (the resume check, the hash's bounds) sees the same as before.
A file system that cannot reserve (or a platform without ``fallocate``) is simply written the
usual way, and so is a disk that is too full: the write that finds no room raises the clean
error, as it always did. ``posix_fallocate`` is not used: where the file system cannot reserve,
glibc falls back to writing a byte into every block, which is slow and sets the length.
Blocking: run it off the event loop.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
from typing import Final, Protocol

log = logging.getLogger("hubasync")

FALLOC_FL_KEEP_SIZE: Final = 0x01


class _Fallocate(Protocol):
    def __call__(self, fd: int, mode: int, offset: int, length: int, /) -> int: ...


@functools.cache
def _fallocate() -> _Fallocate | None:
    """libc's ``fallocate`` (the 64-bit offset one), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    for name in ("fallocate64", "fallocate"):
        fn = getattr(libc, name, None)
        if fn is not None:
            fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
            fn.restype = ctypes.c_int
            return fn  # type: ignore[no-any-return]  # a ctypes function: untyped
    return None


def reserve(fd: int, size: int) -> bool:
    """Reserve the blocks for bytes [0, size) of the open file `fd`, keeping its length.
    Best effort: False (and nothing changed, or part of the blocks reserved) where it cannot."""
    fn = _fallocate()
    if fn is None or size <= 0:
        return False
    if fn(fd, FALLOC_FL_KEEP_SIZE, 0, size) == 0:
        return True
    code = ctypes.get_errno()
    log.debug("could not reserve %d bytes for a download: %s", size, os.strerror(code))
    return False
