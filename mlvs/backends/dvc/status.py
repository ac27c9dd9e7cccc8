"""Which stages `dvc status` would call changed: their deps, params or command differ from `dvc.lock`.

Read from the files themselves, without importing DVC (about a second): each stage's
recorded dependency MD5s are compared with the files now (through the hash cache, so
an unchanged file is not read again), its recorded params values with the params
files now, and its recorded command with `dvc.yaml`'s. A dependency that is itself a
recorded output whose bytes no longer match `dvc.lock` is left out: that is damage,
which the hash check names, not a stage left behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlvs.backends.dvc.hashcache import HashCache
from mlvs.backends.dvc.outputs import _join, dir_object, load_yaml, lock_hashes, output_files
from mlvs.boundary import UnsafeInputError
from mlvs.errors import BadInputError
from mlvs.mappings import flatten
from mlvs.paths import ProjectPaths

# DVC's own default params file, for a stage that lists bare keys.
DEFAULT_PARAMS_FILE = "params.yaml"

_MISSING = object()


@dataclass(frozen=True)
class StaleStage:
    """A stage whose recorded outputs were produced from deps, params or a command that changed since."""

    stage: str
    changes: list[str] = field(default_factory=list)  # e.g. "params/train.yaml: cv_folds 3 -> 5"


def _document(path: Path) -> dict[str, Any]:
    """A YAML mapping, or an empty one when the file is absent, unreadable or not a mapping."""
    try:
        document = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return document if isinstance(document, dict) else {}


def _current_md5(root: Path, relative: str, hashes: HashCache) -> str | None:
    """DVC's MD5 of a file or directory now (a directory's is its `.dir` object's name); None if absent."""
    location = root / relative
    if location.is_file():
        return hashes.file_hash(relative).md5
    if not location.is_dir():
        return None
    members = {
        path[len(relative) + 1 :]: hashes.file_hash(path).md5
        for path in output_files(root, relative)
    }
    return dir_object(members)[0]


def _lookup(values: dict[str, Any], key: str) -> Any:
    """A params value by its key as DVC records it: top-level, or dotted into nested mappings."""
    if key in values:
        return values[key]
    current: Any = values
    for part in key.split("."):
        if not isinstance(current, dict) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _shown(value: Any) -> str:
    return "(absent)" if value is _MISSING else repr(value)


def _declared_params(spec: dict[str, Any]) -> dict[str, list[str] | None]:
    """Params file -> keys a `dvc.yaml` stage lists (None: the whole file)."""
    declared: dict[str, list[str] | None] = {}
    for item in spec.get("params") or []:
        if isinstance(item, str):
            keys = declared.setdefault(DEFAULT_PARAMS_FILE, [])
            if keys is not None:
                keys.append(item)
        elif isinstance(item, dict):
            for name, keys in item.items():
                declared[str(name)] = [str(k) for k in keys] if keys else None
    return declared


def _params_changes(
    root: Path, recorded: dict[str, Any], declared: dict[str, list[str] | None] | None
) -> list[str]:
    changes = []
    files = set(recorded) | set(declared or {})
    for name in sorted(files):
        try:
            location = _join(root, ".", name, "dvc.lock params")
        except UnsafeInputError:
            changes.append(f"{name}: not a params file inside the project")
            continue
        current = _document(root / location)
        was = recorded.get(name)
        was = was if isinstance(was, dict) else {}
        keys = set(was)
        wanted = (declared or {}).get(name, [])
        if declared is not None and name in declared and wanted is None:
            # The whole file is a dependency: a key added or removed counts too.
            keys |= set(current)
        else:
            keys |= set(wanted or [])
        for key in sorted(keys):
            before = was.get(key, _MISSING)
            now = _lookup(current, key)
            if before == now:
                continue
            if isinstance(before, dict) and isinstance(now, dict):
                changes.append(f"{name}: {key}.{_flat_difference(before, now)}")
            else:
                changes.append(f"{name}: {key} {_shown(before)} -> {_shown(now)}")
    return changes


def _flat_difference(before: Any, now: Any) -> str:
    """The first dotted key where two params values differ (for a readable change)."""
    old, new = flatten(before), flatten(now)
    for key in sorted(set(old) | set(new)):
        if old.get(key, _MISSING) != new.get(key, _MISSING):
            return f"{key} {_shown(old.get(key, _MISSING))} -> {_shown(new.get(key, _MISSING))}"
    return ""


def stale_stages(
    paths: ProjectPaths, hashes: HashCache, outputs: dict[str, str] | None = None
) -> list[StaleStage]:
    """Every stage of `dvc.lock` whose deps, params or command changed since it recorded its outputs.

    No `dvc.lock`: nothing was recorded, so nothing is stale. A templated `dvc.yaml`
    (`${...}`, `foreach`) is not evaluated: its stages are compared by what the lock
    records alone. `outputs` is `lock_hashes(paths)` when the caller has already read it.
    """
    root = paths.root
    lock_file = root / "dvc.lock"
    if not lock_file.is_file():
        return []
    lock = _document(lock_file)
    pipeline = _document(root / "dvc.yaml")
    templated = "${" in str(pipeline) or "foreach" in str(pipeline) or "matrix" in str(pipeline)
    declared_stages = {} if templated else (pipeline.get("stages") or {})
    if outputs is None:
        try:
            outputs = lock_hashes(paths)
        except BadInputError:
            outputs = {}  # an unreadable lock or .dvc file: the hash check names it
    # Only an output that another stage reads can make that stage look stale; hashing the
    # others here would read every tracked byte a second time (the hash check reads them).
    read_by_stages = {
        dep["path"]
        for entry in (lock.get("stages") or {}).values()
        if isinstance(entry, dict)
        for dep in entry.get("deps") or []
        if isinstance(dep, dict) and isinstance(dep.get("path"), str)
    }
    damaged = {
        out
        for out, md5 in outputs.items()
        if out in read_by_stages and _current_md5(root, out, hashes) != md5
    }
    stale = []
    for name, entry in sorted((lock.get("stages") or {}).items()):
        if not isinstance(entry, dict):
            continue
        changes: list[str] = []
        spec = declared_stages.get(name)
        spec = spec if isinstance(spec, dict) else None
        if spec is not None and "cmd" in spec and spec.get("cmd") != entry.get("cmd"):
            changes.append(f"command {entry.get('cmd')!r} -> {spec.get('cmd')!r}")
        for dep in entry.get("deps") or []:
            if not isinstance(dep, dict) or "path" not in dep:
                continue
            try:
                relative = _join(root, ".", dep["path"], "dvc.lock dependency")
            except UnsafeInputError:
                changes.append(f"{dep['path']}: a dependency outside the project")
                continue
            if relative in damaged:
                continue
            now = _current_md5(root, relative, hashes)
            if now != dep.get("md5"):
                changes.append(f"{relative}: {'deleted' if now is None else 'modified'}")
        recorded_params = entry.get("params") or {}
        if isinstance(recorded_params, dict):
            declared = _declared_params(spec) if spec is not None else None
            changes += _params_changes(root, recorded_params, declared)
        if changes:
            stale.append(StaleStage(str(name), changes))
    return stale
