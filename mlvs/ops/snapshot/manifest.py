"""The snapshot manifest: what a snapshot records, as typed records.

Each record reads and writes its own part of `.mlvs-snapshot.json` (`from_dict`,
`to_dict`). A manifest comes back from a commit that anyone may have written, so
reading one checks the shape of every field it types and refuses a wrong one in
one line naming the file and the field. (Plain checks, not pydantic: the snapshot
commands start in about 0.2 s, and importing pydantic alone takes 0.13 s.)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from mlvs.backends.mlflow.registry import RegistryState, VersionInfo
from mlvs.boundary import md5_value, project_path
from mlvs.errors import IntegrityError
from mlvs.ops.recorded import DAMAGE, Finding, Health

MANIFEST_PATH = ".mlvs-snapshot.json"


FORMAT = "mlvs-snapshot/1"


PARTS = ("code", "params", "data", "models", "registry")
# A manifest lists a project's tracked files and params: megabytes at most. A fetched
# ref holding more is refused before it is parsed.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


PACKAGES = ("mlvs", "dvc", "mlflow", "scikit-learn", "pandas", "numpy", "papermill", "skops")


_TEXT, _OPTIONAL_TEXT = (str,), (str, type(None))


# Package names and versions longer than this are not from a package index.
MAX_PACKAGE_TEXT = 100
_PACKAGE_NAME = re.compile(
    rf"[A-Za-z0-9](?:[A-Za-z0-9._-]{{0,{MAX_PACKAGE_TEXT - 2}}}[A-Za-z0-9])?"
)
_VERSION = re.compile(rf"[\x21-\x7e]{{1,{MAX_PACKAGE_TEXT}}}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true or false"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")


_ABSENT = object()


def _matches(value: Any, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # JSON's true is no integer
        return bool in kinds
    return isinstance(value, kinds)


class _Fields:
    """One JSON object of a manifest, read field by field."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        self.where, self.source = where, source
        if not isinstance(data, dict):
            raise self.wrong(where or "(the document)", "an object", data)
        self.data: dict[str, Any] = data

    def wrong(self, where: str, wanted: str, value: Any) -> IntegrityError:
        return IntegrityError(
            f"{self.source}: field {where} should be {wanted}, not {_kind(value)}; "
            "the snapshot is damaged or was not written by mlvs"
        )

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def items(self, key: str) -> list[_Fields]:
        """A list of objects (absent: empty), each entry read in turn."""
        found = self.get(key, (list,), "a list", [])
        return [
            _Fields(entry, f"{self.name(key)}[{position}]", self.source)
            for position, entry in enumerate(found)
        ]

    def texts(self, key: str) -> list[str]:
        """A list of strings (absent: empty)."""
        found = self.get(key, (list,), "a list", [])
        for position, value in enumerate(found):
            if not isinstance(value, str):
                raise self.wrong(f"{self.name(key)}[{position}]", "a string", value)
        return list(found)

    def get(self, key: str, kinds: tuple[type, ...], wanted: str, default: Any = ...) -> Any:
        """The value of `key`, of one of `kinds`; `default` when absent (required without one)."""
        value = self.data.get(key, _ABSENT)
        # JSON gives exact types: one of `kinds` itself is the common case (bool only when listed).
        if type(value) in kinds:
            return value
        if value is _ABSENT:
            if default is ...:
                raise IntegrityError(
                    f"{self.source}: field {self.name(key)} is missing; "
                    "the snapshot is damaged or was not written by mlvs"
                )
            return default
        if not _matches(value, kinds):
            raise self.wrong(self.name(key), wanted, value)
        return value

    def text(self, key: str, default: Any = ...) -> str:
        return str(self.get(key, _TEXT, "a string", default))

    def optional_text(self, key: str, default: Any = ...) -> str | None:
        value = self.get(key, _OPTIONAL_TEXT, "a string or null", default)
        return None if value is None else str(value)

    def count(self, key: str) -> int:
        return int(self.get(key, (int,), "a whole number"))

    def flag(self, key: str) -> bool:
        return bool(self.get(key, (bool,), "true or false"))

    def entries(self, key: str) -> dict[str, _Fields]:
        """An object of objects (absent: empty), each entry read in turn."""
        found = self.get(key, (dict,), "an object", {})
        return {
            str(name): _Fields(entry, f"{self.name(key)}[{name!r}]", self.source)
            for name, entry in found.items()
        }

    def mapping(self, key: str) -> dict[str, Any]:
        """A free-form object (params, metrics): its shape is the user's."""
        return dict(self.get(key, (dict,), "an object", {}))


