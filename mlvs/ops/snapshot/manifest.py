"""The snapshot manifest: what a snapshot records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mlvs.backends.mlflow.registry import RegistryState
from mlvs.errors import IntegrityError

MANIFEST_PATH = ".mlvs-snapshot.json"


FORMAT = "mlvs-snapshot/1"


PARTS = ("code", "params", "data", "models", "registry")


PACKAGES = ("mlvs", "dvc", "mlflow", "scikit-learn", "pandas", "numpy", "papermill", "skops")


@dataclass
class Manifest:
    """Everything a snapshot records. `commit` is the snapshot's git commit (not stored in it)."""

    name: str
    message: str
    created_at: str
    automatic: bool
    base_commit: str | None
    branch: str | None
    outputs: dict[str, dict[str, Any]]
    files: dict[str, dict[str, Any]]
    params: dict[str, Any]
    metrics: dict[str, Any]
    registry: RegistryState
    environment: dict[str, Any]
    dvc: dict[str, Any] = field(default_factory=dict)
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
            "outputs": self.outputs,
            "files": self.files,
            "params": self.params,
            "metrics": self.metrics,
            "registry": self.registry.to_dict(),
            "environment": self.environment,
            "dvc": self.dvc,
        }

    def to_bytes(self) -> bytes:
        """The bytes of `.mlvs-snapshot.json` (without `commit`: a commit cannot name itself)."""
        document = self.to_dict()
        document["git"] = {k: v for k, v in document["git"].items() if k != "commit"}
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any], commit: str | None = None) -> Manifest:
        """Read a manifest; refuse a format this version does not know."""
        if data.get("format") != FORMAT:
            raise IntegrityError(
                f"snapshot manifest format {data.get('format')!r} is not {FORMAT!r}; upgrade mlvs to read it"
            )
        git = data.get("git") or {}
        return cls(
            name=data["name"],
            message=data.get("message", ""),
            created_at=data["created_at"],
            automatic=bool(data.get("automatic")),
            base_commit=git.get("base_commit"),
            branch=git.get("branch"),
            outputs=data.get("outputs") or {},
            files=data.get("files") or {},
            params=data.get("params") or {},
            metrics=data.get("metrics") or {},
            registry=RegistryState.from_dict(data.get("registry") or {}),
            environment=data.get("environment") or {},
            dvc=data.get("dvc") or {},
            commit=commit or git.get("commit"),
        )

    def part_of(self, path: str) -> str | None:
        """DATA or MODELS for a DVC-tracked file or git-kept output, else None."""
        for output, info in self.outputs.items():
            if path == output or path.startswith(output + "/"):
                return str(info["part"])
        return None

    @property
    def model_version(self) -> str | None:
        """The registry version whose run logged the model file of this snapshot."""
        return self.registry.model.version if self.registry.model else None
