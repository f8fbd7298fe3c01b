"""The results of a side-by-side run and the one table they print as: medians and ratios.

Every measurement adds samples under an operation name and a runtime ("pycri" or
"containerd"); the table's figure is the median of all samples of an operation, pooled over
the rounds, and the ratio is pycri's median over containerd's (below 1: pycri is faster or
leaner). Results are saved as JSON next to the table, so a table can be printed again from
an earlier run (`python -m hack.bench table results.json`).
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

RUNTIMES = ("pycri", "containerd")


@dataclass
class Row:
    """One line of the table: an operation and each runtime's median (None: no samples)."""

    operation: str
    pycri: float | None
    containerd: float | None
    samples: tuple[int, int] = (0, 0)

    @property
    def ratio(self) -> float | None:
        if self.pycri is None or self.containerd is None or self.containerd == 0:
            return None
        return self.pycri / self.containerd


@dataclass
class Results:
    """Samples per operation and runtime, in the order the operations were first added."""

    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, operation: str, runtime: str, values: float | list[float]) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}")
        per_runtime = self.samples.setdefault(operation, {r: [] for r in RUNTIMES})
        per_runtime[runtime].extend([values] if isinstance(values, (int, float)) else values)

    def rows(self) -> list[Row]:
        rows = []
        for operation, per_runtime in self.samples.items():
            p, c = per_runtime.get("pycri", []), per_runtime.get("containerd", [])
            rows.append(Row(operation, statistics.median(p) if p else None,
                            statistics.median(c) if c else None, (len(p), len(c))))
        return rows

    def to_json(self) -> str:
        return json.dumps({"samples": self.samples, "notes": self.notes}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Results":
        data = json.loads(text)
        return cls(samples=data.get("samples", {}), notes=data.get("notes", []))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())


def figure(value: float | None) -> str:
    """A median as the table prints it: 3 significant digits, at most 2 decimals."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio_text(row: Row) -> str:
    return "-" if row.ratio is None else f"{row.ratio:.2f}"


HEADER = ("operation", "pycri", "containerd", "ratio")


def cells(rows: list[Row]) -> list[tuple[str, str, str, str]]:
    return [(r.operation, figure(r.pycri), figure(r.containerd), ratio_text(r)) for r in rows]


def format_text(rows: list[Row]) -> str:
    """The table for a terminal: aligned columns, figures right-aligned."""
    lines = [HEADER, *cells(rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join([line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])]).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n"


def format_markdown(rows: list[Row], notes: list[str] | None = None) -> str:
    """The table as GitHub markdown, with the run's notes as a list under it."""
    out = ["| " + " | ".join(HEADER) + " |", "|---|---:|---:|---:|"]
    out += ["| " + " | ".join(c) + " |" for c in cells(rows)]
    text = "\n".join(out) + "\n"
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return text
