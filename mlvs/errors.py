"""The exception tree of mlvs.

Each class carries the exit status the command line maps it to, so one place
(`mlvs.cli.main`) turns any of them into a single clear line and an exit code.
"""

from __future__ import annotations

import errno


class MlvsError(Exception):
    """Raised when mlvs cannot do what was asked; the base of every mlvs error."""

    exit_code: int = 1


class BadInputError(MlvsError):
    """Raised when a user's input (argument, parameter, name, file) is invalid."""

    exit_code = 2


class ParamsError(BadInputError):
    """Raised when a params file or a parameter override breaks its schema."""


class UnknownSnapshotError(BadInputError):
    """Raised when a snapshot name does not exist."""


class SchemaViolationError(MlvsError):
    """Raised when a data set breaks its declared schema; lists every violation."""

    def __init__(self, violations: list[str]) -> None:
        self.violations = violations
        super().__init__(
            f"the data breaks its schema in {len(violations)} place(s): " + "; ".join(violations)
        )


class NotebookFailedError(MlvsError):
    """Raised when a notebook cell fails; the executed notebook is still kept."""

    exit_code = 1


class IntegrityError(MlvsError):
    """Raised when a file's bytes do not match the hash recorded for it."""

    exit_code = 1


class UnhealthyStateError(MlvsError):
    """Raised when a command refuses to capture a state that its checks do not call healthy."""

    exit_code = 1


class LockTimeoutError(MlvsError):
    """Raised when another mlvs command holds the state lock for too long."""

    exit_code = 1


class AliasRaceError(MlvsError):
    """Raised when a registry alias moved after a command read it: another move won the race."""

    exit_code = 1


class ExternalToolError(MlvsError):
    """Raised when git, DVC or MLflow fails underneath mlvs."""

    exit_code = 1


# errno -> what a person calls it; the failures of writing, not of the work itself.
_STORAGE_ERRNOS = {
    "ENOSPC": "no space left on the device",
    "EDQUOT": "the disk quota is exceeded",
    "EFBIG": "the file is too large (the file size limit is reached)",
    "EROFS": "the file system is read-only",
    "EACCES": "permission denied",
    "EPERM": "the operation is not permitted (read-only or immutable)",
}


# The same failures in words: SQLite's own (MLflow's database, the hash cache), the
# operating system's as a child process (DVC, git) printed them, and mlvs's own as a
# child `mlvs run` (a pipeline stage) printed them.
_STORAGE_WORDS = {
    "disk is full": "no space left on the device",
    "disk i/o error": "the disk refused a write (full, or a file size limit)",
    "readonly database": "the database is read-only",
    # The OS says "on device", mlvs's own line "on the device": one stem for both.
    "no space left on": "no space left on the device",
    "file too large": "the file is too large (the file size limit is reached)",
    "read-only file system": "the file system is read-only",
    "operation not permitted": "the operation is not permitted (read-only or immutable)",
    "permission denied": "permission denied",
}


def storage_failure(error: BaseException) -> str | None:
    """One sentence for an error caused by a full disk or an unwritable place, else None.

    Looks through the chain of causes, since tools (SQLAlchemy, papermill) wrap the
    operating system's error in their own.
    """
    codes = {
        getattr(errno, name): text for name, text in _STORAGE_ERRNOS.items() if hasattr(errno, name)
    }
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in codes:
            # A rename names its source first: the place that refused is the destination's.
            target = current.filename2 or current.filename
            where = f" writing {target}" if target else ""
            return f"{codes[current.errno]}{where}"
        words = str(current).lower()
        for word, text in _STORAGE_WORDS.items():
            if word in words:
                return text
        current = current.__cause__ or current.__context__
    return None


def storage_error(error: BaseException, what: str = "the command could not finish") -> MlvsError:
    """`error` (a full disk, a read-only directory) as one clear mlvs error saying how to go on."""
    reason = storage_failure(error) or str(error)
    return MlvsError(
        f"{what}: {reason}; free disk space or make the directory writable, then run the command again "
        "(`mlvs recover` first if it was interrupted)"
    )


def os_error(error: OSError, what: str) -> MlvsError:
    """An operating-system failure (a full disk, a permission) as one clear mlvs error."""
    where = f" at {error.filename2 or error.filename}" if error.filename else ""
    limit = "; the file size limit (ulimit -f) is reached" if error.errno == errno.EFBIG else ""
    return MlvsError(
        f"{what}: {error.strerror or error}{where}{limit}; free disk space or fix the permissions, then try again"
    )
