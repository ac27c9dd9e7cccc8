"""nbval: the notebooks, re-executed in a clean workspace, print what they stored.

The stored outputs come from `make golden`. Cells whose output changes on every
run (run ids, timings) are tagged `nbval-ignore-output`; what differs only by the
clock (the automatic snapshot's name, creation times) is masked by `sanitize.cfg` in
both outputs and the rest compared; images are not compared (nbval's default),
their text placeholders are. `04_rollback` shows the test metrics of the state left
and of the state restored after its rollback cell: a rollback that restored nothing
would print other numbers than the stored ones.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_env, make_monitor_workspace, make_story_workspace, make_workspace

pytestmark = pytest.mark.slow

PIPELINE_NOTEBOOKS = ["notebooks/01_prepare.ipynb", "notebooks/02_train.ipynb"]
SANITIZE = Path(__file__).with_name("sanitize.cfg")


def run_nbval(root: Path, notebooks: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "mlvs._fastimport",
            "--nbval",
            "--nbval-kernel-name",
            "python3",
            "--nbval-sanitize-with",
            str(SANITIZE),
            "-p",
            "no:cacheprovider",
            "-q",
            *notebooks,
        ],
        cwd=root,
        env=clean_env(root),
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_pipeline_notebooks_reproduce_their_stored_outputs(tmp_path: Path) -> None:
    root = make_workspace(tmp_path / "ws", tiny=False)
    result = run_nbval(root, PIPELINE_NOTEBOOKS)
    assert result.returncode == 0, result.stdout[-4000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_incident_and_rollback_notebooks_reproduce_their_stored_outputs(
    _trained_template: Path, tmp_path: Path
) -> None:
    root = make_story_workspace(tmp_path / "ws", trained=_trained_template)
    result = run_nbval(root, ["notebooks/03_incident.ipynb", "notebooks/04_rollback.ipynb"])
    assert result.returncode == 0, result.stdout[-4000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_the_monitoring_notebook_reproduces_its_stored_outputs(
    _trained_template: Path, tmp_path: Path
) -> None:
    root = make_monitor_workspace(tmp_path / "ws", trained=_trained_template)
    result = run_nbval(root, ["notebooks/05_monitor.ipynb"])
    assert result.returncode == 0, result.stdout[-4000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
