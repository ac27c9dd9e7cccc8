"""`make lab`: JupyterLab on loopback at `notebooks/`, the project kernel registered, notebooks run through it.

The test starts `make lab` itself in a trained workspace, with every directory
Jupyter writes (runtime, config, data, the kernel spec, the IPython profile) in a
temporary directory, and talks to the server the way JupyterLab's front end does:
REST for contents and sessions, a websocket for the kernel. A notebook run there
must print what the papermill run of the pipeline printed.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import BIN, clean_env, copy_workspace

from ._browser import (
    KernelChannel,
    Started,
    free_port,
    http,
    listening_addresses,
    make_recipe,
    make_target,
    process_alive,
    wait_until,
)

pytestmark = pytest.mark.slow

KERNEL = "mlvs"
VOLATILE = "nbval-ignore-output"


@dataclass
class Lab:
    """A running `make lab` and where it keeps its state."""

    root: Path
    server: Started
    port: int
    token: str
    info: dict[str, Any]
    kernel_prefix: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(
        self, path: str, method: str = "GET", body: Any = None, token: bool = True
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"token {self.token}"} if token else {}
        status, payload, _ = http(f"{self.url}/api/{path}", method, body, headers)
        return status, json.loads(payload) if payload.strip() else None


def runtime_info(runtime: Path) -> dict[str, Any] | None:
    """The server's own record of where it listens (jpserver-PID.json), once it has written it."""
    for record in runtime.glob("jpserver-*.json"):
        try:
            return json.loads(record.read_text())
        except ValueError:
            return None  # being written
    return None


