"""The results as a table (Markdown, printed and pasted into the README), targets, and JSON."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

from harness.procs import REPO_ROOT

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

    from harness.results import Group, Summary

MiB: Final = 1024 * 1024
ENGINE: Final = "hubasync"
_HEADER: Final = ("| scenario | participant | wall s | x official | x hf_transfer | process s "
                  "| peak RSS MiB | CPU s | requests | verified |")
_RESUME_HEADER: Final = ("| participant | killed at (on disk) | served before kill "
                         "| served after restart | refetched | budget | restart wall s |")


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def ratio(group: Group | None, participant: str, reference: str) -> float | None:
    """Median wall time of `participant` over `reference`'s in `group` (both verified)."""
    if group is None:
        return None
    mine, theirs = group.summary(participant), group.summary(reference)
    if mine is None or theirs is None or not (mine.ok and theirs.ok) or theirs.wall_s <= 0:
        return None
    return mine.wall_s / theirs.wall_s


def table(groups: Sequence[Group]) -> str:
    lines = [_HEADER, "|" + "---|" * (_HEADER.count("|") - 1)]
    for group in groups:
        for participant in group.runs:
            summary = group.summary(participant)
            assert summary is not None
            lines.append(_row(group, participant, summary))
    return "\n".join(lines)


def _row(group: Group, participant: str, s: Summary) -> str:
    ok = f"yes ({s.runs}/{s.runs})" if s.ok else "**NO**"
    return (f"| {group.title} | {participant} | {s.wall_s:.2f} "
            f"| {_cell(ratio(group, participant, 'official'), '.2f')} "
            f"| {_cell(ratio(group, participant, 'hf_transfer'), '.2f')} | {s.process_s:.2f} "
            f"| {s.rss_mib:.0f} | {s.cpu_s:.2f} | {s.requests:g} | {ok} |")


def resume_table(group: Group) -> str:
    lines = [_RESUME_HEADER, "|" + "---|" * (_RESUME_HEADER.count("|") - 1)]
    for participant in group.runs:
        summary = group.summary(participant)
        assert summary is not None
        x = summary.extra

        def mib(key: str, extra: Mapping[str, float] = x) -> str:
            return f"{extra[key] / MiB:.0f} MiB" if key in extra else "—"

        killed = mib("on_disk_at_kill") if x.get("killed") else "not killed (finished first)"
        lines.append(f"| {participant} | {killed} | {mib('served_before_kill')} "
                     f"| {mib('served_after_restart')} | {mib('refetched_bytes')} "
                     f"| {mib('budget_bytes')} | {summary.wall_s:.2f} |")
    return "\n".join(lines)


_FAULTS_HEADER: Final = ("| participant | completed and verified | 429 answered | 503 answered "
                         "| bodies cut | early after 429 | wall s |")


def faults_table(group: Group) -> str:
    lines = [_FAULTS_HEADER, "|" + "---|" * (_FAULTS_HEADER.count("|") - 1)]
    for participant, runs in group.runs.items():
        summary = group.summary(participant)
        assert summary is not None
        x = summary.extra

        def count(key: str, extra: Mapping[str, float] = x) -> str:
            return f"{extra[key]:g}" if key in extra else "—"

        done = sum(r.ok for r in runs)
        lines.append(f"| {participant} | {done} of {len(runs)} | {count('faults_429')} "
                     f"| {count('faults_503')} | {count('faults_cut')} "
                     f"| {count('early_after_429')} | {summary.wall_s:.2f} |")
    return "\n".join(lines)


def skipped_lines(groups: Sequence[Group]) -> list[str]:
    seen: dict[tuple[str, str], list[str]] = {}
    for group in groups:
        for participant, why in group.skipped.items():
            seen.setdefault((participant, why), []).append(group.name)
    return [f"- {p} skipped in {', '.join(names)}: {why}" for (p, why), names in seen.items()]


@dataclass(frozen=True)
class TargetResult:
    target: str
    measured: str
    met: bool | None  # None: not measured by this run

    def line(self) -> str:
        mark = {True: "MET", False: "MISSED", None: "not measured"}[self.met]
        return f"| {self.target} | {self.measured} | {mark} |"


def _ratio_target(groups: Mapping[str, Group], name: str, reference: str, limit: float,
                  label: str) -> TargetResult:
    value = ratio(groups.get(name), ENGINE, reference)
    if value is None:
        return TargetResult(label, f"no verified {ENGINE} and {reference} runs", None)
    return TargetResult(label, f"{value:.2f}x", value <= limit)


def _max_run(groups: Mapping[str, Group], name: str, field: Callable[[Any], float]
             ) -> float | None:
    group = groups.get(name)
    runs = group.runs.get(ENGINE, []) if group is not None else []
    if not runs or not all(r.ok for r in runs):
        return None
    return max(field(r) for r in runs)


def _count_target(groups: Mapping[str, Group], name: str, limit: int, label: str) -> TargetResult:
    value = _max_run(groups, name, lambda r: r.requests)
    if value is None:
        return TargetResult(label, f"no verified {ENGINE} runs", None)
    return TargetResult(label, f"{value:g} request(s) (worst run)", value <= limit)


