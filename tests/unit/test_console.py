"""The console: numbered menus in a terminal, colour only where it is wanted, never in --json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from conftest import REPO

from mlvs.cli import menu, render
from mlvs.cli.app import cli
from mlvs.cli.commands import drill, rollback
from mlvs.ops.drill.incidents import load_catalog
from mlvs.ops.reproduce import Reproduction

ESCAPE = "\x1b["


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The least a project needs for these commands: dvc.yaml and the incident catalog."""
    (tmp_path / "params").mkdir()
    shutil.copy(REPO / "params" / "incidents.yaml", tmp_path / "params" / "incidents.yaml")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    return tmp_path


def invoke(root: Path, args: list[str], answers: str = "", **env: str) -> Result:
    # No colour setting from the machine running the tests: each test says what it wants.
    settings = {"MLVS_ROOT": str(root), "MLVS_COLOR": None, "NO_COLOR": None} | env
    return CliRunner().invoke(cli, args, input=answers, env=settings)


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if a person typed at a terminal (CliRunner's stdin is not one)."""
    monkeypatch.setattr(menu, "stdin_is_terminal", lambda: True)


@pytest.fixture
def drilled(monkeypatch: pytest.MonkeyPatch, root: Path) -> list[list[str]]:
    """The scenarios a drill was asked for, instead of running them."""
    asked: list[list[str]] = []

    def fake_drill_many(paths: Any, names: list[str], seed: int) -> tuple[list[Any], Path]:
        asked.append(names)
        return [], root / "index.html"

    monkeypatch.setattr(drill, "drill_many", fake_drill_many)
    return asked


def test_drill_menu_groups_the_catalog_by_family_with_each_description(
    root: Path, terminal: None, drilled: list[list[str]]
) -> None:
    result = invoke(root, ["drill"], "1\n", COLUMNS="200")  # wide enough for every line
    catalog = load_catalog(root)
    menu_text = result.stderr
    headings = [
        menu_text.index(f"\n{family}:\n") for family in ("data", "model", "pipeline", "store")
    ]
    assert headings == sorted(headings)
    first = next(iter(catalog.values()))
    assert f"   1  {first.name}" in menu_text and first.description in menu_text
    assert f"{len(catalog) + 1}  all" in menu_text
    assert drilled == [[first.name]]
    assert ESCAPE not in result.stderr  # CliRunner's streams are no terminal


def test_drill_menu_takes_a_name_too(root: Path, terminal: None, drilled: list[list[str]]) -> None:
    invoke(root, ["drill"], "model_deleted\n")
    assert drilled == [["model_deleted"]]


def test_a_bad_choice_is_named_in_one_line_and_asked_again(
    root: Path, terminal: None, drilled: list[list[str]]
) -> None:
    catalog = load_catalog(root)
    result = invoke(root, ["drill"], "99\nmodel_delted\nstore_mlflow_db_deleted\n")
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: 99 is not in the list; type a number from 1 to {len(catalog) + 1} "
        "or a scenario name from the list",
        "Error: there is no scenario 'model_delted' (did you mean model_deleted?); type a number "
        f"from 1 to {len(catalog) + 1} or a scenario name from the list",
    ]
    assert drilled == [["store_mlflow_db_deleted"]]


def test_without_a_terminal_drill_and_rollback_refuse_to_ask(
    root: Path, drilled: list[list[str]]
) -> None:
    for args in (["drill"], ["rollback"]):
        result = invoke(root, args, "1\n")
        assert result.exit_code == 2, result.stderr
        assert "Error:" not in result.stderr and "(number or name)" not in result.stderr
    assert drilled == []


def manifest(name: str, created: str, automatic: bool, message: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, created_at=created, automatic=automatic, message=message)


