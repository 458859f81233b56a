"""`python -m hubasync.testing serve`: serve directories as repos from a separate process.

    python -m hubasync.testing serve --repo org/model=/data/model --repo dataset:org/ds=/data/ds

Each directory becomes one commit on `main` (LFS by the auto rule). Every file is hashed once
at start (streamed, in a few threads); big files are then served from disk with sendfile. One
JSON line `{"endpoint": ..., "cdn_endpoint": ...}` is printed when ready; SIGTERM or SIGINT stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Final

from hubasync._types import REPO_TYPES
from hubasync.testing._repo import FakeFile, FakeRepo, is_auto_lfs
from hubasync.testing._server import DEFAULT_TOKEN, FakeHub

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hubasync._types import RepoType

__all__ = ["main"]

_IN_MEMORY_LIMIT: Final = 1 << 20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hubasync.testing")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve directories as Hub repos")
    serve.add_argument("--repo", action="append", required=True, metavar="[TYPE:]ID=DIR",
                       help="serve DIR as repo ID (TYPE: model, dataset or space)")  # fmt: skip
    serve.add_argument("--token", action="append", default=None, help="a valid token")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--cdn-host", default="127.0.0.2")
    serve.add_argument("--cdn-port", type=int, default=0)
    serve.add_argument("--page-size", type=int, default=50)
    serve.add_argument("--url-ttl", type=float, default=3600.0)
    serve.add_argument("--gzip", action="store_true", help="gzip regular files when accepted")
    return parser


def _parse_spec(spec: str) -> tuple[RepoType, str, Path]:
    name, sep, directory = spec.partition("=")
    kind, colon, repo_id = name.rpartition(":")
    repo_type = kind if colon else "model"
    if not sep or not repo_id or repo_type not in REPO_TYPES:
        raise SystemExit(f"bad --repo {spec!r}: expected [model|dataset|space:]ID=DIR")
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise SystemExit(f"bad --repo {spec!r}: {directory!r} is not a directory")
    return repo_type, repo_id, path


def _load_file(path: Path, rel: str) -> FakeFile:
    size = path.stat().st_size
    lfs = is_auto_lfs(rel, size)
    if not lfs and size < _IN_MEMORY_LIMIT:
        return FakeFile(path.read_bytes(), lfs=False)
    return FakeFile.from_path(path, lfs=lfs)


def _scan(directory: Path) -> dict[str, FakeFile]:
    files: dict[str, FakeFile] = {}
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(names):
            path = Path(root, name)
            files[path.relative_to(directory).as_posix()] = _load_file(path, name)
    return files


def build_repo(spec: str) -> FakeRepo:
    """A repo with one commit on main holding every file under the directory, hashed."""
    repo_type, repo_id, directory = _parse_spec(spec)
    files = _scan(directory)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(FakeFile.compute_hashes, files.values()))
    repo = FakeRepo(repo_id, repo_type=repo_type)
    repo.commit(files, message=f"serve {directory}")
    repo.index_blobs()
    return repo


async def _serve(hub: FakeHub) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with hub:
        line = json.dumps({"endpoint": hub.endpoint, "cdn_endpoint": hub.cdn_endpoint})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    repos = [build_repo(spec) for spec in args.repo]
    hub = FakeHub(
        repos=repos,
        tokens=args.token or (DEFAULT_TOKEN,),
        page_size=args.page_size,
        cdn_host=args.cdn_host,
        url_ttl=args.url_ttl,
        gzip=args.gzip,
        host=args.host,
        port=args.port,
        cdn_port=args.cdn_port,
    )
    asyncio.run(_serve(hub))
    return 0
