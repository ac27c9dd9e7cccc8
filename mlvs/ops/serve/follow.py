"""Following the alias: what the service serves now, and the thread that swaps it when the alias moves.

The served model is one reference (`ServingState.current`) to an immutable
`LoadedModel`. A request reads it once, at its start, and scores with that model to
the end, so a swap never changes a model under a request in flight: the new model is
loaded and verified beside the old, then the reference is replaced in one assignment.

The alias is looked at every `LOCAL_POLL_SECONDS` (a stat and 4 bytes of the embedded
store's file until something is committed there; a tracking server is asked every
`POLL_SECONDS`), and also by a request that finds the registry changed since the last
look: such a request, and any that comes while the version the alias moved to is being
loaded, waits for the swap, so that no answer comes from a version the alias had
already left when the request arrived. A version that fails verification is never
swapped in; it is named on `/health`, in the log and in the status file that `mlvs
verify` reads, and tried again every `RETRY_SECONDS` while the alias stays on it.
The models served most recently are kept, so a rollback to one of them is a swap of
the reference and nothing else (its recorded hash is read again first).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from mlvs._io import sha256_file
from mlvs.backends.mlflow.model_files import RegistryChanges, read_alias, recorded_model_sha256
from mlvs.errors import BadInputError, ExternalToolError, MlvsError
from mlvs.logs import get_logger
from mlvs.ml.modelio import read_card
from mlvs.ops.serve.loader import LoadedModel, RefusedVersion, load_version, now_text
from mlvs.ops.serve.status import (
    RefusedVersionRecord,
    ServedVersion,
    ServiceStatus,
    write_status,
)
from mlvs.paths import ProjectPaths

log = get_logger("serve")

# How often the alias is read: a move is seen within this, and swapped in once loaded and verified.
POLL_SECONDS = 0.25
# With the embedded store a look costs a stat and 4 bytes until something is committed: look often.
LOCAL_POLL_SECONDS = 0.05
# How often a refused version is tried again while the alias stays on it (its files may be repaired).
RETRY_SECONDS = 10.0
# Previously served models kept in memory for an instant swap back (a rollback).
KEEP_PREVIOUS = 2


class ServingState:
    """The model being served, the refused version and the registry's last answer, for one alias."""

    def __init__(self, paths: ProjectPaths, name: str, alias: str) -> None:
        self.paths = paths
        self.name = name
        self.alias = alias
        self.current: LoadedModel | None = None
        self.refused: RefusedVersionRecord | None = None
        self.registry_error: str | None = None
        self._refused_at = 0.0
        self._previous: OrderedDict[str, LoadedModel] = OrderedDict()
        # One check at a time: the watcher's, a request's, or the first one at start-up.
        self._checking = threading.Lock()
        # Where the service listens (set once it does), for the status file and a restart.
        self.host: str | None = None
        self.port: int | None = None
        # The version the alias pointed at when last read: while the served one differs (being
        # loaded), a request waits for the swap rather than answer with a version the alias left.
        self.target: str | None = None
        # The registry's change token taken just before the last alias read; one probe for the
        # requests (the event loop's thread) and one for the checks, as each keeps a file open.
        self._request_changes = RegistryChanges(paths)
        self._check_changes = RegistryChanges(paths)
        self._seen: tuple[int, ...] | None = None
        # The served file's identity when last looked at, and what it said then.
        self._source_identity: tuple[int, int, int] | None = None
        self._source_refusal: RefusedVersionRecord | None = None
        self._stopped = False

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of `GET /health`: 200 while a verified model is served."""
        current = self.current
        problems = []
        if self.refused is not None:
            problems.append(f"version {self.refused.version} was refused: {self.refused.reason}")
        if self.registry_error is not None:
            problems.append(self.registry_error)
        status = "unavailable" if current is None else "degraded" if problems else "ok"
        body = {
            "status": status,
            "model_name": self.name,
            "alias": self.alias,
            "model_version": current.version if current else None,
            "refused": self.refused.model_dump() if self.refused else None,
            "registry_error": self.registry_error,
            "problems": problems,
        }
        return (200 if current is not None else 503), body

    def needs_check(self) -> bool:
        """Tell whether a request must have the alias read (and any swap made) before it is scored.

        True while the version the alias points at is being loaded, and when the registry
        changed since the alias was last read; a few microseconds otherwise. A request
        that waits for that check is answered by the version the alias points at during
        it, never by one it has left.
        """
        current, target, refused = self.current, self.target, self.refused
        if (
            current is not None
            and target is not None
            and target != current.version
            and not (refused is not None and refused.version == target)
        ):
            return True
        token = self._request_changes.token()
        return token is not None and token != self._seen

    def mark_stopped(self) -> None:
        """Record in the status file that the service stopped cleanly (no restart wanted)."""
        self._stopped = True
        self._write_status()

    def _source_problem(self, current: LoadedModel) -> RefusedVersionRecord | None:
        """A refusal when the file the served version was loaded from has changed to other bytes.

        The service goes on with the verified copy in memory and never loads the changed
        bytes; a file put back as it was (the same SHA-256) ends the refusal. A new model
        written in the workspace with its own card (a retraining) is no refusal.
        """
        if current.source_file is None:
            return None
        path = Path(current.source_file)
        try:
            found = path.stat()
            identity: tuple[int, int, int] | None = (found.st_ino, found.st_size, found.st_mtime_ns)
        except OSError:
            identity = None
        if identity is not None and identity == self._source_identity:
            return self._source_refusal
        self._source_identity = identity
        shown = (
            path.relative_to(self.paths.root).as_posix()
            if path.is_relative_to(self.paths.root)
            else path.name
        )
        problem = None
        if identity is None:
            problem = f"{shown}, the file version {current.version} was loaded from, is gone"
        else:
            try:
                digest = sha256_file(path)
            except OSError as error:
                digest = f"unreadable ({error.strerror or error})"
            if digest != current.model_sha256 and not self._written_with_its_card(path, digest):
                problem = (
                    f"{shown}, the file version {current.version} was loaded from, changed on disk: "
                    f"its SHA-256 is no longer {current.model_sha256[:12]}…, so it is not loaded"
                )
        if problem is None:
            self._source_refusal = None
        elif self._source_refusal is None or self._source_refusal.reason != problem:
            self._source_refusal = RefusedVersionRecord(
                version=current.version,
                reason=f"{problem}; still serving the verified copy loaded at {current.loaded_at}",
                at=now_text(),
                kind="file",
            )
        return self._source_refusal

    def _written_with_its_card(self, path: Path, digest: str) -> bool:
        # A retraining writes another model and the card that names it: not damage.
        if path != self.paths.model_file:
            return False
        try:
            return bool(read_card(self.paths)["model_sha256"] == digest)
        except MlvsError:
            return False

    def start(self) -> None:
        """The first load, before the service listens: a missing alias or an unreadable registry stops it."""
        try:
            aliases = read_alias(self.paths, self.name)
        except MlvsError as error:
            raise ExternalToolError(
                f"{error}; the scoring service cannot start without it"
            ) from None
        if self.alias not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise BadInputError(
                f"registered model {self.name!r} has no alias {self.alias!r} (its aliases: {known}); "
                "train and register a model with `mlvs pipeline`, or choose an alias with --alias"
            )
        self.check(aliases)

    def check(self, aliases: dict[str, tuple[str, str | None]] | None = None) -> None:
        """Read the alias (unless given) and swap in the version it points at, if it is new and verifies."""
        with self._checking:
            token = self._check_changes.token()
            current = self.current
            settled = current is not None and self.target == current.version
            refused = self.refused
            waiting = (
                refused is not None
                and refused.kind == "version"
                and refused.version == self.target
                and time.monotonic() - self._refused_at < RETRY_SECONDS
            )
            if (
                aliases is None
                and token is not None
                and token == self._seen
                and (settled or waiting)
            ):
                # Nothing was committed to the registry since the alias was read, and its
                # version is served (or refused, not yet due again): only the served file is
                # looked at (a stat).
                if current is not None and settled:
                    self._refusal(self._source_problem(current))
                return
            if aliases is None:
                try:
                    aliases = read_alias(self.paths, self.name)
                except MlvsError as error:
                    # Not asked again by every request: the watcher reads it again shortly.
                    self._seen = token
                    self._registry_problem(f"the alias cannot be read: {error}")
                    return
            self._seen = token
            target = aliases.get(self.alias)
            if target is None:
                self.target = None
                self._registry_problem(
                    f"alias {self.alias!r} of {self.name!r} no longer exists; still serving the last verified version"
                )
                return
            self._registry_problem(None)
            version, run_id = target
            self.target = version
            current = self.current
            if current is not None and current.version == version:
                self._refusal(self._source_problem(current))
                return
            if (
                self.refused is not None
                and self.refused.version == version
                and time.monotonic() - self._refused_at < RETRY_SECONDS
            ):
                return
            self._move_to(version, run_id)

    def _move_to(self, version: str, run_id: str | None) -> None:
        kept = self._previous.get(version)
        if kept is not None and run_id:
            try:
                still = recorded_model_sha256(self.paths, run_id) == kept.model_sha256
            except MlvsError:
                still = False
            if still:
                self._swap(kept, "kept in memory")
                return
        try:
            in_memory = {
                m.model_sha256: m.model for m in (self.current, *self._previous.values()) if m
            }
            loaded = load_version(self.paths, self.name, self.alias, version, run_id, in_memory)
        except RefusedVersion as error:
            self._refusal(RefusedVersionRecord(version=version, reason=str(error), at=now_text()))
            return
        except Exception as error:  # loading must never stop the watcher; the old model stays
            reason = f"{type(error).__name__} while loading it: {str(error)[:300]}"
            self._refusal(RefusedVersionRecord(version=version, reason=reason, at=now_text()))
            return
        self._swap(loaded, f"loaded from the {loaded.source} in {loaded.load_seconds:.2f} s")

    def _swap(self, loaded: LoadedModel, how: str) -> None:
        previous = self.current
        self._source_identity, self._source_refusal = (
            None,
            None,
        )  # the new model's file is looked at anew
        self.current = loaded  # the swap: one reference, read once by each request
        if previous is not None:
            self._previous[previous.version] = previous
            self._previous.pop(loaded.version, None)
            while len(self._previous) > KEEP_PREVIOUS:
                self._previous.popitem(last=False)
        self.refused = None
        was = f" (was version {previous.version})" if previous is not None else ""
        log.info(
            "serving %s@%s version %s%s, sha256 %s…, %s",
            self.name,
            self.alias,
            loaded.version,
            was,
            loaded.model_sha256[:12],
            how,
        )
        self._write_status()

    def _refusal(self, refused: RefusedVersionRecord | None) -> None:
        if refused is None:
            if self.refused is not None:
                self.refused = None
                self._write_status()
            return
        self._refused_at = time.monotonic()
        repeated = self.refused is not None and self.refused.reason == refused.reason
        self.refused = refused
        if not repeated:
            serving = (
                f"still serving version {self.current.version}"
                if self.current is not None
                else "no verified model to serve"
            )
            log.error(
                "refused %s%s@%s version %s (%s): %s",
                "the changed file of " if refused.kind == "file" else "",
                self.name,
                self.alias,
                refused.version,
                serving,
                refused.reason,
            )
            self._write_status()

    def _registry_problem(self, problem: str | None) -> None:
        if problem != self.registry_error and problem is not None:
            log.warning("%s", problem)
        self.registry_error = problem

    def _write_status(self) -> None:
        current = self.current
        status = ServiceStatus(
            model_name=self.name,
            alias=self.alias,
            pid=os.getpid(),
            serving=(
                ServedVersion(
                    version=current.version,
                    model_sha256=current.model_sha256,
                    loaded_at=current.loaded_at,
                )
                if current is not None
                else None
            ),
            refused=self.refused,
            updated_at=now_text(),
            host=self.host,
            port=self.port or None,
            stopped_at=now_text() if self._stopped else None,
        )
        try:
            write_status(self.paths, status)
        except OSError as error:  # the status is a report; serving goes on without it
            log.warning("could not write the service's status file: %s", error)


class AliasWatcher(threading.Thread):
    """Reads the alias every `interval` seconds and lets the state swap in what it points at."""

    def __init__(self, state: ServingState, interval: float | None = None) -> None:
        super().__init__(name="mlvs-alias-watcher", daemon=True)
        self.state = state
        probe = RegistryChanges(state.paths)
        cheap = probe.token() is not None
        probe.close()
        self.interval = interval or (LOCAL_POLL_SECONDS if cheap else POLL_SECONDS)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.state.check()
            except Exception as error:  # the watcher outlives any one bad answer
                log.error("the alias check failed: %s: %s", type(error).__name__, error)

    def stop(self) -> None:
        """Stop after the current check."""
        self._stop_event.set()
