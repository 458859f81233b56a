"""`hubasync` command line: `download` and `demo`.

The downloaded path is the last line on stdout; progress and errors go to stderr. An error is one
line and a non-zero exit status (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Final

import anyio
import anyio.to_thread

from hubasync._api import hf_hub_download, snapshot_download
from hubasync._events import Event, FileDone, FileFailed, PlanReady, Retrying, RunDone
from hubasync._exceptions import HubError, UsageError
from hubasync._types import PROGRESS_MODES

if TYPE_CHECKING:
    from collections.abc import Sequence

EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubasync", description="Fast, resumable downloads from the Hugging Face Hub."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="download files or a whole repo into the cache")
    dl.add_argument("repo_id")
    dl.add_argument("filenames", nargs="*", help="files to fetch (default: the whole repo)")
    dl.add_argument("--repo-type", choices=["model", "dataset", "space"], default="model")
    dl.add_argument("--revision", default=None, help="branch, tag, commit or refs/pr/N")
    dl.add_argument("--include", nargs="+", default=None, metavar="PAT",
                    help="glob patterns of files to fetch")
    dl.add_argument("--exclude", nargs="+", default=None, metavar="PAT",
                    help="glob patterns of files to skip")
    dl.add_argument("--cache-dir", default=None)
    dl.add_argument("--local-dir", default=None)
    dl.add_argument("--token", default=None, help="defaults to HF_TOKEN or the token file")
    dl.add_argument("--max-workers", type=int, default=None)
    dl.add_argument("--force-download", action="store_true")
    dl.add_argument("--progress", choices=PROGRESS_MODES, default=None)
    dl.add_argument("--quiet", action="store_true", help="print only the final path")
    dl.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    demo = sub.add_parser("demo", help="download a generated repo from an in-process FakeHub")
    demo.add_argument("--size-mib", type=int, default=256, help="total size of the demo repo")
    demo.add_argument("--quiet", action="store_true")
    demo.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return parser


class _LogProgress:
    """Plain progress lines on stderr (the live display comes with the display module)."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, event: Event) -> None:
        match event:
            case PlanReady(total_files=n, total_bytes=b, cached_files=c):
                _err(f"plan: {n} files, {b / 1e6:.1f} MB ({c} already cached)")
            case FileDone(path=p, size=s, from_cache=False, seconds=sec):
                _err(f"done: {p} ({s / 1e6:.1f} MB in {sec:.1f}s)")
            case FileFailed(path=p, message=m):
                _err(f"failed: {p}: {m}")
            case Retrying(path=p, delay=d, reason=r):
                _err(f"retrying {p} in {d:.1f}s: {r}")
            case RunDone(bytes_downloaded=b, seconds=sec):
                speed = b / sec / 1e6 if sec > 0 else 0.0
                _err(f"finished: {b / 1e6:.1f} MB downloaded in {sec:.1f}s ({speed:.1f} MB/s)")
            case _:
                pass


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _download(args: argparse.Namespace) -> str:
    quiet = args.quiet or args.progress == "none"
    progress = None if quiet else _LogProgress()
    token = args.token
    if len(args.filenames) == 1 and not (args.include or args.exclude):
        return await hf_hub_download(
            args.repo_id, args.filenames[0], repo_type=args.repo_type, revision=args.revision,
            cache_dir=args.cache_dir, local_dir=args.local_dir, token=token,
            force_download=args.force_download, progress=progress,
        )
    allow = list(args.filenames) or args.include
    return await snapshot_download(
        args.repo_id, repo_type=args.repo_type, revision=args.revision, cache_dir=args.cache_dir,
        local_dir=args.local_dir, allow_patterns=allow, ignore_patterns=args.exclude,
        token=token, max_workers=args.max_workers, force_download=args.force_download,
        progress=progress,
    )


async def _demo(args: argparse.Namespace) -> str:
    from hubasync._demo import demo_repo, run_demo  # the fake server loads only for the demo

    progress = None if args.quiet else _LogProgress()
    cache = await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="hubasync-demo-"))
    _err(f"demo: serving a {args.size_mib} MiB repo from an in-process FakeHub; cache: {cache}")
    repo = await anyio.to_thread.run_sync(
        lambda: demo_repo(total_bytes=args.size_mib * 1024 * 1024)
    )
    return await run_demo(repo, cache_dir=cache, progress=progress)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    runner = {"download": _download, "demo": _demo}[args.command]
    try:
        path: str = anyio.run(runner, args)
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except (HubError, OSError) as exc:
        if args.debug:
            raise
        _err(f"error: {type(exc).__name__}: {exc}".splitlines()[0])
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_ERROR
    print(os.fspath(path), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
