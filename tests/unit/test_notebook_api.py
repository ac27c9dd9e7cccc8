"""The notebook API: the few names `mlvs` exports are all the notebooks use, and importing it is cheap."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import mlvs
from mlvs.backends.mlflow import tracking
from mlvs.ops.repair import Repair
from mlvs.ops.verify import Finding

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def code(notebook: Path) -> ast.Module:
    cells = json.loads(notebook.read_text())["cells"]
    return ast.parse("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"))


def test_the_notebook_api_has_at_most_fifteen_names() -> None:
    assert len(mlvs.__all__) <= 15
    assert len(set(mlvs.__all__)) == len(mlvs.__all__)


@pytest.mark.parametrize("name", mlvs.__all__)
def test_every_exported_name_is_described_in_the_package_docstring(name: str) -> None:
    assert f"- `{name}`: " in (mlvs.__doc__ or "")


@pytest.mark.parametrize("name", mlvs.__all__)
def test_every_exported_function_class_and_module_has_a_docstring(name: str) -> None:
    value = getattr(mlvs, name)
    if inspect.isfunction(value) or inspect.isclass(value) or inspect.ismodule(value):
        assert (value.__doc__ or "").strip(), name


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_imports_nothing_deeper_than_mlvs(notebook: Path) -> None:
    for node in ast.walk(code(notebook)):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("mlvs"), ast.unparse(node)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name == "mlvs" or not alias.name.startswith("mlvs."), alias.name
                assert alias.asname is None or not alias.name.startswith("mlvs"), alias.name


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_uses_only_names_mlvs_exports(notebook: Path) -> None:
    used = {
        node.attr
        for node in ast.walk(code(notebook))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "mlvs"
    }
    assert used <= set(mlvs.__all__), sorted(used - set(mlvs.__all__))


def test_the_notebooks_together_use_every_exported_name() -> None:
    used = set()
    for notebook in NOTEBOOKS:
        for node in ast.walk(code(notebook)):
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "mlvs":
                used.add(node.attr)
    assert used == set(mlvs.__all__)


def _fresh_interpreter(statement: str) -> list[str]:
    """Module names a fresh interpreter holds after `statement` (without pytest's plugins)."""
    script = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    return out.split()


def test_import_mlvs_leaves_other_libraries_alone() -> None:
    # rfc3987_syntax marked absent would change what jsonschema does in a user's kernel.
    assert "rfc3987_syntax" not in _fresh_interpreter("import mlvs")


def test_importing_a_base_module_pulls_in_no_heavy_library() -> None:
    loaded = set(_fresh_interpreter("import mlvs, mlvs.errors, mlvs.paths"))
    assert not loaded & {"pandas", "numpy", "mlflow", "sklearn", "pydantic", "yaml"}


def test_the_command_line_keeps_its_fast_jsonschema_import() -> None:
    assert "rfc3987_syntax" in _fresh_interpreter("import mlvs.cli")


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        mlvs.nothing_here  # noqa: B018


def test_records_frame_has_one_column_per_field() -> None:
    frame = mlvs.records_frame([Finding("model", "models/model.skops", "sha256 a", "sha256 b")])
    assert list(frame.columns) == ["check", "artifact", "expected", "actual", "kind", "fix"]
    assert frame.iloc[0]["kind"] == "damage"
    assert mlvs.records_frame([Repair("models/model.skops", "dvc cache", 10)]).iloc[
        0
    ].to_dict() == {
        "artifact": "models/model.skops",
        "rung": "dvc cache",
        "bytes_restored": 10,
    }


def test_a_run_kind_is_tagged_with_exactly_its_own_tags() -> None:
    assert tracking.kind_tags(
        tracking.INCIDENT, incident="model_bit_flips", detected_by=None, rung="dvc cache"
    ) == {
        "mlvs.kind": "incident",
        "incident": "model_bit_flips",
        "detected_by": "None",
        "rung": "dvc cache",
    }
    assert tracking.kind_tags(tracking.ROLLBACK, automatic_snapshot="auto-1") == {
        tracking.KIND_TAG: "rollback",
        "automatic_snapshot": "auto-1",
    }
    with pytest.raises(ValueError, match="automatic_snapshot"):
        tracking.kind_tags(tracking.ROLLBACK, snapshot="auto-1")


def test_log_kind_run_writes_the_kind_tag_params_metrics_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlvs.paths import ProjectPaths

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    # What `tracking.configure` sets for the process, undone after the test.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    record = tmp_path / "record.json"
    record.write_text("{}\n")
    run_id = tracking.log_kind_run(
        ProjectPaths(tmp_path),
        "04_rollback",
        tracking.ROLLBACK,
        params={"snapshot": "v1", "only": "all"},
        metrics={"restored_test_roc_auc": 0.75},
        details={"automatic_snapshot": "auto-1"},
        files=[(record, "postmortem")],
    )
    import mlflow

    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.data.tags[tracking.KIND_TAG] == "rollback"
    assert run.data.tags["notebook"] == "04_rollback"
    assert run.data.params == {"snapshot": "v1", "only": "all"}
    assert run.data.metrics == {"restored_test_roc_auc": 0.75}
    assert [a.path for a in client.list_artifacts(run_id, "postmortem")] == [
        "postmortem/record.json"
    ]
    assert mlflow.active_run() is None
