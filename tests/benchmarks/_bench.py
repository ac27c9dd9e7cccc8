"""Shared helpers of the benchmarks: timing, medians, the results file and the printed table."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import REPO

RESULTS = REPO / "reports" / "benchmarks" / "latest.json"


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def run_timed(
    args: list[str], cwd: Path, env: dict[str, str]
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall clock of one command, as a user runs it."""
    return timed(
        lambda: subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    )


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def record(name: str, figures: dict[str, Any]) -> None:
    """Merge one benchmark's figures into reports/benchmarks/latest.json."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        results = json.loads(RESULTS.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        results = {}
    results[name] = {
        **figures,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(RESULTS)


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [header] + [
        [f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n== {title} ==")
    for i, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
