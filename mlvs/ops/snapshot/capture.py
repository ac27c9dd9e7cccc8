"""Capturing the current state of the whole system as a manifest."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from mlvs._io import atomic_write_text
from mlvs.backends.dvc.hashcache import HashCache
from mlvs.backends.dvc.objects import ObjectStore
from mlvs.backends.dvc.outputs import (
    dir_object,
    dvc_files,
    dvc_outputs,
    load_yaml,
    lock_hashes,
    output_files,
)
from mlvs.backends.git.run import run_git
from mlvs.backends.mlflow.registry import read_registry
from mlvs.errors import ExternalToolError, IntegrityError
from mlvs.ops.snapshot.manifest import (
    PACKAGES,
    Environment,
    FileEntry,
    Manifest,
    OutputEntry,
    RemoteInfo,
)
from mlvs.paths import ProjectPaths


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _git_head(root: Path) -> str | None:
    try:
        return run_git(root, "rev-parse", "--verify", "-q", "HEAD^{commit}").strip() or None
    except ExternalToolError:
        return None  # a repository without commits


def _git_branch(root: Path) -> str | None:
    try:
        return run_git(root, "symbolic-ref", "-q", "--short", "HEAD").strip() or None
    except ExternalToolError:
        return None  # detached HEAD


def _read_params(paths: ProjectPaths) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if not paths.params.is_dir():
        return params
    for location in sorted([*paths.params.rglob("*.yaml"), *paths.params.rglob("*.yml")]):
        key = location.relative_to(paths.params).with_suffix("").as_posix()
        try:
            params[key] = load_yaml(location.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            params[key] = {"__unreadable__": f"{type(error).__name__}: {error}"}
    return params


def _read_metrics(paths: ProjectPaths) -> dict[str, Any]:
    try:
        metrics = json.loads(paths.metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def _lock_hash(paths: ProjectPaths, hashes: HashCache) -> str | None:
    # Through the hash cache: uv.lock is about half a megabyte, re-read only when its stat changes.
    relative = paths.uv_lock.relative_to(paths.root).as_posix()
    try:
        return hashes.file_hash(relative).sha256
    except FileNotFoundError:
        return None  # a project without a lock file records null
    except OSError as error:
        raise IntegrityError(
            f"{relative} cannot be read ({error}); fix its permissions or remove it"
        ) from None


def current_environment(paths: ProjectPaths, hashes: HashCache | None = None) -> Environment:
    """The Python and package versions of this interpreter and the hash of the project's `uv.lock`."""
    own_cache = hashes is None
    hashes = hashes or HashCache(paths)
    try:
        lock = _lock_hash(paths, hashes)
    finally:
        if own_cache:
            hashes.close()
    return replace(_environment(paths), uv_lock_sha256=lock, lock_recorded=True)


def _environment(paths: ProjectPaths) -> Environment:
    """Python and package versions, remembered in `.mlvs/` until an install changes `sys.path`.

    Looking up eight package versions scans every installed distribution (tens of
    milliseconds); installing or removing one changes its directory's mtime.
    """
    key = [sys.executable, sys.version]
    for entry in sys.path:
        if (
            entry and os.path.abspath(entry) != os.getcwd()
        ):  # the working directory changes all the time
            try:
                key.append(f"{entry}:{os.stat(entry).st_mtime_ns}")
            except OSError:
                key.append(f"{entry}:-")
    remembered = paths.state / "environment.json"
    try:
        cached = json.loads(remembered.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            return Environment.from_dict(cached["environment"], str(remembered))
    except (OSError, ValueError, AttributeError, KeyError, IntegrityError):
        pass  # only a cache: look the versions up again

    # deferred: importlib.metadata (with zipfile and email) costs ~6 ms, paid only on a cache miss
    from importlib import metadata

    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    environment = Environment(
        python=platform.python_version(),
        implementation=platform.python_implementation(),
        platform=platform.platform(terse=True),
        packages=packages,
    )
    try:
        paths.state.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            remembered,
            json.dumps({"key": key, "environment": environment.to_dict()}, indent=2, sort_keys=True)
            + "\n",
        )
    except OSError:
        pass  # only a cache
    return environment


def _model_name(params: dict[str, Any]) -> str | None:
    # Read from the parsed YAML, not mlvs.ml.params: validating imports scikit-learn (seconds).
    train = params.get("train")
    registry = train.get("registry") if isinstance(train, dict) else None
    name = registry.get("model_name") if isinstance(registry, dict) else None
    return str(name) if name else None


def capture_state(
    paths: ProjectPaths,
    name: str = "",
    message: str = "",
    automatic: bool = False,
    hashes: HashCache | None = None,
    tracking_files: list[str] | None = None,
) -> Manifest:
    """Record the project's current state as a manifest (nothing is written but the hash cache).

    `tracking_files` is `dvc_files(paths.root)` when the caller has just listed them.
    """
    root = paths.root
    own_cache = hashes is None
    hashes = hashes or HashCache(paths)
    try:
        tracking_files = dvc_files(root) if tracking_files is None else tracking_files
        recorded = lock_hashes(paths, tracking_files)
        outputs: dict[str, OutputEntry] = {}
        files: dict[str, FileEntry] = {}
        for out in dvc_outputs(paths, tracking_files):
            if not out.cache:
                # git holds its bytes: the commit records them
                outputs[out.path] = OutputEntry(out.part, out.stage, out.cache)
                continue
            members = output_files(root, out.path)
            is_dir = (root / out.path).is_dir()
            sizes = 0
            md5s: dict[str, str] = {}
            md5: str | None
            for relative in members:
                hashed = hashes.file_hash(relative)
                files[relative] = FileEntry(hashed.md5, hashed.sha256, hashed.size, out.path)
                md5s[relative[len(out.path) + 1 :] if is_dir else relative] = hashed.md5
                sizes += hashed.size
            kind, md5 = "missing", None  # an output its stage did not write
            if is_dir:
                kind, md5 = "dir", dir_object(md5s)[0]
            elif members:
                kind, md5 = "file", md5s[out.path]
            outputs[out.path] = OutputEntry(
                out.part,
                out.stage,
                out.cache,
                kind=kind,
                md5=md5,
                size=sizes,
                nfiles=len(members) if is_dir else None,
                matches_dvc_lock=md5 is not None and recorded.get(out.path) == md5,
            )
        environment = current_environment(paths, hashes)
    finally:
        if own_cache:
            hashes.close()
    params = _read_params(paths)
    model_file = paths.model_file.relative_to(root).as_posix()
    model_sha = files[model_file].sha256 if model_file in files else None
    store = ObjectStore(paths)
    return Manifest(
        name=name,
        message=message,
        created_at=_now(),
        automatic=automatic,
        base_commit=_git_head(root),
        branch=_git_branch(root),
        outputs=outputs,
        files=files,
        params=params,
        metrics=_read_metrics(paths),
        registry=read_registry(paths, _model_name(params), model_sha),
        environment=environment,
        dvc=RemoteInfo(
            store.remote.name if store.remote else None, store.remote.url if store.remote else None
        ),
    )
