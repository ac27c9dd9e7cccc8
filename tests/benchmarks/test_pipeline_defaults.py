"""`mlvs pipeline --force` end to end on the default parameters, and where its time goes.

A copy of the trained workspace with the repository's own `params/prepare.yaml` and
`params/train.yaml` put back (5,000 customers, 120 trees), committed, then one forced pipeline run.
The breakdown comes from the executed notebooks themselves: papermill's duration of each notebook
and of each cell; what is left of the wall clock is the time outside the notebooks (dvc repro, the
interpreters of `mlvs run`, opening and closing MLflow runs, HTML, push, backup, index).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import BIN, REPO, clean_env, copy_workspace, git

from ._bench import record, run_timed, table

pytestmark = pytest.mark.bench

TARGET_S = 20.0
NOTEBOOKS = ("01_prepare", "02_train")
SLOWEST_CELLS = 3


def first_statement(source: str) -> str:
    """What names a cell in the breakdown: its first line of code, past any comment."""
    lines = [line for line in source.splitlines() if line.strip()]
    code = [line for line in lines if not line.lstrip().startswith("#")]
    return (code or lines)[0]


def notebook_breakdown(executed: Path) -> dict[str, Any]:
    """Papermill's timings of one executed notebook: in total, in its cells, and its slowest cells."""
    notebook = nbformat.read(executed, as_version=4)
    total = float(notebook.metadata["papermill"]["duration"])
    cells = [
        (float(cell.metadata["papermill"]["duration"] or 0.0), first_statement(cell.source))
        for cell in notebook.cells
        if cell.cell_type == "code" and cell.source.strip() and "papermill" in cell.metadata
    ]
    in_cells = sum(seconds for seconds, _ in cells)
    return {
        "notebook_s": round(total, 3),
        "cells_s": round(in_cells, 3),
        "kernel_start_and_between_cells_s": round(total - in_cells, 3),
        "slowest_cells": [
            {"s": round(seconds, 3), "first_line": line[:80]}
            for seconds, line in sorted(cells, reverse=True)[:SLOWEST_CELLS]
        ],
    }


def test_pipeline_force_defaults(_trained_template: Path, tmp_path: Path) -> None:
    root = copy_workspace(_trained_template, tmp_path / "ws")
    for stage in ("prepare", "train"):
        shutil.copy2(REPO / "params" / f"{stage}.yaml", root / "params" / f"{stage}.yaml")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "default parameters")

    seconds, result = run_timed(
        [str(BIN / "mlvs"), "pipeline", "--force", "--json"], root, clean_env(root)
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["ran"] == ["prepare", "train"], summary
    assert summary["metrics"], summary  # the default model was trained and scored

    stages = {name: notebook_breakdown(root / "reports" / f"{name}.ipynb") for name in NOTEBOOKS}
    in_notebooks = sum(s["notebook_s"] for s in stages.values())
    wall = round(seconds, 3)
    figures = {
        "pipeline_s": wall,
        "pipeline_reported_s": summary["seconds"],
        "stages": stages,
        "in_notebooks_s": round(in_notebooks, 3),
        "outside_notebooks_s": round(wall - in_notebooks, 3),
        "test_roc_auc": summary["metrics"].get("test_roc_auc"),
        "params": "the repository's params/prepare.yaml and params/train.yaml",
    }
    record(
        "pipeline_force_defaults",
        figures,
        value=wall,
        unit="s",
        target=TARGET_S,
        target_text=f"`mlvs pipeline --force` on the default parameters <= {TARGET_S:g} s",
    )
    rows: list[list[Any]] = []
    for name, stage in stages.items():
        rows.append([name, stage["notebook_s"]])
        rows.append(["  kernel start and between cells", stage["kernel_start_and_between_cells_s"]])
        rows.extend([f"  {cell['first_line']}", cell["s"]] for cell in stage["slowest_cells"])
    rows.append(["outside the notebooks", figures["outside_notebooks_s"]])
    rows.append(["total (wall clock)", wall])
    table(
        f"pipeline_force_defaults (one run; target <= {TARGET_S:g} s)", ["where", "seconds"], rows
    )
    assert wall <= TARGET_S, figures
