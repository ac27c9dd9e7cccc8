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


# The keys every entry of the report has (`baseline` and `ratio` where there is a comparison); each
# benchmark's own figures go beside them and may not reuse these names.
HEADLINE = ("name", "value", "unit", "target", "target_text", "met", "baseline", "ratio")


def entry(
    name: str,
    figures: dict[str, Any],
    *,
    value: float,
    unit: str,
    target: float,
    target_text: str,
    better: str = "lower",
    met: bool | None = None,
    baseline: float | None = None,
    baseline_unit: str | None = None,
    ratio: float | None = None,
) -> dict[str, Any]:
    """One report entry: the headline figure against its target, then the benchmark's own figures.

    `value` (in `unit`) is the figure `target` applies to, lower or higher being `better`;
    `met` is decided from those two unless the benchmark's target has more than one part,
    when it passes `met` itself. `baseline` is the comparison measured in the same run (in
    `baseline_unit`, `unit` unless said) and `ratio` the mlvs measurement over it.
    """
    clash = sorted(set(figures) & set(HEADLINE))
    if clash:
        raise ValueError(f"{name}: the figures reuse the report's own keys {clash}")
    for label, number in (("value", value), ("target", target), ("baseline", baseline)):
        if number is not None and (isinstance(number, bool) or not isinstance(number, int | float)):
            raise ValueError(f"{name}: {label} must be a number, not {number!r}")
    if better not in ("lower", "higher"):
        raise ValueError(f"{name}: better is 'lower' or 'higher', not {better!r}")
    if met is None:
        met = value <= target if better == "lower" else value >= target
    headline: dict[str, Any] = {
        "name": name,
        "value": value,
        "unit": unit,
        "target": target,
        "target_text": target_text,
        "better": better,
        "met": bool(met),
    }
    if baseline is not None:
        headline["baseline"] = baseline
        headline["baseline_unit"] = baseline_unit or unit
    if ratio is not None:
        headline["ratio"] = ratio
    return {**headline, **figures}


def read_results(path: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """The report as it is on disk; none yet, or unreadable, is an empty one."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return results if isinstance(results, dict) else {}


def record(name: str, figures: dict[str, Any], *, path: Path = RESULTS, **headline: Any) -> None:
    """Merge one benchmark's entry (see `entry` for the headline keywords) into the report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    results = read_results(path)
    results[name] = {
        **entry(name, figures, **headline),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # The session-end check lists only what this run measured, not entries left by older runs.
        "measured_at_epoch": round(time.time(), 3),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def misses(results: dict[str, dict[str, Any]], since: float) -> list[str]:
    """One line per entry measured at or after `since` that missed its target, by name."""
    lines = []
    for name, found in sorted(results.items()):
        if not isinstance(found, dict) or found.get("measured_at_epoch", 0) < since:
            continue
        if found.get("met") is not True:
            lines.append(
                f"{name}: {found.get('value')} {found.get('unit', '')}, "
                f"target {found.get('target_text', found.get('target'))}"
            )
    return lines


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