def _rss_target(groups: Mapping[str, Group]) -> TargetResult:
    label = "Peak RSS < 120 MiB downloading the big file with 16 connections"
    value = _max_run(groups, "one-file", lambda r: r.rss_mib)
    if value is None:
        return TargetResult(label, f"no verified {ENGINE} runs", None)
    return TargetResult(label, f"{value:.0f} MiB", value < 120)


def _resume_target(groups: Mapping[str, Group]) -> TargetResult:
    label = "Resume after SIGKILL at 50%: refetched ≤ one chunk per connection"
    group = groups.get("resume")
    runs = group.runs.get(ENGINE, []) if group is not None else []
    if not runs or not all(r.ok and r.extra.get("killed") for r in runs):
        return TargetResult(label, f"no verified, killed {ENGINE} runs", None)
    worst = max(r.extra["refetched_bytes"] for r in runs)
    budget = min(r.extra["budget_bytes"] for r in runs)
    return TargetResult(label, f"{worst / MiB:.0f} MiB refetched (worst run), budget "
                               f"{budget / MiB:.0f} MiB", worst <= budget)


def targets(groups: Sequence[Group]) -> list[TargetResult]:
    """The targets of issue 3, for hubasync, from this run's numbers."""
    by_name = {g.name: g for g in groups}
    return [
        _ratio_target(by_name, "one-file", "hf_transfer", 1.0, "One big file: ≤ 1.0x hf_transfer"),
        _ratio_target(by_name, "one-file", "official", 0.5, "One big file: ≤ 0.5x official"),
        _ratio_target(by_name, "shards", "official", 0.6, "4 shards: ≤ 0.6x official"),
        _ratio_target(by_name, "small-files", "official", 0.3, "Small files: ≤ 0.3x official"),
        _count_target(by_name, "warm-branch", 1, "Warm re-run by branch: 1 request"),
        _count_target(by_name, "warm-commit", 0, "Warm re-run by commit: 0 requests"),
        _rss_target(by_name),
        _resume_target(by_name),
        _faults_target(by_name),
    ]


def _faults_target(groups: Mapping[str, Group]) -> TargetResult:
    label = "Under faults (429/503/cut bodies): completes, verified, Retry-After kept"
    group = groups.get("faults")
    runs = group.runs.get(ENGINE, []) if group is not None else []
    if not runs:
        return TargetResult(label, f"no {ENGINE} runs", None)
    done = sum(r.ok for r in runs)
    early = sum(int(r.extra.get("early_after_429", 0)) for r in runs)
    limited = sum(int(r.extra.get("faults_429", 0)) for r in runs)
    return TargetResult(label, f"{done} of {len(runs)} runs verified; {early} requests early "
                               f"after {limited} 429s", done == len(runs) and early == 0)


def targets_table(results: Sequence[TargetResult]) -> str:
    lines = ["| target (issue 3) | hubasync | status |", "|---|---|---|"]
    return "\n".join(lines + [t.line() for t in results])


def machine(env: Mapping[str, str], hubasync_src: Path) -> dict[str, Any]:
    """Where it ran: cores, memory, CPU, Python, and every participant's version."""
    return {
        "nproc": os.cpu_count(), "memory_gib": round(_mem_total() / 1024**3, 1),
        "cpu": _cpu_model(), "kernel": platform.release(), "python": platform.python_version(),
        "hubasync": _hubasync_version(env, hubasync_src),
        "huggingface_hub": _dist_version("huggingface_hub"),
        "hf_transfer": _dist_version("hf_transfer"), "aria2c": _aria2c_version(),
        "aiohttp": _dist_version("aiohttp"),
    }


def machine_line(info: Mapping[str, Any]) -> str:
    load = info.get("load_average", {})
    return (f"{info['nproc']} cores ({info['cpu']}), {info['memory_gib']} GiB RAM, Linux "
            f"{info['kernel']}, Python {info['python']}; hubasync {info['hubasync']}, "
            f"huggingface_hub {info['huggingface_hub']}, hf_transfer {info['hf_transfer']}, "
            f"aria2c {info['aria2c']}, aiohttp {info['aiohttp']}; 1-min load average "
            f"{load.get('start')} at start, {load.get('end')} at end")


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _hubasync_version(env: Mapping[str, str], src: Path) -> str:
    """`0.1.0 (git abc1234[, with uncommitted changes])`, or `0.1.0 (from /some/dir)`."""
    code = "import hubasync; print(hubasync.__version__)"
    version = _output([sys.executable, "-c", code], env) or "unknown"
    if src != REPO_ROOT:
        return f"{version} (from {src})"
    commit = _output(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], env)
    dirty = _output(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "hubasync"], env)
    suffix = f" (git {commit}{', with uncommitted changes' if dirty else ''})" if commit else ""
    return version + suffix


def _aria2c_version() -> str:
    if shutil.which("aria2c") is None:
        return "not installed"
    first = _output(["aria2c", "--version"], os.environ).splitlines()
    return first[0].removeprefix("aria2 version ") if first else "unknown"


def _output(cmd: Sequence[str], env: Mapping[str, str]) -> str:
    try:
        done = subprocess.run(cmd, env=dict(env), capture_output=True, text=True, timeout=30,
                              check=False)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def to_json(groups: Sequence[Group], results: Sequence[TargetResult], info: Mapping[str, Any],
            options: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "machine": dict(info), "options": dict(options),
        "groups": [g.to_json() for g in groups],
        "targets": [asdict(t) for t in results],
        "argv": sys.argv,
    }
