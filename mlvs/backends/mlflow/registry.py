"""The MLflow registry state a snapshot records and a rollback puts back.

That state is, for one registered model: its aliases (which version each points
at, with the version's run and logged model), and the version whose run logged
the model file now in `models/` (found by the run's `model_sha256` tag).

Two ways in, same answers:
- the embedded default (`sqlite:///...`) is read, and its aliases written, with
  plain SQL on MLflow's own tables, in one transaction: importing MLflow and
  opening a client costs seconds, which a no-op snapshot cannot afford, and one
  transaction moves every alias at once. The tables are checked first; an
  unexpected schema (or `MLVS_REGISTRY_BACKEND=mlflow`) takes the other way.
- any other store (a tracking server) goes through `MlflowClient`.

Every alias move is a compare-and-set: the caller passes the aliases its decision was
taken on (`expected`), and nothing moves unless the registry still has exactly those
(`AliasRaceError` names the move that came in between). The embedded store checks
and moves in one SQLite transaction; a tracking server has no transaction over a
read and a write, so the check and the moves are made under a lease held on the
server (`mlvs.backends.mlflow.lease`), and the history's chain is read back after.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlvs.backends.mlflow import lease
from mlvs.backends.mlflow.history import (
    TAG_PREFIX,
    AliasHistory,
    AliasMove,
    MoveReason,
    last_stamp,
    move_tags,
    parse_history,
)
from mlvs.backends.mlflow.store import (
    registry_uri,
    server_problem,
    settle_hot_journal,
    tracking_uri,
)
from mlvs.backends.uris import safe_uri
from mlvs.errors import AliasRaceError, ExternalToolError, IntegrityError, storage_failure
from mlvs.logs import get_logger
from mlvs.paths import ProjectPaths
from mlvs.settings import REGISTRY_BACKEND

log = get_logger("registry")

# One alias move: (alias, from version, to version); None is "no such alias".
Move = tuple[str, str | None, str | None]


def _moves(current: dict[str, str], wanted: dict[str, str]) -> list[Move]:
    """The moves that take the aliases from `current` to exactly `wanted`."""
    removed: list[Move] = [(a, current[a], None) for a in sorted(set(current) - set(wanted))]
    moved: list[Move] = [
        (a, current.get(a), v) for a, v in sorted(wanted.items()) if current.get(a) != v
    ]
    return removed + moved


def _named(version: str | None) -> str:
    return f"version {version}" if version is not None else "unset"


def race_message(
    name: str, expected: dict[str, str], current: dict[str, str], history: AliasHistory
) -> str:
    """One sentence: which aliases of `name` changed since `expected` was read, and by which recorded move."""
    changed = sorted(a for a in set(expected) | set(current) if expected.get(a) != current.get(a))
    told = []
    for alias in changed:
        last = history.last_move(alias)
        if last is not None and last.to_version == current.get(alias):
            snapshot = f", snapshot {last.snapshot}" if last.snapshot else ""
            told.append(
                f"{alias} moved from {_named(last.from_version)} to {_named(last.to_version)} "
                f"by {last.command} at {last.time}{snapshot}"
            )
        else:
            told.append(
                f"{alias} is {_named(current.get(alias))}, not {_named(expected.get(alias))}"
            )
    return f"the aliases of {name!r} changed after this command read them ({'; '.join(told)})"


def describe_move(move: AliasMove) -> str:
    """One recorded move in words: alias, from, to, by which command, when."""
    return (
        f"{move.alias} moved from {_named(move.from_version)} to {_named(move.to_version)} "
        f"by {move.command} at {move.time}"
    )


DELETED_STAGE = "Deleted_Internal"  # how MLflow's SQL store marks a deleted version


_SQLITE = "sqlite:///"


_NEEDED_COLUMNS = {
    "registered_model_aliases": {"name", "alias", "version"},
    "model_versions": {"name", "version", "run_id", "source", "current_stage"},
    "tags": {"run_uuid", "key", "value"},
    "registered_model_tags": {"name", "key", "value"},
}


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version: what an alias or a model file points at."""

    version: str
    run_id: str | None
    model_id: str | None
    source: str | None


