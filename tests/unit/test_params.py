"""The parameter loader: params/<stage>.yaml into typed objects, or one clear line per problem."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlvs.errors import ParamsError
from mlvs.ml.modeling import RandomForestHyper
from mlvs.ml.params import PrepareParams, TrainParams, load_stage, stage_keys

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project root holding a copy of the real params/."""
    shutil.copytree(REPO / "params", tmp_path / "params")
    return tmp_path


def read(root: Path, stage: str) -> dict[str, Any]:
    return yaml.safe_load((root / "params" / f"{stage}.yaml").read_text())


def write(root: Path, stage: str, data: Any) -> None:
    (root / "params" / f"{stage}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def edit(root: Path, stage: str, **changes: Any) -> None:
    data = read(root, stage)
    data.update(changes)
    write(root, stage, data)


def refusal(stage: str, root: Path, overrides: dict[str, Any] | None = None) -> str:
    with pytest.raises(ParamsError) as caught:
        load_stage(stage, root, overrides)
    return str(caught.value)


def single_line(message: str, stage: str) -> str:
    """The message is exactly one line, and it names the params file by its project path."""
    lines = message.splitlines()
    assert len(lines) == 1, message
    assert f"params/{stage}.yaml" in lines[0], message
    return lines[0]


# --- the real files -----------------------------------------------------------------


def test_repository_prepare_params_load_with_the_file_values() -> None:
    loaded = load_stage("prepare", REPO)
    assert isinstance(loaded, PrepareParams)
    assert loaded.model_dump() == yaml.safe_load((REPO / "params" / "prepare.yaml").read_text())


def test_repository_train_params_load_with_the_chosen_models_hyperparameters() -> None:
    loaded = load_stage("train", REPO)
    raw = yaml.safe_load((REPO / "params" / "train.yaml").read_text())
    assert isinstance(loaded, TrainParams)
    assert loaded.model_type == raw["model_type"]
    assert loaded.model_hyperparameters().model_dump() == raw["hyperparameters"][raw["model_type"]]


def test_stage_keys_are_the_top_level_keys_of_each_real_file() -> None:
    for stage in ("prepare", "train"):
        assert stage_keys(stage) == sorted(
            yaml.safe_load((REPO / "params" / f"{stage}.yaml").read_text())
        )


def test_unknown_stage_is_refused(root: Path) -> None:
    message = refusal("deploy", root)
    assert "deploy" in message and "prepare" in message and "train" in message


# --- keys, types and ranges ---------------------------------------------------------


def test_unknown_key_is_named_with_a_close_match_and_the_allowed_keys(root: Path) -> None:
    edit(root, "prepare", n_row=3)
    line = single_line(refusal("prepare", root), "prepare")
    assert "'n_row'" in line
    assert "did you mean 'n_rows'" in line
    for key in stage_keys("prepare"):
        assert key in line


@pytest.mark.parametrize(
    ("key", "value"),
    [("seed", "42"), ("n_rows", True), ("n_rows", 5000.0)],
    ids=["string-for-int", "bool-for-int", "float-for-int"],
)
def test_wrong_type_names_key_value_and_expected_type(root: Path, key: str, value: Any) -> None:
    edit(root, "prepare", **{key: value})
    line = single_line(refusal("prepare", root), "prepare")
    assert f"{key} = {value!r}" in line
    assert "valid integer" in line


def test_out_of_range_value_names_key_value_and_bound(root: Path) -> None:
    edit(root, "prepare", churn_rate=0.9)
    line = single_line(refusal("prepare", root), "prepare")
    assert "churn_rate = 0.9" in line
    assert "less than or equal to 0.8" in line


def test_missing_key_is_named(root: Path) -> None:
    data = read(root, "prepare")
    del data["seed"]
    write(root, "prepare", data)
    line = single_line(refusal("prepare", root), "prepare")
    assert "'seed' is missing" in line


def test_each_problem_gets_its_own_line(root: Path) -> None:
    edit(root, "prepare", seed="x", n_rows=5)
    lines = refusal("prepare", root).splitlines()
    assert len(lines) == 2
    assert all(line.startswith("params/prepare.yaml:") for line in lines)
    assert any("seed = 'x'" in line for line in lines)
    assert any("n_rows = 5 " in line for line in lines)


def test_unknown_model_type_lists_the_known_ones(root: Path) -> None:
    edit(root, "train", model_type="svm")
    line = single_line(refusal("train", root), "train")
    assert "model_type = 'svm'" in line
    for known in ("random_forest", "logistic_regression", "gradient_boosting"):
        assert known in line


# --- the hyperparameters section ----------------------------------------------------


def edit_hyperparameters(root: Path, model: str, values: dict[str, Any]) -> None:
    data = read(root, "train")
    data["hyperparameters"].setdefault(model, {}).update(values)
    write(root, "train", data)


def test_hyperparameters_for_an_unknown_model_type_name_the_section_and_known_types(
    root: Path,
) -> None:
    edit_hyperparameters(root, "svm", {"C": 1.0})
    line = single_line(refusal("train", root), "train")
    assert "hyperparameters.svm" in line
    for known in ("random_forest", "logistic_regression", "gradient_boosting"):
        assert known in line


def test_hyperparameter_errors_do_not_echo_the_whole_file(root: Path) -> None:
    edit_hyperparameters(root, "svm", {"C": 1.0})
    line = single_line(refusal("train", root), "train")
    # Unrelated sections (business, registry) have no place in the line about hyperparameters.
    assert "contact_cost" not in line and "churn-classifier" not in line


def test_unknown_hyperparameter_is_named_with_the_allowed_ones(root: Path) -> None:
    edit_hyperparameters(root, "random_forest", {"n_trees": 3})
    line = single_line(refusal("train", root), "train")
    assert "hyperparameters.random_forest.n_trees" in line
    for allowed in RandomForestHyper.model_fields:
        assert allowed in line


def test_out_of_range_hyperparameter_names_key_value_and_bound(root: Path) -> None:
    edit_hyperparameters(root, "random_forest", {"n_estimators": 0})
    line = single_line(refusal("train", root), "train")
    assert "hyperparameters.random_forest.n_estimators = 0" in line
    assert "greater than or equal to 1" in line


# --- broken files -------------------------------------------------------------------


def test_malformed_yaml_reports_line_and_column(root: Path) -> None:
    (root / "params" / "prepare.yaml").write_text("seed: 42\nn_rows: [100\nchurn_rate: 0.2\n")
    line = single_line(refusal("prepare", root), "prepare")
    assert "line 3, column 11" in line


def test_yaml_list_instead_of_mapping_is_refused(root: Path) -> None:
    (root / "params" / "prepare.yaml").write_text("- seed\n- 42\n")
    line = single_line(refusal("prepare", root), "prepare")
    assert "mapping" in line and "list" in line


def test_empty_file_names_every_missing_key_one_per_line(root: Path) -> None:
    (root / "params" / "prepare.yaml").write_text("")
    lines = refusal("prepare", root).splitlines()
    assert sorted(lines) == sorted(
        f"params/prepare.yaml: '{key}' is missing" for key in stage_keys("prepare")
    )


def test_missing_file_is_refused(root: Path) -> None:
    (root / "params" / "prepare.yaml").unlink()
    line = single_line(refusal("prepare", root), "prepare")
    assert "does not exist" in line


def test_binary_file_is_refused_as_unreadable(root: Path) -> None:
    (root / "params" / "prepare.yaml").write_bytes(b"\xff\xfe\x00\x9c binary \x80\x81")
    line = single_line(refusal("prepare", root), "prepare")
    assert "cannot be read" in line


def test_deeply_nested_yaml_is_refused_as_params_error(root: Path) -> None:
    (root / "params" / "prepare.yaml").write_text("seed: " + "[" * 1000 + "]" * 1000 + "\n")
    single_line(refusal("prepare", root), "prepare")


# --- overrides ----------------------------------------------------------------------


def test_none_overrides_keep_the_file_values(root: Path) -> None:
    loaded = load_stage("prepare", root, {"n_rows": None, "seed": 7})
    assert loaded.seed == 7
    assert loaded.n_rows == read(root, "prepare")["n_rows"]


def test_nested_override_merges_into_the_file_section(root: Path) -> None:
    loaded = load_stage("train", root, {"hyperparameters": {"random_forest": {"n_estimators": 7}}})
    from_file = read(root, "train")["hyperparameters"]
    assert loaded.hyperparameters["random_forest"] == {
        **from_file["random_forest"],
        "n_estimators": 7,
    }
    assert loaded.hyperparameters["gradient_boosting"] == from_file["gradient_boosting"]


def test_invalid_override_is_reported_as_an_override_of_the_stage(root: Path) -> None:
    message = refusal("prepare", root, {"n_rows": 5})
    assert message.splitlines() == [message]
    assert message.startswith("parameter override for prepare: n_rows = 5 ")


# --- properties ---------------------------------------------------------------------

SCALAR = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
VALUE = st.recursive(
    SCALAR,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
PREPARE_KEYS = st.sampled_from(stage_keys("prepare")) | st.text(max_size=10) | st.integers()
TRAIN_KEYS = st.sampled_from(stage_keys("train")) | st.text(max_size=10)
SECTION = st.dictionaries(
    st.sampled_from(["random_forest", "logistic_regression", "n_estimators", "max_depth", "C"])
    | st.text(max_size=6),
    VALUE,
    max_size=4,
)


BASE = {
    stage: yaml.safe_load((REPO / "params" / f"{stage}.yaml").read_text())
    for stage in ("prepare", "train")
}


@pytest.fixture(scope="module")
def shared_root() -> Iterator[Path]:
    """One params copy for the property tests (hypothesis reruns a test many times per fixture)."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(REPO / "params", Path(tmp) / "params")
        yield Path(tmp)


def loads_or_refuses(stage: str, root: Path, overrides: dict[str, Any] | None = None) -> None:
    try:
        loaded = load_stage(stage, root, overrides)
    except ParamsError as exc:
        assert str(exc).strip(), "a refusal must say something"
    else:
        assert isinstance(loaded, PrepareParams if stage == "prepare" else TrainParams)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.dictionaries(PREPARE_KEYS, VALUE, max_size=8))
def test_any_prepare_mapping_loads_or_raises_params_error(
    shared_root: Path, data: dict[Any, Any]
) -> None:
    write(shared_root, "prepare", {**BASE["prepare"], **data})
    loads_or_refuses("prepare", shared_root)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.dictionaries(
        TRAIN_KEYS,
        VALUE | SECTION | st.dictionaries(st.text(max_size=20), SECTION, max_size=2),
        max_size=6,
    )
)
def test_any_train_mapping_loads_or_raises_params_error(
    shared_root: Path, data: dict[str, Any]
) -> None:
    write(shared_root, "train", {**BASE["train"], **data})
    loads_or_refuses("train", shared_root)


@settings(max_examples=60, deadline=None)
@given(
    overrides=st.dictionaries(
        TRAIN_KEYS,
        VALUE | st.dictionaries(st.sampled_from(["random_forest", "svm"]), SECTION, max_size=2),
        max_size=4,
    )
)
def test_any_override_loads_or_raises_params_error(overrides: dict[str, Any]) -> None:
    loads_or_refuses("train", REPO, overrides)


@settings(max_examples=60, deadline=None)
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_file_content_loads_or_raises_params_error(shared_root: Path, content: bytes) -> None:
    (shared_root / "params" / "prepare.yaml").write_bytes(content)
    loads_or_refuses("prepare", shared_root)
