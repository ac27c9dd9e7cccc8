"""Notebook kernels talk over IPC sockets in a private directory, which is gone afterwards."""

from __future__ import annotations

import json
import stat
import tempfile
from pathlib import Path

import nbformat
import papermill
import pytest
from nbclient import NotebookClient

from mlvs.backends.kernel import ipc_kernel_config

# The cell asks the running kernel how it was reached, and where its connection file is.
PROBE = (
    "import ipykernel, json\n"
    "print(json.dumps({'transport': json.loads(ipykernel.get_connection_info())['transport'],"
    " 'file': ipykernel.get_connection_file()}))"
)
TCP_WARNING = "Kernel is running over TCP without encryption"


def probe_notebook() -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(PROBE)]
    return notebook


def printed(notebook: nbformat.NotebookNode) -> dict[str, str]:
    return json.loads(notebook.cells[0].outputs[0]["text"])


def test_papermill_runs_the_kernel_over_ipc_in_a_private_directory_it_removes(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "probe.ipynb"
    nbformat.write(probe_notebook(), source)
    with ipc_kernel_config() as config:
        directory = Path(config.KernelManager.connection_file).parent
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        executed = papermill.execute_notebook(
            str(source),
            str(tmp_path / "out.ipynb"),
            kernel_name="python3",
            progress_bar=False,
            config=config,
        )
        assert list(directory.iterdir()) == []  # connection file and sockets removed at shutdown
    seen = printed(executed)
    assert seen["transport"] == "ipc"
    assert Path(seen["file"]).parent == directory
    assert not directory.exists()
    assert TCP_WARNING not in capfd.readouterr().err


def test_nbclient_takes_the_same_config(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    notebook = probe_notebook()
    with ipc_kernel_config() as config:
        directory = Path(config.KernelManager.connection_file).parent
        NotebookClient(notebook, kernel_name="python3", timeout=120, config=config).execute()
    assert printed(notebook)["transport"] == "ipc"
    assert not directory.exists()
    assert TCP_WARNING not in capfd.readouterr().err


def test_a_temporary_directory_too_deep_for_a_socket_path_gives_way_to_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    notebook = probe_notebook()
    with ipc_kernel_config() as config:
        directory = Path(config.KernelManager.connection_file).parent
        NotebookClient(notebook, kernel_name="python3", timeout=120, config=config).execute()
    assert directory.parent == Path("/tmp")
    assert printed(notebook)["transport"] == "ipc"
    assert not directory.exists()
