"""A side process that does slow, import-bound work beside the main one.

`mlvs run` spends most of its own time importing MLflow and nbconvert and opening the
tracking store, none of which the kernel needs. A side process started first does that
work on the other core while this one imports papermill and starts the kernel; on two
cores the two overlap instead of adding up.

Calls are named by module and function (`"mlvs.backends.mlflow.tracking", "finish_run"`),
so only plain, importable functions run there, and their results come back in the order
they were asked for.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import multiprocessing
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from mlvs.errors import MlvsError
from mlvs.logs import get_logger
from mlvs.settings import WARM_SIDE_PROCESSES

log = get_logger("run")


class SidecarError(MlvsError):
    """Raised when the side process died, or a call's failure could not be sent back as it was."""


def _serve(connection: Connection) -> None:
    """The side process: run each request in turn and send back its result or its exception."""
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        module, name, args, kwargs = request
        try:
            result = getattr(importlib.import_module(module), name)(*args, **kwargs)
            reply: tuple[bool, Any] = (True, result)
        except Exception as exc:  # the caller decides what each failure means
            reply = (False, _portable(exc))
        connection.send(reply)


def _portable(exc: Exception) -> Exception:
    """`exc` if it survives pickling as itself, else a SidecarError that says what it was."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
    except Exception:
        copy = None
    if type(copy) is type(exc) and str(copy) == str(exc):
        return exc
    return SidecarError(f"{type(exc).__name__}: {exc}")


class _SideProcess(Protocol):
    """What a side process is asked: a spawned `multiprocessing.Process`, or a `_ForkedSideProcess`."""

    @property
    def exitcode(self) -> int | None: ...

    def is_alive(self) -> bool: ...

    def join(self, timeout: float | None = None) -> None: ...

    def terminate(self) -> None: ...


class Sidecar:
    """One side process that runs named functions in order; use it as a context manager.

    Spawned, or forked already warm by the `WarmSideProcesses` of an `mlvs pipeline` above it.
    """

    def __init__(self) -> None:
        self._process: _SideProcess
        self._forked = _fork_warm(WARM_SIDE_PROCESSES.get())
        if self._forked is not None:
            self._connection, self._process = self._forked.connection, self._forked
        else:
            # spawn, not fork: a fork would copy this process's threads and open SQLite handles.
            context = multiprocessing.get_context("spawn")
            self._connection, child = context.Pipe()
            # daemon: a command that stops early (a refusal, Ctrl-C) never waits for the side process
            process = context.Process(target=_serve, args=(child,), daemon=True)
            process.start()
            child.close()
            self._process = process
        self._sent = 0
        self._received = 0
        self._results: dict[int, tuple[bool, Any]] = {}

    def submit(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
        """Ask for `function(*args, **kwargs)` in the side process; return the ticket of its result."""
        self._connection.send((function.__module__, function.__name__, args, kwargs))
        self._sent += 1
        return self._sent

    def result(self, ticket: int) -> Any:
        """The result of the call `ticket`, waiting for it; its exception is raised here."""
        if self._forked is not None:
            self._forked.greeting()  # a forked side process first says who it is
        while ticket not in self._results:
            try:
                reply = self._connection.recv()
            except (EOFError, OSError) as exc:
                raise SidecarError(
                    f"the side process stopped (exit code {self._process.exitcode})"
                ) from exc
            self._received += 1
            self._results[self._received] = reply
        ok, value = self._results.pop(ticket)
        if not ok:
            raise value
        return value

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`function(*args, **kwargs)` in the side process, waited for."""
        return self.result(self.submit(function, *args, **kwargs))

    def close(self) -> None:
        """Stop the side process: after its current call when asked politely, at once otherwise."""
        with contextlib.suppress(OSError):  # it may have died already
            self._connection.send(None)
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
        self._connection.close()

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None and self._process.is_alive():
            # a failure here: whatever the side process still does is no longer wanted
            self._process.terminate()
        self.close()


