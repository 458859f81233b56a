"""The ``hubasync`` command line: ``download``, ``ls``, ``info`` and ``demo``.

Made for shells: results on stdout (the downloaded path is the last line, or one JSON object
with ``--json``), progress and errors on stderr. An error is one line, never a traceback unless
``--debug`` (accepted anywhere on the line) asks for it. Exit status: 0 success, 1 a Hub,
network or disk error, 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import traceback
from typing import TYPE_CHECKING, Final

import anyio
import anyio.to_thread

from hubasync._api import open_client
from hubasync._cli_output import DownloadRecorder, format_info, format_listing, result_json
from hubasync._exceptions import HubError, UsageError
from hubasync._models import RepoFile
from hubasync._progress import LOG_FORMAT
from hubasync._types import PROGRESS_MODES

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from hubasync._client import HubClient

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubasync", description="Fast, resumable downloads from the Hugging Face Hub. "
        "Start with `hubasync demo`: no network or token needed.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _download_parser(sub.add_parser("download", parents=[common],
                                    help="download files or a whole repo into the cache"))
    for name, help_text in (("ls", "list a repo's files with their sizes"),
                            ("info", "show a repo's commit, dates, access and size")):
        cmd = sub.add_parser(name, parents=[common], help=help_text)
        _repo_arguments(cmd)
        cmd.add_argument("--token", default=None, help="defaults to HF_TOKEN or the token file")
        cmd.add_argument("--json", action="store_true", help="print JSON")
    demo = sub.add_parser("demo", parents=[common],
                          help="watch a download from an in-process FakeHub (no network)")
    demo.add_argument("--size-mib", type=int, default=256, help="total size of the demo repo")
    demo.add_argument("--max-bandwidth", type=_rate, default=None, metavar="RATE",
                      help=_RATE_HELP)
    demo.add_argument("--progress", choices=PROGRESS_MODES, default=None)
    demo.add_argument("--quiet", action="store_true", help="print only the final path")
    return parser


def _repo_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("repo_id")
    cmd.add_argument("--repo-type", choices=["model", "dataset", "space"], default="model")
    cmd.add_argument("--revision", default=None, help="branch, tag, commit or refs/pr/N")


def _download_parser(dl: argparse.ArgumentParser) -> None:
    _repo_arguments(dl)
    dl.add_argument("filenames", nargs="*", help="files to fetch (default: the whole repo)")
    dl.add_argument("--include", nargs="+", default=None, metavar="PAT",
                    help="glob patterns of files to fetch")
    dl.add_argument("--exclude", nargs="+", default=None, metavar="PAT",
                    help="glob patterns of files to skip")
    dl.add_argument("--cache-dir", default=None)
    dl.add_argument("--local-dir", default=None)
    dl.add_argument("--token", default=None, help="defaults to HF_TOKEN or the token file")
    dl.add_argument("--max-workers", type=int, default=None)
    dl.add_argument("--max-bandwidth", type=_rate, default=None, metavar="RATE",
                    help=_RATE_HELP)
    dl.add_argument("--force-download", action="store_true")
    dl.add_argument("--progress", choices=PROGRESS_MODES, default=None,
                    help="default: HF_PROGRESS_MODE, else bars on a terminal, logs otherwise")
    dl.add_argument("--quiet", action="store_true", help="print only the final path")
    dl.add_argument("--json", action="store_true",
                    help="print a JSON result (path, repo, commit, files, bytes)")


_RATE_HELP: Final = "cap on bytes per second, shared by all connections (e.g. 500K, 20M, 1G)"
_UNITS: Final = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def _rate(text: str) -> int:
    """`20M` -> 20971520 (binary units, an optional trailing B or /s)."""
    value = text.strip().upper().removesuffix("/S").removesuffix("B")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    number = value.removesuffix(unit) if unit else value
    try:
        rate = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 500K, 20M)") from None
    if not rate >= 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is below the least rate, 1K per second")
    return int(rate)


def _progress(args: argparse.Namespace) -> str | None:
    return "none" if args.quiet else args.progress


# -- commands (each returns what to print on stdout) ----------------------------------------------


async def _download(args: argparse.Namespace) -> str:
    if args.max_workers is not None and args.max_workers < 1:
        raise UsageError("--max-workers must be >= 1")
    extra = {"max_workers": args.max_workers} if args.max_workers else {}
    recorder = DownloadRecorder()
    async with open_client(token=args.token, endpoint=None, cache_dir=args.cache_dir,
                           progress=_progress(args), max_bandwidth=args.max_bandwidth,
                           **extra) as hub:
        hub.bus.add_callback(recorder)
        path = await _fetch(hub, args)
    if args.json:
        return await anyio.to_thread.run_sync(lambda: result_json(path, args, recorder))
    return path


async def _fetch(hub: HubClient, args: argparse.Namespace) -> str:
    if len(args.filenames) == 1 and not (args.include or args.exclude):
        return await hub.hf_hub_download(
            args.repo_id, args.filenames[0], repo_type=args.repo_type, revision=args.revision,
            local_dir=args.local_dir, force_download=args.force_download,
        )
    return await hub.snapshot_download(
        args.repo_id, repo_type=args.repo_type, revision=args.revision,
        local_dir=args.local_dir, allow_patterns=list(args.filenames) or args.include,
        ignore_patterns=args.exclude, max_workers=args.max_workers,
        force_download=args.force_download,
    )


async def _ls(args: argparse.Namespace) -> str:
    async with open_client(token=args.token, endpoint=None, cache_dir=None,
                           progress="none") as hub:
        entries = await hub.list_repo_tree(args.repo_id, recursive=True,
                                           repo_type=args.repo_type, revision=args.revision)
    files = [e for e in entries if isinstance(e, RepoFile)]
    text, footer = format_listing(files, as_json=args.json)
    if footer and not args.json:
        _err(footer)
    return text


async def _info(args: argparse.Namespace) -> str:
    async with open_client(token=args.token, endpoint=None, cache_dir=None,
                           progress="none") as hub:
        info = await hub.repo_info(args.repo_id, repo_type=args.repo_type,
                                   revision=args.revision)
        entries = await hub.list_repo_tree(args.repo_id, recursive=True,
                                           repo_type=args.repo_type, revision=info.sha)
    files = [e for e in entries if isinstance(e, RepoFile)]
    return format_info(info, files, revision=args.revision, as_json=args.json)


async def _demo(args: argparse.Namespace) -> str:
    from hubasync._demo import demo_repo, run_demo  # the fake server loads only for the demo

    if args.size_mib < 1:
        raise UsageError("--size-mib must be >= 1")
    cache = await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="hubasync-demo-"))
    if not args.quiet:
        _err(f"demo: serving a {args.size_mib} MiB repo from an in-process FakeHub "
             f"(no network, no token); cache: {cache}")
    repo = await anyio.to_thread.run_sync(
        lambda: demo_repo(total_bytes=args.size_mib * 1024 * 1024)
    )
    return await run_demo(repo, cache_dir=cache, progress=_progress(args),
                          max_bandwidth=args.max_bandwidth)


_COMMANDS: Final[dict[str, Callable[[argparse.Namespace], Awaitable[str]]]] = {
    "download": _download, "ls": _ls, "info": _info, "demo": _demo,
}


# -- the program ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already explained)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.debug:
        _debug_logging()
    try:
        output = anyio.run(_COMMANDS[args.command], args)
    except BaseException as exc:
        return _failed(exc, debug=args.debug)
    return _print(output)


def _failed(exc: BaseException, *, debug: bool) -> int:
    interrupted = isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None)
    if interrupted:
        _err("interrupted")
        return EXIT_INTERRUPTED
    if not isinstance(exc, Exception):  # SystemExit and the like go on
        raise exc
    if debug:
        traceback.print_exception(exc)
    _err(_error_line(exc))
    return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_ERROR


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, HubError | OSError):
        text = f"{type(exc).__name__}: {exc}".strip()
    else:
        text = f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)"
    lines = text.splitlines()
    return f"error: {lines[0] if lines else type(exc).__name__}"


def _print(output: str) -> int:
    try:
        if output:
            print(output, flush=True)
    except BrokenPipeError:  # `hubasync ls ... | head`: the reader is gone, not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK


def _debug_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("hubasync")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
