"""Notebook kernels talk over IPC sockets in a private directory, which is gone afterwards."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest
from conftest import mlvs
from nbclient import NotebookClient

from mlvs.backends.kernel import (
    ask_template,
    fork_kernel_template,
    ipc_kernel_config,
    warm_kernels_supported,
)

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


# --- Kernels forked warm from `mlvs run`'s side process --------------------------------------

# Asked before the notebook imports anything: a kernel forked warm has MLflow already.
WARM_PROBE = (
    "import json, os, sys\n"
    "print(json.dumps({'mlflow_imported': 'mlflow' in sys.modules, 'cwd': os.getcwd(),"
    " 'path0': sys.path[0], 'group_leader': os.getpgid(0) == os.getpid(),"
    " 'stdin': os.readlink('/proc/self/fd/0'), 'parent': open(f'/proc/{os.getppid()}/cmdline').read(),"
    " 'ipykernel_parent': __import__('ipykernel.kernelapp').kernelapp.IPKernelApp.instance().parent_handle,"
    " 'run_env': 'MLFLOW_RUN_ID' in os.environ or 'MLVS_RUN_HANDOFF' in os.environ}))"
)


def warm_probe_notebook() -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(WARM_PROBE)]
    return notebook


@pytest.mark.skipif(not warm_kernels_supported(), reason="kernels are forked warm on Linux only")
def test_mlvs_run_forks_the_kernel_warm_from_its_side_process_as_a_cold_one_would_start(
    workspace: Path,
) -> None:
    nbformat.write(warm_probe_notebook(), workspace / "notebooks" / "probe.ipynb")
    result = mlvs(workspace, "run", "probe")
    assert result.returncode == 0, result.stderr[-3000:]
    seen = printed(nbformat.read(workspace / "reports" / "probe.ipynb", as_version=4))
    assert seen["mlflow_imported"] is True  # imported once, in the side process
    assert "multiprocessing" in seen["parent"]  # the side process is the kernel's parent
    notebooks = str((workspace / "notebooks").resolve())
    assert seen["cwd"] == notebooks and seen["path0"] == notebooks
    assert seen["group_leader"] is True  # a session of its own: an interrupt reaches it alone
    assert seen["stdin"] == os.devnull
    assert seen["ipykernel_parent"] > 0  # it watches its runner, and prints no banner
    assert seen["run_env"] is True  # the run's environment, set after the side process started
    assert "--existing" not in result.stdout + result.stderr


def test_without_a_template_the_kernel_starts_cold(tmp_path: Path) -> None:
    notebook = warm_probe_notebook()
    empty = tmp_path / "no-template"
    empty.mkdir()
    with ipc_kernel_config(str(empty)) as config:
        NotebookClient(notebook, kernel_name="python3", timeout=120, config=config).execute()
    assert printed(notebook)["mlflow_imported"] is False


def test_only_an_ipython_kernel_is_asked_of_the_template(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="not an IPython kernel"):
        ask_template(str(tmp_path), ["julia", "-i", "kernel.jl"], {}, str(tmp_path))
    with pytest.raises(FileNotFoundError):
        ask_template(str(tmp_path), ["python", "-m", "ipykernel_launcher"], {}, str(tmp_path))


def _fork_template_and_wait(directory: str, report: Any) -> None:
    """A stand-in side process: fork the template, say its pid, then wait to be killed."""
    report.put(fork_kernel_template(directory))
    time.sleep(600)


@pytest.mark.skipif(not warm_kernels_supported(), reason="kernels are forked warm on Linux only")
def test_the_template_dies_with_the_side_process(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    report = context.Queue()
    side = context.Process(target=_fork_template_and_wait, args=(str(tmp_path), report))
    side.start()
    try:
        template = report.get(timeout=120)
        assert template and Path(f"/proc/{template}").exists()
        assert (tmp_path / "template.sock").exists()
    finally:
        side.kill()
        side.join()
    deadline = time.monotonic() + 10
    while _alive(template) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(template)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper counts as ended)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"