# --- Side processes forked warm --------------------------------------------------------------
#
# Each `mlvs run` spawns its side process, which imports MLflow, pandas and ipykernel before it
# forks the notebook's kernel, and the kernel imports scikit-learn: about 4 s of CPU per notebook
# before its first cell. `mlvs pipeline` runs one `mlvs run` per stage (through `dvc repro`), so
# it starts one `WarmSideProcesses` first: a process that imports those modules once, when the
# first stage asks, and forks every stage its side process from then on. It opens no store and
# starts no thread of its own, so a fork copies imported modules and nothing else. Asking does
# not wait: `mlvs run` goes on with its own work while the first stage's imports happen, as it
# does beside a spawned side process. A stage run by another interpreter, or that finds no warm
# process, spawns its side process as before.

WARM_SOCKET = "side.sock"
# Beside the socket: the warm process's id, interpreter and module path (a spawned process
# has its parent's), written by the command that started it before any stage can look.
WARM_IDENTITY = "side.json"
# How long a stage waits for a warm process that is still starting to listen.
CONNECT_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1
_LENGTH = struct.Struct("!I")
_MAX_REQUEST = 16 << 20


def die_with(parent: int) -> None:
    """Be killed when `parent` ends (Linux's parent-death signal); exit now if it has already."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the signal was asked for
        os._exit(1)


def warm_side_processes_supported() -> bool:
    """Whether side processes can be forked warm here (Linux: a parent-death signal and pidfds)."""
    return sys.platform.startswith("linux") and hasattr(os, "pidfd_open")


def _identity() -> dict[str, Any]:
    return {"executable": sys.executable, "path": sys.path}


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    """`size` bytes and not one more: what follows on the socket is the side process's to read."""
    data = bytearray()
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError("the other end closed")
        data += chunk
    return bytes(data)


def _same_user(connection: socket.socket) -> bool:
    """Whether the process at the other end of `connection` runs as this user (SO_PEERCRED)."""
    credentials = connection.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
    )
    _, uid, _ = struct.unpack("3i", credentials)
    return uid == os.getuid()


def _import_all(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a module that will not import is imported cold later
            log.debug("warm side processes: %s not imported (%s)", name, exc)


def _warm_server(directory: str, modules: tuple[str, ...], parent: int, eager: bool) -> None:
    """The warm process: import `modules` (at once when `eager`, else when first asked), then
    fork one side process per request."""
    die_with(parent)
    # The side processes are not waited for here: the kernel reaps them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.path.join(directory, WARM_SOCKET))
    listener.listen(8)
    # Listening first: a request that comes while the imports run waits in the backlog.
    imported = eager
    if eager:
        _import_all(modules)
    while True:
        connection, _ = listener.accept()
        streams: list[int] = []
        try:
            # The asker's stdout and stderr come with the request's first bytes (SCM_RIGHTS).
            header, streams, _, _ = socket.recv_fds(connection, _LENGTH.size, 2)
            header += _read_exactly(connection, _LENGTH.size - len(header))
            (size,) = _LENGTH.unpack(header)
            if not _same_user(connection) or size > _MAX_REQUEST or len(streams) != 2:
                continue
            request = json.loads(_read_exactly(connection, size))
            if not isinstance(request.get("cwd"), str) or not isinstance(request.get("env"), dict):
                continue
            if not imported:
                imported = True
                _import_all(modules)
            if os.fork() == 0:
                listener.close()
                _become_side_process(connection, request, streams)  # never returns
        except Exception as exc:  # one bad request never stops the others
            log.debug("warm side processes: a request failed (%s)", exc)
        finally:
            connection.close()
            for fd in streams:
                os.close(fd)


def _become_side_process(
    connection: socket.socket, request: dict[str, Any], streams: list[int]
) -> None:
    """In the fork: take the asker's directory, environment, stdout and stderr, say who it is,
    then serve it."""
    status = 1
    try:
        # What a spawned side process starts with: the parent's stdout and stderr, no stdin,
        # default signals, the parent's directory and environment, and its own pipe (here
        # the socket it asked on).
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(streams[0], 1)
        os.dup2(streams[1], 2)
        for fd in streams:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request["env"].items()})
        pipe = Connection(connection.detach())
        pipe.send(os.getpid())
        _serve(pipe)
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


