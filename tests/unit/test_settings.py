"""Every `MLVS_*` environment variable is declared once in `mlvs.settings`, and read only there."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mlvs import settings
from mlvs.errors import BadInputError
from mlvs.settings import SETTINGS, Setting

PACKAGE = Path(__file__).resolve().parents[2] / "mlvs"
VARIABLE = re.compile(r"MLVS_[A-Z0-9_]+")


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "settings.py")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (they may name a variable freely)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def test_no_module_but_settings_reads_an_mlvs_variable_from_the_environment() -> None:
    readers = []
    for path in modules():
        source = path.read_text(encoding="utf-8")
        for number, line in enumerate(source.splitlines(), 1):
            if re.search(r"\b(environ|getenv)\b", line) and "MLVS_" in line:
                readers.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not readers, "read these through mlvs.settings:\n" + "\n".join(readers)


def test_no_module_but_settings_spells_out_an_mlvs_variable_in_code() -> None:
    # A name in code (not in a docstring or comment) is a read or write that bypasses its setting;
    # code that sets a variable for a child process uses the setting's `.name`.
    spelled = []
    for path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and VARIABLE.search(node.value)
                and re.fullmatch(r"[A-Z0-9_]+", node.value)
            ):
                spelled.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}")
    assert not spelled, "use the setting of mlvs.settings instead:\n" + "\n".join(spelled)


def test_every_setting_is_listed_once_with_a_name_and_a_one_line_doc() -> None:
    declared = [value for value in vars(settings).values() if isinstance(value, Setting)]
    assert sorted(s.name for s in declared) == sorted(s.name for s in SETTINGS)
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)
    for setting in SETTINGS:
        assert VARIABLE.fullmatch(setting.name), setting.name
        assert setting.doc.strip() and "\n" not in setting.doc, setting.name
        assert setting.doc.rstrip().endswith("."), setting.name


def test_every_variable_the_package_mentions_is_declared() -> None:
    declared = {s.name for s in SETTINGS}
    mentioned = {
        name for path in modules() for name in VARIABLE.findall(path.read_text(encoding="utf-8"))
    }
    assert mentioned <= declared, sorted(mentioned - declared)


def test_an_unset_or_blank_variable_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLVS_LOCK_TIMEOUT", raising=False)
    assert settings.LOCK_TIMEOUT.get() == settings.DEFAULT_LOCK_TIMEOUT
    monkeypatch.setenv("MLVS_LOCK_TIMEOUT", "  ")
    assert settings.LOCK_TIMEOUT.get() == settings.DEFAULT_LOCK_TIMEOUT
    monkeypatch.setenv("MLVS_LOCK_TIMEOUT", "0.5")
    assert settings.LOCK_TIMEOUT.get() == 0.5


@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [
        (
            settings.LOCK_TIMEOUT,
            "soon",
            "is not a number of seconds; set it to e.g. 30 or unset it",
        ),
        (settings.SPARE_BYTES, "lots", "is not a number of bytes; set it to e.g. 0"),
        (settings.SPARE_BYTES, "-1", "is not a number of bytes"),
        (settings.SPARE_BYTES, "1.5", "is not a number of bytes"),
        (settings.PAUSE_SECONDS, "a while", "is not a number of seconds"),
    ],
)
def test_a_bad_value_is_refused_in_one_sentence_naming_variable_and_value(
    monkeypatch: pytest.MonkeyPatch, setting: Setting[object], value: str, words: str
) -> None:
    monkeypatch.setenv(setting.name, value)

    with pytest.raises(BadInputError) as refused:
        setting.get()

    message = str(refused.value)
    assert message.startswith(f"{setting.name}={value!r} ") and words in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("value", "on"), [("0", False), ("off", False), (" False ", False), ("1", True), ("yes", True)]
)
def test_fsync_is_on_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch, value: str, on: bool
) -> None:
    monkeypatch.setenv("MLVS_FSYNC", value)
    assert settings.FSYNC.get() is on


def test_the_root_is_resolved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLVS_ROOT", "project")
    assert settings.ROOT.get() == tmp_path.resolve() / "project"
