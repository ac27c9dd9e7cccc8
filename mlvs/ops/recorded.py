"""What DVC recorded: every tracked file with its MD5, read from `dvc.lock` and the `.dir` objects.

Shared by `verify` (which compares the workspace with it) and by the repairs that put
recorded files back; `Finding` is what either reports when something is not as recorded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from mlvs.backends.dvc.objects import ObjectStore
from mlvs.backends.dvc.outputs import lock_hashes
from mlvs.boundary import UnsafeInputError, inside, md5_value, relative_path
from mlvs.paths import ProjectPaths

DAMAGE, STALE = "damage", "stale"


@dataclass(frozen=True)
class Finding:
    """One thing found wrong.

    `kind` tells damage (bytes or records not as recorded: `mlvs recover` puts them
    back) from a stale pipeline (outputs intact, but produced from params or code
    that changed since: only re-running the pipeline brings them together). `fix`
    is the command that does it, when there is one.
    """

    check: str
    artifact: str
    expected: str
    actual: str
    kind: str = DAMAGE
    fix: str = ""

    def __str__(self) -> str:
        text = f"[{self.check}] {self.artifact}: expected {self.expected}, found {self.actual}"
        return f"{text} ({self.kind}; fix: {self.fix})" if self.fix else text


@dataclass(frozen=True)
class Health:
    """How healthy a captured state was, as far as the quick checks tell.

    `unchecked` names the deep checks (schema, model, metrics) that did not pass on
    exactly these bytes before, so the quick checks cannot vouch for them: `mlvs
    verify` runs them.
    """

    findings: list[Finding] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.findings

    @property
    def damaged(self) -> list[Finding]:
        """The findings that are damage rather than a stale pipeline."""
        return [f for f in self.findings if f.kind != STALE]

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "findings": [asdict(f) for f in self.findings],
            "unchecked": list(self.unchecked),
        }


def recorded_files(
    paths: ProjectPaths, store: ObjectStore, outputs: dict[str, str] | None = None
) -> tuple[dict[str, str], list[Finding]]:
    """relpath -> MD5 of every file DVC recorded (directory outputs expanded through their `.dir` objects).

    `outputs` is `lock_hashes(paths)` when the caller has already read it.
    """
    files: dict[str, str] = {}
    findings: list[Finding] = []
    recorded = lock_hashes(paths) if outputs is None else outputs
    for output, md5 in sorted(recorded.items()):
        if not md5.endswith(".dir"):
            files[output] = md5
            continue
        listing = _read_dir_object(store, md5)
        if listing is None:
            findings.append(
                Finding(
                    "dvc_cache",
                    f"{output} ({md5})",
                    "the directory listing in the DVC cache or remote",
                    "missing or unreadable in both",
                )
            )
            continue
        files.update(_listed_files(paths, output, md5, listing))
    return files, findings


def _listed_files(paths: ProjectPaths, output: str, md5: str, listing: Any) -> dict[str, str]:
    """relpath -> MD5 of the entries of directory object `md5`, each checked before it names a file.

    The object may come from the shared remote: an entry that climbs out of its
    directory, or whose MD5 is not a digest, is refused rather than followed.
    """
    source = f"DVC directory object {md5} of {output}"
    if not isinstance(listing, list):
        raise UnsafeInputError(f"{source}: is not a list of entries; the object is damaged")
    files = {}
    for position, entry in enumerate(listing):
        where = f"{source} entry {position}"
        if not isinstance(entry, dict):
            raise UnsafeInputError(
                f"{where}: is not an object with relpath and md5; the object is damaged"
            )
        relative = f"{output}/{relative_path(entry.get('relpath'), where)}"
        inside(paths.root, relative, where)
        files[relative] = md5_value(entry.get("md5"), where, directory=False)
    return files


def _read_dir_object(store: ObjectStore, md5: str) -> Any:
    name = md5.removesuffix(".dir")
    for candidate in (store.cache_path(md5), store.remote_path(md5)):
        if candidate is None or not candidate.is_file():
            continue
        payload = candidate.read_bytes()
        if hashlib.md5(payload, usedforsecurity=False).hexdigest() != name:
            continue
        try:
            return json.loads(payload)
        except ValueError:
            continue
    return None
