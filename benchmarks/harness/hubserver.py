"""The benchmark server: a FakeHub in its own process, with request and byte counters.

    python -m harness.hubserver --repo DATASET_DIR [--repo ...]

Each DATASET_DIR holds `manifest.json` (see `data`) and `repo/`; it is served as one commit on
`main`, every file from disk with sendfile (LFS by FakeHub's auto rule, CDN redirects included).
The hashes come from the manifest, so nothing is hashed at start.

It prints one JSON line `{"endpoint": ..., "cdn_endpoint": ...}` when ready, then answers one JSON
line per command read on stdin:

- `stats`: requests seen since the last `clear` (total, per server, per method, per status) and
  `bytes`, the file bytes the kernel accepted from sendfile (all file content goes that way);
- `clear`: reset both counters;
- `faults`: from now on, answer 5% of GETs 429 (Retry-After: 1) and 5% 503, and cut 20% of the
  CDN's bodies after 1 MiB (the fault mix of issue 3; the rolls use `--seed`); `calm` stops that.
  While they are on, `stats` also counts the faults that fired and `early_after_429`: requests
  that reached a host more than IN_FLIGHT seconds after it answered 429, and before its
  Retry-After had passed (a request already on its way when the 429 was sent may arrive).

EOF on stdin, SIGTERM or SIGINT stop it. The byte counter lives in the event loop (a subclass
whose `sendfile` adds what was sent, even when the client vanished mid-way).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hubasync.testing import FakeHub, Fault
from hubasync.testing._repo import FakeFile, FakeRepo, is_auto_lfs, lfs_pointer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from harness.data import Manifest, ManifestEntry
    from hubasync.testing import RecordedRequest

IN_FLIGHT = 0.3  # seconds: a request sent before the client saw a 429 may still arrive
RETRY_AFTER = 1


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts the bytes every `sendfile` call got out."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_bytes = 0

    async def sendfile(
        self, transport: asyncio.WriteTransport, file: IO[bytes], offset: int = 0,
        count: int | None = None, *, fallback: bool = True,
    ) -> int:  # fmt: skip
        try:
            return await super().sendfile(transport, file, offset, count, fallback=fallback)
        finally:  # asyncio leaves the file position just after the last byte sent
            self.sent_bytes += max(0, file.tell() - offset)


def _git_oid(entry: ManifestEntry, lfs: bool) -> str | None:
    if not lfs:
        return entry["git_sha1"]
    pointer = lfs_pointer(entry["sha256"], entry["size"])
    header = b"blob %d\0" % len(pointer)
    return hashlib.sha1(header + pointer, usedforsecurity=False).hexdigest()


def build_repo(dataset_dir: Path) -> FakeRepo:
    """One commit on main with every file of the manifest, served from disk."""
    manifest: Manifest = json.loads((dataset_dir / "manifest.json").read_text())
    files: dict[str, FakeFile] = {}
    for entry in manifest["files"]:
        lfs = is_auto_lfs(entry["path"], entry["size"])
        files[entry["path"]] = FakeFile.from_path(
            dataset_dir / "repo" / entry["path"], lfs=lfs, sha256=entry["sha256"],
            git_oid=_git_oid(entry, lfs),
        )
    repo = FakeRepo(manifest["repo_id"])
    repo.commit(files, message=f"benchmark data {manifest['fingerprint'][:12]}")
    repo.index_blobs()
    return repo


def fault_mix() -> dict[str, Fault]:
    """The faults of issue 3's target: 429 and 503 on 5% of GETs each, 20% of CDN bodies cut."""
    return {
        "429": Fault.rate_limit(RETRY_AFTER, method="GET", probability=0.05),
        "503": Fault.server_error(503, method="GET", probability=0.05),
        "cut": Fault.drop(after_bytes=1024 * 1024, server="cdn", probability=0.2),
    }


def early_after_429(records: Sequence[RecordedRequest]) -> int:
    """Requests that reached a host after it answered 429 (allowing IN_FLIGHT for those already
    on their way) and before its Retry-After had passed."""
    early = 0
    for i, limited in enumerate(records):
        if limited.status != 429:
            continue
        opens = limited.time + RETRY_AFTER
        early += sum(1 for r in records[i + 1:] if r.server == limited.server
                     and limited.time + IN_FLIGHT < r.time < opens)
    return early


def stats(hub: FakeHub, loop: CountingLoop, faults: dict[str, Fault]) -> dict[str, Any]:
    records = hub.requests
    answer: dict[str, Any] = {
        "requests": len(records),
        "by_server": dict(Counter(r.server for r in records)),
        "by_method": dict(Counter(r.method for r in records)),
        "by_status": {str(k): v for k, v in Counter(r.status for r in records).items()},
        "bytes": loop.sent_bytes,
    }
    if faults:
        answer["faults"] = {name: hub.fault_hits(f) for name, f in faults.items()}
        answer["early_after_429"] = early_after_429(records)
    return answer


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _read_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Forward stdin lines to the loop (a daemon thread: never holds up the exit)."""
    try:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)
    except RuntimeError:  # the loop closed first
        pass


async def _commands(hub: FakeHub, loop: CountingLoop) -> None:
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    threading.Thread(target=_read_lines, args=(loop, queue), daemon=True).start()
    faults: dict[str, Fault] = {}
    while (line := await queue.get()) is not None:
        command = line.strip()
        if command == "stats":
            _reply(stats(hub, loop, faults))
        elif command == "clear":
            hub.clear_requests()
            loop.sent_bytes = 0
            _reply({"ok": True})
        elif command == "faults":
            hub.clear_faults()
            faults = fault_mix()
            for fault in faults.values():
                hub.add_fault(fault)
            _reply({"ok": True})
        elif command == "calm":
            hub.clear_faults()
            faults = {}
            _reply({"ok": True})
        else:
            _reply({"error": f"unknown command {command!r}"})


async def _serve(hub: FakeHub) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, CountingLoop)
    async with hub:
        _reply({"endpoint": hub.endpoint, "cdn_endpoint": hub.cdn_endpoint})
        commands = asyncio.ensure_future(_commands(hub, loop))
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([commands, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.hubserver")
    parser.add_argument("--repo", action="append", required=True, type=Path,
                        metavar="DATASET_DIR")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="for the fault rolls")
    args = parser.parse_args(argv)
    hub = FakeHub(repos=[build_repo(d) for d in args.repo], page_size=args.page_size,
                  seed=args.seed)
    with asyncio.Runner(loop_factory=CountingLoop) as runner:
        runner.run(_serve(hub))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
