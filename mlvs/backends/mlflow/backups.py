"""Backups of the embedded MLflow database, taken with SQLite's online backup.

A backup is taken after every pipeline run and at every snapshot, so losing or
corrupting `mlflow.db` loses no run: recovery restores the newest backup that
passes SQLite's integrity check. With a tracking server there is no database
here to back up (the server's own database is its operator's to back up), so
every function of this module does nothing and says so by returning None.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from mlvs._io import fsync_dir
from mlvs.backends.mlflow.store import settle_hot_journal, tracking_uri
from mlvs.logs import get_logger
from mlvs.paths import ProjectPaths

log = get_logger("backups")


KEEP = 10


def backup_dir(paths: ProjectPaths) -> Path:
    """Where the MLflow database backups live."""
    return paths.state / "backups" / "mlflow"


def _database(paths: ProjectPaths) -> Path | None:
    uri = tracking_uri(paths)
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _copy_database(source: Path, target: Path) -> None:
    """Copy an SQLite database consistently (SQLite's online backup), through a temporary file."""
    partial = target.with_name(target.name + ".partial")
    settle_hot_journal(source)
    reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        writer = sqlite3.connect(partial)
        try:
            reader.backup(writer)
        finally:
            writer.close()
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)  # a backup cut short (a full disk) leaves nothing behind
        raise
    finally:
        reader.close()
    fsync_dir(target.parent)


def backup_mlflow_db(paths: ProjectPaths) -> Path | None:
    """Copy the live MLflow database consistently (even while MLflow writes to it); keep the last few."""
    database = _database(paths)
    if database is None or not database.is_file():
        return None
    directory = backup_dir(paths)
    directory.mkdir(parents=True, exist_ok=True)
    target = (
        directory
        / f"mlflow-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{time.time_ns() % 10**9:09d}.db"
    )
    _copy_database(database, target)
    for old in sorted(directory.glob("mlflow-*.db"))[:-KEEP]:
        old.unlink(missing_ok=True)
    log.debug("backed up the MLflow database to %s", target)
    return target


def latest_backup(paths: ProjectPaths) -> Path | None:
    """The newest backup that passes SQLite's integrity check (None when the store is not the embedded one)."""
    if _database(paths) is None:
        return None  # backups of an earlier embedded store say nothing about a tracking server's registry
    directory = backup_dir(paths)
    for candidate in (
        sorted(directory.glob("mlflow-*.db"), reverse=True) if directory.is_dir() else []
    ):
        try:
            with sqlite3.connect(f"{candidate.resolve().as_uri()}?mode=ro", uri=True) as db:
                if db.execute("PRAGMA quick_check").fetchone()[0] == "ok":
                    return candidate
        except sqlite3.Error:
            continue
    return None


def restore_mlflow_db(paths: ProjectPaths, evidence_dir: Path | None = None) -> Path | None:
    """Put the newest good backup in place of the live database; a damaged one is kept as evidence."""
    database = _database(paths)
    backup = latest_backup(paths)
    if database is None or backup is None:
        return None
    if database.exists() and evidence_dir is not None:
        evidence_dir.mkdir(parents=True, exist_ok=True)
        os.replace(database, evidence_dir / database.name)
    _copy_database(backup, database)
    return backup
