"""Who runs, and the command line of each: hubasync, the official client, hf_transfer, aria2c.

hubasync, the official client and hf_transfer run through `harness.runner` (a Python child);
aria2c runs as itself, fed an input file of the Hub's resolve URLs (it follows the CDN redirect
on its own, as people use it: `aria2c -x16 -s16 <resolve URL>`).
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

from harness.procs import python_module

if TYPE_CHECKING:
    from pathlib import Path

PARTICIPANTS: Final = ("hubasync", "official", "hf_transfer", "aria2c")
#: Participants that keep a Hugging Face cache (the warm re-run only applies to them).
CACHE_CLIENTS: Final = frozenset({"hubasync", "official"})
ARIA2C_CONNECTIONS: Final = 16


def unavailable(name: str) -> str | None:
    """Why `name` cannot run here (None when it can)."""
    if name == "hf_transfer" and importlib.util.find_spec("hf_transfer") is None:
        return "hf_transfer is not installed (pip install hf_transfer)"
    if name == "aria2c" and shutil.which("aria2c") is None:
        return "aria2c is not installed (apt-get install aria2)"
    return None


@dataclass(frozen=True)
class Job:
    """One download to run: who, from where, into which (fresh or warm) folder."""

    participant: str
    endpoint: str
    repo_id: str
    dest: Path
    manifest: Path
    files: tuple[str, ...]
    revision: str | None = None
    settings: tuple[str, ...] = ()

    def at(self, revision: str | None) -> Job:
        return replace(self, revision=revision)

    @property
    def cache_folder(self) -> Path:
        """The repo's folder in the HF cache under `dest` (cache clients only)."""
        return self.dest / f"models--{self.repo_id.replace('/', '--')}"


def command(job: Job) -> list[str]:
    """The command line for `job` (for aria2c, this writes its input file beside `dest`)."""
    if job.participant == "aria2c":
        return _aria2c(job)
    args = [job.participant, "--endpoint", job.endpoint, "--repo", job.repo_id,
            "--dest", str(job.dest), "--manifest", str(job.manifest)]
    if job.revision:
        args += ["--revision", job.revision]
    if job.participant == "hubasync":
        for setting in job.settings:
            args += ["--set", setting]
    return python_module("harness.runner", *args)


def _aria2c(job: Job) -> list[str]:
    revision = quote(job.revision or "main", safe="")
    base = f"{job.endpoint}/{job.repo_id}/resolve/{revision}"
    input_file = job.dest.with_name(job.dest.name + ".aria2-input")
    input_file.write_text("".join(f"{base}/{quote(p)}\n  out={p}\n" for p in job.files))
    return [
        "aria2c", f"-x{ARIA2C_CONNECTIONS}", f"-s{ARIA2C_CONNECTIONS}",
        f"-j{min(ARIA2C_CONNECTIONS, len(job.files))}", "--continue=true",
        "--file-allocation=none", "--auto-file-renaming=false", "--allow-overwrite=true",
        "--console-log-level=error", "--summary-interval=0", "--download-result=hide",
        "--max-tries=5", "--retry-wait=1", "-d", str(job.dest), "-i", str(input_file),
    ]
