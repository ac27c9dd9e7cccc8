"""Proving a snapshot: re-run its pipeline in isolation and compare with what it recorded.

The snapshot's commit is exported (`git archive`) into a temporary directory that
becomes its own git + DVC repository, so neither the user's working tree nor their
`.git` is touched. The stage commands run the snapshot's own `mlvs` package
(PYTHONPATH points into the export) and log to a throwaway MLflow store there, so
the user's runs and registry are untouched too.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlvs._io import sha256_file
from mlvs.backends.dvc.command import tool_env
from mlvs.backends.dvc.objects import ObjectStore
from mlvs.backends.git.run import run_git, run_git_bytes
from mlvs.errors import BadInputError
from mlvs.logs import get_logger
from mlvs.ops.snapshot.capture import current_environment
from mlvs.ops.snapshot.manifest import Environment, Manifest
from mlvs.paths import ProjectPaths
from mlvs.settings import ROOT, RUN_HANDOFF

log = get_logger("reproduce")


GOLDEN = "models/golden_predictions.json"


METRICS = "reports/metrics.json"


@dataclass
class Expected:
    """What a snapshot recorded: file hashes, metrics and golden predictions."""

    commit: str
    files: dict[str, str]
    metrics: dict[str, float]
    golden: list[str] | None = None
    environment: Environment | None = None


@dataclass
class Reproduction:
    """The outcome of re-running a snapshot."""

    name: str
    reproduces: bool
    differences: list[str] = field(default_factory=list)
    compared_files: int = 0
    compared_metrics: int = 0
    seconds: float = 0.0
    # What differs from the snapshot's environment to this one, as (recorded, current):
    # reported, never a failure by itself (the results decide).
    environment: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot": self.name,
            "reproduces": self.reproduces,
            "differences": self.differences,
            "compared_files": self.compared_files,
            "compared_metrics": self.compared_metrics,
            "seconds": round(self.seconds, 1),
            "environment_differs": bool(self.environment),
            "environment": {key: list(pair) for key, pair in sorted(self.environment.items())},
        }


def _safe_extract(archive: bytes, destination: Path) -> None:
    """Extract a tar archive refusing absolute paths, `..` and links that leave `destination`."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        base = destination.resolve()
        for member in tar.getmembers():
            target = (base / member.name).resolve()
            if (
                member.name.startswith("/")
                or ".." in Path(member.name).parts
                or not target.is_relative_to(base)
            ):
                raise BadInputError(
                    f"archive member {member.name!r} would be written outside {destination}"
                )
            if member.issym() or member.islnk():
                link = (target.parent / member.linkname).resolve()
                if Path(member.linkname).is_absolute() or not link.is_relative_to(base):
                    raise BadInputError(
                        f"archive link {member.name!r} -> {member.linkname!r} leaves {destination}"
                    )
            if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                raise BadInputError(
                    f"archive member {member.name!r} is not a regular file or directory"
                )
        tar.extractall(destination, filter="data")


def export_commit(paths: ProjectPaths, commit: str, destination: Path) -> None:
    """Write the tree of `commit` into `destination` and make it a repository of its own."""
    archive = run_git_bytes(paths.root, "archive", "--format=tar", commit)
    destination.mkdir(parents=True, exist_ok=True)
    _safe_extract(archive, destination)
    env = {
        "GIT_AUTHOR_NAME": "mlvs",
        "GIT_AUTHOR_EMAIL": "mlvs@localhost",
        "GIT_COMMITTER_NAME": "mlvs",
        "GIT_COMMITTER_EMAIL": "mlvs@localhost",
    }
    run_git(destination, "init", "-q")
    run_git(destination, "add", "-A")
    run_git(destination, "commit", "-qm", f"reproduce {commit[:12]}", env=env)


def _compare_golden(expected: list[str] | None, actual_file: Path) -> list[str]:
    if expected is None or not actual_file.is_file():
        return []
    actual = json.loads(actual_file.read_text(encoding="utf-8"))["churn_probability"]
    if len(actual) != len(expected):
        return [f"golden predictions: {len(actual)} rows, the snapshot recorded {len(expected)}"]
    return [
        f"golden prediction {i}: recorded {e}, reproduced {a}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True))
        if e != a
    ]


def reproduce(paths: ProjectPaths, name: str, expected: Expected) -> Reproduction:
    """Re-run the pipeline of `expected.commit` from scratch and list every difference."""
    started = time.perf_counter()
    environment = (
        expected.environment.changes_to(current_environment(paths))
        if expected.environment is not None
        else {}
    )
    if environment:
        # Said before the long re-run: whoever watches knows what may explain a difference.
        log.warning(
            "the environment differs from snapshot %s's: %s",
            name,
            "; ".join(f"{key} {old} -> {new}" for key, (old, new) in environment.items()),
        )
    tmp = Path(tempfile.mkdtemp(prefix="mlvs-reproduce-"))
    try:
        work = tmp / "project"
        export_commit(paths, expected.commit, work)
        env = tool_env()
        env.update(
            {
                ROOT.name: str(work),
                "PYTHONPATH": str(work)
                + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
                "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
            }
        )
        env.pop("MLFLOW_REGISTRY_URI", None)
        env.pop("MLFLOW_RUN_ID", None)
        env.pop(RUN_HANDOFF.name, None)
        log.info(
            "re-running the pipeline of snapshot %s (%s) in isolation", name, expected.commit[:12]
        )
        result = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", "--force"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        differences: list[str] = []
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
            differences.append("the pipeline failed to run: " + " | ".join(tail))
        for rel, sha in sorted(expected.files.items()):
            produced = work / rel
            if not produced.is_file():
                differences.append(f"{rel}: recorded but not produced")
            elif (actual := sha256_file(produced)) != sha:
                differences.append(f"{rel}: recorded sha256 {sha[:12]}…, reproduced {actual[:12]}…")
        produced_metrics: dict[str, float] = {}
        if (work / METRICS).is_file():
            produced_metrics = json.loads((work / METRICS).read_text(encoding="utf-8"))
        for key, value in sorted(expected.metrics.items()):
            if produced_metrics.get(key) != value:
                differences.append(
                    f"metric {key}: recorded {value!r}, reproduced {produced_metrics.get(key)!r}"
                )
        differences += _compare_golden(expected.golden, work / GOLDEN)
        return Reproduction(
            name,
            not differences,
            differences,
            len(expected.files),
            len(expected.metrics),
            time.perf_counter() - started,
            environment,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def expected_from_manifest(paths: ProjectPaths, manifest: Manifest) -> Expected:
    """What a snapshot's manifest says its pipeline produced (golden predictions read from the cache)."""

    files = {rel: entry.sha256 for rel, entry in manifest.files.items()}
    golden = None
    entry = manifest.files.get(GOLDEN)
    if entry:
        cached = ObjectStore(paths).cache_path(entry.md5)
        if cached.is_file():
            try:
                golden = json.loads(cached.read_bytes())["churn_probability"]
            except (ValueError, KeyError):
                golden = None
    return Expected(
        commit=str(manifest.commit),
        files=files,
        metrics=dict(manifest.metrics),
        golden=golden,
        environment=manifest.environment,
    )
