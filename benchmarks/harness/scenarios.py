"""The scenarios: cold downloads (one big file, shards, small files), warm re-runs, a resume.

Every cold run starts from an empty destination (the previous one removed, then `sync` so no
write-back of an earlier run lands in this one), after a pause (`Bench.settle`) that lets the
memory freed by that removal settle: in a VM with free page reporting (a virtio balloon), pages
freed for more than about two seconds are handed back to the host and cost a host fault on their
next use, so without the pause a participant that starts and finishes quickly reuses host-backed
pages that a slower one does not get. Repeats go round-robin over the participants, starting
one further along each time, so a slow drift of the machine, or whatever the first run after a
scenario's setup pays, hits everyone alike. Every run that exits 0 has each of its files
hashed (sha256) against the source: a run with a wrong byte is not `ok` and never counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from harness.data import manifest_path, verify_tree
from harness.participants import CACHE_CLIENTS, PARTICIPANTS, Job, command, unavailable
from harness.procs import bytes_on_disk, run_child
from harness.results import Group, Run

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from harness.data import Dataset, Manifest
    from harness.procs import ChildResult
    from harness.server import HubServer, ServerStats

SETTLE_SECONDS: Final = 0.3  # after a SIGKILL, for the server to see its sockets close
_NOT_FOR_MANY_FILES: Final = ("hf_transfer downloads one file per call: not run on many "
                              "small files (it is a big-file accelerator)")
_NO_CACHE: Final = "keeps no Hugging Face cache: a warm re-run does not apply"


@dataclass
class Bench:
    """Everything a scenario needs: the server, the data, who runs, and how often."""

    server: HubServer
    env: Mapping[str, str]
    data_dir: Path
    scratch: Path
    datasets: Mapping[str, Dataset]
    manifests: Mapping[str, Manifest]
    participants: tuple[str, ...]
    repeats: int
    timeout: float
    settings: tuple[str, ...] = ()
    settle: float = 0.0  # seconds between emptying the destination and starting a run

    def job(self, participant: str, dataset: str) -> Job:
        ds = self.datasets[dataset]
        return Job(participant=participant, endpoint=self.server.endpoint, repo_id=ds.repo_id,
                   dest=self.scratch / participant, manifest=manifest_path(self.data_dir, ds),
                   files=tuple(f.path for f in ds.files), settings=self.settings)

    def eligible(self, group: Group, skip: Mapping[str, str], repeat: int = 0) -> list[str]:
        """The participants that run in `group`, the others noted as skipped with why; the order
        turns by one each repeat, so no participant is always the first after a deletion."""
        chosen = []
        for name in self.participants:
            reason = skip.get(name) or unavailable(name)
            if reason:
                group.skipped[name] = reason
            else:
                chosen.append(name)
        turn = repeat % len(chosen) if chosen else 0
        return chosen[turn:] + chosen[:turn]


def fresh(dest: Path, settle: float = 0.0, trash: Path | None = None) -> None:
    """An empty destination and no other participant's output left (their dirty pages would
    be written back during this run), then `sync`, then `settle` seconds of rest.

    With `trash`, the earlier outputs are moved there instead of deleted (one rename each), and
    the caller deletes the trash once its runs are over: ext4 skips inodes freed in the last
    60 s (300 s while their inode table block is dirty) when it allocates new ones, so deleting
    the previous run's 6,000 small files right before the next run made that run pay for it.
    """
    for sibling in dest.parent.glob("*"):
        if sibling.is_dir() and sibling.name in PARTICIPANTS:
            if trash is None:
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                trash.mkdir(parents=True, exist_ok=True)
                sibling.rename(trash / f"{len(list(trash.iterdir()))}-{sibling.name}")
    dest.mkdir(parents=True)
    os.sync()
    time.sleep(settle)


def measure(bench: Bench, job: Job, repeat: int) -> Run:
    """Run `job` once as it stands (the caller decides whether `dest` is fresh) and verify."""
    bench.server.clear()
    child = run_child(command(job), bench.env, timeout=bench.timeout)
    return to_run(bench, job, child, bench.server.stats(), repeat)


def to_run(bench: Bench, job: Job, child: ChildResult, stats: ServerStats, repeat: int) -> Run:
    report = _report(child)
    problems = _problems(bench, job, child, report)
    extra = _extras(report)
    if stats.faults:
        extra.update({f"faults_{name}": n for name, n in stats.faults.items()})
        extra["early_after_429"] = stats.early_after_429
    return Run(
        participant=job.participant, repeat=repeat, ok=not problems,
        wall_s=float(report.get("seconds", child.wall_s)), process_s=child.wall_s,
        cpu_s=child.cpu_s, rss_mib=child.max_rss_kib / 1024, requests=stats.requests,
        server_bytes=stats.bytes, problems=problems, extra=extra,
    )


def _report(child: ChildResult) -> dict[str, Any]:
    if not child.ok:
        return {}
    try:
        report: object = json.loads(child.last_line())
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


def _extras(report: Mapping[str, Any]) -> dict[str, Any]:
    extra = {k: v for k, v in report.items() if k not in ("seconds", "path", "settings")}
    extra.update(report.get("settings", {}))
    return extra


def _problems(bench: Bench, job: Job, child: ChildResult, report: Mapping[str, Any]) -> list[str]:
    if child.killed or child.returncode != 0:
        return [f"exit status {child.returncode}: {child.stderr.strip()[-600:]}"]
    root = Path(report["path"]) if "path" in report else job.dest
    return verify_tree(root, bench.manifests[job.repo_id])


def cold(bench: Bench, name: str, dataset: str, title: str,
         skip: Mapping[str, str] | None = None, *, many_files: bool = False,
         under_faults: bool = False) -> list[Group]:
    """`bench.repeats` downloads into an empty folder by each participant.

    With `many_files`, earlier outputs are set aside and deleted after the last run (see
    `fresh`), so no run allocates inodes right after thousands were freed. With `under_faults`,
    the server's fault mix is on during each run, and a participant other than hubasync that
    fails is a finding (`Group.may_fail`), not a broken run."""
    group = Group(name, title, may_fail=under_faults)
    trash = bench.scratch.parent / f"{bench.scratch.name}-trash" if many_files else None
    try:
        for repeat in range(bench.repeats):
            for participant in bench.eligible(group, skip or {}, repeat):
                job = bench.job(participant, dataset)
                fresh(job.dest, bench.settle, trash)
                with bench.server.faults() if under_faults else contextlib.nullcontext():
                    _record(group, measure(bench, job, repeat))
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    return [group]


def _record(group: Group, run: Run) -> None:
    group.add(run)
    state = "ok" if run.ok else f"FAILED: {'; '.join(run.problems)[:300]}"
    print(f"  {group.name:12} {run.participant:11} #{run.repeat + 1}  {run.wall_s:7.2f} s  "
          f"{run.rss_mib:6.0f} MiB  {run.requests:5} req  {state}", flush=True)


def warm(bench: Bench) -> list[Group]:
    """After one cold run, re-runs on the full cache: by branch name, then by commit hash."""
    count = f"{len(bench.datasets['small-files'].files):,} small files"
    by_branch = Group("warm-branch", f"warm re-run by branch name ({count} cached)")
    by_commit = Group("warm-commit", f"warm re-run by commit hash ({count} cached)")
    skip = {p: _NO_CACHE for p in bench.participants if p not in CACHE_CLIENTS}
    for participant in bench.eligible(by_branch, skip):
        job = bench.job(participant, "small-files")
        fresh(job.dest)
        setup = measure(bench, job, -1)
        if not setup.ok:
            by_branch.skipped[participant] = f"the cold run failed: {setup.problems[:1]}"
            continue
        commit = (job.cache_folder / "refs" / "main").read_text().strip()
        for repeat in range(bench.repeats):
            _record(by_branch, measure(bench, job, repeat))
        for repeat in range(bench.repeats):
            _record(by_commit, measure(bench, job.at(commit), repeat))
    by_commit.skipped.update(by_branch.skipped)
    return [by_branch, by_commit]


def resume(bench: Bench) -> list[Group]:
    """SIGKILL once half the bytes are on disk, start again, count what was fetched twice."""
    total = bench.datasets["one-file"].total_bytes
    group = Group("resume", f"resume after SIGKILL at 50% ({human(total)} file)")
    group.notes.append("refetched = bytes served before the kill + after the restart - file size;"
                       " budget = one chunk per connection")
    for repeat in range(bench.repeats):
        for participant in bench.eligible(group, {}, repeat):
            _record(group, resume_once(bench, bench.job(participant, "one-file"), total, repeat))
    return [group]


def resume_once(bench: Bench, job: Job, total: int, repeat: int) -> Run:
    fresh(job.dest, bench.settle)
    bench.server.clear()
    first = run_child(command(job), bench.env, timeout=bench.timeout,
                      kill_when=_half_on_disk(job.dest, total))
    on_disk = bytes_on_disk(job.dest)
    time.sleep(SETTLE_SECONDS)
    before = bench.server.stats()
    run = measure(bench, job, repeat)
    run.extra.update({
        "killed": first.killed, "on_disk_at_kill": on_disk, "served_before_kill": before.bytes,
        "served_after_restart": run.server_bytes,
        "refetched_bytes": before.bytes + run.server_bytes - total,
    })
    if "chunk_size" in run.extra and "max_connections" in run.extra:
        run.extra["budget_bytes"] = run.extra["chunk_size"] * run.extra["max_connections"]
    return run


def _half_on_disk(dest: Path, total: int) -> Callable[[], bool]:
    return lambda: bytes_on_disk(dest) >= total // 2


def _one_file(bench: Bench) -> list[Group]:
    size = bench.datasets["one-file"].total_bytes
    return cold(bench, "one-file", "one-file", f"one {human(size)} file")


def _shards(bench: Bench) -> list[Group]:
    files = bench.datasets["shards"].files
    return cold(bench, "shards", "shards", f"{len(files)} shards of {human(files[0].size)}")


def _small_files(bench: Bench) -> list[Group]:
    count = len(bench.datasets["small-files"].files)
    return cold(bench, "small-files", "small-files", f"{count:,} files of 4-64 KiB",
                skip={"hf_transfer": _NOT_FOR_MANY_FILES}, many_files=True)


def faults(bench: Bench) -> list[Group]:
    """The mixed repo (two LFS shards and small files) while the server answers 5% of GETs 429
    (Retry-After: 1) and 5% 503, and cuts 20% of the CDN's bodies after 1 MiB."""
    files = bench.datasets["mixed"].files
    big = [f for f in files if f.path.endswith(".safetensors")]
    return cold(bench, "faults", "mixed", f"under faults: {len(big)} shards of "
                f"{human(big[0].size)} + {len(files) - len(big)} small files",
                skip={"hf_transfer": _NOT_FOR_MANY_FILES}, under_faults=True)


def human(size: float) -> str:
    """1073741824 -> '1 GiB'."""
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:g} {unit}"
        size /= 1024
    return f"{size:g} GiB"


#: name -> (the dataset it serves, what it runs)
SCENARIOS: Final[dict[str, tuple[str, Callable[[Bench], list[Group]]]]] = {
    "one-file": ("one-file", _one_file),
    "shards": ("shards", _shards),
    "small-files": ("small-files", _small_files),
    "warm": ("small-files", warm),
    "resume": ("one-file", resume),
    "faults": ("mixed", faults),
}


def datasets_for(scenarios: Iterable[str]) -> list[str]:
    """The datasets the chosen scenarios serve, in a stable order."""
    return sorted({SCENARIOS[s][0] for s in scenarios})