@dataclass
class RegistryState:
    """The part of the registry a snapshot records."""

    tracking_uri: str
    model_name: str | None
    model: VersionInfo | None = None
    aliases: dict[str, VersionInfo] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (aliases as {alias: {version, run_id, model_id, source}})."""
        return {
            "tracking_uri": self.tracking_uri,
            "model_name": self.model_name,
            "model": asdict(self.model) if self.model else None,
            "aliases": {alias: asdict(info) for alias, info in sorted(self.aliases.items())},
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegistryState:
        """Read back what `to_dict` wrote."""
        model = data.get("model")
        return cls(
            tracking_uri=data.get("tracking_uri", ""),
            model_name=data.get("model_name"),
            model=VersionInfo(**model) if model else None,
            aliases={
                alias: VersionInfo(**info) for alias, info in (data.get("aliases") or {}).items()
            },
            error=data.get("error"),
        )

    def alias_versions(self) -> dict[str, str]:
        """Alias -> version number."""
        return {alias: info.version for alias, info in sorted(self.aliases.items())}


def _model_id(source: str | None) -> str | None:
    # MLflow 3 registers a logged model as `models:/<model id>`.
    if source and source.startswith("models:/"):
        rest = source[len("models:/") :]
        return rest.split("/")[0] or None
    return None


def _sqlite_file(uri: str) -> Path | None:
    if not uri.startswith(_SQLITE):
        return None
    if REGISTRY_BACKEND.get().strip().lower() == "mlflow":
        return None
    if os.environ.get("MLFLOW_WORKSPACE") or os.environ.get(
        "MLFLOW_ENABLE_WORKSPACES", ""
    ).lower() in ("1", "true"):
        return None  # workspaces partition the tables: leave them to MLflow
    location = uri[len(_SQLITE) :].split("?")[0]
    return Path(location) if location else None


class _SqlRegistry:
    """MLflow's SQLite registry tables, read (and aliases written) directly."""

    def __init__(self, database: Path) -> None:
        self.database = database

    def _connect(self, write: bool) -> sqlite3.Connection:
        if write:
            return sqlite3.connect(self.database, timeout=30, isolation_level=None)
        settle_hot_journal(self.database)
        return sqlite3.connect(f"{self.database.resolve().as_uri()}?mode=ro", uri=True, timeout=30)

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        db = self._connect(write=False)
        try:
            yield db
        finally:
            db.close()

    def usable(self) -> bool:
        """Tell whether the tables look like those this module knows."""
        try:
            with self._reading() as db:
                for table, needed in _NEEDED_COLUMNS.items():
                    columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                    if not needed <= columns:
                        return False
            return True
        except sqlite3.Error:
            return False

    @staticmethod
    def _workspace_filter(db: sqlite3.Connection, table: str) -> tuple[str, tuple[str, ...]]:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        return (" AND workspace = ?", ("default",)) if "workspace" in columns else ("", ())

    def _version(self, db: sqlite3.Connection, name: str, version: str) -> VersionInfo | None:
        where, args = self._workspace_filter(db, "model_versions")
        row = db.execute(
            "SELECT version, run_id, source FROM model_versions WHERE name = ? AND version = ?"
            f" AND current_stage != ?{where}",
            (name, int(version), DELETED_STAGE, *args),
        ).fetchone()
        if row is None:
            return None
        return VersionInfo(str(row[0]), row[1], _model_id(row[2]), row[2])

    def read(
        self, name: str, model_sha256: str | None
    ) -> tuple[VersionInfo | None, dict[str, VersionInfo]]:
        with self._reading() as db:
            where, args = self._workspace_filter(db, "registered_model_aliases")
            aliases: dict[str, VersionInfo] = {}
            for alias, version in db.execute(
                f"SELECT alias, version FROM registered_model_aliases WHERE name = ?{where}",
                (name, *args),
            ):
                aliases[alias] = self._version(db, name, str(version)) or VersionInfo(
                    str(version), None, None, None
                )
            model = None
            if model_sha256:
                where, args = self._workspace_filter(db, "model_versions")
                row = db.execute(
                    "SELECT mv.version FROM model_versions mv JOIN tags t ON t.run_uuid = mv.run_id"
                    " WHERE mv.name = ? AND mv.current_stage != ? AND t.key = 'model_sha256' AND t.value = ?"
                    f"{where.replace('workspace', 'mv.workspace')} ORDER BY mv.version DESC LIMIT 1",
                    (name, DELETED_STAGE, model_sha256, *args),
                ).fetchone()
                if row is not None:
                    model = self._version(db, name, str(row[0]))
        return model, aliases

    def versions_exist(self, name: str, versions: set[str]) -> dict[str, VersionInfo | None]:
        with self._reading() as db:
            return {v: self._version(db, name, v) for v in versions}

    def tags(self, name: str, prefix: str) -> dict[str, str]:
        with self._reading() as db:
            return self._tags(db, name, prefix)

    def _history_tags(self, db: sqlite3.Connection, name: str) -> dict[str, str]:
        return self._tags(db, name, TAG_PREFIX)

    def _tags(self, db: sqlite3.Connection, name: str, prefix: str) -> dict[str, str]:
        where, args = self._workspace_filter(db, "registered_model_tags")
        return {
            key: value
            for key, value in db.execute(
                f"SELECT key, value FROM registered_model_tags WHERE name = ?{where}",
                (name, *args),
            )
            if isinstance(key, str) and key.startswith(prefix)
        }

    def set_aliases(
        self, name: str, wanted: dict[str, str], why: MoveReason, expected: dict[str, str]
    ) -> list[Move]:
        db = self._connect(write=True)
        try:
            # The write lock from the first statement: the check and the moves are one transaction.
            db.execute("BEGIN IMMEDIATE")
            where, args = self._workspace_filter(db, "registered_model_aliases")
            columns = {row[1] for row in db.execute("PRAGMA table_info(registered_model_aliases)")}
            current = {
                alias: str(version)
                for alias, version in db.execute(
                    f"SELECT alias, version FROM registered_model_aliases WHERE name = ?{where}",
                    (name, *args),
                )
            }
            history_tags = self._history_tags(db, name)
            if current != expected:
                raise AliasRaceError(
                    race_message(name, expected, current, parse_history(name, history_tags))
                    + "; nothing was moved"
                )
            for alias in sorted(set(current) - set(wanted)):
                db.execute(
                    f"DELETE FROM registered_model_aliases WHERE name = ? AND alias = ?{where}",
                    (name, alias, *args),
                )
            for alias, version in sorted(wanted.items()):
                if current.get(alias) == version:
                    continue
                if self._version(db, name, version) is None:
                    raise ExternalToolError(
                        f"version {version} of registered model {name!r} does not exist any more, so alias "
                        f"{alias!r} cannot point at it; register that model again or roll back without --only registry"
                    )
                if "workspace" in columns:
                    db.execute(
                        "INSERT OR REPLACE INTO registered_model_aliases (workspace, name, alias, version)"
                        " VALUES (?, ?, ?, ?)",
                        ("default", name, alias, int(version)),
                    )
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO registered_model_aliases (name, alias, version) VALUES (?, ?, ?)",
                        (name, alias, int(version)),
                    )
            moves = _moves(current, wanted)
            # In the same transaction as the moves: a move is never made without its record.
            tag_columns = {row[1] for row in db.execute("PRAGMA table_info(registered_model_tags)")}
            for key, value in move_tags(moves, why, last_stamp(history_tags)).items():
                if "workspace" in tag_columns:
                    db.execute(
                        "INSERT INTO registered_model_tags (workspace, key, value, name) VALUES (?, ?, ?, ?)",
                        ("default", key, value, name),
                    )
                else:
                    db.execute(
                        "INSERT INTO registered_model_tags (key, value, name) VALUES (?, ?, ?)",
                        (key, value, name),
                    )
            db.execute("COMMIT")
            return moves
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()


