"""The Jupyter kernel a notebook runs on: local IPC sockets in a private directory, never loopback TCP.

Over TCP, any local user can reach a kernel's ports, and ipykernel prints "Kernel is
running over TCP without encryption" for every notebook. Over IPC the sockets are
files in a directory only this user can enter (mode 0700), removed when the kernel stops.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from traitlets.config import Config

# Private kernel directories are named so; whatever a killed run leaves is recognisable.
KERNEL_DIR_PREFIX = "mlvs-kernel-"


@contextmanager
def ipc_kernel_config() -> Iterator[Config]:
    """A traitlets config that makes nbclient (and papermill through it) start its kernel over IPC.

    Pass it as `config=` to `nbclient.NotebookClient` or `papermill.execute_notebook`:
    the kernel manager they create reads its `transport` and `connection_file` from it.
    The directory lives in the system's temporary directory, not the project: a Unix
    socket path is limited to about 100 bytes, which a deep project path would exceed.
    It is removed on exit with anything a dead kernel left in it.
    """
    # deferred: traitlets (~60 ms) only when a notebook runs, not whenever ops.run is imported
    from traitlets.config import Config

    # mkdtemp creates the directory with mode 0700: no other user can reach the sockets.
    with tempfile.TemporaryDirectory(prefix=KERNEL_DIR_PREFIX) as directory:
        # The sockets are named after the connection file ("<stem>-ipc-<n>"), beside it.
        connection_file = str(Path(directory) / "kernel.json")
        settings: dict[str, Any] = {"transport": "ipc", "connection_file": connection_file}
        yield Config({"KernelManager": settings})
