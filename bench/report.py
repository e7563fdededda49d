"""One benchmark run's results as a document: written to and read back from JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.measurements import SystemResult
from bench.ratios import aims, throughput_ratios


@dataclass
class BenchReport:
    date: str
    started_at: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    model: dict[str, Any] = field(default_factory=dict)
    # Versions of what each system ran (pinned peers, rtbserve's backend).
    versions: dict[str, str] = field(default_factory=dict)
    systems: list[SystemResult] = field(default_factory=list)
    # In-process prediction rows/s (bench/predict_bench.py's run()), as it returned it.
    predict: dict[str, Any] | None = None
    # bench/cold_start.py's measure(): one container's start-up phases, per model.
    cold_start: dict[str, Any] | None = None
    # Phases that failed, with why; the rest of the run still reports.
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def result(self, system: str, bidders: int) -> SystemResult | None:
        for r in self.systems:
            if r.system == system and r.bidders == bidders:
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios"] = [asdict(r) for r in throughput_ratios(self.systems)]
        data["aims"] = [{**asdict(a), "met": a.met} for a in aims(self.systems)]
        return data

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchReport:
        # Runs before 2026-12-07 also stored a fleet projection: it is recomputed from the
        # measurements now (bench/sizing_table.py), so those keys are left unread.
        return cls(
            date=data["date"],
            started_at=data["started_at"],
            machine=data.get("machine", {}),
            settings=data.get("settings", {}),
            model=data.get("model", {}),
            versions=data.get("versions", {}),
            systems=[SystemResult.from_dict(s) for s in data.get("systems", [])],
            predict=data.get("predict"),
            cold_start=data.get("cold_start"),
            errors=list(data.get("errors", [])),
            notes=list(data.get("notes", [])),
            duration_s=float(data.get("duration_s", 0.0)),
        )

    @classmethod
    def read_json(cls, path: Path) -> BenchReport:
        return cls.from_dict(json.loads(path.read_text()))