class _ClientRegistry:
    """Any MLflow registry, through MlflowClient (seconds to start, works everywhere)."""

    def __init__(self, paths: ProjectPaths) -> None:
        # deferred: mlflow (~1.7 s) is imported only when this runs
        import mlflow

        self.mlflow = mlflow
        # A bare client: reading the registry must not create experiments or runs.
        self.client = mlflow.MlflowClient(
            tracking_uri=tracking_uri(paths), registry_uri=registry_uri(paths)
        )

    def _absent(self, error: Exception) -> bool:
        # Only "does not exist" means absent: a refused connection, a 500 or a denied
        # request is an unreadable registry, which must never read as "no aliases".
        return getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"

    def _version(self, name: str, version: str) -> VersionInfo | None:
        try:
            found = self.client.get_model_version(name, version)
        except self.mlflow.exceptions.MlflowException as error:
            if self._absent(error):
                return None
            raise
        model_id = getattr(found, "model_id", None) or _model_id(found.source)
        return VersionInfo(str(found.version), found.run_id, model_id, found.source)

    def read(
        self, name: str, model_sha256: str | None
    ) -> tuple[VersionInfo | None, dict[str, VersionInfo]]:
        try:
            registered = self.client.get_registered_model(name)
        except self.mlflow.exceptions.MlflowException as error:
            if self._absent(error):
                return None, {}
            raise
        aliases = {
            alias: self._version(name, str(version)) or VersionInfo(str(version), None, None, None)
            for alias, version in (registered.aliases or {}).items()
        }
        model = None
        if model_sha256:
            versions = self.client.search_model_versions(f"name = '{name}'")
            for found in sorted(versions, key=lambda v: int(v.version), reverse=True):
                if (
                    found.run_id
                    and self.client.get_run(found.run_id).data.tags.get("model_sha256")
                    == model_sha256
                ):
                    model = self._version(name, str(found.version))
                    break
        return model, aliases

    def versions_exist(self, name: str, versions: set[str]) -> dict[str, VersionInfo | None]:
        return {v: self._version(name, v) for v in versions}

    def tags(self, name: str, prefix: str) -> dict[str, str]:
        try:
            registered = self.client.get_registered_model(name)
        except self.mlflow.exceptions.MlflowException as error:
            if self._absent(error):
                return {}
            raise
        return {k: v for k, v in (registered.tags or {}).items() if k.startswith(prefix)}

    def set_aliases(
        self, name: str, wanted: dict[str, str], why: MoveReason, expected: dict[str, str]
    ) -> list[Move]:
        # A server has no transaction over a read and a write: the lease makes the
        # check and the moves one step for every mlvs clone (see `lease`).
        with lease.holding(self.client, name, why.command) as held:
            _, aliases = self.read(name, None)
            current = {alias: info.version for alias, info in aliases.items()}
            history_tags = self.tags(name, TAG_PREFIX)
            if current != expected:
                raise AliasRaceError(
                    race_message(name, expected, current, parse_history(name, history_tags))
                    + "; nothing was moved"
                )
            for alias, version in sorted(wanted.items()):
                if current.get(alias) != version and self._version(name, version) is None:
                    raise ExternalToolError(
                        f"version {version} of registered model {name!r} does not exist any more, so alias "
                        f"{alias!r} cannot point at it; register that model again or roll back without --only registry"
                    )
            moves = _moves(current, wanted)
            if not moves:
                return moves
            records = move_tags(moves, why, last_stamp(history_tags))
            lease.check_held(held)
            # No transaction over both either: each move is made, then recorded at once.
            for (alias, _, to_version), (key, value) in zip(moves, records.items(), strict=True):
                if to_version is None:
                    self.client.delete_registered_model_alias(name, alias)
                else:
                    self.client.set_registered_model_alias(name, alias, to_version)
                self.client.set_registered_model_tag(name, key, value)
            # Read back: the aliases as wanted, and no move recorded by anyone else while the
            # lease was held (a clone that outlived its lease would show here, never silently).
            _, after = self.read(name, None)
            now = {alias: info.version for alias, info in after.items()}
            tags_after = self.tags(name, TAG_PREFIX)
            others = {
                k: v for k, v in tags_after.items() if k not in history_tags and k not in records
            }
            if now != wanted or others:
                history = parse_history(name, tags_after)
                told = [describe_move(m) for m in parse_history(name, others).moves] or [
                    race_message(name, wanted, now, history)
                ]
                raise IntegrityError(
                    f"another move of the aliases of {name!r} overlapped this one: {'; '.join(told)}; "
                    "see `mlvs registry history` and run `mlvs verify`"
                )
            return moves


