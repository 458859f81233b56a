"""Small shared types: no behaviour, no imports beyond the standard library."""

from __future__ import annotations

import os
import re
from typing import Final, Literal, TypeAlias

RepoType: TypeAlias = Literal["model", "dataset", "space"]
REPO_TYPES: Final[tuple[RepoType, ...]] = ("model", "dataset", "space")

ProgressMode: TypeAlias = Literal["auto", "bars", "log", "json", "none"]
PROGRESS_MODES: Final[tuple[ProgressMode, ...]] = ("auto", "bars", "log", "json", "none")
#: What a large (ranged) download does with the page cache: "drop" hands back the pages of the
#: bytes already hashed and made durable as it goes, "keep" leaves them cached, "bypass" writes
#: with direct I/O on local disks and reads the file back for the hash.
PageCache: TypeAlias = Literal["drop", "keep", "bypass"]
PAGE_CACHE: Final[tuple[PageCache, ...]] = ("drop", "keep", "bypass")

StrPath: TypeAlias = str | os.PathLike[str]

DEFAULT_ENDPOINT: Final = "https://huggingface.co"
DEFAULT_REVISION: Final = "main"

#: A full commit hash, exactly as the official client recognises one (lowercase only).
COMMIT_HASH_RE: Final = re.compile(r"^[0-9a-f]{40}$")
#: An LFS etag (the sha256 of the content).
SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")
#: A git blob id (sha1 of "blob <size>\\0" + content).
SHA1_RE: Final = re.compile(r"^[0-9a-f]{40}$")


def is_commit_hash(revision: str) -> bool:
    """True when `revision` is a full 40-char lowercase commit hash (the network-free fast path)."""
    return COMMIT_HASH_RE.fullmatch(revision) is not None


class Secret:
    """A string that never shows itself in a repr, a str() or a log line.

    Tokens travel through hubasync wrapped in this, so that no repr of a config,
    a client or an error can leak them.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)
