"""Bad input of every kind is refused cleanly: one error line, a non-zero exit, nothing changed.

One trained workspace serves the whole table. Each case may first plant a bad
file (a params file, a data file); the workspace is hashed, file by file and
including `.git`, right after that and again after the command, then the file
is put back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import copy_workspace, mlvs, tree_hashes

PREPARE = "params/prepare.yaml"
TRAIN = "params/train.yaml"
TRAIN_CSV = "data/processed/train.csv"
LONG_NAME = "a" * 300
# The hash cache is a stat cache that any read may refresh; it records no state of the project.
CACHES = (".mlvs/hashes.sqlite",)


@dataclass(frozen=True)
class Case:
    """One bad input: the command, the files planted first, and what the refusal must say."""

    args: tuple[str, ...]
    says: str
    plant: dict[str, bytes] = field(default_factory=dict)
    code: int = 2


def _yaml(text: str) -> bytes:
    return text.encode()


def _without_section(text: str, section: str) -> str:
    lines, out, skipping = text.splitlines(), [], False
    for line in lines:
        if line.startswith(f"{section}:"):
            skipping = True
            continue
        if skipping and (line.startswith(" ") or not line.strip()):
            continue
        skipping = False
        out.append(line)
    return "\n".join(out) + "\n"


def _edit_csv(text: str, edit) -> bytes:
    header, *rows = text.splitlines()
    return ("\n".join(edit(header, rows)) + "\n").encode()


def _set_column(column: str, value: str, rows_hit: int = 3):
    def edit(header: str, rows: list[str]) -> list[str]:
        index = header.split(",").index(column)
        out = []
        for i, row in enumerate(rows):
            cells = row.split(",")
            if i < rows_hit or rows_hit < 0:
                cells[index] = value
            out.append(",".join(cells))
        return [header, *out]

    return edit


# Cases whose planted content depends on the workspace's own files are built lazily.
DERIVED = {
    "train_yaml_no_registry": lambda ws: {
        TRAIN: _without_section((ws / TRAIN).read_text(), "registry").encode()
    },
    "train_yaml_no_business": lambda ws: {
        TRAIN: _without_section((ws / TRAIN).read_text(), "business").encode()
    },
    "data_one_class_only": lambda ws: {
        TRAIN_CSV: _edit_csv((ws / TRAIN_CSV).read_text(), _set_column("churn", "0", -1))
    },
    "data_text_in_tenure": lambda ws: {
        TRAIN_CSV: _edit_csv((ws / TRAIN_CSV).read_text(), _set_column("tenure_months", "ten"))
    },
    "data_nan_and_inf": lambda ws: {
        TRAIN_CSV: _edit_csv(
            _edit_csv((ws / TRAIN_CSV).read_text(), _set_column("monthly_charges", "nan")).decode(),
            _set_column("total_charges", "inf"),
        )
    },
    "data_huge_values": lambda ws: {
        TRAIN_CSV: _edit_csv((ws / TRAIN_CSV).read_text(), _set_column("total_charges", "1e300"))
    },
    "data_duplicated_header": lambda ws: {
        TRAIN_CSV: _edit_csv((ws / TRAIN_CSV).read_text(), lambda h, rows: [h, h, *rows])
    },
}

CASES: dict[str, Case] = {
    # --- command-line arguments -------------------------------------------------
    "unknown_command": Case(("nosuch",), "No such command 'nosuch'"),
    "unknown_option": Case(("verify", "--bogus"), "No such option '--bogus'"),
    "missing_argument": Case(("snapshot", "show"), "Missing argument 'NAME'"),
    "p_missing_value": Case(("run", "01_prepare", "-p", "seed"), "requires 2 arguments"),
    "drill_seed_not_int": Case(
        ("drill", "data_noise", "--seed", "many"), "'many' is not a valid integer"
    ),
    "rollback_only_bogus": Case(("rollback", "base", "--only", "bogus"), "unknown part(s) 'bogus'"),
    "rollback_unknown_snapshot": Case(("rollback", "nosuch"), "no snapshot named 'nosuch'"),
    "snapshot_show_unknown": Case(("snapshot", "show", "nosuch"), "no snapshot named 'nosuch'"),
    "snapshot_diff_unknown": Case(
        ("snapshot", "diff", "nope1", "nope2"), "no snapshot named 'nope1'"
    ),
    "drill_unknown": Case(("drill", "nosuch"), "unknown scenario 'nosuch'"),
    "verify_only_unknown": Case(("verify", "--only", "nosuch"), "unknown check(s) nosuch"),
    "reproduce_unknown": Case(("reproduce", "nosuch"), "no snapshot named 'nosuch'"),
    # --- params files -------------------------------------------------------------
    "prepare_malformed_yaml": Case(
        ("run", "01_prepare"), "is not valid YAML", {PREPARE: b"seed: [\n"}
    ),
    "prepare_wrong_type": Case(
        ("run", "01_prepare"),
        "n_rows = 'many'",
        {
            PREPARE: _yaml(
                "seed: 1\nn_rows: many\nchurn_rate: 0.26\nsignal_strength: 1.0\n"
                "label_noise: 0.03\ntest_size: 0.2\n"
            )
        },
    ),
    "prepare_out_of_range": Case(
        ("run", "01_prepare"),
        "n_rows = 5",
        {
            PREPARE: _yaml(
                "seed: 1\nn_rows: 5\nchurn_rate: 0.26\nsignal_strength: 1.0\n"
                "label_noise: 0.03\ntest_size: 0.2\n"
            )
        },
    ),
    "prepare_unreachable_churn": Case(
        ("run", "01_prepare"),
        "cannot be reached",
        {
            PREPARE: _yaml(
                "seed: 1\nn_rows: 400\nchurn_rate: 0.1\nsignal_strength: 1.0\n"
                "label_noise: 0.2\ntest_size: 0.2\n"
            )
        },
    ),
    "prepare_unknown_key": Case(
        ("run", "01_prepare"),
        "unknown key 'n_row'",
        {
            PREPARE: _yaml(
                "seed: 1\nn_row: 400\nchurn_rate: 0.26\nsignal_strength: 1.0\n"
                "label_noise: 0.03\ntest_size: 0.2\n"
            )
        },
    ),
    "prepare_list_not_mapping": Case(
        ("run", "01_prepare"), "must be a mapping", {PREPARE: b"- seed\n- n_rows\n"}
    ),
    "prepare_binary_garbage": Case(
        ("run", "01_prepare"), "cannot be read", {PREPARE: b"\x00\xff\xfe\x80garbage\x00"}
    ),
    "prepare_python_tag": Case(
        ("run", "01_prepare"),
        "could not determine a constructor",
        {PREPARE: b'!!python/object/apply:os.system ["touch MARKER"]\n'},
    ),
    "prepare_deep_nesting": Case(
        ("run", "01_prepare"), "prepare.yaml", {PREPARE: b"a: " + b"[" * 5000 + b"\n"}
    ),
    "prepare_empty": Case(("run", "01_prepare"), "is missing", {PREPARE: b""}),
    "pipeline_malformed_prepare": Case(("pipeline",), "is not valid YAML", {PREPARE: b"seed: [\n"}),
    "pipeline_missing_registry": Case(("pipeline",), "'registry' is missing"),
    "train_missing_business": Case(("run", "02_train"), "'business' is missing"),
    "train_unknown_model_type": Case(("run", "02_train"), "model_type"),  # planted below
    # --- notebook parameters --------------------------------------------------------
    "param_name_not_identifier": Case(
        ("run", "01_prepare", "-p", "1abc", "3"), "'1abc' is not a Python identifier"
    ),
    "param_name_is_code": Case(
        ("run", "01_prepare", "-p", "__import__('os').system('touch MARKER')#", "1"),
        "is not a Python identifier",
    ),
    "param_name_keyword": Case(
        ("run", "01_prepare", "-p", "class", "1"), "'class' is not a Python identifier"
    ),
    "param_value_is_code": Case(("run", "01_prepare", "-p", "seed", "__import__('os')"), "seed"),
    "param_unknown_name": Case(
        ("run", "01_prepare", "-p", "nosuch", "1"), "has no parameter 'nosuch'"
    ),
    "param_list_with_p": Case(("run", "01_prepare", "-p", "seed", "[1, 2]"), "is a list"),
    "param_dict_with_p": Case(("run", "01_prepare", "-p", "seed", "{a: 1}"), "is a dict"),
    "param_out_of_range": Case(
        ("run", "01_prepare", "-p", "test_size", "0.99"), "test_size = 0.99"
    ),
    "param_bool_for_int": Case(("run", "01_prepare", "-p", "n_rows", "true"), "n_rows = True"),
    "param_file_not_yaml": Case(
        ("run", "01_prepare", "-f", "bad.yaml"), "is not valid YAML", {"bad.yaml": b"seed: [\n"}
    ),
    "param_file_not_mapping": Case(
        ("run", "01_prepare", "-f", "bad.yaml"), "must be a mapping", {"bad.yaml": b"- 1\n- 2\n"}
    ),
    "param_file_bad_key": Case(
        ("run", "01_prepare", "-f", "bad.yaml"),
        "is not a Python identifier",
        {"bad.yaml": b"'x; import os': 1\n"},
    ),
    "param_file_missing": Case(("run", "01_prepare", "-f", "nosuch.yaml"), "does not exist"),
    # --- notebook names and paths ---------------------------------------------------
    "notebook_traversal": Case(("run", "../x"), "not one of this project's notebooks"),
    "notebook_absolute": Case(("run", "/etc/passwd"), "not one of this project's notebooks"),
    "notebook_escapes_folder": Case(
        ("run", "notebooks/../README.md"), "not one of this project's notebooks"
    ),
    "notebook_empty": Case(("run", ""), "the notebook name is empty"),
    "notebook_nonexistent": Case(("run", "nope"), "not one of this project's notebooks"),
    # --- snapshot names -------------------------------------------------------------
    "snapshot_traversal": Case(("snapshot", "create", "../x"), "it contains '..'"),
    "snapshot_absolute": Case(("snapshot", "create", "/abs"), "it contains '/'"),
    "snapshot_slash": Case(("snapshot", "create", "a/b"), "it contains '/'"),
    **{
        f"snapshot_char_{i}": Case(("snapshot", "create", f"a{c}b"), f"it contains {c!r}")
        for i, c in enumerate("~^:?*[\\")
    },
    "snapshot_at_brace": Case(("snapshot", "create", "a@{b"), "it contains '@'"),
    "snapshot_too_long": Case(("snapshot", "create", LONG_NAME), "it has 300 characters"),
    "snapshot_empty": Case(("snapshot", "create", ""), "it is empty"),
    "snapshot_whitespace": Case(("snapshot", "create", " "), "it contains ' '"),
    "snapshot_dash": Case(("snapshot", "create", "--", "-x"), "it starts with '-'"),
    "snapshot_lock_suffix": Case(("snapshot", "create", "x.lock"), "it ends in '.lock'"),
    "snapshot_existing": Case(("snapshot", "create", "base"), "exists already"),
    "rollback_traversal": Case(("rollback", "../main"), "is not allowed"),
    # --- data files: `mlvs verify` reports them (exit 1) and changes nothing -----------
    "data_binary_garbage": Case(
        ("verify", "--only", "schema"),
        "not a readable CSV",
        {TRAIN_CSV: b"\x00\xff\xfe\x80\x01garbage"},
        1,
    ),
    "data_empty_file": Case(
        ("verify", "--only", "schema"), "not a readable CSV", {TRAIN_CSV: b""}, 1
    ),
    "data_one_class_only": Case(("verify", "--only", "schema"), "churn", code=1),
    "data_text_in_tenure": Case(("verify", "--only", "schema"), "tenure_months", code=1),
    "data_nan_and_inf": Case(("verify", "--only", "schema"), "monthly_charges", code=1),
    "data_huge_values": Case(("verify", "--only", "schema"), "total_charges", code=1),
    "data_duplicated_header": Case(("verify", "--only", "schema"), TRAIN_CSV, code=1),
    "data_hash_mismatch": Case(
        ("verify", "--only", "file_hash"), "expected md5", {TRAIN_CSV: b"customer_id\n"}, 1
    ),
}
DERIVED["pipeline_missing_registry"] = DERIVED["train_yaml_no_registry"]
DERIVED["train_missing_business"] = DERIVED["train_yaml_no_business"]
DERIVED["train_unknown_model_type"] = lambda ws: {
    TRAIN: (ws / TRAIN)
    .read_text()
    .replace("model_type: random_forest", "model_type: xgboost_deluxe")
    .encode()
}


@pytest.fixture(scope="module")
def ws(_trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained workspace, with a snapshot `base`, shared by every case of this module."""
    root = tmp_path_factory.mktemp("bad-inputs") / "ws"
    copy_workspace(_trained_template, root)
    mlvs(root, "snapshot", "create", "base", check=True)
    return root


