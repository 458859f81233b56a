"""A child process for tests/test_crash_safety.py: one hubasync download, killed at will.

    python tests/_download_child.py '{"endpoint": ..., "cache_dir": ..., "repo_id": ...}'

Optional keys: ``repo_type``, ``revision``, ``filename`` (download that one file instead of a
snapshot) and ``config`` (HubConfig overrides, e.g. ``{"max_bandwidth": 4194304}``). On success
it prints the returned path as its last line on stdout.

``die_at`` simulates a SIGKILL at an exact point of the commit sequence: ``{"dest": "/refs/",
"when": "before"}`` ends the process with ``os._exit`` (no cleanup, no ``finally``) right before
(or right after) the first ``os.replace`` whose destination contains ``dest``. Every final path
of the cache is created by an ``os.replace``, so these are the interesting instants.
``"call": "symlink"`` watches ``os.symlink`` instead (the link path is its second argument).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import hubasync

DIED = 97  # the exit status of a simulated kill


def _die_at(call: str, dest: str, when: str) -> None:
    real = getattr(os, call)

    def wrapper(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        hit = dest in os.fsdecode(dst)
        if hit and when == "before":
            os._exit(DIED)
        real(src, dst, *args, **kwargs)
        if hit:
            os._exit(DIED)

    setattr(os, call, wrapper)


async def main(args: dict[str, Any]) -> str:
    config = hubasync.HubConfig.from_env(
        {}, endpoint=args["endpoint"], cache_dir=args["cache_dir"], token=False,
        **args.get("config", {}),
    )
    async with hubasync.HubClient(config) as client:
        if "filename" in args:
            return await client.hf_hub_download(
                args["repo_id"], args["filename"], repo_type=args.get("repo_type"),
                revision=args.get("revision"),
            )
        return await client.snapshot_download(
            args["repo_id"], repo_type=args.get("repo_type"), revision=args.get("revision"),
        )


if __name__ == "__main__":
    options = json.loads(sys.argv[1])
    if "die_at" in options:
        die_at = options["die_at"]
        _die_at(die_at.get("call", "replace"), die_at["dest"], die_at.get("when", "before"))
    print(asyncio.run(main(options)), flush=True)
