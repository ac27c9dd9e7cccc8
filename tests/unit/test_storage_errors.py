"""A full disk or an unwritable place is recognised however a tool wrapped it, and named in one sentence."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from mlvs.errors import storage_error, storage_failure


@pytest.mark.parametrize(
    "error, says",
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/p/models/model.skops"),
            "no space left",
        ),
        (OSError(errno.EFBIG, "File too large"), "file size limit"),
        (OSError(errno.EROFS, "Read-only file system", "/p/x"), "read-only"),
        (
            OSError(
                errno.EPERM, "Operation not permitted", "/p/.mlvs/staging/t", None, "/p/data/a.csv"
            ),
            "writing /p/data/a.csv",
        ),
        (sqlite3.OperationalError("database or disk is full"), "no space left"),
        (sqlite3.OperationalError("disk I/O error"), "disk refused a write"),
        (
            RuntimeError(
                "failed to reproduce 'train': [Errno 28] No space left on device: 'models'"
            ),
            "no space left",
        ),
    ],
)
def test_a_storage_failure_is_named(error: BaseException, says: str) -> None:
    assert says in (storage_failure(error) or "")


def test_the_cause_is_found_under_a_wrapping_error() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/p/mlflow.db")
        except OSError as inner:
            raise RuntimeError("the tracking store failed") from inner
    except RuntimeError as outer:
        assert storage_failure(outer) == "no space left on the device writing /p/mlflow.db"


@pytest.mark.parametrize(
    "error", [ValueError("bad value"), OSError(errno.ENOENT, "No such file"), KeyError("x")]
)
def test_other_errors_are_not_storage_failures(error: BaseException) -> None:
    assert storage_failure(error) is None


def test_the_message_says_how_to_go_on() -> None:
    message = str(
        storage_error(
            OSError(errno.ENOSPC, "No space left on device"), "`mlvs recover` could not finish"
        )
    )
    assert message.startswith("`mlvs recover` could not finish: no space left on the device")
    assert "free disk space" in message and "\n" not in message
