"""The Jupyter kernel a notebook runs on: local IPC sockets in a private directory, never loopback TCP.

Over TCP, any local user can reach a kernel's ports, and ipykernel prints "Kernel is
running over TCP without encryption" for every notebook. Over IPC the sockets are
files in a directory only this user can enter (mode 0700), removed when the kernel stops.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlvs.sidecar import die_with

if TYPE_CHECKING:
    from traitlets.config import Config

# Private kernel directories are named so; whatever a killed run leaves is recognisable.
KERNEL_DIR_PREFIX = "mlvs-kernel-"
# A Unix socket's path must fit in 104 bytes with its final NUL (macOS; 108 on Linux), or
# binding it fails with "File name too long" and the notebook with it.
SOCKET_PATH_LIMIT = 103
# The longest socket path under a kernel directory: "<dir>/mlvs-kernel-XXXXXXXX/kernel-ipc-<port>".
_SOCKET_SUFFIX = len(f"/{KERNEL_DIR_PREFIX}xxxxxxxx/kernel-ipc-99999")


def kernel_parent_dir() -> str:
    """Where the private kernel directories go: the temporary directory, or /tmp when that is too deep."""
    base = tempfile.gettempdir()
    if len(os.fsencode(base)) + _SOCKET_SUFFIX <= SOCKET_PATH_LIMIT or not os.path.isdir("/tmp"):
        return base
    return "/tmp"


@contextmanager
def ipc_kernel_config(template_dir: str | None = None) -> Iterator[Config]:
    """A traitlets config that makes nbclient (and papermill through it) start its kernel over IPC.

    Pass it as `config=` to `nbclient.NotebookClient` or `papermill.execute_notebook`:
    the kernel manager they create reads its `transport` and `connection_file` from it.
    The directory lives in the temporary directory (`kernel_parent_dir`), not the project:
    a socket path is limited to about 100 bytes, which a deep project path would exceed.
    It is removed on exit with anything a dead kernel left in it. With `template_dir`, the
    kernel is the template forked there (`fork_kernel_template`) when it answers.
    """
    # deferred: traitlets (~60 ms) only when a notebook runs, not whenever ops.run is imported
    from traitlets.config import Config

    # mkdtemp creates the directory with mode 0700: no other user can reach the sockets.
    with tempfile.TemporaryDirectory(
        prefix=KERNEL_DIR_PREFIX, dir=kernel_parent_dir()
    ) as directory:
        # The sockets are named after the connection file ("<stem>-ipc-<n>"), beside it.
        connection_file = str(Path(directory) / "kernel.json")
        settings: dict[str, Any] = {"transport": "ipc", "connection_file": connection_file}
        config: dict[str, Any] = {"KernelManager": settings}
        if template_dir is not None:
            # By name: jupyter_client is imported with the notebook's run, not with this module.
            config["NotebookClient"] = {"kernel_manager_class": WARM_KERNEL_MANAGER}
            config["WarmKernelManager"] = {"template_dir": template_dir}
        yield Config(config)


@contextmanager
def template_directory() -> Iterator[str]:
    """A private directory (mode 0700) for the template's socket, removed on exit."""
    with tempfile.TemporaryDirectory(prefix=KERNEL_DIR_PREFIX, dir=kernel_parent_dir()) as path:
        yield path


# --- Kernels forked warm ------------------------------------------------------------------
#
# `mlvs run`'s side process imports MLflow, pandas and SQLAlchemy to create the run, and the
# notebook's kernel imported them all again: 2 to 3 s of CPU per notebook. Instead, the side
# process imports them once, with ipykernel, and forks a template before it opens any store;
# when papermill starts the kernel, the template becomes it. The kernel then starts with those
# modules imported and nothing else of the side process's state: the fork comes before any
# SQLite handle, thread of its own or run exists there. Linux only (a parent-death signal ties
# the kernel to the side process, and the runner watches it through a pidfd); elsewhere, and
# whenever the template is not there, the kernel is started cold as before.

