"""The Hub's JSON documents: repo info, tree entries, refs, pagination cursors. Pure functions.

Every `FakeFile` passed in must already be hashed (see `FakeFile.hashed`): hashing a disk file
is blocking, so the async handlers do it in a thread before calling these.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from hubasync.testing._repo import Commit, FakeFile, FakeRepo

__all__ = [
    "decode_cursor",
    "encode_cursor",
    "file_entry",
    "list_tree",
    "path_entries",
    "refs_json",
    "repo_info_json",
]

_CREATED_AT_FALLBACK = "2024-01-01T00:00:00.000Z"


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def directories(files: Iterable[str]) -> set[str]:
    """Every folder holding at least one file (the root "" excluded)."""
    found: set[str] = set()
    for path in files:
        parent = _parent(path)
        while parent and parent not in found:
            found.add(parent)
            parent = _parent(parent)
    return found


def _tree_oid(commit: Commit, folder: str) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    prefix = folder + "/"
    for path in sorted(p for p in commit.files if p.startswith(prefix)):
        digest.update(f"{path}\0{commit.files[path].git_oid}\n".encode())
    return digest.hexdigest()


def file_entry(
    repo: FakeRepo, commit: Commit, path: str, file: FakeFile, *, expand: bool
) -> dict[str, Any]:
    """A tree / paths-info entry for a file (`lfs` only for LFS files, `size` is the real size)."""
    entry: dict[str, Any] = {"type": "file", "oid": file.git_oid, "size": file.size, "path": path}
    if file.lfs:
        entry["lfs"] = {"oid": file.sha256, "size": file.size, "pointerSize": len(file.pointer)}
    if expand:
        entry["lastCommit"] = _last_commit(repo.last_commit(commit.sha, path))
        entry["securityFileStatus"] = {
            "status": "safe",
            "avScan": {"virusFound": False, "virusNames": None},
            "pickleImportScan": None,
        }
    return entry


def _folder_entry(repo: FakeRepo, commit: Commit, path: str, *, expand: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "directory", "oid": _tree_oid(commit, path), "size": 0, "path": path
    }  # fmt: skip
    if expand:
        entry["lastCommit"] = _last_commit(commit)
    return entry


def _last_commit(commit: Commit) -> dict[str, str]:
    return {"id": commit.sha, "title": commit.message, "date": commit.iso_date}


def list_tree(
    repo: FakeRepo, commit: Commit, folder: str, *, recursive: bool, expand: bool
) -> list[dict[str, Any]] | None:
    """Entries under `folder` ("" = root), or None when it is not a folder of this commit.

    Non-recursive listings put folders first; recursive ones are sorted by path, so a folder
    comes just before its contents.
    """
    folders = directories(commit.files)
    if folder and folder not in folders:
        return None
    prefix = folder + "/" if folder else ""

    def wanted(path: str) -> bool:
        return path.startswith(prefix) and (recursive or _parent(path) == folder)

    names = [(True, p) for p in folders if wanted(p)]
    names += [(False, p) for p in commit.files if wanted(p)]
    names.sort(key=(lambda item: item[1]) if recursive else (lambda item: (not item[0], item[1])))
    return [
        _folder_entry(repo, commit, path, expand=expand)
        if is_folder
        else file_entry(repo, commit, path, commit.files[path], expand=expand)
        for is_folder, path in names
    ]


def path_entries(
    repo: FakeRepo, commit: Commit, paths: Iterable[str], *, expand: bool
) -> list[dict[str, Any]]:
    """paths-info: one entry per existing file or folder, missing paths omitted."""
    folders = directories(commit.files)
    entries: list[dict[str, Any]] = []
    for raw in paths:
        path = raw.strip("/")
        if path in commit.files:
            entries.append(file_entry(repo, commit, path, commit.files[path], expand=expand))
        elif path in folders:
            entries.append(_folder_entry(repo, commit, path, expand=expand))
    return entries


def repo_info_json(
    repo: FakeRepo, commit: Commit | None, *, blobs: bool, security: bool, expand: list[str]
) -> dict[str, Any]:
    """What `GET /api/{type}s/{repo_id}[/revision/{rev}]` answers."""
    files: Mapping[str, FakeFile] = commit.files if commit is not None else {}
    created = min((c.iso_date for c in repo.commits.values()), default=_CREATED_AT_FALLBACK)
    info: dict[str, Any] = {
        "_id": hashlib.sha1(repo.repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
        "id": repo.repo_id,
        "author": repo.namespace or repo.repo_id,
        "private": repo.private,
        "gated": repo.gated,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "cardData": {},
        "createdAt": created,
        "lastModified": commit.iso_date if commit is not None else created,
        "siblings": [_sibling(path, files[path], blobs=blobs) for path in sorted(files)],
        "usedStorage": sum(f.size for f in files.values()),
        **_type_specific(repo),
    }
    if commit is not None:
        info["sha"] = commit.sha
    if security:
        info["securityRepoStatus"] = {"scansDone": True, "filesWithIssues": []}
    if expand:
        info = {k: v for k, v in info.items() if k in {"_id", "id", *expand}}
    return info


def _sibling(path: str, file: FakeFile, *, blobs: bool) -> dict[str, Any]:
    sibling: dict[str, Any] = {"rfilename": path}
    if blobs:
        sibling["size"] = file.size
        sibling["blobId"] = file.git_oid
        if file.lfs:
            sibling["lfs"] = {
                "sha256": file.sha256, "size": file.size, "pointerSize": len(file.pointer)
            }  # fmt: skip
    return sibling


def _type_specific(repo: FakeRepo) -> dict[str, Any]:
    if repo.repo_type == "model":
        return {"modelId": repo.repo_id, "spaces": []}
    if repo.repo_type == "dataset":
        return {"description": "", "citation": "", "paperswithcode_id": None}
    subdomain = repo.repo_id.replace("/", "-").replace("_", "-").lower()
    return {
        "sdk": repo.sdk,
        "subdomain": subdomain,
        "host": f"https://{subdomain}.hf.space",
        "models": [],
        "datasets": [],
    }


def refs_json(repo: FakeRepo, *, include_prs: bool) -> dict[str, Any]:
    """`GET /api/{type}s/{repo_id}/refs`: branches, tags (and pull requests when asked)."""

    def refs(table: Mapping[str, str], prefix: str) -> list[dict[str, str]]:
        return [
            {"name": name, "ref": f"{prefix}{name}", "targetCommit": sha}
            for name, sha in sorted(table.items())
        ]

    result: dict[str, Any] = {
        "branches": refs(repo.branches, "refs/heads/"),
        "converts": [],
        "tags": refs(repo.tags, "refs/tags/"),
    }
    if include_prs:
        result["pullRequests"] = [
            {"name": ref.rsplit("/", 1)[1], "ref": ref, "targetCommit": sha}
            for ref, sha in sorted(repo.pull_requests.items())
        ]
    return result


def encode_cursor(sha: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{sha}:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int] | None:
    """(commit, offset) from a cursor made by `encode_cursor`, None when it is not one."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        sha, _, offset = text.partition(":")
        return (sha, int(offset)) if offset.isdigit() else None
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
