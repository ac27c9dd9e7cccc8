"""Every `MLVS_*` environment variable, read in one place."""

from __future__ import annotations

import os

from mlvs.errors import BadInputError

DEFAULT_LOCK_TIMEOUT = 30.0


def lock_timeout() -> float:
    """Seconds a state-changing command waits for the lock (`MLVS_LOCK_TIMEOUT`, default 30)."""
    value = os.environ.get("MLVS_LOCK_TIMEOUT", "")
    if not value:
        return DEFAULT_LOCK_TIMEOUT
    try:
        return float(value)
    except ValueError:
        raise BadInputError(
            f"MLVS_LOCK_TIMEOUT={value!r} is not a number of seconds; set it to e.g. 30 or unset it"
        ) from None
