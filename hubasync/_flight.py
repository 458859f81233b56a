"""Single flight: callers asking for the same download at once share one.

A download runs in a task owned by the client's task group, not by any caller, so a caller that
is cancelled does not cancel it for the others. When the last caller awaiting it gives up, the
download is cancelled (nobody wants it any more) and forgotten, so a new caller starts afresh,
unless it was started in the background (`HubClient.start_snapshot`), which only `cancel()` or
closing the client stops.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

import anyio

from hubasync._events import BytesReceived, Event, FileDone, FileFailed, PlanReady
from hubasync._exceptions import ClientClosedError, HubError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable

    from anyio.abc import TaskGroup

DownloadState = Literal["running", "cancelling", "done", "failed", "cancelled"]
KEEP_FINISHED: Final = 1000


@dataclass
class DownloadProgress:
    """Totals of one download, folded from its events (for status endpoints and polling)."""

    files_total: int = 0
    files_done: int = 0
    files_from_cache: int = 0
    files_failed: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    commit: str | None = None

    def apply(self, event: Event) -> None:
        match event:
            case PlanReady():
                self.files_total, self.bytes_total = event.total_files, event.total_bytes
                self.bytes_done = event.cached_bytes
                self.commit = event.commit
            case BytesReceived():
                self.bytes_done += event.delta
            case FileDone():
                self.files_done += 1
                self.files_from_cache += event.from_cache
            case FileFailed():
                self.files_failed += 1
            case _:
                pass


class Download:
    """A handle on one download in flight (or finished) in a HubClient.

    ``id`` is a short random string, ``run_id`` tags its events on the client's bus,
    ``state`` is running, then done / failed / cancelled once it has ended (``cancelling`` between
    `cancel()` and the end of its cleanup), ``path`` and ``error`` say how it ended.
    """

    def __init__(self, key: Hashable, run_id: int, *, background: bool) -> None:
        self.id = secrets.token_hex(8)
        self.key = key
        self.run_id = run_id
        self.background = background
        self.state: DownloadState = "running"
        self.path: str | None = None
        self.error: BaseException | None = None
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()
        self._waiters = 0
        self._on_abandon: Callable[[Download], None] | None = None
        self.progress = DownloadProgress()

    def __repr__(self) -> str:
        return f"<Download {self.id} [{self.state} | run {self.run_id}, callers: {self._waiters}]>"

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Stop the transfer (within a second); temp files are removed, the cache stays valid."""
        if not self.done:
            self.state = "cancelling"
            self._scope.cancel()

    async def wait(self) -> str:
        """The local path once done; raises the download's error (or ClientClosedError)."""
        self._waiters += 1
        try:
            await self._done.wait()
        finally:
            self._waiters -= 1
            if self._waiters == 0 and not self.done and not self.background:
                if self._on_abandon is not None:
                    self._on_abandon(self)
                self.cancel()
                with anyio.CancelScope(shield=True):  # return once its cleanup is done
                    await self._done.wait()
        if self.error is not None:
            raise self.error
        assert self.path is not None
        return self.path

    async def _drive(self, fn: Callable[[int], Awaitable[str]]) -> None:
        try:
            with self._scope:
                try:
                    self.path = await fn(self.run_id)
                    self.state = "done"
                except HubError as exc:
                    self.error, self.state = exc, "failed"
                except Exception as exc:  # an unexpected bug reaches the callers, not the client
                    self.error, self.state = exc, "failed"
        finally:  # also when the client's task group itself is cancelled
            if self.path is None and self.error is None:
                self.state = "cancelled"
                self.error = ClientClosedError("the download was cancelled")
            self._done.set()


class SingleFlight:
    """At most one download per key in flight; finished ones stay listed until forgotten."""

    def __init__(self, next_run: Callable[[], int]) -> None:
        self._next_run = next_run
        self._by_key: dict[Hashable, Download] = {}
        self._by_run: dict[int, Download] = {}
        self.by_id: dict[str, Download] = {}

    def __repr__(self) -> str:
        return f"<SingleFlight [in flight: {len(self._by_key)}]>"

    def __len__(self) -> int:
        return len(self._by_key)

    def start(self, tg: TaskGroup, key: Hashable, fn: Callable[[int], Awaitable[str]], *,
              background: bool = False) -> Download:
        download = self._by_key.get(key)
        if download is None or download.done:
            download = Download(key, self._next_run(), background=background)
            download._on_abandon = self._forget
            self._by_key[key] = download
            self.by_id[download.id] = download
            self._by_run[download.run_id] = download
            self._prune()
            tg.start_soon(self._drive, download, fn)
        elif background:
            download.background = True
        return download

    async def _drive(self, download: Download, fn: Callable[[int], Awaitable[str]]) -> None:
        try:
            await download._drive(fn)
        finally:
            self._forget(download)

    def _forget(self, download: Download) -> None:
        if self._by_key.get(download.key) is download:
            del self._by_key[download.key]

    def _prune(self) -> None:
        """Remember at most KEEP_FINISHED finished downloads (oldest forgotten first)."""
        finished = [d for d in self.by_id.values() if d.done]
        for download in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.by_id[download.id]
            self._by_run.pop(download.run_id, None)

    def track(self, event: Event) -> None:
        """A bus callback: fold each event into its download's progress (cheap, synchronous)."""
        download = self._by_run.get(event.run_id)
        if download is not None:
            download.progress.apply(event)

    def cancel_all(self) -> None:
        for download in list(self._by_key.values()):
            download.cancel()
