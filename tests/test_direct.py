"""Direct I/O for large downloads (`_direct`, `TempFile(direct=True)`) and the reused, aligned
body buffers that feed it (`_rawhttp.BufferPool`)."""

from __future__ import annotations

import errno
import hashlib
import itertools
import mmap
import os
import random
from pathlib import Path

import pytest

from hubasync import HubClient, HubConfig
from hubasync._direct import (
    ALIGN,
    LOCAL_FS,
    READ_BLOCK,
    aligned,
    feed_direct,
    fs_type,
    open_direct,
    read_buffers,
)
from hubasync._exceptions import CacheError, ConfigError
from hubasync._fileio import TempFile
from hubasync._rawhttp import BODY_BUFFER, BufferPool
from hubasync.testing import FakeHub, FakeRepo

MiB = 1024 * 1024


def test_alignment_is_judged_on_offset_length_and_address() -> None:
    block = mmap.mmap(-1, 4 * ALIGN)
    view = memoryview(block)
    assert aligned([view[:ALIGN], view[ALIGN:3 * ALIGN]], 8 * ALIGN)
    assert not aligned([view[:ALIGN]], 100)  # offset
    assert not aligned([view[: ALIGN - 1]], 0)  # length
    assert not aligned([view[1 : ALIGN + 1]], 0)  # address
    assert not aligned([b"x" * ALIGN], 0)  # read-only: address unknown
    assert not aligned([], 0)


@pytest.mark.parametrize(("start", "end"), [
    (0, 0), (0, 1), (5, 5 + ALIGN), (ALIGN, 2 * ALIGN), (123, 3 * READ_BLOCK + 77),
    (READ_BLOCK - 1, READ_BLOCK + 1), (0, 2 * READ_BLOCK + ALIGN + 9),
])
def test_direct_read_back_hashes_exactly_the_range(tmp_path: Path, start: int, end: int) -> None:
    data = random.Random(end).randbytes(2 * READ_BLOCK + ALIGN + 9 + 3 * READ_BLOCK)
    path = tmp_path / "blob"
    path.write_bytes(data)
    buffers = read_buffers()
    descriptors = [os.open(path, os.O_RDONLY)]
    if (direct := open_direct(str(path))) is not None:
        descriptors.append(direct)
    try:
        for fd in descriptors:
            hasher = hashlib.sha256()
            feed_direct(fd, hasher, start, end, str(path), buffers)
            assert hasher.hexdigest() == hashlib.sha256(data[start:end]).hexdigest()
    finally:
        for fd in descriptors:
            os.close(fd)


def test_direct_read_back_of_a_short_file_is_a_cache_error(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(b"s" * 10_000)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(CacheError, match="shorter than"):
            feed_direct(fd, hashlib.sha256(), 0, 20_000, str(path), read_buffers())
    finally:
        os.close(fd)


def _pieces(data: bytes) -> list[tuple[int, memoryview | bytes]]:
    """`data` as writes: aligned map-backed buffers, then unaligned bytes, out of order."""
    pool = mmap.mmap(-1, len(data))
    pool[:] = data
    view = memoryview(pool)
    return [(2 * MiB, view[2 * MiB : 3 * MiB]), (0, view[:MiB]), (MiB, data[MiB : MiB + 10]),
            (MiB + 10, view[MiB + 10 : 2 * MiB]), (3 * MiB, view[3 * MiB :])]


def _write_and_hash(temp: TempFile, data: bytes) -> str:
    for offset, piece in _pieces(data):
        temp.pwrite([piece], offset)
    hasher = hashlib.sha256()
    temp.feed(hasher, len(data), 0)
    return hasher.hexdigest()


def test_temp_file_mixes_direct_and_cached_writes(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(3 * MiB + 12_345)  # the tail is not aligned
    path = tmp_path / "t.incomplete"
    temp = TempFile(str(path), direct=True)
    try:
        assert temp.direct == (fs_type(os.stat(tmp_path).st_dev) in LOCAL_FS)
        assert _write_and_hash(temp, data) == hashlib.sha256(data).hexdigest()
        assert temp.finish() == len(data)
    finally:
        temp.close()
    assert path.read_bytes() == data


def test_a_refused_direct_write_goes_through_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.incomplete"
    monkeypatch.setattr("hubasync._fileio.open_direct",
                        lambda p: os.open(p, os.O_RDWR))  # a second descriptor everywhere
    temp = TempFile(str(path), direct=True)
    refused: list[int] = []
    real = os.pwritev

    def pwritev(fd: int, buffers: list[memoryview], offset: int) -> int:
        if fd == temp._direct:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", pwritev)
    data = random.Random(2).randbytes(3 * MiB + 5)
    try:
        assert _write_and_hash(temp, data) == hashlib.sha256(data).hexdigest()
    finally:
        temp.close()
    assert refused == [2 * MiB]  # tried once, then never again
    assert path.read_bytes() == data


def test_no_direct_io_off_local_disks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_bytes(b"")
    monkeypatch.setattr("hubasync._direct.fs_type", lambda device: "nfs4")
    assert open_direct(str(tmp_path / "f")) is None
    assert fs_type(os.stat("/proc").st_dev) == "proc"  # the real lookup, uncached path


def test_buffer_pool_reuses_only_its_own_buffers() -> None:
    pool = BufferPool(keep=2)
    first, second, third = pool.take(), pool.take(), pool.take()
    assert len(first) == BODY_BUFFER
    pool.give([memoryview(first)[:10], memoryview(first)[10:20], b"bytes",
               memoryview(bytearray(5)), memoryview(mmap.mmap(-1, BODY_BUFFER))])
    assert pool.take() is first  # given once, even though two views of it came back
    assert pool.take() is not first
    pool.give([memoryview(second), memoryview(third), memoryview(first)])
    assert repr(pool).startswith("<BufferPool [free: 2 ")  # keep=2 bounds what is kept


@pytest.mark.anyio
@pytest.mark.parametrize("page_cache", ["drop", "keep", "bypass"])
async def test_ranged_download_and_the_page_cache(tmp_path: Path, page_cache: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    dropped: list[tuple[int, int]] = []
    real = TempFile.drop_cache

    def drop_cache(self: TempFile, start: int, end: int) -> None:
        dropped.append((start, end))
        real(self, start, end)

    monkeypatch.setattr(TempFile, "drop_cache", drop_cache)
    blob = random.Random(7).randbytes(6 * MiB + 4321)
    repo = FakeRepo("org/big")
    repo.commit({"model.safetensors": blob})
    async with FakeHub(repos=[repo]) as fake:
        config = HubConfig.from_env({}, endpoint=fake.endpoint, cache_dir=str(tmp_path),
                                    token=False, chunk_size=MiB, range_threshold=MiB,
                                    progress="none", page_cache=page_cache)
        async with HubClient(config) as hub:
            folder = await hub.snapshot_download("org/big")
            transport = hub._transport
            assert transport is not None
            assert "free: 0 " not in repr(transport._raw.buffers)  # buffers came back
    assert Path(folder, "model.safetensors").read_bytes() == blob
    if page_cache != "drop":
        assert dropped == []
        return
    assert dropped[0][0] == 0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(dropped))  # in order, no overlap
    assert dropped[-1][1] == len(blob)  # all of it: hashed and durable before the commit


def test_page_cache_setting_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="page_cache"):
        HubConfig.from_env({}, cache_dir=str(tmp_path), token=False, page_cache="sometimes")
