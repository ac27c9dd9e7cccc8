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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import REPO, clean_env, make_workspace  # noqa: E402

NOTEBOOKS = ("01_prepare", "02_train")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = make_workspace(Path(tmp) / "ws", tiny=False)
        env = clean_env(root)
        os.environ.clear()
        os.environ.update(env)
        for name in NOTEBOOKS:
            path = root / "notebooks" / f"{name}.ipynb"
            notebook = nbformat.read(path, as_version=4)
            NotebookClient(notebook, kernel_name="python3", timeout=600,
                           resources={"metadata": {"path": str(path.parent)}}).execute()
            for cell in notebook.cells:
                cell.metadata.pop("execution", None)
            nbformat.write(notebook, REPO / "notebooks" / f"{name}.ipynb")
            print(f"stored outputs of {name}")


if __name__ == "__main__":
    main()
