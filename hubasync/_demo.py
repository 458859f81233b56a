"""`hubasync demo`: a generated repo served by an in-process FakeHub, downloaded for real.

No network and no token: anyone can watch the engine work (ranged downloads of big shards,
small files alongside, verified and committed into a fresh cache).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Final

from hubasync._api import Progress, open_client
from hubasync.testing import FakeFile, FakeHub, FakeRepo

if TYPE_CHECKING:
    from hubasync._types import StrPath

DEMO_REPO: Final = "hubasync/demo-model"
_BLOCK: Final = 1024 * 1024


def _shard(index: int, size: int) -> bytes:
    """Incompressible, distinct per shard, cheap to make: a hash-chained 1 MiB block, repeated."""
    seed = hashlib.sha256(f"hubasync-demo-{index}".encode()).digest()
    block = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest()
                     for i in range(_BLOCK // 32))
    return (block * (size // _BLOCK + 1))[:size]


def demo_repo(*, total_bytes: int = 256 * _BLOCK, shards: int = 4) -> FakeRepo:
    repo = FakeRepo(DEMO_REPO)
    files: dict[str, bytes | FakeFile] = {
        "config.json": b'{"model_type": "demo", "hidden_size": 1024}',
        "tokenizer.json": b'{"version": "1.0", "vocab": {' + b'"tok": 1, ' * 5000 + b"}}",
        "README.md": b"# hubasync demo\nServed by hubasync.testing.FakeHub on loopback.\n",
    }
    per_shard = max(total_bytes // shards, 1)
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        files[name] = FakeFile(_shard(i, per_shard), lfs=True)
    repo.commit(files, message="demo")
    return repo


async def run_demo(repo: FakeRepo, *, cache_dir: StrPath, progress: Progress = None,
                   max_bandwidth: int | None = None) -> str:
    async with FakeHub(repos=[repo]) as hub, open_client(
            token=False, endpoint=hub.endpoint, cache_dir=cache_dir, progress=progress,
            max_bandwidth=max_bandwidth) as client:
        return await client.snapshot_download(repo.repo_id)