def _plant(ws: Path, files: dict[str, bytes]) -> dict[str, bytes | None]:
    saved = {}
    for rel, content in files.items():
        path = ws / rel
        saved[rel] = path.read_bytes() if path.exists() else None
        path.write_bytes(content)
    return saved


def _put_back(ws: Path, saved: dict[str, bytes | None]) -> None:
    for rel, content in saved.items():
        if content is None:
            (ws / rel).unlink()
        else:
            (ws / rel).write_bytes(content)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("mlvs: error:", "Error:"))]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_cleanly(ws: Path, name: str) -> None:
    case = CASES[name]
    planted = dict(case.plant)
    if name in DERIVED:
        planted.update(DERIVED[name](ws))
    saved = _plant(ws, planted)
    try:
        before = tree_hashes(ws, skip=CACHES)
        result = mlvs(ws, *case.args, timeout=120)
        after = tree_hashes(ws, skip=CACHES)
    finally:
        _put_back(ws, saved)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == case.code, output
    assert not (ws / "MARKER").exists()
    if case.code == 2:
        errors = _error_lines(result.stderr)
        assert len(errors) == 1, result.stderr
        assert case.says.lower() in result.stderr.lower(), result.stderr
    else:  # verify: findings on stdout, naming the file and the problem
        assert TRAIN_CSV in result.stdout, result.stdout
        assert case.says.lower() in result.stdout.lower(), result.stdout
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the command changed {changed}"


def test_the_table_covers_at_least_forty_inputs() -> None:
    assert len(CASES) >= 40
