"""In-memory git-like repositories served by FakeHub: files, commits, branches, tags and PRs.

Everything here is synchronous and does no network I/O. Files given as bytes live in memory;
files made with `FakeFile.from_path` stay on disk and are hashed lazily (streamed, never read
whole), so FakeHub can serve multi-gigabyte benchmark files with sendfile.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

if TYPE_CHECKING:
    import os

    from hubasync._types import RepoType

__all__ = ["LFS_SIZE_THRESHOLD", "LFS_SUFFIXES", "Commit", "FakeFile", "FakeRepo", "is_auto_lfs"]

#: Files at least this large are stored with LFS when no explicit choice is made.
LFS_SIZE_THRESHOLD: Final = 100_000
#: Suffixes stored with LFS whatever their size (what a typical Hub `.gitattributes` says).
LFS_SUFFIXES: Final = frozenset(
    {".safetensors", ".bin", ".gguf", ".pt", ".pth", ".onnx", ".h5", ".msgpack", ".parquet",
     ".zip", ".tar", ".gz", ".npy"}
)  # fmt: skip
_CHUNK: Final = 1 << 20
_EMPTY_SHA: Final = "0" * 40
_EPOCH: Final = datetime(2024, 1, 1, tzinfo=UTC)
_PR_RE: Final = re.compile(r"^refs/pr/(\d+)$")
_HEX40_RE: Final = re.compile(r"^[0-9a-f]{40}$")

Gated: TypeAlias = Literal[False, "auto", "manual"]


def is_auto_lfs(path: str, size: int) -> bool:
    """The auto rule: LFS when `size >= 100_000` or the suffix is a typical binary/model one."""
    return size >= LFS_SIZE_THRESHOLD or PurePosixPath(path).suffix.lower() in LFS_SUFFIXES


def _git_blob_oid(header_size: int, chunks: Iterable[bytes]) -> str:
    sha1 = hashlib.sha1(b"blob %d\0" % header_size, usedforsecurity=False)
    for chunk in chunks:
        sha1.update(chunk)
    return sha1.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The text git stores in place of an LFS file."""
    text = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
    return text.encode()