# What the side process imports anyway (MLflow and its SQL store), and the kernel's own server.
WARM_MODULES = (
    "ipykernel.kernelapp",
    "pandas",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
)
# What the stages' kernels import besides: a pipeline's warm process (`mlvs.sidecar`) imports
# these too, once, so that neither stage's kernel imports scikit-learn itself.
WARM_STAGE_MODULES = (
    *WARM_MODULES,
    "sklearn.compose",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "xgboost",
)
TEMPLATE_SOCKET = "template.sock"
WARM_KERNEL_MANAGER = "mlvs.backends.kernel_manager.WarmKernelManager"
# How long the runner waits for the template's answer before it starts the kernel cold.
TEMPLATE_TIMEOUT_S = 30.0
_IPYKERNEL_ARGV = ("-m", "ipykernel_launcher")


def warm_kernels_supported() -> bool:
    """Whether kernels can be forked warm on this platform."""
    return sys.platform.startswith("linux") and hasattr(os, "pidfd_open")


def fork_kernel_template(directory: str) -> int | None:
    """In the side process: import `WARM_MODULES`, then fork the template that becomes the
    notebook's kernel when asked on `<directory>/template.sock`. Its process id, or None where
    kernels are started cold."""
    if not warm_kernels_supported():
        return None
    for name in WARM_MODULES:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.path.join(directory, TEMPLATE_SOCKET))
    listener.listen(1)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = _serve_as_kernel(listener, parent)
        except BaseException:  # the template's own failure: the runner starts the kernel cold
            traceback.print_exc()
        finally:
            os._exit(status)
    listener.close()
    return pid


def _serve_as_kernel(listener: socket.socket, parent: int) -> int:
    """The template: wait for the one request, then become the kernel it describes."""
    die_with(parent)
    connection, _ = listener.accept()
    listener.close()
    with connection:
        request = json.loads(_read_line(connection))
        argv, env, cwd = request["argv"], request["env"], request["cwd"]
        # What `Popen(start_new_session=True, cwd=..., env=..., stdin=PIPE)` gives a cold kernel.
        os.setsid()
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        connection.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # `python -m ipykernel_launcher` puts the working directory first on the path.
    sys.path[0] = cwd
    # deferred: imported already (WARM_MODULES); named here for the kernel's own start
    import ipykernel_launcher
    from ipykernel.kernelapp import IPKernelApp

    sys.argv = [ipykernel_launcher.__file__, *argv]
    # A cold kernel reads JPY_PARENT_PID at import; here ipykernel was imported before it was set.
    app = IPKernelApp.instance(parent_handle=int(env.get("JPY_PARENT_PID") or 0))
    app.initialize(argv)
    _settle_import_time_choices()
    app.start()
    return 0


def _settle_import_time_choices() -> None:
    """Make what a library chose at import, outside any kernel, what it chooses inside one.

    pandas picks `display.max_columns` when it is imported: 0 (fit the terminal) in a plain
    interpreter such as the side process, 20 in a Jupyter kernel. A kernel imports it as a
    kernel, and tables print with 20 columns at most.
    """
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        pandas.set_option("display.max_columns", 20)


def _read_line(connection: socket.socket) -> bytes:
    """One newline-ended message from `connection` (empty or cut short when the other end closed)."""
    with connection.makefile("rb") as stream:
        return stream.readline()


def ask_template(directory: str, cmd: list[str], env: dict[str, str], cwd: str) -> int:
    """Have the template in `directory` become the kernel `cmd` starts; its process id.

    Raises OSError when there is no template to ask (it was never forked, or is gone) or
    `cmd` is not an IPython kernel's: the caller then starts the kernel cold.
    """
    if tuple(cmd[1:3]) != _IPYKERNEL_ARGV:
        raise OSError(f"not an IPython kernel's command: {cmd[:3]}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(TEMPLATE_TIMEOUT_S)
        connection.connect(os.path.join(directory, TEMPLATE_SOCKET))
        request = {"argv": list(cmd[3:]), "env": env, "cwd": cwd}
        connection.sendall(json.dumps(request).encode() + b"\n")
        return int(json.loads(_read_line(connection))["pid"])


class ForkedKernel:
    """The kernel the template became, with what jupyter_client asks of a `Popen`.

    It is the side process's child, not this process's: a pidfd tells when it has ended (its
    exit status is its parent's to read, so an ended kernel reports 0).
    """

    stdin = stdout = stderr = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = os.pidfd_open(pid)

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._pidfd], [], [], 0)[0]:
            self._ended()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._pidfd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout or 0)
            self._ended()
        return self.returncode or 0

    def _ended(self) -> None:
        self.returncode = 0
        os.close(self._pidfd)

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