@pytest.fixture(scope="module")
def lab(_trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("lab")
    root = copy_workspace(_trained_template, base / "ws")
    state = base / "jupyter"
    prefix = state / "prefix"
    env = clean_env(root) | {
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTER_DATA_DIR": str(state / "data"),
        "JUPYTER_PATH": str(
            prefix / "share" / "jupyter"
        ),  # where the kernel spec goes, for this server
        "IPYTHONDIR": str(state / "ipython"),
    }
    port = free_port()
    server = make_target(
        root, "lab", base / "lab.log", env, LAB_PORT=str(port), KERNEL_PREFIX=str(prefix)
    )
    try:
        info = wait_until(
            lambda: runtime_info(state / "runtime"), 120, "JupyterLab's runtime file", server
        )
        # The server's own record says where it listens: if another process took the port
        # between free_port() and the bind, Jupyter moves to another one (port_retries).
        lab = Lab(root, server, int(info["port"]), info["token"], info, prefix)
        wait_until(lambda: lab.api("status")[0] == 200, 60, "JupyterLab's API", server)
        yield lab
    finally:
        server.stop()


def test_make_lab_registers_the_project_kernel_where_its_jupyterlab_finds_it(lab: Lab) -> None:
    spec_file = lab.kernel_prefix / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json"
    spec = json.loads(spec_file.read_text())
    assert spec["display_name"] == "Python (mlvs)"
    assert (
        Path(spec["argv"][0]).resolve() == (BIN / "python").resolve()
    )  # the project's interpreter
    assert spec["argv"][spec["argv"].index("-m") + 1] == "ipykernel_launcher"

    status, specs = lab.api("kernelspecs")
    assert status == 200 and specs["kernelspecs"][KERNEL]["spec"]["display_name"] == "Python (mlvs)"

    # Without an override the spec goes into the virtual environment itself (`--sys-prefix`),
    # the one place that environment's JupyterLab searches and nothing in the home directory.
    install = next(line for line in make_recipe(lab.root, "lab") if "ipykernel install" in line)
    assert install.startswith(".venv/bin/python -m ipykernel install")
    assert re.search(r'--prefix "?([^" ]+)"?', install).group(1) == str(lab.root / ".venv")


def test_make_lab_listens_on_loopback_only_and_wants_its_token(lab: Lab) -> None:
    assert listening_addresses(lab.port) == {"127.0.0.1"}
    assert lab.api("status", token=False)[0] == 403
    assert lab.api("status")[0] == 200
    assert lab.info["token"] and lab.info["hostname"] == "127.0.0.1"


def test_make_lab_serves_the_notebooks_directory_and_nothing_above_it(lab: Lab) -> None:
    assert Path(lab.info["root_dir"]).resolve() == (lab.root / "notebooks").resolve()
    status, listing = lab.api("contents")
    assert status == 200
    assert sorted(item["name"] for item in listing["content"]) == sorted(
        p.name for p in (lab.root / "notebooks").iterdir()
    )
    assert lab.api("contents/..%2Fparams%2Fprepare.yaml")[0] in (400, 403, 404)


def comparable(outputs: list[Any]) -> list[tuple[str, ...]]:
    """The deterministic text of a cell's outputs: streams (merged per name), results' text, errors."""
    shown: list[tuple[str, ...]] = []
    for output in outputs:
        if output["output_type"] == "stream":
            if shown and shown[-1][:2] == ("stream", output["name"]):
                shown[-1] = ("stream", output["name"], shown[-1][2] + output["text"])
            else:
                shown.append(("stream", output["name"], output["text"]))
        elif output["output_type"] in ("execute_result", "display_data"):
            shown.append((output["output_type"], output["data"].get("text/plain", "")))
        elif output["output_type"] == "error":
            shown.append(("error", output["ename"], output["evalue"]))
    return shown


def test_01_prepare_run_in_jupyterlab_with_the_mlvs_kernel_prints_what_papermill_printed(
    lab: Lab,
) -> None:
    reference = nbformat.read(
        lab.root / "reports" / "01_prepare.ipynb", as_version=4
    )  # the pipeline's papermill run
    status, model = lab.api("contents/01_prepare.ipynb?content=1")
    assert status == 200
    notebook = nbformat.from_dict(model["content"])
    parameters = reference.metadata["papermill"]["parameters"]
    if parameters:  # the same values papermill injected, injected the same way
        from papermill.parameterize import parameterize_notebook

        notebook = parameterize_notebook(
            notebook, parameters, kernel_name=KERNEL, language="python"
        )

    status, session = lab.api(
        "sessions",
        "POST",
        {
            "path": "01_prepare.ipynb",
            "name": "01_prepare.ipynb",
            "type": "notebook",
            "kernel": {"name": KERNEL},
        },
    )
    assert status == 201 and session["kernel"]["name"] == KERNEL
    channel = KernelChannel(lab.url, lab.token, session["kernel"]["id"])
    kernel_pid = None
    try:
        compared = 0
        printed: list[str] = []
        for cell, expected in zip(notebook.cells, reference.cells, strict=True):
            assert cell.source == expected.source
            if cell.cell_type != "code":
                continue
            outputs, reply = channel.execute(cell.source)
            assert reply["status"] == "ok", comparable(outputs)
            printed += [o["text"] for o in outputs if o["output_type"] == "stream"]
            if VOLATILE in cell.metadata.get("tags", []):
                continue
            assert comparable(outputs) == comparable(expected.outputs), cell.source
            compared += bool(expected.outputs)
        assert (
            compared >= 6
        )  # tables, the schema report, the figure, the split: not a vacuous match

        outputs, _ = channel.execute(
            "import os, sys; print(sys.executable, os.getcwd(), os.getpid(), sep='\\n')"
        )
        executable, cwd, pid = comparable(outputs)[0][2].split()
        kernel_pid = int(pid)
        assert Path(executable).resolve() == (BIN / "python").resolve()
        assert Path(cwd).resolve() == (lab.root / "notebooks").resolve()
    finally:
        channel.close()
        lab.api(f"sessions/{session['id']}", "DELETE")
    if kernel_pid is not None:
        wait_until(
            lambda: not process_alive(kernel_pid), 30, "the kernel to shut down with its session"
        )

    # The run the notebook started from notebooks/ landed in the project's own MLflow store.
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", "".join(printed)).group(1)
    with sqlite3.connect(lab.root / "mlflow.db") as db:
        row = db.execute("SELECT status, name FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
    assert row == ("FINISHED", "01_prepare")
