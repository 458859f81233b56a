"""The repos the benchmarks serve: generated once into the data dir, with a manifest of hashes.

Content is incompressible and cheap to make: one random 1 MiB base block per repo; every block
written is that base rotated by a random offset and passed through a random byte permutation
(a seeded PRNG picks both), so no two blocks share a run of bytes and nothing compresses. Files
are written block by block (never more than 1 MiB in memory) and hashed on the way. A repo is
generated again only when its spec changes or a file is missing or has the wrong size.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Final, TypedDict

if TYPE_CHECKING:
    from pathlib import Path

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB
BLOCK: Final = MiB
GIT_HASH_LIMIT: Final = 16 * MiB  # git-sha1 of the content only matters for small, regular files
_FORMAT: Final = 1


@dataclass(frozen=True)
class FileSpec:
    path: str
    size: int


@dataclass(frozen=True)
class Dataset:
    """A repo to generate and serve: its files and the seed of its bytes."""

    name: str
    repo_id: str
    seed: int
    files: tuple[FileSpec, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def fingerprint(self) -> str:
        spec = json.dumps({"format": _FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(spec.encode()).hexdigest()


class ManifestEntry(TypedDict):
    path: str
    size: int
    sha256: str
    git_sha1: str | None


class Manifest(TypedDict):
    fingerprint: str
    repo_id: str
    files: list[ManifestEntry]


def datasets(quick: bool) -> dict[str, Dataset]:
    """The repos: one big file, four shards, many small files, and a mixed model repo for the
    faults scenario (all tiny with `quick`)."""
    big, shard, small = (8 * MiB, 2 * MiB, 20) if quick else (GiB, 512 * MiB, 2000)
    mixed_big, mixed_small = (4 * MiB, 10) if quick else (256 * MiB, 200)
    shards = tuple(FileSpec(f"model-{i:05d}-of-00004.safetensors", shard) for i in range(1, 5))
    mixed = tuple(FileSpec(f"model-{i:05d}-of-00002.safetensors", mixed_big) for i in (1, 2))
    return {
        "one-file": Dataset("one-file", "bench/one-file", 1,
                            (FileSpec("model.safetensors", big),)),
        "shards": Dataset("shards", "bench/shards", 2, shards),
        "small-files": Dataset("small-files", "bench/small-files", 3, _small_files(small, 3)),
        "mixed": Dataset("mixed", "bench/mixed", 4, mixed + _small_files(mixed_small, 4)),
    }


def _small_files(count: int, seed: int) -> tuple[FileSpec, ...]:
    rng = random.Random(seed)
    return tuple(
        FileSpec(f"data/{i // 100:02d}/sample-{i:05d}.json", rng.randint(4 * KiB, 64 * KiB))
        for i in range(count)
    )


class BlockSource:
    """Incompressible bytes from a seed (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._base = self._rng.randbytes(BLOCK)

    def take(self, n: int) -> bytes:
        """`n` (at most one block) fresh bytes."""
        start = self._rng.randrange(BLOCK)
        table = list(range(256))
        self._rng.shuffle(table)
        rotated = self._base[start:start + n]
        if len(rotated) < n:
            rotated += self._base[: n - len(rotated)]
        return rotated.translate(bytes(table))


def repo_dir(data_dir: Path, dataset: Dataset) -> Path:
    return data_dir / dataset.name / "repo"


def manifest_path(data_dir: Path, dataset: Dataset) -> Path:
    return data_dir / dataset.name / "manifest.json"


def read_through(data_dir: Path, dataset: Dataset) -> None:
    """Read every file of `dataset` once, so the server sends it from the page cache: the first
    participant of a scenario would otherwise pay for the disk reads alone."""
    root = repo_dir(data_dir, dataset)
    for spec in dataset.files:
        with (root / spec.path).open("rb", buffering=0) as f:
            while f.read(8 * MiB):
                pass


def ensure_dataset(data_dir: Path, dataset: Dataset) -> Manifest:
    """The manifest of `dataset`, generating its files first unless they are already there."""
    existing = _load_manifest(manifest_path(data_dir, dataset))
    if existing is not None and _still_valid(data_dir, dataset, existing):
        return existing
    root = repo_dir(data_dir, dataset)
    shutil.rmtree(root, ignore_errors=True)
    source = BlockSource(dataset.seed)
    entries = [write_file(root / spec.path, spec, source) for spec in dataset.files]
    manifest = Manifest(fingerprint=dataset.fingerprint(), repo_id=dataset.repo_id,
                        files=entries)
    manifest_path(data_dir, dataset).write_text(json.dumps(manifest))
    return manifest


def _load_manifest(path: Path) -> Manifest | None:
    try:
        loaded: Manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded


def _still_valid(data_dir: Path, dataset: Dataset, manifest: Manifest) -> bool:
    if manifest.get("fingerprint") != dataset.fingerprint():
        return False
    root = repo_dir(data_dir, dataset)
    return all(_size_of(root / e["path"]) == e["size"] for e in manifest["files"])


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def write_file(path: Path, spec: FileSpec, source: BlockSource) -> ManifestEntry:
    """Write `spec.size` bytes from `source` to `path` (via a temp name), hashing them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sha256 = hashlib.sha256()
    git = None
    if spec.size <= GIT_HASH_LIMIT:
        git = hashlib.sha1(b"blob %d\0" % spec.size, usedforsecurity=False)
    temp = path.with_name(path.name + ".part")
    with temp.open("wb") as out:
        left = spec.size
        while left:
            block = source.take(min(left, BLOCK))
            sha256.update(block)
            if git is not None:
                git.update(block)
            out.write(block)
            left -= len(block)
    os.replace(temp, path)
    return ManifestEntry(path=spec.path, size=spec.size, sha256=sha256.hexdigest(),
                         git_sha1=git.hexdigest() if git is not None else None)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def verify_tree(root: Path, manifest: Manifest, threads: int = 2) -> list[str]:
    """Problems with the files under `root` against `manifest` (empty: every byte is right)."""

    def check(entry: ManifestEntry) -> str | None:
        path = root / entry["path"]
        try:
            if path.stat().st_size != entry["size"]:
                return f"{entry['path']}: size {path.stat().st_size} != {entry['size']}"
            if sha256_of(path) != entry["sha256"]:
                return f"{entry['path']}: sha256 mismatch"
        except OSError as exc:
            return f"{entry['path']}: {exc.strerror or exc}"
        return None

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [p for p in pool.map(check, manifest["files"]) if p is not None]
