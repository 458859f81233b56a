"""A script: download part of a repo with asyncio.run and a live display.

    HF_ENDPOINT=... python examples/script.py org/name "*.json" "*.safetensors"
"""

from __future__ import annotations

import asyncio
import sys

import hubasync


async def main(repo_id: str, patterns: list[str]) -> str:
    return await hubasync.snapshot_download(repo_id, allow_patterns=patterns or None,
                                            progress="auto")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: script.py REPO_ID [PATTERN ...]")
    print(asyncio.run(main(sys.argv[1], sys.argv[2:])))
