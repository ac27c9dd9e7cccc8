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
import importlib
import multiprocessing
import pickle
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from mlvs.errors import MlvsError


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


class Sidecar:
    """One spawned process that runs named functions in order; use it as a context manager."""

    def __init__(self) -> None:
        # spawn, not fork: a fork would copy this process's threads and open SQLite handles.
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        # daemon: a command that stops early (a refusal, Ctrl-C) never waits for the side process
        self._process = context.Process(target=_serve, args=(child,), daemon=True)
        self._process.start()
        child.close()
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
