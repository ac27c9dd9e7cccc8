"""The quick checks of a state's health: what a snapshot can afford to ask before it is taken.

Three checks, none of which imports DVC, MLflow or the data and model libraries:
every DVC-tracked file against the MD5 `dvc.lock` records (through the hash cache,
so an unchanged file is not read), the stages `dvc status` would call changed
(a stale pipeline), and the deep checks of `verify` (schema, model and golden
predictions, metrics) as far as they passed before on exactly these bytes and
code. A deep check that did not is named as unchecked, never run here.

The fingerprint of a passed deep check is shared with `verify`, which records
them: the check code is the same modules, read here by name from the files they
would be loaded from (importing them would load pydantic and pandas), and by
`verify` from the modules it imported. A test holds the two equal.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

from mlvs._io import sha256_file
from mlvs.backends.dvc.hashcache import HashCache
from mlvs.backends.dvc.objects import ObjectStore
from mlvs.backends.dvc.outputs import dvc_outputs, lock_hashes, output_files
from mlvs.backends.dvc.status import stale_stages
from mlvs.errors import IntegrityError, MlvsError
from mlvs.ops.recorded import STALE, Finding, Health, recorded_files
from mlvs.paths import ProjectPaths

# The modules whose code decides a deep check's verdict, by name (see `verify.DEEP_CHECK_CODE`).
DEEP_CHECK_MODULES: tuple[str, ...] = (
    "mlvs.ml.data",
    "mlvs.ml.decision",
    "mlvs.ml.features",
    "mlvs.ml.modeling",
    "mlvs.ml.modelio",
    "mlvs.ml.params",
    "mlvs.errors",
    "mlvs.paths",
    "mlvs.ops.health",
    "mlvs.ops.verify",
)

PIPELINE_FIX = "mlvs pipeline"


def code_identity(sources: list[tuple[str, bytes]]) -> bytes:
    """The interpreter, the installed packages and the check code (name, source), as bytes to fingerprint.

    Installing or removing a package changes the mtime of its `sys.path` directory
    (as `snapshots._environment` relies on too); only the interpreter's own
    directories count, not a project or test folder that changes all the time.
    Each module is hashed with its name, so code moved from one to another changes
    the fingerprint too.
    """
    parts = [sys.executable, sys.version]
    prefixes = tuple(
        os.path.join(os.path.abspath(p), "") for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}
    )
    for entry in sys.path:
        if entry and os.path.join(os.path.abspath(entry), "").startswith(prefixes):
            try:
                parts.append(f"{entry}:{os.stat(entry).st_mtime_ns}")
            except OSError:
                parts.append(f"{entry}:-")
    digest = hashlib.sha256("\0".join(parts).encode("utf-8"))
    for name, source in sources:
        digest.update(f"\0{name}\0{len(source)}\0".encode())
        digest.update(source)
    return digest.digest()


def source_by_name(name: str) -> bytes:
    """The source of module `name`, read from the file it is (or would be) loaded from, without importing it."""
    module = sys.modules.get(name)
    location = getattr(module, "__file__", None) if module is not None else None
    if location is None:
        spec = importlib.util.find_spec(name)
        location = spec.origin if spec is not None else None
    if not location or not location.endswith(".py"):
        raise IntegrityError(
            f"{name} (code of verify's deep checks) is loaded from {location or 'no file'}, not from "
            "its source; reinstall mlvs with its sources so that its checks can be fingerprinted"
        )
    try:
        return Path(location).read_bytes()
    except OSError as error:
        raise IntegrityError(
            f"the source of {name} ({location}) cannot be read ({error.strerror or error}); "
            "reinstall mlvs or fix its permissions so that verify's deep checks can be fingerprinted"
        ) from None


def named_code_identity() -> bytes:
    """`code_identity` of DEEP_CHECK_MODULES, read without importing them."""
    return code_identity([(name, source_by_name(name)) for name in DEEP_CHECK_MODULES])


class PassedChecks:
    """Deep checks that passed, remembered by the fingerprint of every byte they read.

    `fingerprint` reads each input's SHA-256 through the hash cache, which trusts a
    remembered hash only while the file's size, mtime, ctime and inode hold. A
    check is recorded as passed only if its inputs hashed the same before and
    after it ran, so a file changed while it was being checked is never vouched for.
    `code` gives the identity of the check code (computed once, when first needed).
    """

    def __init__(
        self,
        paths: ProjectPaths,
        hashes: HashCache,
        reuse: bool = True,
        code: Callable[[], bytes] = named_code_identity,
    ) -> None:
        self.paths = paths
        self.hashes = hashes
        self.reuse = reuse
        self._code_of = code
        self._code: bytes | None = None

    def fingerprint(self, check: str, inputs: list[Path]) -> str:
        """SHA-256 over the check's name, the code identity, and each input's path and SHA-256 (or absence)."""
        if self._code is None:
            self._code = self._code_of()
        digest = hashlib.sha256(self._code)
        digest.update(check.encode("utf-8"))
        for path in inputs:
            relative, sha256 = self._hash(path)
            digest.update(b"\0" + relative.encode("utf-8") + b"\0" + sha256.encode("ascii"))
        return digest.hexdigest()

    def content_fingerprint(self, check: str, sha256: str) -> str:
        """SHA-256 over the check's name, the code identity, and the SHA-256 of the bytes it checks.

        For a check whose verdict depends on a file's bytes alone, wherever they lie
        (a rollback's staged copy has a new name every time).
        """
        if self._code is None:
            self._code = self._code_of()
        digest = hashlib.sha256(self._code)
        digest.update(check.encode("utf-8") + b"\0content\0" + sha256.encode("ascii"))
        return digest.hexdigest()

    def _hash(self, path: Path) -> tuple[str, str]:
        """The input's name (relative to the project when inside it) and its SHA-256, or why there is none."""
        try:
            relative = path.resolve().relative_to(self.paths.root.resolve()).as_posix()
        except (OSError, ValueError):
            relative = ""
        try:
            if not path.is_file():
                return relative or str(path), "absent"
            if not relative:  # outside the project: not in the hash cache
                return str(path), sha256_file(path)
            return relative, self.hashes.file_hash(relative).sha256
        except OSError:
            return relative or str(path), "unreadable"

    def passed(self, fingerprint: str) -> bool:
        """Whether a check already passed on the inputs `fingerprint` stands for."""
        return self.reuse and self.hashes.check_passed(fingerprint)

    def record(self, check: str, fingerprint: str, inputs: list[Path]) -> None:
        """Remember that `check` passed, if its inputs are still the ones fingerprinted before it ran."""
        if self.fingerprint(check, inputs) == fingerprint:
            self.hashes.remember_passed(check, fingerprint)


def schema_inputs(paths: ProjectPaths) -> list[Path]:
    """The data files the schema check reads, one check each."""
    return [paths.raw_data, paths.train_data, paths.test_data]


def model_inputs(paths: ProjectPaths) -> list[Path]:
    """What the model check reads: the model file, its card and the golden sample."""
    return [paths.model_file, paths.model_card, paths.golden]


def metrics_inputs(paths: ProjectPaths) -> list[Path]:
    """What the metrics check reads: the model, its card, the test data, the metrics and the train params."""
    return [
        paths.model_file,
        paths.model_card,
        paths.test_data,
        paths.metrics,
        paths.params / "train.yaml",
    ]


def check_tracked_files(
    paths: ProjectPaths,
    store: ObjectStore,
    hashes: HashCache,
    outputs: dict[str, str] | None = None,
) -> list[Finding]:
    """Every DVC-tracked file against the MD5 `dvc.lock` recorded; unexpected extra files too.

    `outputs` is `lock_hashes(paths)` when the caller has already read it.
    """
    outputs = lock_hashes(paths) if outputs is None else outputs
    recorded, findings = recorded_files(paths, store, outputs)
    for rel, md5 in recorded.items():
        path = paths.root / rel
        if not path.is_file():
            findings.append(Finding("file_hash", rel, f"md5 {md5}", "the file is missing"))
            continue
        actual = hashes.file_hash(rel).md5
        if actual != md5:
            findings.append(Finding("file_hash", rel, f"md5 {md5}", f"md5 {actual}"))
    for output, md5 in outputs.items():
        if md5.endswith(".dir"):
            for rel in output_files(paths.root, output):
                if rel not in recorded:
                    findings.append(
                        Finding(
                            "file_hash", rel, "no such file in the recorded output", "an extra file"
                        )
                    )
    return findings


def check_pipeline(
    paths: ProjectPaths, hashes: HashCache, outputs: dict[str, str] | None = None
) -> list[Finding]:
    """Each stage whose deps, params or command changed since `dvc.lock` recorded its outputs: stale."""
    return [
        Finding(
            "pipeline",
            f"stage {stale.stage}",
            "the deps and params dvc.lock recorded",
            "; ".join(stale.changes),
            kind=STALE,
            fix=PIPELINE_FIX,
        )
        for stale in stale_stages(paths, hashes, outputs)
    ]


def metrics_stage_stale(
    paths: ProjectPaths, findings: list[Finding], tracking_files: list[str] | None = None
) -> str | None:
    """The stale stage that wrote the metrics, if any: its metrics describe the inputs dvc.lock recorded.

    Recomputing them on today's test data or params would then name the staleness
    again, as if it were damage.
    """
    stale = {f.artifact.removeprefix("stage ") for f in findings if f.kind == STALE}
    if not stale:
        return None
    metrics = paths.metrics.relative_to(paths.root).as_posix()
    for output in dvc_outputs(paths, tracking_files):
        if output.path == metrics and output.stage in stale:
            return output.stage
    return None


def quick_health(
    paths: ProjectPaths, hashes: HashCache | None = None, tracking_files: list[str] | None = None
) -> Health:
    """The quick checks of the current state (see the module's docstring); nothing is written but the hash cache.

    `tracking_files` is `dvc_files(paths.root)` when the caller has just listed them
    (a snapshot, for the state it captures).
    """
    own = hashes is None
    hashes = hashes or HashCache(paths)
    try:
        # Read once: each `.dvc` file is found with a `git ls-files` and parsed as YAML.
        outputs = lock_hashes(paths, tracking_files)
        findings = check_tracked_files(paths, ObjectStore(paths), hashes, outputs)
        findings += check_pipeline(paths, hashes, outputs)
        passed = PassedChecks(paths, hashes)
        unchecked = []
        for path in schema_inputs(paths):
            if path.is_file() and not passed.passed(passed.fingerprint("schema", [path])):
                unchecked.append(f"schema:{path.relative_to(paths.root).as_posix()}")
        if paths.model_card.is_file():
            if not passed.passed(passed.fingerprint("model", model_inputs(paths))):
                unchecked.append("model")
            if (
                paths.metrics.is_file()
                and paths.test_data.is_file()
                and metrics_stage_stale(paths, findings, tracking_files) is None
                and not passed.passed(passed.fingerprint("metrics", metrics_inputs(paths)))
            ):
                unchecked.append("metrics")
    finally:
        if own:
            hashes.close()
    return Health(findings, unchecked)


def health_never_refusing(
    paths: ProjectPaths, hashes: HashCache | None = None, tracking_files: list[str] | None = None
) -> Health:
    """`quick_health`, with a check that cannot run recorded as a finding instead of raised.

    For the automatic snapshot a rollback takes: a rollback out of a broken state
    (a lock that does not parse, a file that cannot be read) must stay possible.
    """
    try:
        return quick_health(paths, hashes, tracking_files)
    except (MlvsError, OSError) as error:
        return Health(
            [Finding("health", "the project", "quick checks that can run", f"{error}")], []
        )