def _backend(paths: ProjectPaths) -> _SqlRegistry | _ClientRegistry | None:
    """The way into the registry; None when the embedded store does not exist yet."""
    uri = registry_uri(paths)
    database = _sqlite_file(uri)
    if database is not None:
        if not database.exists():
            return None  # nothing registered yet; opening it would create it
        sql = _SqlRegistry(database)
        if sql.usable():
            return sql
        log.debug("the MLflow database %s has an unexpected schema; using MlflowClient", database)
    return _ClientRegistry(paths)


def read_registry(
    paths: ProjectPaths, model_name: str | None, model_sha256: str | None
) -> RegistryState:
    """The aliases of `model_name` and the version that logged the model with `model_sha256`.

    A registry that cannot be read gives a state with `error` set instead of raising:
    a snapshot still records everything else.
    """
    state = RegistryState(tracking_uri=safe_uri(registry_uri(paths)), model_name=model_name)
    if not model_name:
        return state
    try:
        # A dead server is told in seconds: MLflow's client would retry it for minutes.
        problem = server_problem(paths, registry_uri(paths))
        if problem is not None:
            raise ExternalToolError(f"the server does not answer ({problem})")
        backend = _backend(paths)
        if backend is not None:
            state.model, state.aliases = backend.read(model_name, model_sha256)
    except Exception as error:  # a damaged store must not stop a snapshot; the manifest says why
        # SQLAlchemy appends the statement and a link: the first line says what happened.
        reason = (
            storage_failure(error)
            or (str(error) if isinstance(error, ExternalToolError) else None)
            or f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
        )
        # Not a warning: whoever uses the state says it in its own one line (a refused
        # snapshot, a rollback that leaves the registry alone).
        log.debug("could not read the MLflow registry: %s", reason)
        state.error = reason
    return state