@dataclass(frozen=True)
class FileEntry:
    """One DVC-tracked file: its MD5 (DVC's name for it), SHA-256, size, and the output it belongs to."""

    md5: str
    sha256: str
    size: int
    output: str

    def to_dict(self) -> dict[str, Any]:
        return {"md5": self.md5, "sha256": self.sha256, "size": self.size, "output": self.output}

    @classmethod
    def from_fields(cls, fields: _Fields) -> FileEntry:
        md5 = md5_value(fields.text("md5"), f"{fields.source}: field {fields.name('md5')}")
        return cls(md5, fields.text("sha256"), fields.count("size"), fields.text("output"))


@dataclass(frozen=True)
class OutputEntry:
    """One DVC output: its part and stage; when DVC caches it, also its kind, MD5 and size.

    An output git keeps (metrics) has no `kind`: the commit holds its bytes.
    """

    part: str
    stage: str | None
    cache: bool
    kind: str | None = None  # "dir", "file" or "missing"
    md5: str | None = None  # None when missing; a directory's ends in ".dir"
    size: int | None = None
    nfiles: int | None = None  # directories only
    matches_dvc_lock: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"part": self.part, "stage": self.stage, "cache": self.cache}
        if self.kind is not None:
            document.update(
                kind=self.kind, md5=self.md5, size=self.size, matches_dvc_lock=self.matches_dvc_lock
            )
        if self.nfiles is not None:
            document["nfiles"] = self.nfiles
        return document

    @classmethod
    def from_fields(cls, fields: _Fields) -> OutputEntry:
        recorded = fields.data
        return cls(
            fields.text("part"),
            fields.optional_text("stage"),
            fields.flag("cache"),
            kind=fields.text("kind") if "kind" in recorded else None,
            md5=_optional_md5(fields) if "kind" in recorded else None,
            size=fields.count("size") if "kind" in recorded else None,
            nfiles=fields.count("nfiles") if "nfiles" in recorded else None,
            matches_dvc_lock=fields.flag("matches_dvc_lock") if "kind" in recorded else None,
        )


@dataclass(frozen=True)
class Environment:
    """The interpreter and the versions of the packages that decide what the pipeline produces.

    `uv_lock_sha256` is the SHA-256 of the project's `uv.lock` (None without one);
    `lock_recorded` is False for a manifest written before mlvs recorded it, so that an
    old snapshot is not said to have had another lock file.
    """

    python: str
    implementation: str
    platform: str
    packages: dict[str, str | None]
    uv_lock_sha256: str | None = None
    lock_recorded: bool = False

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "python": self.python,
            "implementation": self.implementation,
            "platform": self.platform,
            "packages": dict(self.packages),
        }
        if self.lock_recorded:
            document["uv_lock_sha256"] = self.uv_lock_sha256
        return document

    def changes_to(self, other: Environment) -> dict[str, tuple[str | None, str | None]]:
        """What differs from this environment to `other` that can change what a pipeline produces.

        Keys are `python`, `packages.NAME` and `uv_lock_sha256` (only when both record a
        lock); values are (this, other). The platform string is left out: it names the
        kernel release, which changes with every system update.
        """
        changes: dict[str, tuple[str | None, str | None]] = {}
        if self.python != other.python:
            changes["python"] = (self.python, other.python)
        for name in sorted(set(self.packages) | set(other.packages)):
            old, new = self.packages.get(name), other.packages.get(name)
            if old != new:
                changes[f"packages.{name}"] = (old, new)
        if (
            self.lock_recorded
            and other.lock_recorded
            and self.uv_lock_sha256 != other.uv_lock_sha256
        ):
            changes["uv_lock_sha256"] = (self.uv_lock_sha256, other.uv_lock_sha256)
        return changes

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Environment:
        """Read what `to_dict` wrote (`source` names where it came from in an error)."""
        return cls.from_fields(_Fields(data, "", source))

    @classmethod
    def from_fields(cls, fields: _Fields) -> Environment:
        packages = fields.get("packages", (dict,), "an object")
        for name, version in packages.items():
            where = f"{fields.name('packages')}[{str(name)[:MAX_PACKAGE_TEXT]!r}]"
            # Names and versions are printed by `reproduce` and `diff`: no control characters.
            if not _PACKAGE_NAME.fullmatch(name):
                raise IntegrityError(
                    f"{fields.source}: field {where} is not a package name "
                    f"(letters, digits, '.', '_', '-', at most {MAX_PACKAGE_TEXT} characters); "
                    "the snapshot is damaged or was not written by mlvs"
                )
            if not _matches(version, _OPTIONAL_TEXT):
                raise fields.wrong(where, "a string or null", version)
            if version is not None and not _VERSION.fullmatch(version):
                raise IntegrityError(
                    f"{fields.source}: field {where} is not a version (printable, no spaces, "
                    f"at most {MAX_PACKAGE_TEXT} characters); "
                    "the snapshot is damaged or was not written by mlvs"
                )
        lock_recorded = "uv_lock_sha256" in fields.data
        lock = fields.optional_text("uv_lock_sha256", None)
        if lock is not None and not _SHA256.fullmatch(lock):
            raise IntegrityError(
                f"{fields.source}: field {fields.name('uv_lock_sha256')} should be 64 lowercase "
                f"hex digits or null, not {lock[:80]!r}; the snapshot is damaged or was not written by mlvs"
            )
        return cls(
            fields.text("python"),
            fields.text("implementation"),
            fields.text("platform"),
            packages,
            uv_lock_sha256=lock,
            lock_recorded=lock_recorded,
        )