class FakeFile:
    """The content of one file: bytes in memory, or a file on disk served with sendfile.

    `lfs=None` means "decide by the auto rule when committed under a name". Hashes are
    computed on first use and cached; pass them to `from_path` to skip hashing a big file.
    """

    __slots__ = ("_data", "_git_oid", "_gzip", "_lfs", "_path", "_sha256", "_size")

    def __init__(self, data: bytes, lfs: bool | None = None) -> None:
        self._data: bytes | None = bytes(data)
        self._path: Path | None = None
        self._size = len(data)
        self._lfs = lfs
        self._sha256: str | None = None
        self._git_oid: str | None = None
        self._gzip: bytes | None = None

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        lfs: bool = True,
        sha256: str | None = None,
        git_oid: str | None = None,
    ) -> FakeFile:
        """A file served straight from disk; its size is read now, its hashes when first needed."""
        self = cls.__new__(cls)
        self._data = None
        self._path = Path(path).resolve()
        self._size = self._path.stat().st_size
        self._lfs = lfs
        self._sha256 = sha256
        self._git_oid = git_oid
        self._gzip = None
        return self

    def __repr__(self) -> str:
        where = f"path={str(self._path)!r}" if self._path is not None else f"size={self._size}"
        return f"FakeFile({where}, lfs={self._lfs})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FakeFile):
            return NotImplemented
        return (self._data, self._path, self.lfs) == (other._data, other._path, other.lfs)

    def __hash__(self) -> int:
        return hash((self._data, self._path, self.lfs))

    @property
    def size(self) -> int:
        return self._size

    @property
    def lfs(self) -> bool:
        """Stored with LFS. Before a commit decides, only the size part of the auto rule applies."""
        return self._lfs if self._lfs is not None else self._size >= LFS_SIZE_THRESHOLD

    @property
    def path(self) -> Path | None:
        """The file on disk, for files made with `from_path`."""
        return self._path

    @property
    def data(self) -> bytes:
        """The whole content (reads the file for disk-backed files: meant for assertions)."""
        if self._data is not None:
            return self._data
        assert self._path is not None
        return self._path.read_bytes()

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self.compute_hashes()
        assert self._sha256 is not None
        return self._sha256

    @property
    def git_oid(self) -> str:
        """Git blob id: of the content for regular files, of the LFS pointer for LFS files."""
        if self._git_oid is None:
            self.compute_hashes()
        assert self._git_oid is not None
        return self._git_oid

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid

    @property
    def pointer(self) -> bytes:
        return lfs_pointer(self.sha256, self._size)

    @property
    def hashed(self) -> bool:
        """True when no hashing is left to do (so serving it never blocks on a big read)."""
        return self._sha256 is not None and self._git_oid is not None

    def compute_hashes(self) -> None:
        """Hash the content once, streaming disk files. Blocking: call from a thread."""
        if self.hashed:
            return
        sha256 = hashlib.sha256()
        sha1 = hashlib.sha1(b"blob %d\0" % self._size, usedforsecurity=False)
        for chunk in self.iter_chunks():
            sha256.update(chunk)
            sha1.update(chunk)
        self._sha256 = self._sha256 or sha256.hexdigest()
        if self._git_oid is None:
            pointer = lfs_pointer(self._sha256, self._size)
            self._git_oid = _git_blob_oid(len(pointer), [pointer]) if self.lfs else sha1.hexdigest()

    def iter_chunks(self, start: int = 0, count: int | None = None) -> Iterable[bytes]:
        """Blocking reads of `count` bytes from `start` (the rest by default), in 1 MiB chunks."""
        end = self._size if count is None else min(self._size, start + count)
        if self._data is not None:
            view = memoryview(self._data)
            for offset in range(start, end, _CHUNK):
                yield bytes(view[offset : min(end, offset + _CHUNK)])
            return
        assert self._path is not None
        with self._path.open("rb") as fobj:
            fobj.seek(start)
            remaining = end - start
            while remaining > 0 and (chunk := fobj.read(min(_CHUNK, remaining))):
                remaining -= len(chunk)
                yield chunk

    def gzipped(self) -> bytes:
        """The content gzip-compressed (deterministic, cached). Blocking for disk files."""
        if self._gzip is None:
            import gzip

            self._gzip = gzip.compress(b"".join(self.iter_chunks()), mtime=0)
        return self._gzip

    def resolved(self, path: str) -> FakeFile:
        """This file with `lfs` decided by the auto rule for `path` (self when already decided)."""
        if self._lfs is not None:
            return self
        clone = FakeFile.__new__(FakeFile)
        for slot in FakeFile.__slots__:
            setattr(clone, slot, getattr(self, slot))
        clone._lfs = is_auto_lfs(path, self._size)
        if clone._lfs:
            clone._git_oid = None  # the pointer's oid, not the content's
        return clone

    def identity(self) -> str:
        """A cheap content identity, used to derive commit hashes without hashing disk files."""
        kind = "lfs" if self.lfs else "git"
        if self._data is not None or self._sha256 is not None:
            return f"{kind}:{self.sha256}"
        if self._git_oid is not None:
            return f"{kind}:oid:{self._git_oid}"
        return f"{kind}:path:{self._path}:{self._size}"


@dataclass(frozen=True, slots=True)
class Commit:
    """One snapshot of a repo: every file at that commit, not a diff."""

    sha: str
    parent: str | None
    message: str
    date: datetime
    files: Mapping[str, FakeFile]

    @property
    def iso_date(self) -> str:
        return self.date.isoformat(timespec="milliseconds").replace("+00:00", "Z")


FileInput: TypeAlias = Mapping[str, "bytes | FakeFile"]