def set_aliases(
    paths: ProjectPaths,
    model_name: str,
    wanted: dict[str, str],
    why: MoveReason,
    *,
    expected: dict[str, str],
) -> list[Move]:
    """Make `model_name`'s aliases exactly `wanted` (alias -> version), if they are still `expected`.

    The one way mlvs moves an alias, and a compare-and-set: `expected` is every alias
    as the caller read it when it decided; if the registry no longer has exactly
    those, nothing moves and AliasRaceError names the move that came in between (the
    caller decides again, or reports it). Every move made (others removed, some set)
    becomes a record of the alias history (`mlvs.backends.mlflow.history`), saying
    `why`. Returns the moves made (alias, from, to).
    """
    backend = _backend(paths)
    if backend is None:
        if wanted:
            raise ExternalToolError(
                f"the MLflow registry at {registry_uri(paths)} does not exist, so the aliases "
                f"{', '.join(sorted(wanted))} cannot be set; restore mlflow.db or run `mlvs recover`"
            )
        return []
    return backend.set_aliases(model_name, wanted, why, expected)


def move_alias(
    paths: ProjectPaths,
    model_name: str,
    alias: str,
    version: str | None,
    why: MoveReason,
    seen: dict[str, str] | None = None,
) -> list[Move]:
    """Point one alias of `model_name` at `version` (None removes it), the others left as they are.

    `seen`: the aliases the decision was taken on (read now when not given); the move
    is refused with AliasRaceError if they changed since (see `set_aliases`).
    """
    if seen is None:
        state = read_registry(paths, model_name, None)
        if state.error:
            raise ExternalToolError(
                f"the MLflow registry cannot be read ({state.error}), so {model_name}@{alias} was not moved"
            )
        seen = state.alias_versions()
    wanted = dict(seen)
    if version is None:
        wanted.pop(alias, None)
    else:
        wanted[alias] = version
    return set_aliases(paths, model_name, wanted, why, expected=seen)


def model_tags(paths: ProjectPaths, model_name: str, prefix: str) -> dict[str, str]:
    """The tags of `model_name` whose keys start with `prefix` (empty when nothing is registered)."""
    problem = server_problem(paths, registry_uri(paths))
    if problem is not None:
        raise ExternalToolError(f"the MLflow registry does not answer ({problem})")
    backend = _backend(paths)
    return {} if backend is None else backend.tags(model_name, prefix)


def missing_versions(paths: ProjectPaths, model_name: str, versions: set[str]) -> list[str]:
    """The versions of `model_name` among `versions` that the registry no longer has."""
    if not versions:
        return []
    backend = _backend(paths)
    if backend is None:
        return sorted(versions, key=int)
    found = backend.versions_exist(model_name, versions)
    return sorted((v for v, info in found.items() if info is None), key=int)


def read_alias_history(paths: ProjectPaths, model_name: str) -> AliasHistory:
    """Every recorded alias move of `model_name`, oldest first; an unreadable registry is `error`, never empty."""
    try:
        tags = model_tags(paths, model_name, TAG_PREFIX)
    except Exception as error:  # a damaged store or a dead server: say so, as read_registry does
        reason = (
            storage_failure(error)
            or (str(error) if isinstance(error, ExternalToolError) else None)
            or f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
        )
        return AliasHistory(model_name, error=reason)
    return parse_history(model_name, tags)
