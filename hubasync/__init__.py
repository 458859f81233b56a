"""hubasync: an asyncio-native download engine for the Hugging Face Hub.

It writes the very same cache as the official ``huggingface_hub`` client::

    import asyncio, hubasync
    path = asyncio.run(hubasync.snapshot_download("org/name"))
"""

from __future__ import annotations

from hubasync._api import hf_hub_download as hf_hub_download
from hubasync._api import list_repo_files as list_repo_files
from hubasync._api import list_repo_tree as list_repo_tree
from hubasync._api import snapshot_download as snapshot_download
from hubasync._bus import ProgressBus as ProgressBus
from hubasync._client import HubClient as HubClient
from hubasync._config import HubConfig as HubConfig
from hubasync._display import RichDisplay as RichDisplay
from hubasync._events import BlobCommitted as BlobCommitted
from hubasync._events import BytesReceived as BytesReceived
from hubasync._events import Event as Event
from hubasync._events import FileDone as FileDone
from hubasync._events import FileFailed as FileFailed
from hubasync._events import FileStarted as FileStarted
from hubasync._events import PlanReady as PlanReady
from hubasync._events import RateLimited as RateLimited
from hubasync._events import Retrying as Retrying
from hubasync._events import RunDone as RunDone
from hubasync._exceptions import BadRequestError as BadRequestError
from hubasync._exceptions import CacheError as CacheError
from hubasync._exceptions import ClientClosedError as ClientClosedError
from hubasync._exceptions import ConfigError as ConfigError
from hubasync._exceptions import ConnectError as ConnectError
from hubasync._exceptions import DisabledRepoError as DisabledRepoError
from hubasync._exceptions import EntryNotFoundError as EntryNotFoundError
from hubasync._exceptions import FileMetadataError as FileMetadataError
from hubasync._exceptions import GatedRepoError as GatedRepoError
from hubasync._exceptions import HubError as HubError
from hubasync._exceptions import HubHTTPError as HubHTTPError
from hubasync._exceptions import IncompleteSnapshotError as IncompleteSnapshotError
from hubasync._exceptions import InsufficientDiskSpaceError as InsufficientDiskSpaceError
from hubasync._exceptions import IntegrityError as IntegrityError
from hubasync._exceptions import InvalidRepoIdError as InvalidRepoIdError
from hubasync._exceptions import LocalEntryNotFoundError as LocalEntryNotFoundError
from hubasync._exceptions import OfflineModeIsEnabled as OfflineModeIsEnabled
from hubasync._exceptions import RateLimitedError as RateLimitedError
from hubasync._exceptions import ReadError as ReadError
from hubasync._exceptions import ReadTimeout as ReadTimeout
from hubasync._exceptions import RemoteEntryNotFoundError as RemoteEntryNotFoundError
from hubasync._exceptions import RepositoryNotFoundError as RepositoryNotFoundError
from hubasync._exceptions import RevisionNotFoundError as RevisionNotFoundError
from hubasync._exceptions import ServerError as ServerError
from hubasync._exceptions import SnapshotError as SnapshotError
from hubasync._exceptions import TransientError as TransientError
from hubasync._exceptions import TransportError as TransportError
from hubasync._exceptions import UnsafePathError as UnsafePathError
from hubasync._exceptions import UsageError as UsageError
from hubasync._flight import Download as Download
from hubasync._flight import DownloadProgress as DownloadProgress
from hubasync._models import BlobLfsInfo as BlobLfsInfo
from hubasync._models import RepoFile as RepoFile
from hubasync._models import RepoFolder as RepoFolder
from hubasync._models import RepoInfo as RepoInfo
from hubasync._progress import JsonProgress as JsonProgress
from hubasync._progress import LogProgress as LogProgress
from hubasync._progress import ProgressUpdate as ProgressUpdate
from hubasync._reporting import Reporter as Reporter
from hubasync._reporting import show_progress as show_progress
from hubasync._retry import RetryConfig as RetryConfig
from hubasync._transport import __version__ as __version__

__all__ = [
    "BadRequestError",
    "BlobCommitted",
    "BlobLfsInfo",
    "BytesReceived",
    "CacheError",
    "ClientClosedError",
    "ConfigError",
    "ConnectError",
    "DisabledRepoError",
    "Download",
    "DownloadProgress",
    "EntryNotFoundError",
    "Event",
    "FileDone",
    "FileFailed",
    "FileMetadataError",
    "FileStarted",
    "GatedRepoError",
    "HubClient",
    "HubConfig",
    "HubError",
    "HubHTTPError",
    "IncompleteSnapshotError",
    "InsufficientDiskSpaceError",
    "IntegrityError",
    "InvalidRepoIdError",
    "JsonProgress",
    "LocalEntryNotFoundError",
    "LogProgress",
    "OfflineModeIsEnabled",
    "PlanReady",
    "ProgressBus",
    "ProgressUpdate",
    "RateLimited",
    "RateLimitedError",
    "ReadError",
    "ReadTimeout",
    "RemoteEntryNotFoundError",
    "RepoFile",
    "RepoFolder",
    "RepoInfo",
    "Reporter",
    "RepositoryNotFoundError",
    "RetryConfig",
    "Retrying",
    "RevisionNotFoundError",
    "RichDisplay",
    "RunDone",
    "ServerError",
    "SnapshotError",
    "TransientError",
    "TransportError",
    "UnsafePathError",
    "UsageError",
    "__version__",
    "hf_hub_download",
    "list_repo_files",
    "list_repo_tree",
    "show_progress",
    "snapshot_download",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("hubasync._"):
        _obj.__module__ = "hubasync"
del _name, _obj
