"""The state lock: one state-changing command at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from filelock import FileLock, Timeout

from mlvs.errors import LockTimeoutError
from mlvs.paths import ProjectPaths

LOCK_FILE = "state.lock"


@contextmanager
def state_lock(paths: ProjectPaths, timeout: float = 30.0) -> Iterator[None]:
    """Hold the project's state lock for the body; wait at most `timeout` seconds.

    A negative timeout waits forever, zero tries once. Nested use in the same
    thread re-enters the lock. Raises LockTimeoutError when another command
    (another process or thread) keeps it.
    """
    paths.state.mkdir(parents=True, exist_ok=True)
    lock_path = paths.state / LOCK_FILE
    # A singleton lock counts nested acquisitions in one thread, so a rollback
    # that takes its automatic snapshot does not wait for itself. The options
    # stay fixed (timeout goes to acquire) because a singleton refuses new ones.
    lock = FileLock(str(lock_path), is_singleton=True)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise LockTimeoutError(
            f"another mlvs command is changing this project (lock held at {lock_path}); "
            f"waited {timeout:g} s: wait for it to finish or try again"
        ) from None
    try:
        yield
    finally:
        lock.release()
