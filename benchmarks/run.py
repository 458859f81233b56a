"""Benchmark hubasync side by side with the official client, hf_transfer and aria2c.

    python benchmarks/run.py [--scenarios one-file shards small-files warm resume faults]
        [--participants hubasync official hf_transfer aria2c] [--quick] [--repeat N]
        [--data-dir benchmarks/.data] [--out benchmarks/results/latest.json]

Generates the data once (into --data-dir), starts one local FakeHub server process for all
scenarios, runs every participant as its own child process, verifies every byte, prints a
Markdown table (wall time, ratios to the official client and to hf_transfer, peak RSS, CPU,
requests) and the issue-3 targets, and writes everything as JSON. Exit status 0 when every run
verified, 1 when some did not. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from harness.data import datasets, ensure_dataset, read_through, repo_dir
from harness.participants import PARTICIPANTS
from harness.procs import BENCH_DIR, REPO_ROOT, child_env
from harness.report import (
    faults_table,
    machine,
    machine_line,
    resume_table,
    skipped_lines,
    table,
    targets,
    targets_table,
    to_json,
)
from harness.scenarios import SCENARIOS, Bench, datasets_for
from harness.server import HubServer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from harness.data import Dataset, Manifest
    from harness.results import Group

DEFAULT_REPEATS: Final = 2
DEFAULT_SETTLE: Final = 3.0
CHILD_TIMEOUT: Final = 300.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/run.py",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS),
                        default=list(SCENARIOS))
    parser.add_argument("--participants", nargs="+", choices=PARTICIPANTS,
                        default=list(PARTICIPANTS))
    parser.add_argument("--quick", action="store_true",
                        help="tiny data (a few MiB, 20 small files) and one repeat: a smoke run")
    parser.add_argument("--repeat", type=int, default=None,
                        help=f"runs per participant and scenario (default {DEFAULT_REPEATS}, "
                             "1 with --quick); the table shows medians")
    parser.add_argument("--data-dir", type=Path, default=BENCH_DIR / ".data")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "latest.json")
    parser.add_argument("--timeout", type=float, default=CHILD_TIMEOUT,
                        help="seconds before a participant's run is killed")
    parser.add_argument("--hubasync-src", type=Path, default=REPO_ROOT,
                        help="the folder holding the hubasync package to run (default: this "
                             "checkout; e.g. a `git archive HEAD` export for a pinned run)")
    parser.add_argument("--settle", type=float, default=None,
                        help=f"seconds of rest before each cold run (default {DEFAULT_SETTLE:g}, "
                             "0 with --quick): freed memory settles, so every participant "
                             "starts from the same state (see harness.scenarios)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a HubConfig override for hubasync, e.g. chunk_size=8388608")
    return parser


def prepare_data(data_dir: Path, wanted: dict[str, Dataset]) -> dict[str, Manifest]:
    """Generate (or reuse) each dataset; manifests by repo id."""
    manifests: dict[str, Manifest] = {}
    for dataset in wanted.values():
        started = time.perf_counter()
        manifests[dataset.repo_id] = ensure_dataset(data_dir, dataset)
        read_through(data_dir, dataset)
        print(f"data: {dataset.name} ready ({dataset.total_bytes / 2**20:,.0f} MiB, "
              f"{time.perf_counter() - started:.1f} s)", flush=True)
    return manifests


def run_scenarios(bench: Bench, scenarios: Sequence[str]) -> list[Group]:
    groups: list[Group] = []
    for name in scenarios:
        print(f"scenario: {name}", flush=True)
        groups += SCENARIOS[name][1](bench)
    return groups


def render(groups: Sequence[Group], info: dict[str, Any]) -> str:
    parts = [f"Machine: {machine_line(info)}", "", table(groups)]
    resume = [g for g in groups if g.name == "resume" and g.runs]
    if resume:
        parts += ["", f"Resume detail ({resume[0].notes[0]}):", "", resume_table(resume[0])]
    faulted = [g for g in groups if g.name == "faults" and g.runs]
    if faulted:
        parts += ["", "Faults detail (medians per run; early = requests that reached a host "
                      "after its 429 and before its Retry-After, beyond those in flight):", "",
                  faults_table(faulted[0])]
    parts += ["", targets_table(targets(groups))]
    skipped = skipped_lines(groups)
    if skipped:
        parts += ["", *skipped]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    repeats = args.repeat or (1 if args.quick else DEFAULT_REPEATS)
    settle = args.settle if args.settle is not None else (0.0 if args.quick else DEFAULT_SETTLE)
    load_at_start = os.getloadavg()[0]
    all_datasets = datasets(args.quick)
    wanted = {n: all_datasets[n] for n in datasets_for(args.scenarios)}
    args.data_dir.mkdir(parents=True, exist_ok=True)
    manifests = prepare_data(args.data_dir, wanted)
    scratch = args.data_dir / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    env = child_env(scratch / "hf-home", args.hubasync_src.resolve())
    try:
        with HubServer([repo_dir(args.data_dir, d).parent for d in wanted.values()],
                       env) as server:
            bench = Bench(server=server, env=env, data_dir=args.data_dir, scratch=scratch,
                          datasets=all_datasets, manifests=manifests,
                          participants=tuple(args.participants), repeats=repeats,
                          timeout=args.timeout, settings=tuple(args.set), settle=settle)
            groups = run_scenarios(bench, args.scenarios)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    info = machine(env, args.hubasync_src.resolve())
    info["load_average"] = {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)}
    print("\n" + render(groups, info), flush=True)
    options = {"scenarios": args.scenarios, "participants": args.participants,
               "quick": args.quick, "repeats": repeats, "settle_seconds": settle,
               "hubasync_settings": args.set,
               "hubasync_src": str(args.hubasync_src),
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(to_json(groups, targets(groups), info, options), indent=2))
    print(f"\nresults: {args.out}")
    return 1 if any(g.broken() for g in groups) else 0


if __name__ == "__main__":
    sys.exit(main())