@dataclass(frozen=True)
class RemoteInfo:
    """The default DVC remote the snapshot's data was pushed to (its URL without credentials)."""

    remote: str | None = None
    remote_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"remote": self.remote, "remote_url": self.remote_url}


def _finding(fields: _Fields) -> Finding:
    return Finding(
        fields.text("check"),
        fields.text("artifact"),
        fields.text("expected"),
        fields.text("actual"),
        kind=fields.text("kind", DAMAGE),
        fix=fields.text("fix", ""),
    )


def _health(fields: _Fields) -> Health:
    """The health a snapshot recorded; its `healthy` flag is derived from the findings, never believed."""
    return Health([_finding(f) for f in fields.items("findings")], fields.texts("unchecked"))


def _version(fields: _Fields) -> VersionInfo:
    return VersionInfo(
        fields.text("version"),
        fields.optional_text("run_id"),
        fields.optional_text("model_id"),
        fields.optional_text("source"),
    )


def _registry(fields: _Fields) -> RegistryState:
    model = fields.get("model", (dict, type(None)), "an object or null", None)
    return RegistryState(
        tracking_uri=fields.text("tracking_uri", ""),
        model_name=fields.optional_text("model_name", None),
        model=_version(_Fields(model, fields.name("model"), fields.source)) if model else None,
        aliases={alias: _version(info) for alias, info in fields.entries("aliases").items()},
        error=fields.optional_text("error", None),
    )


