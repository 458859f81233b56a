"""Progress events: what the engine tells the world, as one tagged union of frozen Structs.

Every event carries the ``run_id`` of the download it belongs to. Consumers ``match`` on the
class; the JSON form carries a ``"type"`` tag (``"plan_ready"``, ``"bytes_received"``...), so a
JSON-lines log can be decoded back with `decode_event`::

    match event:
        case BytesReceived(path=path, downloaded=done, total=total): ...
        case FileDone(path=path, from_cache=True): ...
        case RunDone(ok=False, files_failed=n): ...

Sizes are in bytes and durations in seconds.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, TypeAlias

import msgspec

if TYPE_CHECKING:
    from typing import TypeGuard

__all__ = [
    "BlobCommitted",
    "BytesReceived",
    "Event",
    "FileDone",
    "FileFailed",
    "FileStarted",
    "PlanReady",
    "RateLimited",
    "Retrying",
    "RunDone",
    "decode_event",
    "encode_event",
    "is_file_terminal",
    "is_progress",
]

_CAMEL_BOUNDARY: Final = re.compile(r"(?<!^)(?=[A-Z])")


def _snake_case(class_name: str) -> str:
    return _CAMEL_BOUNDARY.sub("_", class_name).lower()


class _EventBase(
    msgspec.Struct, frozen=True, kw_only=True, gc=False, tag_field="type", tag=_snake_case
):
    """Shared configuration only. Each event declares ``run_id`` itself so that it comes first
    (msgspec would otherwise list inherited keyword-only fields last)."""


class PlanReady(_EventBase, frozen=True, kw_only=True):
    """The file list is known. Totals include the files already in the cache."""

    run_id: int
    repo_id: str
    repo_type: str
    revision: str
    commit: str
    total_files: int
    total_bytes: int
    cached_files: int
    cached_bytes: int


class FileStarted(_EventBase, frozen=True, kw_only=True):
    """A file's transfer begins (again, after a restart); `resumed_from` bytes are already local."""

    run_id: int
    path: str
    size: int
    resumed_from: int = 0


class BytesReceived(_EventBase, frozen=True, kw_only=True):
    """Bytes arrived for `path`: `delta` new ones, `downloaded` so far for this file, of `total`.

    The bus may merge several into one (deltas summed, latest `downloaded` kept).
    """

    run_id: int
    path: str
    delta: int
    downloaded: int
    total: int


class RateLimited(_EventBase, frozen=True, kw_only=True):
    """`host` (``"host:port"``) asked for a pause; every request to it waits `wait` seconds."""

    run_id: int
    host: str
    wait: float
    status: int = 429


class Retrying(_EventBase, frozen=True, kw_only=True):
    """A transfer of `path` failed (`reason`) and is retried after `delay` seconds."""

    run_id: int
    path: str
    attempt: int
    delay: float
    reason: str


class BlobCommitted(_EventBase, frozen=True, kw_only=True):
    """The verified blob of `path` was moved into the cache under `etag`."""

    run_id: int
    path: str
    etag: str
    size: int


class FileDone(_EventBase, frozen=True, kw_only=True):
    """`path` is available at `local_path`. Terminal: no more events for this file in this run."""

    run_id: int
    path: str
    size: int
    from_cache: bool
    local_path: str
    seconds: float


class FileFailed(_EventBase, frozen=True, kw_only=True):
    """`path` failed for good. Terminal: no more events for this file in this run."""

    run_id: int
    path: str
    error_type: str
    message: str


class RunDone(_EventBase, frozen=True, kw_only=True):
    """The run is over; `path` is the snapshot folder or file (None if nothing usable)."""

    run_id: int
    ok: bool
    files: int
    files_from_cache: int
    files_failed: int
    bytes_downloaded: int
    bytes_from_cache: int
    seconds: float
    path: str | None


Event: TypeAlias = (
    PlanReady
    | FileStarted
    | BytesReceived
    | RateLimited
    | Retrying
    | BlobCommitted
    | FileDone
    | FileFailed
    | RunDone
)

_encoder: Final = msgspec.json.Encoder()
_decoder: Final[msgspec.json.Decoder[Event]] = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    """One event as a JSON object (with its ``"type"`` tag), e.g. for a JSON-lines log."""
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> Event:
    """The inverse of `encode_event`. Raises `msgspec.DecodeError` (or its `ValidationError`
    subclass) on malformed input or an unknown ``"type"``."""
    return _decoder.decode(data)


def is_progress(event: Event) -> TypeGuard[BytesReceived]:
    """True for the high-volume, mergeable events (`BytesReceived`), False for all others."""
    return type(event) is BytesReceived


def is_file_terminal(event: Event) -> TypeGuard[FileDone | FileFailed]:
    """True for the events after which a file gets no more progress (`FileDone`, `FileFailed`)."""
    return type(event) is FileDone or type(event) is FileFailed
