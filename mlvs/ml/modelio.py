"""Saving and loading models safely, with their hash, card and golden predictions.

A model file is trusted only after its SHA-256 matches the one recorded in
its card, and skops is given mlvs's own list of trusted types, never the list
stored inside the file (which an attacker would control).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import io
import json
import re
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from mlvs._io import atomic_write_bytes, atomic_write_text, sha256_file
from mlvs.errors import IntegrityError
from mlvs.ml.features import add_engineered_features
from mlvs.ml.modeling import MODEL_TYPES
from mlvs.paths import ProjectPaths

if TYPE_CHECKING:
    import pandas as pd

# The feature step is named by where it lives, so moving it can never leave a stale name trusted.
_FEATURE_STEP = f"{add_engineered_features.__module__}.{add_engineered_features.__qualname__}"
# Model files saved when scikit-learn computed the forest and the boosting hold its trees;
# they stay loadable (a rollback to an older snapshot serves one).
_FORMER_MODEL_TYPES = ("sklearn.tree._tree.Tree",)
TRUSTED_TYPES: tuple[str, ...] = tuple(
    sorted(
        {
            _FEATURE_STEP,
            *_FORMER_MODEL_TYPES,
            *(t for m in MODEL_TYPES.values() for t in m.trusted_types),
        }
    )
)


_SHA256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
_CELL = str | int | float | bool | None
# A golden sample is a few dozen rows; the limits keep a hostile file from costing memory.
MAX_GOLDEN_ROWS = 10_000
MAX_COLUMNS = 200


class ModelCard(BaseModel):
    """What mlvs reads back from `model_card.json`: the model's hash and file name (the rest is kept)."""

    model_config = ConfigDict(extra="allow", strict=True, defer_build=True)
    model_sha256: _SHA256
    # A file name beside the card, never a path: a card is read from snapshots others made.
    model_file: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}$")]
    # The probability from which the model's customers are contacted (absent in older cards).
    decision_threshold: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = None


class GoldenPredictions(BaseModel):
    """`golden_predictions.json`: input rows and the exact probabilities the model gave them."""

    # No NaN or infinity in a row: the model cannot score one, and it never wrote one.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, defer_build=True)
    model_sha256: _SHA256
    rows: Annotated[
        list[Annotated[dict[str, _CELL], Field(max_length=MAX_COLUMNS)]],
        Field(max_length=MAX_GOLDEN_ROWS),
    ]
    # repr() of each float, so that "the same" means bit for bit.
    churn_probability: Annotated[list[str], Field(max_length=MAX_GOLDEN_ROWS)]

    @model_validator(mode="after")
    def _one_probability_per_row(self) -> GoldenPredictions:
        if len(self.rows) != len(self.churn_probability):
            raise ValueError(
                f"{len(self.rows)} rows but {len(self.churn_probability)} probabilities"
            )
        for text in self.churn_probability:
            try:
                float(text)
            except ValueError:
                raise ValueError(f"probability {text[:40]!r} is not a number") from None
        return self


