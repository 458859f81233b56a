"""Where a downloaded file lands: the shared cache, or a `local_dir`.

Each destination names its temp files (a process-unique one, and the resumable files of an
interrupted download) and answers three questions, all as blocking functions that run off the loop:
``check`` (read-only: is it there already, can it be materialised without a download, or must it be
fetched?), ``materialize`` and ``commit_steps`` (the writes). Only the cache writer calls the
writes, so every final path is created by one coroutine, one atomic step at a time. Stale partial
downloads are collected by ``collect_stale``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Literal, NamedTuple

from hubasync._cache_layout import (
    LocalDirLayout,
    RepoCache,
    format_local_metadata,
    parse_local_metadata,
    relative_link_target,
)
from hubasync._fileio import (
    copy_atomic,
    hash_file,
    move_into_place,
    read_text,
    symlink_atomic,
    symlinks_supported,
    write_atomic,
)
from hubasync._partial import collect_stale

if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Set as AbstractSet

    from hubasync._cache_layout import ResumeFiles
    from hubasync._models import RemoteFile

log = logging.getLogger("hubasync")

Action = Literal["done", "materialize", "download"]


class Check(NamedTuple):
    action: Action
    path: str
    materialize: Callable[[], None] | None = None


class CacheDestination:
    """`<cache>/<repo>/snapshots/<commit>/<path>`, backed by content-addressed blobs."""

    def __init__(self, cache: RepoCache, commit: str, *, disable_symlinks: bool) -> None:
        self.cache = cache
        self.commit_hash = commit
        self._disable_symlinks = disable_symlinks
        self._symlinks: bool | None = None

    def __repr__(self) -> str:
        return f"<CacheDestination {self.cache.storage} @ {self.commit_hash[:8]}>"

    @property
    def root(self) -> str:
        return self.cache.snapshot(self.commit_hash)

    def use_symlinks(self) -> bool:
        if self._symlinks is None:
            self._symlinks = not self._disable_symlinks and symlinks_supported(
                self.cache.scratch
            )
            if not self._symlinks:
                log.warning("symlinks are not used in %s: files are copied into snapshots "
                            "(more disk space is used)", self.cache.cache_dir)
        return self._symlinks

    def temp_path(self, remote: RemoteFile) -> str:
        return self.cache.blob_temp(remote.etag)

    def collect_stale(self, keep: AbstractSet[str]) -> None:
        """Drop this repo's partial downloads untouched for a week, but those of the blobs in
        `keep` (see `collect_stale`)."""
        collect_stale(self.cache.scratch, self.cache.resume_files, keep=keep)

    def resume_files(self, remote: RemoteFile) -> ResumeFiles:
        return self.cache.resume_files(remote.etag)

    def lock_path(self, remote: RemoteFile) -> str:
        return self.cache.lock(remote.etag)

    def check(self, remote: RemoteFile, *, force: bool) -> Check:
        pointer = self.cache.pointer(self.commit_hash, remote.path)
        if force:
            return Check("download", pointer)
        if os.path.exists(pointer):
            return Check("done", pointer)
        blob = self.cache.blob(remote.etag)
        if os.path.exists(blob):
            return Check("materialize", pointer, lambda: self._link(blob, pointer))
        return Check("download", pointer)

    def _link(self, blob: str, pointer: str) -> None:
        if self.use_symlinks():
            symlink_atomic(relative_link_target(blob, pointer), pointer,
                           scratch=self.cache.scratch)
        else:
            copy_atomic(blob, pointer, scratch=self.cache.scratch)

    def commit_steps(self, remote: RemoteFile,
                     temp: str) -> tuple[Callable[[], None], Callable[[], str]]:
        """The commit of a verified temp file, as two blocking steps for the cache writer
        (building them does no I/O): the blob, then the pointer to it. A crash in between
        leaves an unreferenced blob, never a dangling link."""
        pointer = self.cache.pointer(self.commit_hash, remote.path)
        blob = self.cache.blob(remote.etag)

        def place() -> None:  # without symlinks (degraded mode) the new blob *is* the file
            move_into_place(temp, blob if self.use_symlinks() else pointer)

        def link() -> str:
            if self.use_symlinks():
                symlink_atomic(relative_link_target(blob, pointer), pointer,
                               scratch=self.cache.scratch)
            return pointer

        return place, link


class LocalDirDestination:
    """`<local_dir>/<path>` real files, with `.cache/huggingface/download/*.metadata`."""

    def __init__(self, layout: LocalDirLayout, commit: str,
                 cache_source: CacheDestination | None = None) -> None:
        self.layout = layout
        self.commit_hash = commit
        self._cache_source = cache_source

    def __repr__(self) -> str:
        return f"<LocalDirDestination {self.layout.local_dir} @ {self.commit_hash[:8]}>"

    @property
    def root(self) -> str:
        return self.layout.local_dir

    def temp_path(self, remote: RemoteFile) -> str:
        return self.layout.temp(remote.path, remote.etag)

    def collect_stale(self, keep: AbstractSet[str]) -> None:
        """Nothing: a local_dir's partial downloads are named by file path, not by blob, and
        are cleaned when that file is downloaded again."""

    def resume_files(self, remote: RemoteFile) -> ResumeFiles:
        return self.layout.resume_files(remote.path, remote.etag)

    def lock_path(self, remote: RemoteFile) -> str:
        return self.layout.lock(remote.path)

    def read_metadata(self, filename: str) -> tuple[str, str, float] | None:
        """(commit, etag, timestamp) when trusted: the file exists, unmodified since."""
        meta_path = self.layout.metadata(filename)
        text = read_text(meta_path)
        if text is None:
            return None
        parsed = parse_local_metadata(text)
        if parsed is None:
            log.warning("removing unreadable download metadata %s", meta_path)
            with contextlib.suppress(OSError):
                os.unlink(meta_path)
            return None
        try:
            mtime = os.stat(self.layout.file(filename)).st_mtime
        except OSError:
            return None
        return parsed if mtime - 1 <= parsed[2] else None

    def check(self, remote: RemoteFile, *, force: bool) -> Check:
        path = self.layout.file(remote.path)
        if force:
            return Check("download", path)
        meta = self.read_metadata(remote.path)
        refresh = lambda: self._write_metadata(remote)  # noqa: E731
        if meta is not None and meta[1] == remote.etag:
            if meta[0] == self.commit_hash:
                return Check("done", path)
            return Check("materialize", path, refresh)
        if (meta is None and len(remote.etag) == 64 and os.path.isfile(path)
                and hash_file(path, remote.etag) == remote.etag):
            return Check("materialize", path, refresh)
        if self._cache_source is not None:
            pointer = self._cache_source.cache.pointer(self._cache_source.commit_hash,
                                                       remote.path)
            if os.path.isfile(pointer):
                return Check("materialize", path, lambda: self._copy_from(pointer, remote))
        return Check("download", path)

    def _copy_from(self, source: str, remote: RemoteFile) -> None:
        copy_atomic(source, self.layout.file(remote.path))
        self._write_metadata(remote)

    def _write_metadata(self, remote: RemoteFile) -> None:
        data = format_local_metadata(self.commit_hash, remote.etag, time.time())
        write_atomic(self.layout.metadata(remote.path), data.encode(), durable=False)

    def commit_steps(self, remote: RemoteFile,
                     temp: str) -> tuple[Callable[[], None], Callable[[], str]]:
        """The commit of a verified temp file, as two blocking steps for the cache writer: the
        file, then its metadata."""
        path = self.layout.file(remote.path)

        def record() -> str:
            self._write_metadata(remote)
            return path

        return lambda: move_into_place(temp, path), record


Destination = CacheDestination | LocalDirDestination