@pytest.fixture
def rolled_back(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The snapshot a dry-run rollback was asked for, among three recorded ones."""
    chosen: list[str] = []
    snapshots = [
        manifest("baseline", "2026-01-01T10:00:00+00:00", False, "first model"),
        manifest("auto-before-x", "2026-01-02T10:00:00+00:00", True, ""),
        manifest("more-trees", "2026-01-03T10:00:00+00:00", False, "more trees\nand more"),
    ]
    monkeypatch.setattr(rollback, "list_snapshots", lambda paths: snapshots)

    def fake_rollback(paths: Any, name: str, parts: Any, dry_run: bool) -> SimpleNamespace:
        chosen.append(name)
        return SimpleNamespace(to_dict=lambda: {"snapshot": name})

    monkeypatch.setattr(rollback, "rollback", fake_rollback)
    monkeypatch.setattr(rollback, "report_text", lambda report: "report")
    return chosen


def test_rollback_menu_lists_snapshots_newest_first_with_time_kind_and_message(
    root: Path, terminal: None, rolled_back: list[str]
) -> None:
    result = invoke(root, ["rollback", "--dry-run"], "2\n")
    lines = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert [line.split()[:2] for line in lines] == [
        ["1", "more-trees"],
        ["2", "auto-before-x"],
        ["3", "baseline"],
    ]
    assert "2026-01-03 10:00:00  manual  more trees" in lines[0]
    assert "auto" in lines[1].split() and "first model" in lines[2]
    assert rolled_back == ["auto-before-x"]
    assert result.exit_code == 0, result.stderr


def test_rollback_menu_by_name_or_the_newest_by_default(
    root: Path, terminal: None, rolled_back: list[str]
) -> None:
    invoke(root, ["rollback", "--dry-run"], "baseline\n")
    result = invoke(root, ["rollback", "--dry-run", "--json"], "\n")
    assert rolled_back == ["baseline", "more-trees"]
    assert json.loads(result.stdout) == {"snapshot": "more-trees"}  # the menu stayed on stderr


def test_colour_is_off_unless_asked_for_and_never_in_json(root: Path) -> None:
    plain = invoke(root, ["rollback"])
    forced = invoke(root, ["rollback"], MLVS_COLOR="always")
    assert ESCAPE not in plain.stderr
    assert forced.stderr.startswith(f"{ESCAPE}") and "mlvs: error:" in forced.stderr
    listing = invoke(root, ["incidents", "--json"], MLVS_COLOR="always")
    assert ESCAPE not in listing.stdout and json.loads(listing.stdout)


def test_no_color_and_never_turn_colour_off(root: Path) -> None:
    assert ESCAPE not in invoke(root, ["rollback"], MLVS_COLOR="never").stderr
    assert ESCAPE not in invoke(root, ["rollback"], NO_COLOR="1").stderr
    # An explicit request wins over the general wish.
    assert ESCAPE in invoke(root, ["rollback"], NO_COLOR="1", MLVS_COLOR="always").stderr


def test_a_bad_colour_setting_is_refused_in_one_line(root: Path) -> None:
    result = invoke(root, ["incidents"], MLVS_COLOR="rainbow")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "mlvs: error: MLVS_COLOR='rainbow' is not auto, always or never; set it to auto, always "
        "or never, or unset it"
    ]


def test_a_name_made_of_digits_is_chosen_by_its_name_before_any_number() -> None:
    choose = menu.chooser(["2", "baseline"], "snapshot")
    assert choose("2") == "2"
    assert choose("1") == "2"
    assert choose(" baseline ") == "baseline"
    with pytest.raises(click.BadParameter, match="3 is not in the list"):
        choose("3")


def test_a_reproduction_names_the_environment_first_and_says_it_may_explain_the_differences() -> (
    None
):
    changes = {"packages.numpy": ("1.0.0", "2.0.0"), "uv_lock_sha256": ("a" * 64, None)}
    failed = render.reproduction_text(
        Reproduction(
            "s", False, ["metric test_f1: recorded 0.5, reproduced 0.6"], environment=changes
        )
    )
    lines = click.unstyle(failed).splitlines()
    assert (
        lines[0] == "the environment differs from the one snapshot 's' recorded (recorded -> now):"
    )
    assert lines[1].split() == ["numpy", "1.0.0", "->", "2.0.0"]
    assert lines[2].split()[:3] == ["uv.lock", "sha256", "a" * 16 + "…"]
    assert lines[2].endswith("-> (no uv.lock)")
    assert lines[3].startswith("snapshot 's' does not reproduce")
    assert "may come from the environment" in lines[-1]
    same = click.unstyle(render.reproduction_text(Reproduction("s", True)))
    assert "environment" not in same and "reproduces" in same