def _schema_problem(exc: ValidationError) -> str:
    """The first thing wrong, as `field 'a.b': what is allowed`."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "the document"
    return f"field {where!r}: {err['msg'].removeprefix('Value error, ')}"


@dataclass(frozen=True)
class SavedModel:
    """What `save_model` wrote."""

    sha256: str
    size: int


def _reproducible_zip(payload: bytes) -> bytes:
    """The same skops archive, made byte-identical for the same model.

    skops names objects and array files after `id()` (memory addresses), byte
    strings (an XGBoost booster's model) after a random UUID, and stamps entries
    with the current time, so the same model would give new bytes, and a new
    hash, on every run. Renumbering the ids and names in order of first
    appearance and fixing the stamps makes a retrained model byte-identical,
    which `dvc.lock` and `mlvs reproduce` rely on.
    """
    source = zipfile.ZipFile(io.BytesIO(payload))
    schema = source.read("schema.json").decode("utf-8")
    pattern = re.compile(r'("__id__": )(\d+)|"(\d+)\.npy"|"([0-9a-f-]{36})\.bin"')
    numbering: dict[str, str] = {}
    for match in pattern.finditer(schema):
        old = match.group(2) or match.group(3) or match.group(4)
        numbering.setdefault(old, str(len(numbering) + 1))

    def renumber(match: re.Match[str]) -> str:
        if match.group(2):
            return match.group(1) + numbering[match.group(2)]
        if match.group(3):
            return f'"{numbering[match.group(3)]}.npy"'
        return f'"{numbering[match.group(4)]}.bin"'

    renamed = {"schema.json": pattern.sub(renumber, schema).encode("utf-8")}
    for info in source.infolist():
        if info.filename != "schema.json":
            stem, dot, suffix = info.filename.partition(".")
            renamed[f"{numbering.get(stem, stem)}{dot}{suffix}"] = source.read(info.filename)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for name in sorted(renamed, key=lambda n: (n != "schema.json", n)):
            target.writestr(
                zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)),
                renamed[name],
                compress_type=zipfile.ZIP_DEFLATED,
            )
    return out.getvalue()


# --- importing skops ------------------------------------------------------------------------
#
# When skops.io is imported, it names each of scipy's and numpy's public ufuncs by the first
# loaded module that holds it: about 840 objects, each looked for with `getattr` in every module
# of `sys.modules`, module-level `__getattr__` hooks included. In a process that has MLflow and
# pandas loaded (2,700 modules: a notebook's kernel, `mlvs verify`, `mlvs serve`), that search
# took 2.4 of the 3.5 s the import cost (cProfile). The same search over the modules' own
# namespaces, indexed once, finds the same modules; an object it cannot find that way is
# searched for as before. The faster search is in place only while skops.io is imported: its
# function is swapped as its module `skops.io._utils` is executed (before the package's
# `__init__` uses it), through an import hook, and put back afterwards.

_SKOPS_UTILS = "skops.io._utils"


class _ModuleIndex:
    """Which loaded module first holds each (name, object), in `sys.modules` order."""

    def __init__(self) -> None:
        self._size = -1
        self._first: dict[tuple[str, int], str] = {}

    def find(self, obj: Any, name: str) -> str | None:
        if len(sys.modules) != self._size:  # a module was imported since: index again
            self._first = {}
            for module_name, module in list(sys.modules.items()):
                if module_name in ("__main__", "__mp_main__") or module is None:
                    continue
                namespace = getattr(module, "__dict__", None)
                if isinstance(namespace, dict):
                    for key, value in list(namespace.items()):
                        self._first.setdefault((key, id(value)), module_name)
            self._size = len(sys.modules)
        return self._first.get((name, id(obj)))


def _indexed(search: Callable[[Any, str], str]) -> Callable[[Any, str], str]:
    """skops' `whichmodule(obj, name)`, answered from an index before the search `search` does."""
    index = _ModuleIndex()

    def whichmodule(obj: Any, name: str) -> str:
        module_name = getattr(obj, "__module__", None)
        if module_name is not None:
            return str(module_name)
        found = index.find(obj, name) if "." not in name else None
        return found if found is not None else search(obj, name)

    return whichmodule


class _IndexedSearchHook(importlib.abc.MetaPathFinder):
    """Finds `skops.io._utils` as Python would, and gives its search the index once it has run."""

    def __init__(self) -> None:
        self.search: Callable[[Any, str], str] | None = None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _SKOPS_UTILS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = spec.loader if spec is not None else None
        if isinstance(loader, importlib.machinery.SourceFileLoader):
            execute = loader.exec_module

            def exec_module(module: ModuleType) -> None:
                execute(module)
                search = getattr(module, "whichmodule", None)
                if callable(search):
                    self.search = search
                    module.whichmodule = _indexed(search)  # type: ignore[attr-defined]

            loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def skops_io() -> ModuleType:
    """`skops.io`, imported with its search for each ufunc's module answered from an index."""
    if _SKOPS_UTILS in sys.modules:
        # deferred: imported already, or being imported by another thread (this import waits)
        import skops.io

        return skops.io
    hook = _IndexedSearchHook()
    sys.meta_path.insert(0, hook)
    try:
        # deferred: skops (~2 s, with scikit-learn) is imported only when a model is saved or loaded
        import skops.io
    finally:
        sys.meta_path.remove(hook)
        if hook.search is not None:
            sys.modules[_SKOPS_UTILS].whichmodule = hook.search  # type: ignore[attr-defined]
    return skops.io


def model_bytes(model: Any) -> bytes:
    """The model's skops archive, the same bytes for the same model."""
    return _reproducible_zip(skops_io().dumps(model))


def _dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def save_model(
    model: Any, paths: ProjectPaths, card: dict[str, Any], golden_rows: pd.DataFrame
) -> SavedModel:
    """Write the model (skops), its card (with the model's SHA-256) and its golden predictions."""
    payload = model_bytes(model)
    atomic_write_bytes(paths.model_file, payload)
    digest = sha256_file(paths.model_file)
    golden = {
        "model_sha256": digest,
        "rows": json.loads(golden_rows.to_json(orient="records")),
        # repr() round-trips a float exactly, so "the same predictions" means bit for bit.
        "churn_probability": [repr(float(p)) for p in model.predict_proba(golden_rows)[:, 1]],
    }
    atomic_write_text(paths.golden, _dump_json(golden))
    atomic_write_text(
        paths.model_card,
        _dump_json({**card, "model_sha256": digest, "model_file": paths.model_file.name}),
    )
    return SavedModel(sha256=digest, size=len(payload))


_Document = TypeVar("_Document", bound=BaseModel)


class _Unusable(ValueError):
    """Raised when bytes are not a document of the schema asked for: "is unreadable (why)"."""

    def __init__(self, state: str, detail: str) -> None:
        super().__init__(f"is {state} ({detail})")
        self.detail = detail


def _parse(payload: bytes, schema: type[_Document]) -> _Document:
    """`payload` read as JSON and checked field by field against `schema`."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise _Unusable("unreadable", str(exc)) from None
    try:
        return schema.model_validate(document)
    except ValidationError as exc:
        raise _Unusable("malformed", _schema_problem(exc)) from None


def card_problem(payload: bytes) -> str | None:
    """What makes `payload` no model card ("is malformed (...)"), or None when it is one."""
    try:
        _parse(payload, ModelCard)
    except _Unusable as problem:
        return str(problem)
    return None


def golden_problem(payload: bytes) -> str | None:
    """What makes `payload` no golden predictions file, or None when it is one."""
    try:
        _parse(payload, GoldenPredictions)
    except _Unusable as problem:
        return str(problem)
    return None


def read_card(paths: ProjectPaths) -> dict[str, Any]:
    """The model card, refusing a missing, unreadable or malformed one."""
    try:
        payload = paths.model_card.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(
            f"{paths.model_card.name} is missing; run `mlvs recover` or `mlvs pipeline`"
        ) from None
    except OSError as exc:
        raise IntegrityError(
            f"{paths.model_card.name} is unreadable ({exc}); run `mlvs recover`"
        ) from None
    try:
        return _parse(payload, ModelCard).model_dump()
    except _Unusable as problem:
        raise IntegrityError(f"{paths.model_card.name} {problem}; run `mlvs recover`") from None


def load_verified_model(paths: ProjectPaths, expected_sha256: str | None = None) -> Any:
    """Load the model only if its bytes match the recorded hash and it needs only trusted types."""
    expected = expected_sha256 or read_card(paths).get("model_sha256")
    # Messages name the file relative to the project: they end up in postmortems.
    shown = (
        paths.model_file.relative_to(paths.root)
        if paths.model_file.is_relative_to(paths.root)
        else paths.model_file
    )
    if not paths.model_file.is_file():
        raise IntegrityError(f"{shown} is missing; run `mlvs recover`")
    # One read: the bytes that are hashed are the bytes that are loaded, never a second read of the file.
    return load_model_bytes(paths.model_file.read_bytes(), str(expected), str(shown))


def load_model_bytes(
    payload: bytes, expected_sha256: str, shown: str, fix: str = "run `mlvs recover`"
) -> Any:
    """Load model bytes only if they hash to `expected_sha256` and need only trusted types.

    `shown` names the model in an error, `fix` says what to do about a hash that differs.
    """
    sio = skops_io()
    # deferred: imported with skops.io just above
    from skops.io.exceptions import UntrustedTypesFoundException

    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected_sha256:
        raise IntegrityError(
            f"{shown} has SHA-256 {actual[:12]}…, not the recorded {expected_sha256[:12]}…; "
            f"it was not loaded; {fix}"
        )
    try:
        # skops audits every type against `trusted` before it constructs anything.
        return sio.loads(payload, trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException:
        untrusted = [t for t in sio.get_untrusted_types(data=payload) if t not in TRUSTED_TYPES]
        raise IntegrityError(
            f"{shown} needs untrusted types {untrusted}; it was not loaded"
        ) from None
    except Exception as exc:  # skops raises many kinds on a damaged archive
        raise IntegrityError(f"{shown} cannot be loaded ({type(exc).__name__}: {exc})") from None


def golden_mismatches(model: Any, paths: ProjectPaths) -> list[str]:
    """Rows of the golden sample whose prediction differs from the recorded one."""
    # deferred: numpy (~0.2 s) and pandas (~1 s) are imported only when this runs
    import numpy as np
    import pandas as pd

    try:
        golden = _parse(paths.golden.read_bytes(), GoldenPredictions)
    except OSError as exc:
        return [f"golden predictions unreadable ({exc})"]
    except _Unusable as problem:
        return [f"golden predictions unreadable ({problem.detail})"]

    expected = np.array([float(p) for p in golden.churn_probability])
    try:
        actual = model.predict_proba(pd.DataFrame(golden.rows))[:, 1]
    except Exception as exc:  # pandas and scikit-learn raise many kinds on rows they cannot score
        return [
            f"golden predictions file holds rows the model cannot score "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ]
    return [
        f"golden row {i}: expected {float(expected[i])!r}, got {float(actual[i])!r}"
        for i in np.flatnonzero(expected != actual)
    ]
