"""A lease on a registered model's aliases, held on the tracking server itself, across clones.

MLflow's REST API has no compare-and-set for an alias: `set_registered_model_alias`
and `set_registered_model_tag` overwrite whatever is there. The one thing its stores
do atomically is refuse a second registered model of the same name (the name is the
table's primary key; the server answers RESOURCE_ALREADY_EXISTS), and they create a
registered model with its tags in one transaction. So the lease is a registered
model, `<model>.mlvs-alias-lease`, created with three tags (a random token, who holds
it, until when), and deleted by its holder once the moves are made and recorded.
Whoever creates it holds it; everyone else waits and tries again.

A clone that dies holding the lease leaves it behind until it expires (its own tag,
`MLVS_ALIAS_LEASE_SECONDS` after it was taken); then the next mover deletes it (only
if it still holds the same token) and takes its own. The expiry is the one timing
assumption: a holder stalled past it could move after another clone took over, which
is why the mover also checks the alias history's chain after recording (see
`mlvs.backends.mlflow.registry`), so such a case is named, never silent. Clocks of
the clones are assumed to agree within a fraction of the lease (NTP).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlvs.errors import ExternalToolError, LockTimeoutError
from mlvs.logs import get_logger
from mlvs.settings import ALIAS_LEASE_SECONDS

log = get_logger("registry")

LEASE_SUFFIX = ".mlvs-alias-lease"
TOKEN_TAG = "mlvs.lease.token"
HOLDER_TAG = "mlvs.lease.holder"
EXPIRES_TAG = "mlvs.lease.expires"  # seconds since the epoch, the holder's clock
# Past its expiry a holder moves nothing: this much of the lease is kept as a margin
# for the clocks of two clones and the time a request takes.
SAFETY_FRACTION = 0.2


def lease_name(model_name: str) -> str:
    """The registered model that is the lease on `model_name`'s aliases."""
    return f"{model_name}{LEASE_SUFFIX}"


@dataclass(frozen=True)
class Lease:
    """A lease as read from (or written to) the server."""

    model_name: str
    token: str
    holder: str
    expires: float | None  # None: its record cannot be read, so it cannot be honoured

    def expired(self, now: float) -> bool:
        """Whether another mover may take the lease over at `now`."""
        return self.expires is None or now >= self.expires

    def describe(self) -> str:
        """Who holds it and until when, for a message."""
        until = (
            datetime.fromtimestamp(self.expires, UTC).strftime("%H:%M:%S UTC")
            if self.expires is not None
            else "an unreadable time"
        )
        return f"{self.holder[:120]} (lease until {until})"


def _code(error: Exception) -> str | None:
    return getattr(error, "error_code", None)


def _holder(command: str) -> str:
    return f"{command} on {socket.gethostname()[:64]} pid {os.getpid()}"


def read_lease(client: Any, model_name: str) -> Lease | None:
    """The lease on `model_name`'s aliases as the server has it; None when nobody holds it."""
    try:
        found = client.get_registered_model(lease_name(model_name))
    except Exception as error:
        if _code(error) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    tags = dict(found.tags or {})
    try:
        expires: float | None = float(tags.get(EXPIRES_TAG, ""))
    except ValueError:
        expires = None  # untrusted: a lease whose expiry cannot be read is taken as expired
    return Lease(model_name, str(tags.get(TOKEN_TAG, "")), str(tags.get(HOLDER_TAG, "?")), expires)


def _break(client: Any, stale: Lease) -> None:
    """Delete an expired lease, only if it is still the same one (same token)."""
    again = read_lease(client, stale.model_name)
    if again is None or again.token != stale.token:
        return  # released, or already taken over by someone else
    log.warning(
        "the lease on the aliases of %s held by %s has expired; taking it over",
        stale.model_name,
        stale.describe(),
    )
    try:
        client.delete_registered_model(lease_name(stale.model_name))
    except Exception as error:
        if _code(error) != "RESOURCE_DOES_NOT_EXIST":
            raise


def acquire(
    client: Any,
    model_name: str,
    command: str,
    seconds: float | None = None,
    wait: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Lease:
    """Take the lease on `model_name`'s aliases, waiting while another clone holds it.

    Raises LockTimeoutError naming the holder when it is still held after `wait`
    seconds (default: the lease's own length and a little more, so that a dead
    holder's lease always expires within the wait).
    """
    seconds = ALIAS_LEASE_SECONDS.get() if seconds is None else seconds
    wait = seconds + 5.0 if wait is None else wait
    token, holder = uuid.uuid4().hex, _holder(command)
    deadline = time.monotonic() + wait
    while True:
        expires = clock() + seconds
        try:
            client.create_registered_model(
                lease_name(model_name),
                tags={TOKEN_TAG: token, HOLDER_TAG: holder, EXPIRES_TAG: f"{expires:.3f}"},
                description=f"mlvs: held while the aliases of {model_name} move; deleted after",
            )
            return Lease(model_name, token, holder, expires)
        except Exception as error:
            if _code(error) != "RESOURCE_ALREADY_EXISTS":
                raise
        other = read_lease(client, model_name)
        if other is None:
            continue  # released between the two requests: try again at once
        if other.token == token:
            # Our creation went through and only its answer was lost (the client retried it).
            return other
        if other.expired(clock()):
            _break(client, other)
            continue
        if time.monotonic() >= deadline:
            raise LockTimeoutError(
                f"the aliases of {model_name!r} are being moved by {other.describe()}; "
                "try again in a moment"
            )
        sleep(0.05 + random.random() * 0.15)  # jitter: waiting clones do not retry in step


def check_held(lease: Lease, clock: Callable[[], float] = time.time) -> None:
    """Refuse to move anything under a lease that is (nearly) expired: another clone may take it now."""
    assert lease.expires is not None
    seconds_left = lease.expires - clock()
    length = ALIAS_LEASE_SECONDS.get()
    if seconds_left < length * SAFETY_FRACTION:
        raise LockTimeoutError(
            f"the lease on the aliases of {lease.model_name!r} ran out before they were moved "
            "(the tracking server answered too slowly); nothing was moved, try again"
        )


def release(client: Any, lease: Lease) -> None:
    """Give the lease back (delete it), unless another clone has taken it over meanwhile."""
    current = read_lease(client, lease.model_name)
    if current is None or current.token != lease.token:
        log.warning(
            "the lease on the aliases of %s was taken over before it was given back",
            lease.model_name,
        )
        return
    try:
        client.delete_registered_model(lease_name(lease.model_name))
    except Exception as error:
        if _code(error) != "RESOURCE_DOES_NOT_EXIST":
            raise


@contextlib.contextmanager
def holding(client: Any, model_name: str, command: str) -> Iterator[Lease]:
    """Hold the lease on `model_name`'s aliases for the block; give it back after, whatever happens."""
    try:
        lease = acquire(client, model_name, command)
    except LockTimeoutError:
        raise
    except Exception as error:
        raise ExternalToolError(
            f"the lease on the aliases of {model_name!r} could not be taken on the tracking server "
            f"({(str(error).splitlines() or [''])[0][:200]}); nothing was moved"
        ) from error
    try:
        yield lease
    finally:
        try:
            release(client, lease)
        except Exception as error:  # it expires by itself; the moves are made and recorded
            log.warning(
                "the lease on the aliases of %s could not be given back (%s); it expires by itself",
                model_name,
                (str(error).splitlines() or [""])[0][:200],
            )
