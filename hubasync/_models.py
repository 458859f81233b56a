"""Values: what a repo is, what the Hub says about it, and what must be fetched.

Raw Hub JSON is decoded into private ``_*JSON`` Structs with typed decoders built once per module
(unknown fields are ignored), then turned into the public Structs. No raw dict crosses the API.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote

import msgspec

from hubasync._exceptions import InvalidRepoIdError, UsageError
from hubasync._types import REPO_TYPES, SHA256_RE, RepoType

_REPO_ID_RE: Final = re.compile(r"^(?:[\w\-.]{1,96}/)?[\w\-.]{1,96}$", re.ASCII)
_PREFIX: Final[dict[str, str]] = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def check_repo_type(repo_type: str | None) -> RepoType:
    if repo_type is None:
        return "model"
    for known in REPO_TYPES:
        if repo_type == known:
            return known
    raise UsageError(f"repo_type must be one of {REPO_TYPES}, got {repo_type!r}")


def check_repo_id(repo_id: str) -> str:
    """The official client's rules: `name` or `namespace/name`, ASCII word chars, `-`, `.`."""
    if not isinstance(repo_id, str):
        raise InvalidRepoIdError(f"repo id must be a string, got {type(repo_id).__name__}")
    if repo_id.count("/") > 1:
        raise InvalidRepoIdError(
            f"repo id must be 'name' or 'namespace/name', got {repo_id!r} "
            "(pass the type with repo_type=...)"
        )
    if "--" in repo_id or ".." in repo_id:
        raise InvalidRepoIdError(f"repo id cannot contain '--' or '..': {repo_id!r}")
    if repo_id.endswith(".git"):
        raise InvalidRepoIdError(f"repo id cannot end with '.git': {repo_id!r}")
    if not _REPO_ID_RE.fullmatch(repo_id) or any(
        part[0] in "-." or part[-1] in "-." for part in repo_id.split("/")
    ):
        raise InvalidRepoIdError(
            "repo id must use alphanumeric chars, '-', '_' or '.', cannot start or end with "
            f"'-' or '.', and is at most 96 chars per part: {repo_id!r}"
        )
    return repo_id


class RepoRef(msgspec.Struct, frozen=True, kw_only=True):
    """A repository on the Hub: its id and type, validated."""

    repo_id: str
    repo_type: RepoType = "model"

    def __post_init__(self) -> None:
        check_repo_id(self.repo_id)
        check_repo_type(self.repo_type)

    @property
    def folder_name(self) -> str:
        """`models--org--name`: the cache folder, as the official client names it."""
        return "--".join([f"{self.repo_type}s", *self.repo_id.split("/")])

    @property
    def api_path(self) -> str:
        return f"/api/{self.repo_type}s/{self.repo_id}"

    def resolve_path(self, revision: str, filename: str) -> str:
        """`/{prefix}{repo_id}/resolve/{rev}/{path}` with the Hub's exact encoding."""
        return (
            f"/{_PREFIX[self.repo_type]}{self.repo_id}/resolve/"
            f"{quote(revision, safe='')}/{quote(filename)}"
        )


class BlobLfsInfo(msgspec.Struct, frozen=True, kw_only=True):
    size: int
    sha256: str
    pointer_size: int


class RepoFile(msgspec.Struct, frozen=True, kw_only=True):
    """A file in a repo tree (the official client's `RepoFile`, same field names)."""

    path: str
    size: int
    blob_id: str
    lfs: BlobLfsInfo | None = None
    xet_hash: str | None = None

    @property
    def etag(self) -> str:
        """The name of its blob in the cache: sha256 for LFS files, the git blob id otherwise."""
        return self.lfs.sha256 if self.lfs is not None else self.blob_id


class RepoFolder(msgspec.Struct, frozen=True, kw_only=True):
    """A folder in a repo tree (the official client's `RepoFolder`)."""

    path: str
    tree_id: str


class RepoInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What `GET /api/{type}s/{id}/revision/{rev}` says, reduced to what downloads need."""

    id: str
    repo_type: RepoType
    sha: str
    private: bool = False
    gated: str | bool = False
    disabled: bool = False
    last_modified: str | None = None
    siblings: tuple[str, ...] = ()


class FileMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """What a HEAD on `/resolve` says (the official client's `HfFileMetadata`)."""

    commit_hash: str
    etag: str
    location: str
    size: int | None


class RemoteFile(msgspec.Struct, frozen=True, kw_only=True):
    """One file to materialise: where it lives, what it must hash to, how big it is."""

    path: str
    etag: str
    size: int | None
    url: str
    location: str | None = None  # where a HEAD said the bytes are (CDN); re-resolved from `url`

    @property
    def is_lfs(self) -> bool:
        return SHA256_RE.fullmatch(self.etag) is not None


# -- raw Hub JSON -------------------------------------------------------------------------------


class _LfsJSON(msgspec.Struct, frozen=True):
    oid: str
    size: int
    pointerSize: int = 0


class _TreeEntryJSON(msgspec.Struct, frozen=True):
    type: str
    path: str
    oid: str = ""
    size: int = 0
    lfs: _LfsJSON | None = None
    xetHash: str | None = None


class _SiblingJSON(msgspec.Struct, frozen=True):
    rfilename: str


class _RepoInfoJSON(msgspec.Struct, frozen=True):
    id: str = ""
    sha: str | None = None
    private: bool = False
    gated: str | bool = False
    disabled: bool = False
    lastModified: str | None = None
    siblings: list[_SiblingJSON] | None = None


_TREE_DECODER: Final = msgspec.json.Decoder(list[_TreeEntryJSON])
_INFO_DECODER: Final = msgspec.json.Decoder(_RepoInfoJSON)


def decode_tree_page(body: bytes) -> list[RepoFile | RepoFolder]:
    """Decode one page of `/tree`; a redacted (`*`) xetHash counts as absent."""
    out: list[RepoFile | RepoFolder] = []
    for entry in _TREE_DECODER.decode(body):
        if entry.type == "directory":
            out.append(RepoFolder(path=entry.path, tree_id=entry.oid))
            continue
        lfs = None
        if entry.lfs is not None:
            lfs = BlobLfsInfo(
                size=entry.lfs.size, sha256=entry.lfs.oid, pointer_size=entry.lfs.pointerSize
            )
        xet = entry.xetHash if entry.xetHash and "*" not in entry.xetHash else None
        out.append(RepoFile(path=entry.path, size=entry.size, blob_id=entry.oid, lfs=lfs,
                            xet_hash=xet))
    return out


def decode_repo_info(body: bytes, repo_type: RepoType) -> RepoInfo:
    raw = _INFO_DECODER.decode(body)
    return RepoInfo(
        id=raw.id,
        repo_type=repo_type,
        sha=raw.sha or "",
        private=raw.private,
        gated=raw.gated,
        disabled=raw.disabled,
        last_modified=raw.lastModified,
        siblings=tuple(s.rfilename for s in raw.siblings or ()),
    )