@dataclass
class Manifest:
    """Everything a snapshot records. `commit` is the snapshot's git commit (not stored in it)."""

    name: str
    message: str
    created_at: str
    automatic: bool
    base_commit: str | None
    branch: str | None
    outputs: dict[str, OutputEntry]
    files: dict[str, FileEntry]
    params: dict[str, Any]  # the YAML files of params/, as they were
    metrics: dict[str, Any]  # reports/metrics.json, as it was
    registry: RegistryState
    environment: Environment
    dvc: RemoteInfo = field(default_factory=RemoteInfo)
    # The quick checks' verdict on the state when it was captured; None in snapshots older than it.
    health: Health | None = None
    commit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready data (the file's format, plus `commit`)."""
        return {
            "format": FORMAT,
            "name": self.name,
            "message": self.message,
            "created_at": self.created_at,
            "automatic": self.automatic,
            "git": {"base_commit": self.base_commit, "branch": self.branch, "commit": self.commit},
            "outputs": {path: entry.to_dict() for path, entry in self.outputs.items()},
            "files": {path: entry.to_dict() for path, entry in self.files.items()},
            "params": self.params,
            "metrics": self.metrics,
            "registry": self.registry.to_dict(),
            "environment": self.environment.to_dict(),
            "dvc": self.dvc.to_dict(),
            "health": None if self.health is None else self.health.to_dict(),
        }

    def to_bytes(self) -> bytes:
        """The bytes of `.mlvs-snapshot.json` (without `commit`: a commit cannot name itself)."""
        document = self.to_dict()
        document["git"] = {k: v for k, v in document["git"].items() if k != "commit"}
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, payload: bytes, commit: str | None = None) -> Manifest:
        """Read `.mlvs-snapshot.json` as snapshot commit `commit` holds it."""
        source = _source(commit)
        if len(payload) > MAX_MANIFEST_BYTES:
            raise IntegrityError(
                f"{source} is {len(payload)} bytes, more than the {MAX_MANIFEST_BYTES} a manifest "
                "may have; the snapshot is damaged or not mlvs's"
            )
        try:
            document = json.loads(payload)
        except ValueError as error:
            raise IntegrityError(
                f"{source} is not valid JSON ({error}); the snapshot is damaged"
            ) from None
        except RecursionError:
            raise IntegrityError(
                f"{source} is nested too deeply to be a manifest; the snapshot is damaged"
            ) from None
        return cls.from_dict(document, commit)

    @classmethod
    def from_dict(cls, data: Any, commit: str | None = None) -> Manifest:
        """Read a manifest; refuse a format this version does not know, or a field of the wrong shape."""
        fields = _Fields(data, "", _source(commit))
        if data.get("format") != FORMAT:
            raise IntegrityError(
                f"snapshot manifest format {data.get('format')!r} is not {FORMAT!r}; upgrade mlvs to read it"
            )
        git = _Fields(fields.get("git", (dict,), "an object", {}), "git", fields.source)
        dvc = _Fields(fields.get("dvc", (dict,), "an object", {}), "dvc", fields.source)
        outputs = {
            _safe_path(p, f): OutputEntry.from_fields(f)
            for p, f in fields.entries("outputs").items()
        }
        files = {
            _safe_path(p, f): FileEntry.from_fields(f) for p, f in fields.entries("files").items()
        }
        for path, entry in files.items():
            if entry.output not in outputs:
                raise IntegrityError(
                    f"{fields.source}: field files[{path!r}].output names {entry.output!r}, "
                    "which is not among its outputs; the snapshot is damaged or was not written by mlvs"
                )
        return cls(
            name=fields.text("name"),
            message=fields.text("message", ""),
            created_at=fields.text("created_at"),
            automatic=bool(fields.get("automatic", (bool, type(None)), "true or false", False)),
            base_commit=git.optional_text("base_commit", None),
            branch=git.optional_text("branch", None),
            outputs=outputs,
            files=files,
            params=fields.mapping("params"),
            metrics=fields.mapping("metrics"),
            registry=_registry(
                _Fields(fields.get("registry", (dict,), "an object", {}), "registry", fields.source)
            ),
            environment=Environment.from_fields(
                _Fields(
                    fields.get("environment", (dict,), "an object"), "environment", fields.source
                )
            ),
            dvc=RemoteInfo(
                dvc.optional_text("remote", None), dvc.optional_text("remote_url", None)
            ),
            health=(
                None
                if fields.data.get("health") is None
                else _health(
                    _Fields(fields.get("health", (dict,), "an object"), "health", fields.source)
                )
            ),
            commit=commit or git.optional_text("commit", None),
        )

    def part_of(self, path: str) -> str | None:
        """DATA or MODELS for a DVC-tracked file or git-kept output, else None."""
        for output, entry in self.outputs.items():
            if path == output or path.startswith(output + "/"):
                return entry.part
        return None

    def part_of_file(self, path: str) -> str:
        """The part (DATA or MODELS) of tracked file `path`, through the output it belongs to."""
        return self.outputs[self.files[path].output].part

    @property
    def model_version(self) -> str | None:
        """The registry version whose run logged the model file of this snapshot."""
        return self.registry.model.version if self.registry.model else None


def _safe_path(path: str, fields: _Fields) -> str:
    """A file or output path of the manifest, refused when it would leave the project or touch its tools' state.

    A manifest comes from a commit anyone may have written (a fetched snapshot ref),
    and every path in it is later written or deleted by a rollback.
    """
    return project_path(path, f"{fields.source}: field {fields.where}")


def _optional_md5(fields: _Fields) -> str | None:
    value = fields.optional_text("md5")
    return (
        None if value is None else md5_value(value, f"{fields.source}: field {fields.name('md5')}")
    )


def _source(commit: str | None) -> str:
    return f"{MANIFEST_PATH} of snapshot commit {commit[:12]}" if commit else MANIFEST_PATH
