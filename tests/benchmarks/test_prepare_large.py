"""The prepare stage at 1,000,000 customers: wall clock and peak memory.

`mlvs run notebooks/01_prepare.ipynb -p n_rows 1000000` in a tiny workspace, started by a small
Python process of its own whose RUSAGE_CHILDREN peak is then the largest resident set of any
process of the run (on Linux the kernel keeps the maximum over all waited-for descendants): the
notebook's kernel, which holds the data. A separate parent keeps the figure free of whatever
else this test session started before.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, clean_env, make_workspace

from ._bench import record, table

pytestmark = pytest.mark.bench

ROWS = 1_000_000
TARGET_GIB = 2.0
GIB = 1 << 30

# Runs the command given after it, then prints its wall clock and the peak RSS of its process tree.
MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - started
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_rss_kib": peak_kib, "returncode": done.returncode,
                  "stderr": done.stderr[-3000:]}))
"""


def test_prepare_1m_rows(tmp_path: Path) -> None:
    root = make_workspace(tmp_path / "ws")
    command = [str(BIN / "mlvs"), "run", "notebooks/01_prepare.ipynb", "-p", "n_rows", str(ROWS)]
    measured = subprocess.run(
        [sys.executable, "-c", MEASURE, *command],
        cwd=root,
        env=clean_env(root),
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    run = json.loads(measured.stdout)
    assert run["returncode"] == 0, run["stderr"]
    summary = json.loads((root / "data" / "processed" / "summary.json").read_text())
    assert summary["rows"]["raw"] == ROWS, summary["rows"]

    peak_bytes = run["peak_rss_kib"] * 1024
    peak_gib = round(peak_bytes / GIB, 3)
    figures = {
        "rows": ROWS,
        "seconds": round(run["seconds"], 3),
        "peak_rss_bytes": peak_bytes,
        "raw_csv_bytes": (root / "data" / "raw" / "customer_data.csv").stat().st_size,
        "measured": "RUSAGE_CHILDREN ru_maxrss of a parent that only runs the command: "
        "the largest resident set of one process of the run (the notebook's kernel)",
    }
    record(
        "prepare_1m_rows",
        figures,
        value=peak_gib,
        unit="GiB",
        target=TARGET_GIB,
        target_text=f"prepare at {ROWS:,} rows: peak RSS <= {TARGET_GIB:g} GiB (time recorded)",
    )
    table(
        f"prepare_1m_rows (`mlvs run 01_prepare -p n_rows {ROWS}`, one run)",
        ["figure", "value", f"<= {TARGET_GIB:g} GiB"],
        [
            ["peak RSS (GiB)", peak_gib, str(peak_gib <= TARGET_GIB)],
            ["wall clock (s)", figures["seconds"], "-"],
        ],
    )
    assert peak_gib <= TARGET_GIB, figures
