"""The Jupyter kernel a notebook runs on: local IPC sockets in a private directory, never loopback TCP.

Over TCP, any local user can reach a kernel's ports, and ipykernel prints "Kernel is
running over TCP without encryption" for every notebook. Over IPC the sockets are
files in a directory only this user can enter (mode 0700), removed when the kernel stops.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
def ipc_kernel_config() -> Iterator[Config]:
    """A traitlets config that makes nbclient (and papermill through it) start its kernel over IPC.

    Pass it as `config=` to `nbclient.NotebookClient` or `papermill.execute_notebook`:
    the kernel manager they create reads its `transport` and `connection_file` from it.
    The directory lives in the temporary directory (`kernel_parent_dir`), not the project:
    a socket path is limited to about 100 bytes, which a deep project path would exceed.
    It is removed on exit with anything a dead kernel left in it.
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
        yield Config({"KernelManager": settings})
