"""Hashing a download written as parallel ranges, in file order, while it arrives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import anyio

if TYPE_CHECKING:
    from hashlib import _Hash

    from hubasync._partial import Partial
    from hubasync._threads import DiskIO

HASH_STEP: Final = 8 * 1024 * 1024  # hash each time this much more of the file is in order


class Follower:
    """Hashes a download written as parallel ranges, in file order, while it arrives.

    Whenever the gap-free prefix of the file (`Partial.frontier`) has grown by a step, the new
    bytes are hashed off the loop (through memory maps, so no copy), one thread at a time; when
    the last range is written only the tail is left to hash. A resumed download is hashed from
    byte 0 like any other: what an earlier attempt wrote is verified too.
    """

    __slots__ = ("_disk", "_hasher", "_partial", "_size", "_wake", "hashed")

    def __init__(self, disk: DiskIO, partial: Partial, hasher: _Hash, size: int) -> None:
        self._disk = disk
        self._partial = partial
        self._hasher = hasher
        self._size = size
        self._wake = anyio.Event()
        self.hashed = 0

    def __repr__(self) -> str:
        return f"<Follower [{self.hashed} of {self._size} bytes hashed]>"

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> str:
        """Hash up to the end of the file (as soon as it is written); return the digest."""
        while self.hashed < self._size:
            front = min(self._partial.frontier, self._size)
            if front - self.hashed >= HASH_STEP or (front == self._size > self.hashed):
                await self._disk.run(self._partial.hash_range, self._hasher, front, self.hashed)
                self.hashed = front
                continue
            await self._wake.wait()
            self._wake = anyio.Event()
        return self._hasher.hexdigest()