class FakeRepo:
    """A repo on FakeHub. Build it with `commit`, `create_branch`, `tag` and `create_pr`."""

    def __init__(
        self,
        repo_id: str,
        repo_type: RepoType = "model",
        private: bool = False,
        gated: Gated = False,
        *,
        sdk: str = "static",
    ) -> None:
        self.repo_id = repo_id
        self.repo_type: RepoType = repo_type
        self.private = private
        self.gated: Gated = gated
        self.sdk = sdk
        self.allowed_tokens: set[str] = set()
        self.commits: dict[str, Commit] = {}
        self.branches: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.pull_requests: dict[str, str] = {}
        self._blobs: dict[str, FakeFile] = {}

    def __repr__(self) -> str:
        return f"<FakeRepo {self.repo_type} {self.repo_id!r} [{len(self.commits)} commits]>"

    @property
    def namespace(self) -> str | None:
        return self.repo_id.split("/", 1)[0] if "/" in self.repo_id else None

    def commit(
        self,
        files: FileInput | None = None,
        *,
        branch: str = "main",
        message: str = "update",
        delete: Iterable[str] = (),
    ) -> str:
        """Commit a full snapshot (branch head + `files` - `delete`) and move `branch` to it."""
        parent = self._head(branch)
        snapshot = dict(self.commits[parent].files) if parent is not None else {}
        for path in delete:
            snapshot.pop(path, None)
        for path, value in (files or {}).items():
            snapshot[path] = _as_file(value).resolved(path)
        sha = self._store(parent, snapshot, message)
        self._move(branch, sha)
        return sha

    def create_branch(self, name: str, from_revision: str = "main") -> str:
        """A new branch (or move an existing one) at `from_revision`; returns its commit."""
        sha = self.resolve(from_revision)
        self.branches[name] = sha
        return sha

    def tag(self, name: str, revision: str = "main") -> str:
        """Tag `revision` (a branch, tag, PR ref or commit) as `name`; returns the commit."""
        sha = self.resolve(revision)
        self.tags[name] = sha
        return sha

    def create_pr(
        self, files: FileInput | None = None, *, base: str = "main", message: str = "pr"
    ) -> str:
        """Open a PR on top of `base` with `files`; returns its ref: "refs/pr/1", "refs/pr/2"..."""
        ref = f"refs/pr/{len(self.pull_requests) + 1}"
        self.pull_requests[ref] = self.resolve(base)
        self.commit(files, branch=ref, message=message)
        return ref

    def allow(self, token: str) -> None:
        """Let `token` read this repo even though it is private or gated."""
        self.allowed_tokens.add(token)

    def try_resolve(self, revision: str) -> str | None:
        """The commit `revision` names (branch, tag, refs/pr/N, refs/heads|tags/x or full sha)."""
        if _HEX40_RE.match(revision) and revision in self.commits:
            return revision
        for prefix, table in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if revision.startswith(prefix):
                return table.get(revision.removeprefix(prefix))
        return (
            self.branches.get(revision)
            or self.tags.get(revision)
            or self.pull_requests.get(revision)
        )

    def resolve(self, revision: str) -> str:
        """Like `try_resolve` but raises `KeyError` for an unknown revision."""
        sha = self.try_resolve(revision)
        if sha is None:
            raise KeyError(f"Invalid rev id: {revision}")
        return sha

    def files_at(self, revision: str = "main") -> dict[str, FakeFile]:
        """A copy of the snapshot at `revision`."""
        return dict(self.commits[self.resolve(revision)].files)

    def blob(self, sha256: str) -> FakeFile | None:
        """Any LFS file ever committed with this sha256 (what the CDN serves)."""
        return self._blobs.get(sha256)

    def register_blob(self, file: FakeFile) -> None:
        """Make a (hashed) LFS file reachable through the CDN."""
        self._blobs[file.sha256] = file

    def all_files(self) -> Iterable[FakeFile]:
        """Every distinct file of every commit."""
        seen: set[int] = set()
        for commit in self.commits.values():
            for file in commit.files.values():
                if id(file) not in seen:
                    seen.add(id(file))
                    yield file

    def index_blobs(self) -> None:
        """Register every LFS file by sha256 (hashes them: blocking, call from a thread)."""
        for file in self.all_files():
            if file.lfs:
                self._blobs[file.sha256] = file

    def last_commit(self, sha: str, path: str) -> Commit:
        """The oldest commit in `sha`'s history since which `path` has been unchanged."""
        commit = self.commits[sha]
        current = commit.files.get(path)
        while commit.parent is not None:
            parent = self.commits[commit.parent]
            if parent.files.get(path) != current:
                break
            commit = parent
        return commit

    def _head(self, branch: str) -> str | None:
        if branch in self.pull_requests:
            return self.pull_requests[branch]
        return self.branches.get(branch)

    def _move(self, branch: str, sha: str) -> None:
        if _PR_RE.match(branch):
            self.pull_requests[branch] = sha
        else:
            self.branches[branch] = sha

    def _store(self, parent: str | None, snapshot: dict[str, FakeFile], message: str) -> str:
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(f"parent {parent or _EMPTY_SHA}\n".encode())
        for path in sorted(snapshot):
            digest.update(f"{path}\0{snapshot[path].identity()}\n".encode())
        digest.update(f"message {message}".encode())
        sha = digest.hexdigest()
        if sha not in self.commits:
            date = _EPOCH + timedelta(minutes=len(self.commits))
            self.commits[sha] = Commit(sha, parent, message, date, snapshot)
            for file in snapshot.values():
                if file.lfs and file.hashed:
                    self._blobs[file.sha256] = file
        return sha


def _as_file(value: bytes | FakeFile) -> FakeFile:
    return value if isinstance(value, FakeFile) else FakeFile(value)