class _ForkedSideProcess:
    """A side process the warm process forks: not this process's child, so a pidfd tells when it
    has ended (its exit status is not ours to read: an ended one reports 0). Its first message
    on `connection` is its process id, read when first needed."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._pid: int | None = None
        self._pidfd: int | None = None
        self._exitcode: int | None = None

    def greeting(self) -> None:
        """Read the side process's first message, its process id, once; a side process that is
        gone (the warm process stopped before forking it) has ended."""
        if self._pid is not None or self._exitcode is not None:
            return
        try:
            pid = self.connection.recv()
            if not isinstance(pid, int):
                raise EOFError(f"not a process id: {pid!r}")
            self._pid = pid
            self._pidfd = os.pidfd_open(pid)
            log.debug("side process %d forked warm", pid)
        except (EOFError, OSError):
            self._exitcode = 1

    @property
    def exitcode(self) -> int | None:
        self.join(0)
        return self._exitcode

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        self.greeting()
        if self._pidfd is not None and select.select([self._pidfd], [], [], timeout)[0]:
            os.close(self._pidfd)
            self._pidfd, self._exitcode = None, 0

    def terminate(self) -> None:
        if self.is_alive() and self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGTERM)


def _connect(path: Path, pid: Any) -> socket.socket:
    """A connection to the warm process `pid` at `path`, waiting while it starts to listen."""
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.settimeout(CONNECT_TIMEOUT_S)
            connection.connect(str(path))
            return connection
        except (FileNotFoundError, ConnectionRefusedError):
            connection.close()
            starting = isinstance(pid, int) and pid > 0 and _alive(pid)
            if not starting or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
        except BaseException:
            connection.close()
            raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fork_warm(directory: Path | None) -> _ForkedSideProcess | None:
    """Ask the warm process in `directory` for a side process, without waiting for it; None to
    spawn one instead (no warm process there, or one of another interpreter)."""
    if directory is None or not warm_side_processes_supported():
        return None
    try:
        # Only a private directory of this user's: what the socket sends back is unpickled.
        info = os.stat(directory)
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            log.debug(
                "%s is not a private directory of this user's; spawning a side process", directory
            )
            return None
        identity = json.loads((directory / WARM_IDENTITY).read_text(encoding="utf-8"))
        if not isinstance(identity, dict) or identity.get("interpreter") != _identity():
            log.debug("the warm process runs another interpreter; spawning a side process")
            return None
        request = json.dumps({"cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        connection = _connect(directory / WARM_SOCKET, identity.get("pid"))
        try:
            if not _same_user(connection):
                raise OSError("the warm process runs as another user")
            connection.settimeout(None)
            message = _LENGTH.pack(len(request)) + request
            sent = socket.send_fds(connection, [message], [1, 2])
            connection.sendall(message[sent:])
        except BaseException:
            connection.close()
            raise
    except (OSError, ValueError) as exc:
        log.debug("no warm side process (%s); spawning one", exc)
        return None
    return _ForkedSideProcess(Connection(connection.detach()))


class WarmSideProcesses:
    """A process that imports `modules` once and forks warm side processes for the `mlvs run`
    commands started below this one; they find it through `environment()`. Use it as a context
    manager, around the command that starts them; it also ends when this process does.

    `eager`: import at once, beside what runs before the first `mlvs run` asks (when a run is
    certain); otherwise when the first one asks, so that a command with nothing to run pays
    only for starting the process.
    """

    def __init__(self, directory: str, modules: tuple[str, ...], eager: bool = False) -> None:
        self.directory = directory
        self._process: Any = None
        if not warm_side_processes_supported():
            return
        context = multiprocessing.get_context("spawn")
        self._process = context.Process(
            target=_warm_server, args=(directory, modules, os.getpid(), eager), daemon=True
        )
        self._process.start()
        identity = Path(directory) / WARM_IDENTITY
        scratch = identity.with_suffix(".tmp")
        scratch.write_text(
            json.dumps({"pid": self._process.pid, "interpreter": _identity()}), encoding="utf-8"
        )
        scratch.replace(identity)

    def environment(self) -> dict[str, str]:
        """What the commands started below need in their environment to ask for a side process."""
        if self._process is None:
            return {}
        return {WARM_SIDE_PROCESSES.name: self.directory}

    def close(self) -> None:
        """Stop the warm process; the side processes it forked finish their own work."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.terminate()
            self._process.join()

    def __enter__(self) -> WarmSideProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
