"""The exception tree of mlvs.

Each class carries the exit status the command line maps it to, so one place
(`mlvs.cli.main`) turns any of them into a single clear line and an exit code.
"""

from __future__ import annotations


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


class LockTimeoutError(MlvsError):
    """Raised when another mlvs command holds the state lock for too long."""

    exit_code = 1


class ExternalToolError(MlvsError):
    """Raised when git, DVC or MLflow fails underneath mlvs."""

    exit_code = 1
