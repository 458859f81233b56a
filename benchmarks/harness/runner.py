"""One participant's download, in its own process (so its RSS and CPU are its own).

    python -m harness.runner hubasync|official|hf_transfer --endpoint URL --repo ID --dest DIR
        [--revision REV] [--manifest FILE] [--set KEY=VALUE ...]

Imports happen first; only the download itself is timed. The last stdout line is JSON:
`{"seconds": ..., "path": ..., ...}` where `path` is the folder holding the repo's files (the
snapshot folder for the cache-based clients, DIR otherwise). `--set` overrides a HubConfig field
of hubasync (e.g. `--set chunk_size=8388608`). hf_transfer fetches one file per call: each file
of the manifest in turn, from the URL the Hub's HEAD redirect names (16 connections, 10 MiB
chunks), like huggingface_hub did with HF_HUB_ENABLE_HF_TRANSFER=1.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urljoin, urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

MiB: Final = 1024 * 1024
HF_TRANSFER_FILES: Final = 16
HF_TRANSFER_CHUNK: Final = 10 * MiB
_INT_FIELDS: Final = frozenset({"chunk_size", "range_threshold", "max_connections", "max_workers",
                                "disk_threads", "max_bandwidth"})
_BOOLS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness.runner")
    parser.add_argument("participant", choices=["hubasync", "official", "hf_transfer"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--dest", required=True, type=Path)
    parser.add_argument("--revision", default=None)
    parser.add_argument("--manifest", type=Path, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return parser


def _settings(pairs: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs as HubConfig overrides (ints, booleans and strings)."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        if key in _INT_FIELDS:
            settings[key] = int(raw)
        else:
            settings[key] = _BOOLS.get(raw.lower(), raw)
    return settings


def run_hubasync(args: argparse.Namespace) -> dict[str, Any]:
    from hubasync import HubClient, HubConfig

    config = HubConfig.from_env({}, endpoint=args.endpoint, cache_dir=str(args.dest),
                                token=False, progress="none", **_settings(args.set))

    async def download() -> dict[str, Any]:
        async with HubClient(config) as hub:
            path = await hub.snapshot_download(args.repo, revision=args.revision)
            return {"path": path, "client_requests": hub.request_count}

    result = _timed(lambda: asyncio.run(download()))
    result["settings"] = {"chunk_size": config.chunk_size, "max_connections":
                          config.max_connections, "max_workers": config.max_workers,
                          "range_threshold": config.range_threshold}
    return result


def run_official(args: argparse.Namespace) -> dict[str, Any]:
    from huggingface_hub import snapshot_download

    return _timed(lambda: {"path": snapshot_download(
        args.repo, cache_dir=str(args.dest), endpoint=args.endpoint, token=False, max_workers=8,
        revision=args.revision,
    )})


def run_hf_transfer(args: argparse.Namespace) -> dict[str, Any]:
    hf_transfer = importlib.import_module("hf_transfer")  # untyped: used as Any
    paths = [e["path"] for e in json.loads(args.manifest.read_text())["files"]]
    revision = quote(args.revision or "main", safe="")

    def download() -> dict[str, Any]:
        resolver = _Resolver(args.endpoint)
        for path in paths:
            url = resolver.location(f"/{args.repo}/resolve/{revision}/{quote(path)}")
            target = args.dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            hf_transfer.download(url=url, filename=str(target), max_files=HF_TRANSFER_FILES,
                                 chunk_size=HF_TRANSFER_CHUNK, parallel_failures=3,
                                 max_retries=5, headers=None)
        resolver.close()
        return {"path": str(args.dest), "client_requests": resolver.requests}

    result = _timed(download)
    result["settings"] = {"chunk_size": HF_TRANSFER_CHUNK, "max_connections": HF_TRANSFER_FILES}
    return result


class _Resolver:
    """HEAD on the Hub (one kept-alive connection), without following the redirect."""

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        parts = urlsplit(endpoint)
        self._conn = http.client.HTTPConnection(parts.hostname or "", parts.port)
        self.requests = 0

    def location(self, path: str) -> str:
        self._conn.request("HEAD", path, headers={"Accept-Encoding": "identity"})
        response = self._conn.getresponse()
        response.read()
        self.requests += 1
        url = urljoin(self._endpoint + "/", path)
        if response.status in (301, 302, 303, 307, 308):
            return urljoin(url, response.getheader("Location") or url)
        if response.status != 200:
            raise RuntimeError(f"HEAD {path}: HTTP {response.status}")
        return url

    def close(self) -> None:
        self._conn.close()


def _timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    result = fn()
    result["seconds"] = time.perf_counter() - started
    return result


RUNNERS: Final[dict[str, Callable[[argparse.Namespace], dict[str, Any]]]] = {
    "hubasync": run_hubasync,
    "official": run_official,
    "hf_transfer": run_hf_transfer,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = RUNNERS[args.participant](args)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
