"""Every error hubasync raises, as one tree.

The names on the right-hand side are the official ``huggingface_hub`` names, so callers can port
their ``except`` clauses unchanged. The tree is split by what the caller does next::

    HubError                                  root: ``except hubasync.HubError`` catches everything
    ├── UsageError (ValueError)               fix your call
    │   ├── InvalidRepoIdError
    │   ├── UnsafePathError                   a name that would escape the cache or local_dir
    │   └── ConfigError
    ├── ClientClosedError (RuntimeError)      the HubClient is not open
    ├── TransientError                        retried by the engine; seen only once retries run out
    │   ├── TransportError
    │   │   ├── ConnectError (ConnectionError)
    │   │   ├── ReadError (ConnectionError)   dropped connection, short body
    │   │   └── ReadTimeout (TimeoutError)
    │   ├── ServerError (HubHTTPError)        5xx, 408
    │   └── RateLimitedError (HubHTTPError)   429, carries ``retry_after``
    ├── OfflineModeIsEnabled (ConnectionError) HF_HUB_OFFLINE / local_files_only forbade a request
    ├── HubHTTPError (OSError)                the server said no: status, url, request_id, message
    │   ├── RepositoryNotFoundError
    │   │   └── GatedRepoError
    │   ├── DisabledRepoError
    │   ├── RevisionNotFoundError
    │   ├── RemoteEntryNotFoundError (EntryNotFoundError)
    │   └── BadRequestError (ValueError)
    ├── EntryNotFoundError
    │   ├── RemoteEntryNotFoundError          (above)
    │   └── LocalEntryNotFoundError (FileNotFoundError)
    │       └── IncompleteSnapshotError
    ├── FileMetadataError (OSError)           the server is not a Hub (missing X-Repo-Commit / ETag)
    ├── IntegrityError                        hash or size mismatch; nothing was committed
    ├── CacheError (OSError)                  the disk said no
    │   └── InsufficientDiskSpaceError
    └── SnapshotError                         several files failed; ``.errors`` maps path -> error

Tokens never appear in any message: URLs carry none, and headers are never formatted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


class HubError(Exception):
    """Base class of every error hubasync raises."""


# -- usage ---------------------------------------------------------------------------------------


class UsageError(HubError, ValueError):
    """The call itself is wrong (bad argument, bad option)."""


class InvalidRepoIdError(UsageError):
    """The repo id is not of the form ``name`` or ``namespace/name``."""


class UnsafePathError(UsageError):
    """A file name would land outside the cache or the local_dir (``..``, absolute, NUL...)."""


class ConfigError(UsageError):
    """A configuration value (argument or environment variable) is invalid."""


class ClientClosedError(HubError, RuntimeError):
    """The HubClient was used before it was opened or after it was closed."""


# -- network ------------------------------------------------------------------------------------


class TransientError(HubError):
    """A failure worth retrying: the engine retries these itself, within its retry budget."""


class TransportError(TransientError):
    """The connection failed below HTTP."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class ConnectError(TransportError, ConnectionError):
    """Could not connect to the host."""


class ReadError(TransportError, ConnectionError):
    """The connection dropped, or the body ended before its announced length."""


class ReadTimeout(TransportError, TimeoutError):
    """The server stopped sending for longer than the timeout."""


class OfflineModeIsEnabled(HubError, ConnectionError):
    """A request was needed but HF_HUB_OFFLINE / local_files_only forbids all requests."""


class HubHTTPError(HubError, OSError):
    """The server answered with an error status.

    Attributes: ``status``, ``url`` (never carries a token), ``request_id`` and
    ``server_message`` (from ``X-Error-Message`` or the JSON body).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        url: str,
        request_id: str | None = None,
        server_message: str | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        self.request_id = request_id
        self.server_message = server_message
        self.error_code = error_code

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[object, ...]:  # keep pickling (multiprocessing) working
        return (
            _rebuild_http_error,
            (type(self), str(self), self.status, self.url, self.request_id, self.server_message,
             self.error_code),
        )


def _rebuild_http_error(
    cls: type[HubHTTPError],
    message: str,
    status: int,
    url: str,
    request_id: str | None,
    server_message: str | None,
    error_code: str | None,
) -> HubHTTPError:
    return cls(message, status=status, url=url, request_id=request_id,
               server_message=server_message, error_code=error_code)


class ServerError(HubHTTPError, TransientError):
    """5xx (or 408): the server had a problem; retried with backoff."""


class RateLimitedError(HubHTTPError, TransientError):
    """429: too many requests. ``retry_after`` is the wait the server asked for, in seconds."""

    retry_after: float | None = None


class RepositoryNotFoundError(HubHTTPError):
    """The repo does not exist, or is private and the token does not grant access."""


class GatedRepoError(RepositoryNotFoundError):
    """The repo is gated and the token (or its absence) does not grant access."""


class DisabledRepoError(HubHTTPError):
    """The repo was disabled by its owner or the Hub."""


class RevisionNotFoundError(HubHTTPError):
    """The repo exists but the branch, tag or commit does not."""


class BadRequestError(HubHTTPError, ValueError):
    """400: the server rejected the request as malformed."""


class EntryNotFoundError(HubError):
    """A file was not found, on the Hub or in the cache."""


class RemoteEntryNotFoundError(HubHTTPError, EntryNotFoundError):
    """The repo and revision exist but the file does not (``commit_hash`` says at which commit)."""

    commit_hash: str | None = None


class LocalEntryNotFoundError(EntryNotFoundError, FileNotFoundError):
    """The file is not in the cache and the network could not (or may not) be used."""


class IncompleteSnapshotError(LocalEntryNotFoundError):
    """A cached snapshot exists but the cached tree listing proves files are missing from it."""


class FileMetadataError(HubError, OSError):
    """The server's answer lacks the Hub's metadata headers: it is probably not a Hub."""


# -- data and disk --------------------------------------------------------------------------------


class IntegrityError(HubError):
    """Downloaded bytes do not match the expected size or hash. Nothing was committed."""

    def __init__(
        self, message: str, *, path: str | None = None, expected: str | None = None,
        actual: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.actual = actual


class CacheError(HubError, OSError):
    """A filesystem operation on the cache or local_dir failed."""


class InsufficientDiskSpaceError(CacheError):
    """Not enough free space for what must still be downloaded."""

    def __init__(self, message: str, *, needed: int, available: int, path: str) -> None:
        super().__init__(message)
        self.needed = needed
        self.available = available
        self.path = path


class SnapshotError(HubError):
    """One or more files of a snapshot failed; ``errors`` maps each repo path to its error.

    Files that succeeded are committed to the cache; a re-run fetches only the rest.
    """

    def __init__(self, message: str, errors: Mapping[str, BaseException]) -> None:
        super().__init__(message)
        self.errors = dict(errors)
