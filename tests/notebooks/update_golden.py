"""Re-execute the notebooks in a temporary copy of the project and store their outputs.

nbval compares a notebook's stored outputs with a fresh execution, so the stored
outputs must come from the project's default parameters in a clean workspace.
Run through `make golden` after changing a notebook or what it prints.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from mlvs.backends.kernel import ipc_kernel_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, clean_env, make_monitor_workspace, make_story_workspace, make_workspace

# Pipeline notebooks run on the default parameters in a fresh copy; the incident and
# rollback notebooks on a tiny copy with two snapshots (see make_story_workspace); the
# monitoring notebook on a tiny trained copy with one batch (see make_monitor_workspace).
GROUPS = (
    (("01_prepare", "02_train"), lambda d: make_workspace(d, tiny=False)),
    (("03_incident", "04_rollback"), make_story_workspace),
    (("05_monitor",), make_monitor_workspace),
)


def main() -> None:
    for notebooks, prepare in GROUPS:
        with tempfile.TemporaryDirectory() as tmp:
            execute(prepare(Path(tmp) / "ws"), notebooks)


def execute(root: Path, notebooks: tuple[str, ...]) -> None:
    saved = dict(os.environ)
    env = clean_env(root)
    os.environ.clear()
    os.environ.update(env)
    try:
        for name in notebooks:
            path = root / "notebooks" / f"{name}.ipynb"
            notebook = nbformat.read(path, as_version=4)
            with ipc_kernel_config() as kernel_config:
                NotebookClient(
                    notebook,
                    kernel_name="python3",
                    timeout=600,
                    resources={"metadata": {"path": str(path.parent)}},
                    config=kernel_config,
                ).execute()
            for cell in notebook.cells:
                cell.metadata.pop("execution", None)
            nbformat.write(notebook, REPO / "notebooks" / f"{name}.ipynb")
            print(f"stored outputs of {name}")
    finally:
        os.environ.clear()
        os.environ.update(saved)


if __name__ == "__main__":
    main()
