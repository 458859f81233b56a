"""Pure path rules of the official cache and of `local_dir` bookkeeping. No I/O here.

```
<cache>/CACHEDIR.TAG
<cache>/.locks/<repo_folder>/<etag>.lock
<cache>/.locks/<repo_folder>/<etag>.{hubasync.state,hubasync.owner,<gen>.hubasync.part}  (resume)
<cache>/<repo_folder>/blobs/<etag>                 (+ <etag>.<8hex>.incomplete while written)
<cache>/<repo_folder>/refs/<revision>              (nested for refs/pr/N)
<cache>/<repo_folder>/snapshots/<commit>/<path>    -> ../../blobs/<etag> (one more ../ per level)
<cache>/<repo_folder>/.no_exist/<commit>/<path>
<cache>/<repo_folder>/trees/<commit>.json

<local_dir>/<path>
<local_dir>/.cache/huggingface/{.gitignore,CACHEDIR.TAG,trees/<commit>.json}
<local_dir>/.cache/huggingface/download/<path>.metadata   (+ .lock, + short-named .incomplete)
<local_dir>/.cache/huggingface/download/<dirs>/<short>.<etag>.hubasync.*                 (resume)
```
Resume files are never final paths, never `<etag>.incomplete` exactly (which clients <= 1.17
append to), and are on the same filesystem as the final path, so a finished partial download is
committed with one rename. Kept between attempts, they are out of sight of readers and of
`scan_cache_dir` (under `.locks/`, or with a name that is not `*.incomplete`).
Every name that comes from the server or the caller is checked before it is joined to a base.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Final

from hubasync._exceptions import UnsafePathError
from hubasync._types import COMMIT_HASH_RE, SHA1_RE, SHA256_RE

if TYPE_CHECKING:
    from hubasync._models import RepoRef

CACHEDIR_TAG_CONTENT: Final = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by huggingface_hub.\n"
    "# For information about cache directory tags, see:\n"
    "#\thttps://bford.info/cachedir/\n"
)
TREE_FORMAT_VERSION: Final = 1


def check_relative_path(name: str, *, what: str = "filename") -> list[str]:
    """Split a repo path into segments, refusing anything that could escape its base directory.

    Refused: empty names and segments, `.` and `..`, absolute POSIX paths, Windows drives,
    roots and UNC names (checked on every OS, so a cache copied to Windows stays safe), NUL.
    """
    if not name or "\x00" in name:
        raise UnsafePathError(f"invalid {what} {name!r}: empty or contains NUL")
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePathError(
                f"refusing {what} {name!r}: it has an empty, '.' or '..' segment and could "
                "escape the download folder"
            )
        if ".." in part.split("\\"):
            raise UnsafePathError(f"refusing {what} {name!r}: it contains a '..' segment")
        win = PureWindowsPath(part)
        if win.drive or win.root:
            raise UnsafePathError(f"refusing {what} {name!r}: absolute, drive or UNC path")
    if PurePosixPath(name).is_absolute():
        raise UnsafePathError(f"refusing {what} {name!r}: absolute path")
    return parts


def check_etag(etag: str) -> str:
    """An etag becomes a file name: only accept hex digests (or other safe single names)."""
    if SHA256_RE.fullmatch(etag) or SHA1_RE.fullmatch(etag):
        return etag
    check_relative_path(etag, what="etag")
    if "/" in etag or "\\" in etag or etag.startswith("."):
        raise UnsafePathError(f"refusing etag {etag!r} as a blob name")
    return etag


def normalize_etag(raw: str | None) -> str | None:
    """`W/"abc"` -> `abc`, `"abc"` -> `abc` (the official client's char-set strip)."""
    if raw is None:
        return None
    return raw.lstrip("W/").strip('"')


def unique_suffix() -> str:
    return secrets.token_hex(4)


GEN_RE: Final = re.compile(r"^[0-9a-f]{8}$")
PARKED_SUFFIX: Final = ".hubasync.part"


@dataclass(frozen=True, slots=True)
class ResumeFiles:
    """Where an interrupted download of one blob waits to be resumed.

    `state` says what is in the data file of generation `gen`; `owner` is the claim of the
    process writing it. The data file is `active(gen)` while it is written (a name like the
    official client's unique temps, `<etag>.<8hex>.incomplete`, so `scan_cache_dir` lists it as
    an incomplete download if the process is killed) and is moved to `parked(gen)`, out of
    sight, when a download fails or is cancelled. A new data file gets a new generation (named
    in the state), so a state always describes one data file, whoever wrote last.
    """

    stem: str  # state, owner and parked data files: "<stem>.hubasync.state", ...
    active_stem: str  # the data file while it is written: "<active_stem>.<gen>.incomplete"

    @property
    def state(self) -> str:
        return f"{self.stem}.hubasync.state"

    @property
    def owner(self) -> str:
        return f"{self.stem}.hubasync.owner"

    def active(self, gen: str) -> str:
        return f"{self.active_stem}.{_check_gen(gen)}.incomplete"

    def parked(self, gen: str) -> str:
        return f"{self.stem}.{_check_gen(gen)}{PARKED_SUFFIX}"

    def parked_gen(self, name: str) -> str | None:
        """The generation of a parked data file named `name` (a folder entry), if one."""
        prefix = os.path.basename(self.stem) + "."
        if not (name.startswith(prefix) and name.endswith(PARKED_SUFFIX)):
            return None
        gen = name[len(prefix):-len(PARKED_SUFFIX)]
        return gen if GEN_RE.fullmatch(gen) else None


def _check_gen(gen: str) -> str:
    if not GEN_RE.fullmatch(gen):
        raise UnsafePathError(f"refusing partial download generation {gen!r}")
    return gen


class RepoCache:
    """Paths of one repo inside one cache directory (`cache_dir` mode)."""

    __slots__ = ("cache_dir", "repo", "storage")

    def __init__(self, cache_dir: str, repo: RepoRef) -> None:
        self.cache_dir = cache_dir
        self.repo = repo
        self.storage = os.path.join(cache_dir, repo.folder_name)

    def __repr__(self) -> str:
        return f"<RepoCache {self.storage}>"

    @property
    def cachedir_tag(self) -> str:
        return os.path.join(self.cache_dir, "CACHEDIR.TAG")

    def blob(self, etag: str) -> str:
        return os.path.join(self.storage, "blobs", check_etag(etag))

    def blob_temp(self, etag: str) -> str:
        """A process-unique temp name next to the blob (never `<etag>.incomplete` exactly)."""
        return f"{self.blob(etag)}.{unique_suffix()}.incomplete"

    def snapshot(self, commit: str) -> str:
        if not COMMIT_HASH_RE.fullmatch(commit):
            raise UnsafePathError(f"refusing commit {commit!r}: not a 40-hex commit hash")
        return os.path.join(self.storage, "snapshots", commit)

    def pointer(self, commit: str, filename: str) -> str:
        return os.path.join(self.snapshot(commit), *check_relative_path(filename))

    def ref(self, revision: str) -> str:
        return os.path.join(self.storage, "refs", *check_relative_path(revision, what="revision"))

    def no_exist(self, commit: str, filename: str) -> str:
        self.snapshot(commit)  # validates the commit
        return os.path.join(self.storage, ".no_exist", commit, *check_relative_path(filename))

    def tree(self, commit: str) -> str:
        self.snapshot(commit)
        return os.path.join(self.storage, "trees", f"{commit}.json")

    def lock(self, etag: str) -> str:
        return os.path.join(self.scratch, f"{check_etag(etag)}.lock")

    def resume_files(self, etag: str) -> ResumeFiles:
        """State beside the blob's lock in `.locks/<repo_folder>/` (same filesystem as
        `blobs/`), the data file in `blobs/` while it is written."""
        return ResumeFiles(os.path.join(self.scratch, check_etag(etag)), self.blob(etag))

    @property
    def scratch(self) -> str:
        """`.locks/<repo_folder>/`: where temp links and refs are made before their rename
        (same filesystem; `scan_cache_dir` and readers never look there)."""
        return os.path.join(self.cache_dir, ".locks", self.repo.folder_name)

    @property
    def snapshots(self) -> str:
        """Created before anything else in the repo folder: a repo folder without it is
        "corrupted" to `scan_cache_dir`."""
        return os.path.join(self.storage, "snapshots")


def relative_link_target(blob: str, pointer: str) -> str:
    """`../../blobs/<etag>` seen from the pointer's folder (one more `../` per sub-folder)."""
    return os.path.relpath(blob, os.path.dirname(pointer))


class LocalDirLayout:
    """Paths of `local_dir` mode and its `.cache/huggingface` bookkeeping."""

    __slots__ = ("local_dir", "meta_root")

    def __init__(self, local_dir: str) -> None:
        self.local_dir = local_dir
        self.meta_root = os.path.join(local_dir, ".cache", "huggingface")

    def __repr__(self) -> str:
        return f"<LocalDirLayout {self.local_dir}>"

    def file(self, filename: str) -> str:
        return os.path.join(self.local_dir, *check_relative_path(filename))

    def metadata(self, filename: str) -> str:
        parts = check_relative_path(filename)
        return os.path.join(self.meta_root, "download", *parts[:-1], f"{parts[-1]}.metadata")

    def lock(self, filename: str) -> str:
        return self.metadata(filename)[: -len(".metadata")] + ".lock"

    def temp(self, filename: str, etag: str) -> str:
        """Short temp name, like the official client's: b64url(sha1("<name>.metadata"))."""
        return f"{self._short_stem(filename, etag)}.{unique_suffix()}.incomplete"

    def resume_files(self, filename: str, etag: str) -> ResumeFiles:
        stem = self._short_stem(filename, etag)
        return ResumeFiles(stem, stem)

    def _short_stem(self, filename: str, etag: str) -> str:
        parts = check_relative_path(filename)
        digest = hashlib.sha1(f"{parts[-1]}.metadata".encode(), usedforsecurity=False).digest()
        short = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        folder = os.path.join(self.meta_root, "download", *parts[:-1])
        return os.path.join(folder, f"{short}.{check_etag(etag)}")

    def tree(self, commit: str) -> str:
        if not COMMIT_HASH_RE.fullmatch(commit):
            raise UnsafePathError(f"refusing commit {commit!r}: not a 40-hex commit hash")
        return os.path.join(self.meta_root, "trees", f"{commit}.json")

    @property
    def gitignore(self) -> str:
        return os.path.join(self.meta_root, ".gitignore")

    @property
    def cachedir_tag(self) -> str:
        return os.path.join(self.meta_root, "CACHEDIR.TAG")


def format_local_metadata(commit: str, etag: str, timestamp: float) -> str:
    """Exactly 3 newline-terminated lines: commit, etag, float timestamp."""
    return f"{commit}\n{etag}\n{timestamp}\n"


def parse_local_metadata(text: str) -> tuple[str, str, float] | None:
    lines = text.split("\n")
    if len(lines) < 3:
        return None
    try:
        return lines[0].strip(), lines[1].strip(), float(lines[2].strip())
    except ValueError:
        return None
