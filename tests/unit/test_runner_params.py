"""What the runner refuses before papermill ever sees a notebook: names, values, notebooks."""

from __future__ import annotations

import keyword
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlvs.errors import BadInputError, ParamsError
from mlvs.ops.run import (
    check_name,
    collect_parameters,
    parse_value,
    resolve_notebook,
    validate_parameters,
)
from mlvs.paths import ProjectPaths

REPO = Path(__file__).resolve().parents[2]
PATHS = ProjectPaths(REPO)
PREPARE = REPO / "notebooks" / "01_prepare.ipynb"
TRAIN = REPO / "notebooks" / "02_train.ipynb"


# --- parameter names ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "1x",
        "x-y",
        "x y",
        "import",
        "x;import os",
        "__import__('os').system('id')",
        "",
        "x\n",
        "x=1",
    ],
)
def test_check_name_refuses_what_is_not_a_plain_identifier(name: str) -> None:
    with pytest.raises(BadInputError, match="not a Python identifier"):
        check_name(name)


def test_check_name_accepts_an_identifier() -> None:
    assert check_name("n_rows") == "n_rows"


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=12) | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True))
def test_check_name_accepts_exactly_the_non_keyword_identifiers(name: str) -> None:
    try:
        accepted = check_name(name)
    except BadInputError:
        assert not name.isidentifier() or keyword.iskeyword(name)
    else:
        assert accepted == name and name.isidentifier() and not keyword.iskeyword(name)


# --- -p values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("42", 42), ("0.5", 0.5), ("true", True), ("null", None), ("abc", "abc")],
)
def test_parse_value_types_scalars_like_yaml(text: str, value: object) -> None:
    parsed = parse_value("x", text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text", ["[1,2]", "{a: 1}"])
def test_parse_value_refuses_collections_and_points_to_a_file(text: str) -> None:
    with pytest.raises(BadInputError, match="-f"):
        parse_value("x", text)


def test_unparsable_value_is_kept_as_text() -> None:
    assert parse_value("x", "'unclosed") == "'unclosed"


# --- -f files and -p pairs ----------------------------------------------------------


def test_p_pairs_override_f_files_which_merge_in_order(tmp_path: Path) -> None:
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("n_rows: 1000\nseed: 1\nchurn_rate: 0.2\n")
    second.write_text("seed: 2\n")
    merged = collect_parameters([("n_rows", "2000")], [first, second])
    assert merged == {"n_rows": 2000, "seed": 2, "churn_rate": 0.2}


def test_f_file_keeps_nested_values(tmp_path: Path) -> None:
    path = tmp_path / "hyper.yaml"
    path.write_text("hyperparameters:\n  random_forest:\n    n_estimators: 7\n")
    assert collect_parameters([], [path]) == {
        "hyperparameters": {"random_forest": {"n_estimators": 7}}
    }


def test_f_file_with_a_non_identifier_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text('"x;import os": 1\n')
    with pytest.raises(BadInputError, match="not a Python identifier"):
        collect_parameters([], [path])


def test_f_file_with_a_numeric_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("1: 2\n")
    with pytest.raises(BadInputError, match="not a Python identifier"):
        collect_parameters([], [path])


def test_missing_f_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        collect_parameters([], [tmp_path / "absent.yaml"])


# --- notebooks ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["01_prepare", "01_prepare.ipynb", "notebooks/01_prepare.ipynb"])
def test_resolve_notebook_accepts_stem_file_name_and_project_path(name: str) -> None:
    assert resolve_notebook(PATHS, name) == PREPARE.resolve()


@pytest.mark.parametrize(
    "name",
    ["../pyproject", "/etc/passwd", "nope", "notebooks/../README.md", "notebooks/../../etc/passwd"],
)
def test_resolve_notebook_refuses_anything_outside_the_notebooks(name: str) -> None:
    with pytest.raises(BadInputError, match="choose one of: 01_prepare, 02_train"):
        resolve_notebook(PATHS, name)


def test_resolve_notebook_refuses_an_empty_name() -> None:
    with pytest.raises(BadInputError, match="empty"):
        resolve_notebook(PATHS, "")


# --- overrides against the notebook and its stage -----------------------------------


def test_undeclared_parameter_is_refused_with_a_suggestion() -> None:
    with pytest.raises(BadInputError, match=r"no parameter 'n_row' \(did you mean 'n_rows'\?\)"):
        validate_parameters(PATHS, PREPARE, {"n_row": 500})


def test_out_of_range_override_is_refused_by_the_stage_schema() -> None:
    with pytest.raises(ParamsError, match="parameter override for prepare: n_rows = 5 "):
        validate_parameters(PATHS, PREPARE, {"n_rows": 5})


def test_valid_overrides_are_accepted() -> None:
    validate_parameters(PATHS, PREPARE, {"n_rows": 500, "seed": 1, "churn_rate": 0.3})
    validate_parameters(
        PATHS,
        TRAIN,
        {
            "model_type": "logistic_regression",
            "hyperparameters": {"logistic_regression": {"C": 0.5}},
        },
    )


def test_nested_override_is_validated_against_the_stage_schema() -> None:
    with pytest.raises(
        ParamsError, match=re.escape("hyperparameters.random_forest.n_estimators = 0 ")
    ):
        validate_parameters(
            PATHS, TRAIN, {"hyperparameters": {"random_forest": {"n_estimators": 0}}}
        )
