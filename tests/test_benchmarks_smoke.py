"""benchmarks/run.py works end to end: tiny data, one repeat, hubasync and the official client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from hubasync.testing import RecordedRequest

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
SUMMARY_FIELDS = {"runs", "ok", "wall_s", "process_s", "cpu_s", "rss_mib", "requests",
                  "server_bytes", "extra"}
RUN_FIELDS = {"participant", "repeat", "ok", "wall_s", "process_s", "cpu_s", "rss_mib",
              "requests", "server_bytes", "problems", "extra"}
GROUPS = {"one-file", "shards", "small-files", "warm-branch", "warm-commit", "resume", "faults"}


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.timeout(90)
def test_quick_run_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--participants", "hubasync", "official",
         "--data-dir", str(tmp_path / "data"), "--out", str(out)],
        capture_output=True, text=True, timeout=80, check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| scenario | participant |" in done.stdout

    results = json.loads(out.read_text())
    assert {"machine", "options", "groups", "targets"} <= results.keys()
    assert results["machine"]["nproc"] >= 1
    assert results["options"]["repeats"] == 1
    groups = {g["name"]: g for g in results["groups"]}
    assert set(groups) == GROUPS
    for name, group in groups.items():
        assert set(group["participants"]) == {"hubasync", "official"}
        for participant, entry in group["participants"].items():
            assert entry["summary"].keys() >= SUMMARY_FIELDS
            if name != "faults" or participant == "hubasync":  # the others may fail there
                assert entry["summary"]["ok"] is True
            assert len(entry["runs"]) == 1
            assert entry["runs"][0].keys() >= RUN_FIELDS
    assert groups["warm-commit"]["participants"]["hubasync"]["runs"][0]["requests"] >= 0
    assert "refetched_bytes" in groups["resume"]["participants"]["hubasync"]["runs"][0]["extra"]
    faulted = groups["faults"]["participants"]["hubasync"]["runs"][0]["extra"]
    assert faulted["early_after_429"] == 0
    assert {"faults_429", "faults_503", "faults_cut"} <= faulted.keys()
    assert all({"target", "measured", "met"} <= t.keys() for t in results["targets"])
    assert not (tmp_path / "data" / "scratch").exists()
    assert not (tmp_path / "data" / "scratch-trash").exists()


def test_fresh_sets_earlier_outputs_aside_when_asked(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(RUN.parent))
    from harness.scenarios import fresh  # benchmarks/ is a folder of scripts, not a package

    scratch, trash = tmp_path / "scratch", tmp_path / "trash"
    for name in ("hubasync", "official"):
        (scratch / name / "sub").mkdir(parents=True)
        (scratch / name / "sub" / "f").write_text(name)
    fresh(scratch / "official", trash=trash)
    assert sorted(p.name for p in scratch.iterdir()) == ["official"]
    assert not any((scratch / "official").iterdir())
    kept = {p.name.split("-", 1)[1]: p for p in trash.iterdir()}
    assert sorted(kept) == ["hubasync", "official"]
    assert (kept["hubasync"] / "sub" / "f").read_text() == "hubasync"

    fresh(scratch / "hubasync")  # without a trash: deleted on the spot
    assert sorted(p.name for p in scratch.iterdir()) == ["hubasync"]
    assert len(list(trash.iterdir())) == 2


def test_early_after_429_counts_what_came_too_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(RUN.parent))
    from harness.hubserver import early_after_429  # benchmarks/ is a folder of scripts

    def req(server: Literal["hub", "cdn"], at: float, status: int = 200) -> RecordedRequest:
        return RecordedRequest(method="GET", server=server, path="/", query="", headers={},
                               time=at, status=status)

    records = [
        req("cdn", 10.0, 429),
        req("cdn", 10.1),  # already on its way: allowed
        req("hub", 10.5),  # another host: allowed
        req("cdn", 10.6),  # too soon
        req("cdn", 10.9),  # too soon
        req("cdn", 11.05),  # after Retry-After: allowed
    ]
    assert early_after_429(records) == 2
    assert early_after_429(records[1:]) == 0


def test_bytes_on_disk_counts_written_bytes_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resume scenario kills at 50% on disk: a temp file with reserved blocks, or written
    at offsets, counts only what was written."""
    monkeypatch.syspath_prepend(str(RUN.parent))
    from harness.procs import bytes_on_disk  # benchmarks/ is a folder of scripts

    from hubasync._fallocate import reserve

    mib = 1024 * 1024
    (tmp_path / "whole").write_bytes(b"w" * mib)
    with (tmp_path / "ranges").open("wb") as f:
        assert reserve(f.fileno(), 64 * mib)
        os.pwrite(f.fileno(), b"a" * mib, 0)
        os.pwrite(f.fileno(), b"b" * 2 * mib, 32 * mib)
    assert bytes_on_disk(tmp_path) == 4 * mib
