"""What a benchmark run produces: runs, grouped by scenario, summarised by their medians."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Run:
    """One measured child. `wall_s` is the download call itself (imports excluded; the whole
    process for aria2c); `process_s` is spawn to exit. `ok` means exit 0 and every byte verified."""

    participant: str
    repeat: int
    ok: bool
    wall_s: float
    process_s: float
    cpu_s: float
    rss_mib: float
    requests: int
    server_bytes: int
    problems: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Summary:
    """A participant's runs in one group: medians (peak RSS: the largest)."""

    runs: int
    ok: bool
    wall_s: float
    process_s: float
    cpu_s: float
    rss_mib: float
    requests: float
    server_bytes: float
    extra: dict[str, float]

    @classmethod
    def of(cls, runs: list[Run]) -> Summary:
        def median(values: list[float]) -> float:
            return statistics.median(values) if values else 0.0

        numeric = {k for r in runs for k, v in r.extra.items() if isinstance(v, int | float)}
        return cls(
            runs=len(runs), ok=bool(runs) and all(r.ok for r in runs),
            wall_s=median([r.wall_s for r in runs]),
            process_s=median([r.process_s for r in runs]),
            cpu_s=median([r.cpu_s for r in runs]),
            rss_mib=max((r.rss_mib for r in runs), default=0.0),
            requests=median([r.requests for r in runs]),
            server_bytes=median([r.server_bytes for r in runs]),
            extra={k: median([float(r.extra[k]) for r in runs if k in r.extra])
                   for k in sorted(numeric)},
        )


@dataclass
class Group:
    """One block of the table: a scenario (or one variant of it) and every participant's runs."""

    name: str
    title: str
    runs: dict[str, list[Run]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    may_fail: bool = False  # a participant other than hubasync failing here is a finding

    def broken(self) -> bool:
        """A run failed that should not have (see `may_fail`)."""
        return any(not r.ok for p, runs in self.runs.items() for r in runs
                   if p == "hubasync" or not self.may_fail)

    def add(self, run: Run) -> None:
        self.runs.setdefault(run.participant, []).append(run)

    def summary(self, participant: str) -> Summary | None:
        runs = self.runs.get(participant)
        return Summary.of(runs) if runs else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "title": self.title, "skipped": self.skipped, "notes": self.notes,
            "participants": {
                p: {"summary": asdict(Summary.of(runs)), "runs": [asdict(r) for r in runs]}
                for p, runs in self.runs.items()
            },
        }
