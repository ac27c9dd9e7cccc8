"""The state lock: one state-changing command at a time, shared with the processes it starts.

Every state-changing operation takes the lock itself (`state_lock`, or `locked` on
a function whose first argument is the project's paths); reads never take it.

Some commands do their work through processes of their own: `mlvs pipeline` runs
`dvc repro`, whose stages are `mlvs run`; `mlvs drill` and `mlvs run` execute a
notebook whose kernel calls operations that change the workspace. Those processes
act for the holder, so they must not wait for it. The holder therefore publishes a
random token, in the environment its children inherit (`MLVS_LOCK_TOKEN`) and in
a file beside the lock with its pid. A process proceeds without taking the lock
only when its token is the one in that file and the pid there is one of its
ancestors: a token left by a finished or killed holder, or copied by a process
the holder did not start, never opens a lock that someone else holds.
"""

from __future__ import annotations

import functools
import hmac
import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from mlvs.errors import LockTimeoutError
from mlvs.paths import ProjectPaths
from mlvs.settings import LOCK_TIMEOUT, LOCK_TOKEN

LOCK_FILE = "state.lock"
HOLDER_FILE = "state.lock.holder"

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def state_lock(paths: ProjectPaths, timeout: float | None = None) -> Iterator[None]:
    """Hold the project's state lock for the body; wait at most `timeout` seconds.

    The default timeout is `MLVS_LOCK_TIMEOUT`. A negative timeout waits forever,
    zero tries once. Nested use in the same thread re-enters the lock, and a
    process started by the holder shares it. Raises LockTimeoutError when another
    command (another process or thread) keeps it.
    """
    paths.state.mkdir(parents=True, exist_ok=True)
    lock_path = paths.state / LOCK_FILE
    # deferred: filelock (~0.06 s, it loads asyncio) is needed only by commands that change state
    from filelock import FileLock, Timeout

    # A singleton lock counts nested acquisitions in one thread, so a rollback
    # that takes its automatic snapshot does not wait for itself. The options
    # stay fixed (timeout goes to acquire) because a singleton refuses new ones.
    lock = FileLock(str(lock_path), is_singleton=True)
    if lock.lock_counter == 0 and _held_by_an_ancestor(paths):
        yield
        return
    wait = LOCK_TIMEOUT.get() if timeout is None else timeout
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise LockTimeoutError(
            f"another mlvs command is changing this project (lock held at {lock_path}); "
            f"waited {wait:g} s: wait for it to finish or try again"
        ) from None
    try:
        with _shared_with_children(paths) if lock.lock_counter == 1 else _nothing():
            yield
    finally:
        lock.release()


def locked(
    operation: Callable[Concatenate[ProjectPaths, P], R],
) -> Callable[Concatenate[ProjectPaths, P], R]:
    """Run `operation(paths, ...)` under the state lock: the operation owns its lock."""

    @functools.wraps(operation)
    def run_locked(paths: ProjectPaths, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with state_lock(paths):
            return operation(paths, *args, **kwargs)

    return run_locked


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _shared_with_children(paths: ProjectPaths) -> Iterator[None]:
    """For the outermost hold of the lock: publish a fresh token for the processes started meanwhile."""
    token = secrets.token_hex(16)
    holder = paths.state / HOLDER_FILE
    fd = os.open(
        holder, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600
    )
    try:
        os.write(fd, json.dumps({"pid": os.getpid(), "token": token}).encode("utf-8"))
    except BaseException:
        holder.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    previous = os.environ.get(LOCK_TOKEN.name)
    os.environ[LOCK_TOKEN.name] = token
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(LOCK_TOKEN.name, None)
        else:
            os.environ[LOCK_TOKEN.name] = previous
        holder.unlink(missing_ok=True)


def _held_by_an_ancestor(paths: ProjectPaths) -> bool:
    """Whether this process was started (directly or not) by the live holder of the lock."""
    token = LOCK_TOKEN.get()
    if not token:
        return False
    try:
        holder = json.loads((paths.state / HOLDER_FILE).read_text(encoding="utf-8"))
        pid, published = int(holder["pid"]), str(holder["token"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no holder, or one still writing its file: take the lock as anyone would
    if not hmac.compare_digest(published, token) or pid == os.getpid():
        return False  # another thread of this process holds it: that is not sharing
    return _is_ancestor(pid)


def _is_ancestor(pid: int) -> bool:
    """Whether `pid` is the parent of this process, or the parent's parent, and so on."""
    current: int | None = os.getppid()
    for _ in range(256):  # deeper than any real process tree; a guard against a cycle
        if current is None or current <= 0:
            return False
        if current == pid:
            return True
        if current == 1:
            return False
        current = _parent_of(current)
    return False


def _parent_of(pid: int) -> int | None:
    """The parent of process `pid`, or None when it is gone or cannot be asked."""
    if Path("/proc/self/stat").is_file():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
            # "pid (command) state ppid ...": the command may hold spaces and parentheses.
            return int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return None
    try:  # no /proc (macOS, the BSDs): ask ps
        out = subprocess.run(
            ["ps", "-o", "ppid=", "-p", str(pid)], capture_output=True, text=True, check=False
        ).stdout.strip()
        return int(out) if out else None
    except (OSError, ValueError):
        return None
