"""DVC outputs as mlvs sees them: which files they are and their recorded hashes."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from mlvs.backends.dvc.objects import TEMP_SUFFIX
from mlvs.backends.git.run import run_git
from mlvs.boundary import UnsafeInputError, inside, md5_value, project_path, relative_path
from mlvs.errors import BadInputError
from mlvs.paths import ProjectPaths

CODE, PARAMS, DATA, MODELS = "code", "params", "data", "models"


# One command reads dvc.lock, dvc.yaml and the params files several times (the captured
# state, its health check, the stale-pipeline check). Parsing is a function of the text
# alone, so a text seen before is not parsed again; each caller gets its own copy.
_PARSED: dict[str, Any] = {}
_PARSED_KEPT = 32
_PARSED_MAX_CHARS = 1 << 20


def load_yaml(text: str) -> Any:
    """Parse YAML safely, with libyaml when it is there (ten times faster on `dvc.lock`)."""
    if text in _PARSED:
        return copy.deepcopy(_PARSED[text])
    # yaml.load, not safe_load, to choose the loader: either one is a safe loader.
    document = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if len(text) <= _PARSED_MAX_CHARS:
        if len(_PARSED) >= _PARSED_KEPT:
            _PARSED.clear()
        _PARSED[text] = copy.deepcopy(document)
    return document


def _dvc_yaml_file(path: Path, root: Path) -> dict[str, Any]:
    """A DVC file (`dvc.yaml`, `dvc.lock`, `*.dvc`) as a mapping; a broken one is bad input."""
    try:
        document = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        where = path.relative_to(root).as_posix()
        raise BadInputError(
            f"{where} cannot be read as YAML ({type(error).__name__}); fix or restore it (e.g. from git)"
        ) from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise BadInputError(
            f"{path.relative_to(root).as_posix()} is not a YAML mapping; fix or restore it"
        )
    return document


@dataclass(frozen=True)
class Output:
    """One DVC output: a file or directory that a stage writes or a `.dvc` file tracks."""

    path: str  # relative to the project root, with '/'
    stage: str | None  # None for a `.dvc` file
    cache: bool  # False: git keeps it (metrics), not DVC's cache
    part: str  # DATA or MODELS: what `mlvs rollback --only` calls it


def _entries(items: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for item in items or []:
        if isinstance(item, str):
            yield item, {}
        elif isinstance(item, dict):
            for path, options in item.items():
                yield str(path), dict(options or {})


def _join(root: Path, base: str, path: object, source: str) -> str:
    """Output `path` of DVC file `source` (in directory `base`), checked to stay inside the project.

    The one reader of output paths from `dvc.yaml`, `dvc.lock` and `.dvc` files:
    an absolute path, a `..` that climbs out, a path into `.git`/`.dvc`/`.mlvs`
    or one whose symlinks lead outside is refused before anything reads or writes it.
    """
    where = f"{source} output"
    if not isinstance(path, str) or PurePosixPath(path).is_absolute():
        relative_path(path, where)  # refuses it, naming why
    assert isinstance(path, str)
    joined = PurePosixPath(base) / path if base not in ("", ".") else PurePosixPath(path)
    parts: list[str] = []
    for part in joined.parts:
        if part == ".":
            continue
        if part == "..":
            if not parts:
                raise UnsafeInputError(
                    f"{where}: path {path!r} lies outside the project; keep outputs inside it"
                )
            parts.pop()
        else:
            parts.append(part)
    normalised = project_path("/".join(parts), where)
    inside(root, normalised, where)
    return normalised


def _uses_templating(document: Any) -> bool:
    text = json.dumps(document, default=str)
    return "${" in text or '"foreach"' in text or '"matrix"' in text


def _outputs_from_dvc_api(root: Path) -> list[tuple[str, str | None, bool]]:
    # deferred: DVC (~0.4 s) is imported only when this runs
    from dvc.repo import Repo

    found = []
    with Repo(str(root)) as repo:
        for out in repo.index.outs:
            stage = getattr(out.stage, "name", None)
            found.append(
                (Path(out.fs_path).relative_to(root).as_posix(), stage, bool(out.use_cache))
            )
    return found


def dvc_files(root: Path) -> list[str]:
    """The `.dvc` files of the project (tracked or untracked, not ignored)."""
    out = run_git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return sorted(p for p in out.split("\0") if p.endswith(".dvc") and (root / p).is_file())


def dvc_outputs(paths: ProjectPaths, tracking_files: list[str] | None = None) -> list[Output]:
    """Every output of `dvc.yaml`'s stages and of the project's `.dvc` files (`tracking_files` if known)."""
    root = paths.root
    found: list[tuple[str, str | None, bool]] = []
    pipeline_file = root / "dvc.yaml"
    document = _dvc_yaml_file(pipeline_file, root) if pipeline_file.is_file() else {}
    if _uses_templating(document):
        found = _outputs_from_dvc_api(root)
    else:
        for stage, spec in ((document or {}).get("stages") or {}).items():
            wdir = str((spec or {}).get("wdir", "."))
            for section in ("outs", "metrics", "plots"):
                for path, options in _entries((spec or {}).get(section)):
                    found.append(
                        (
                            _join(root, wdir, path, "dvc.yaml"),
                            str(stage),
                            bool(options.get("cache", True)),
                        )
                    )
        for dvc_file in dvc_files(root) if tracking_files is None else tracking_files:
            spec = _dvc_yaml_file(root / dvc_file, root)
            base = str(PurePosixPath(dvc_file).parent)
            for path, options in _entries(
                [{o["path"]: o} for o in spec.get("outs") or [] if "path" in o]
            ):
                found.append(
                    (_join(root, base, path, dvc_file), None, bool(options.get("cache", True)))
                )
    models_dir = paths.models.relative_to(root).as_posix()

    def under_models(path: str) -> bool:
        return path == models_dir or path.startswith(models_dir + "/")

    # A stage that writes a model owns its metrics too: they describe that model.
    model_stages = {stage for path, stage, _ in found if stage and under_models(path)}
    outputs = {}
    for path, stage, cache in found:
        part = MODELS if under_models(path) or (stage in model_stages) else DATA
        outputs[path] = Output(path, stage, cache, part)
    return [outputs[p] for p in sorted(outputs)]


def pipeline_written(paths: ProjectPaths) -> list[str]:
    """What the pipeline itself rewrites: `dvc.lock` and every DVC output (metrics included)."""
    return ["dvc.lock", *(output.path for output in dvc_outputs(paths))]


def _stage_dependencies(paths: ProjectPaths, stage: str) -> list[str]:
    """The `deps` of `stage` in `dvc.yaml`, relative to the root; none for an unknown stage."""
    root = paths.root
    pipeline_file = root / "dvc.yaml"
    document = _dvc_yaml_file(pipeline_file, root) if pipeline_file.is_file() else {}
    if _uses_templating(document):
        # deferred: DVC (~0.4 s) is imported only for a templated dvc.yaml
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            return sorted(
                Path(dep.fs_path).relative_to(root).as_posix()
                for found in repo.index.stages
                if getattr(found, "name", None) == stage
                for dep in found.deps
            )
    spec = ((document or {}).get("stages") or {}).get(stage) or {}
    wdir = str(spec.get("wdir", "."))
    return sorted(_join(root, wdir, path, "dvc.yaml") for path, _ in _entries(spec.get("deps")))


def stage_input_hashes(paths: ProjectPaths, stage: str) -> dict[str, str]:
    """Dependency path -> MD5 for the inputs of `stage` that `dvc.lock` records as outputs.

    Those are the data a stage reads from the stages before it; by the time it runs,
    `dvc repro` has written their entries. The stage's code and params are in git.
    """
    recorded = lock_hashes(paths)
    return {dep: recorded[dep] for dep in _stage_dependencies(paths, stage) if dep in recorded}


class PartRule:
    """Which part (code, params, data, models) a project file belongs to, as this project says.

    Decided by mlvs from the project's own layout and its `dvc.yaml` and `.dvc` files
    (`outputs`: output path -> part), never from what a snapshot's manifest claims: a manifest comes from a
    commit anyone may have written, and the part decides what `rollback --only` touches.
    A path under no current output keeps its place by location: `params/` is params,
    `models/` is models, `data/` is data, anything else is code.
    """

    def __init__(self, paths: ProjectPaths, outputs: Mapping[str, str]) -> None:
        root = paths.root
        self._params = paths.params.relative_to(root).as_posix()
        self._models = paths.models.relative_to(root).as_posix()
        self._data = paths.data.relative_to(root).as_posix()
        # Longest first, so a nested output wins over the one around it.
        self._outputs = sorted(outputs.items(), key=lambda o: -len(o[0]))

    def __call__(self, path: str) -> str:
        if _under(path, self._params):
            return PARAMS
        for output, part in self._outputs:
            if _under(path, output):
                return part
        if _under(path, self._models):
            return MODELS
        return DATA if _under(path, self._data) else CODE


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


def lock_hashes(paths: ProjectPaths, tracking_files: list[str] | None = None) -> dict[str, str]:
    """Output path -> MD5 as `dvc.lock` and the `.dvc` files (`tracking_files` if known) record them."""
    recorded: dict[str, str] = {}
    lock_file = paths.root / "dvc.lock"
    if lock_file.is_file():
        document = _dvc_yaml_file(lock_file, paths.root)
        stages = document.get("stages") or {}
        if not isinstance(stages, dict):
            raise BadInputError(
                "dvc.lock: 'stages' is not a mapping of stage names; restore dvc.lock from git"
            )
        for name, spec in stages.items():
            for out in _listed_outs(spec, f"dvc.lock stage {str(name)[:80]!r}"):
                if isinstance(out, dict) and "path" in out and "md5" in out:
                    recorded[_join(paths.root, ".", out["path"], "dvc.lock")] = md5_value(
                        out["md5"], "dvc.lock output md5"
                    )
    for dvc_file in dvc_files(paths.root) if tracking_files is None else tracking_files:
        spec = _dvc_yaml_file(paths.root / dvc_file, paths.root)
        base = str(PurePosixPath(dvc_file).parent)
        for out in _listed_outs(spec, dvc_file):
            if isinstance(out, dict) and "path" in out and "md5" in out:
                recorded[_join(paths.root, base, out["path"], dvc_file)] = md5_value(
                    out["md5"], f"{dvc_file} output md5"
                )
    return recorded


def _listed_outs(spec: Any, where: str) -> list[Any]:
    """The `outs` list of a lock entry or `.dvc` file; anything else there is refused in one line."""
    if spec is None:
        return []
    outs = spec.get("outs") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or not isinstance(outs or [], list):
        raise BadInputError(
            f"{where} is not a mapping with a list of outs; restore it from git (or run `dvc commit`)"
        )
    return list(outs or [])


def output_files(root: Path, output: str) -> list[str]:
    """The files an output holds now (itself for a file output), relative to the root, sorted."""
    top = root / output
    if top.is_file():
        return [output]
    if not top.is_dir():
        return []
    files = []
    for directory, subdirectories, names in os.walk(top):
        subdirectories.sort()
        for name in names:
            if name.endswith(TEMP_SUFFIX):
                continue  # a leftover of an interrupted mlvs write, never data
            full = os.path.join(directory, name)
            if os.path.isfile(full):
                files.append(Path(full).relative_to(root).as_posix())
    return sorted(files)


def dir_object(files: dict[str, str]) -> tuple[str, bytes]:
    """DVC's `.dir` object for relpath -> MD5: its name (`<md5>.dir`) and its bytes."""
    listing = [{"md5": md5, "relpath": relpath} for relpath, md5 in sorted(files.items())]
    payload = json.dumps(listing, sort_keys=True).encode("utf-8")
    return hashlib.md5(payload, usedforsecurity=False).hexdigest() + ".dir", payload
