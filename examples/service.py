"""A long-running worker: takes repo ids from a queue, downloads them, logs structured progress.

    HF_ENDPOINT=... python examples/service.py org/a org/b     (or one repo id per stdin line)

Every download shares one HubClient. Progress goes to the standard `logging` module as
records with fields (`event`, `path`, `bytes`, ...), so any log pipeline can read them.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

import hubasync

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Iterable

log = logging.getLogger("examples.service")


def log_event(event: hubasync.Event) -> None:
    """A cheap bus callback: one structured record per milestone (progress is not per chunk)."""
    match event:
        case hubasync.PlanReady():
            log.info("plan %s", event.repo_id, extra={"event": "plan", "run": event.run_id,
                     "files": event.total_files, "bytes": event.total_bytes,
                     "cached_files": event.cached_files})
        case hubasync.FileDone():
            log.info("file %s", event.path, extra={"event": "file_done", "run": event.run_id,
                     "path": event.path, "bytes": event.size, "from_cache": event.from_cache,
                     "seconds": round(event.seconds, 3)})
        case hubasync.FileFailed():
            log.warning("failed %s: %s", event.path, event.message,
                        extra={"event": "file_failed", "run": event.run_id, "path": event.path})
        case hubasync.RunDone():
            log.info("run done", extra={"event": "run_done", "run": event.run_id, "ok": event.ok,
                     "bytes": event.bytes_downloaded, "seconds": round(event.seconds, 3)})
        case _:
            pass


async def serve(requests: AsyncIterable[str], hub: hubasync.HubClient) -> dict[str, str]:
    """Download every requested repo (at most 4 at a time); return repo id -> path or error."""
    results: dict[str, str] = {}
    limiter = anyio.CapacityLimiter(4)

    async def handle(repo_id: str) -> None:
        async with limiter:
            try:
                results[repo_id] = await hub.snapshot_download(repo_id)
            except hubasync.HubError as exc:
                results[repo_id] = f"error: {type(exc).__name__}: {exc}"
                log.error("download of %s failed", repo_id, extra={"event": "error"})

    async with anyio.create_task_group() as tg:
        async for repo_id in requests:
            tg.start_soon(handle, repo_id)
    return results


async def _from(items: Iterable[str]) -> AsyncIterator[str]:
    for item in items:
        if item.strip():
            yield item.strip()


async def main(argv: list[str]) -> None:
    config = await anyio.to_thread.run_sync(hubasync.HubConfig.from_env)
    async with hubasync.HubClient(config) as hub:
        hub.bus.add_callback(log_event)
        lines = argv or await anyio.to_thread.run_sync(sys.stdin.readlines)
        for repo_id, outcome in (await serve(_from(lines), hub)).items():
            print(f"{repo_id}\t{outcome}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    anyio.run(main, sys.argv[1:])
