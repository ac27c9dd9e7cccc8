"""The fingerprint that lets verify reuse a deep check covers the check code itself, by module."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from mlvs.errors import IntegrityError
from mlvs.ops import verify as verifying


def test_the_check_code_is_the_imported_modules_verify_itself_among_them() -> None:
    modules = verifying.DEEP_CHECK_CODE
    assert all(isinstance(m, types.ModuleType) for m in modules)
    assert all(sys.modules[m.__name__] is m for m in modules)
    assert verifying in modules
    for check in (
        verifying.read_customers,
        verifying.validate_schema,
        verifying.features_and_target,
        verifying.load_verified_model,
        verifying.golden_mismatches,
        verifying.holdout_metrics,
        verifying.load_stage,
    ):
        assert sys.modules[check.__module__] in modules, check.__qualname__


@pytest.mark.parametrize("changed", verifying.DEEP_CHECK_CODE, ids=lambda m: m.__name__)
def test_one_changed_byte_in_any_check_module_changes_the_code_identity(
    changed: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = verifying._code_identity()
    read = verifying._module_source

    def one_byte_changed(module: types.ModuleType) -> bytes:
        source = read(module)
        return source[:-1] + bytes([source[-1] ^ 1]) if module is changed else source

    monkeypatch.setattr(verifying, "_module_source", one_byte_changed)
    assert verifying._code_identity() != before


def test_a_check_module_whose_source_cannot_be_read_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved = types.ModuleType("mlvs.ml.moved")
    moved.__file__ = str(tmp_path / "moved.py")  # loaded from a file that is gone now
    monkeypatch.setattr(verifying, "DEEP_CHECK_CODE", (*verifying.DEEP_CHECK_CODE, moved))
    with pytest.raises(IntegrityError, match=r"mlvs\.ml\.moved .*cannot be read"):
        verifying._code_identity()

    compiled = types.ModuleType("mlvs.ml.compiled")
    compiled.__file__ = str(tmp_path / "compiled.pyc")  # no source beside it
    (tmp_path / "compiled.pyc").write_bytes(b"\0")
    monkeypatch.setattr(verifying, "DEEP_CHECK_CODE", (compiled,))
    with pytest.raises(IntegrityError, match=r"mlvs\.ml\.compiled .*not from its source"):
        verifying._code_identity()


def test_importing_verify_imports_no_data_or_model_library() -> None:
    # A verify whose deep checks all passed before must start without pandas, scikit-learn or skops.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, mlvs.ops.verify; "
            "print(sorted({'pandas', 'sklearn', 'skops', 'mlflow'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"
