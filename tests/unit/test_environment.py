"""Project set-up files: dependencies, Makefile, CI, ignores, and notebook hygiene."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

import mlvs
from mlvs.ml.params import stage_keys
from mlvs.paths import STAGE_NOTEBOOKS

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
REQUIRED_TARGETS = ("help", "run", "lint", "test", "bench", "lab", "ui", "clean")


def requirement_set(lines: list[str]) -> set[tuple[str, str, str]]:
    parsed = [Requirement(line) for line in lines]
    return {(canonicalize_name(r.name), str(r.specifier), str(r.marker or "")) for r in parsed}


def conda_environment() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text())


def pip_section(environment: dict) -> list[str]:
    sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml needs exactly one pip: section"
    return sections[0]


# --- dependencies -------------------------------------------------------------------


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_environment_yml_lists_the_same_requirements_as_pyproject() -> None:
    project = pyproject()["project"]
    assert requirement_set(pip_section(conda_environment())) == requirement_set(
        project["dependencies"] + project["optional-dependencies"]["dev"]
    )


@pytest.mark.parametrize("tool", ["ruff", "mypy", "import-linter", "pre-commit"])
def test_the_dev_extra_brings_the_linters_with_a_lower_bound(tool: str) -> None:
    dev = [Requirement(line) for line in pyproject()["project"]["optional-dependencies"]["dev"]]
    (requirement,) = [r for r in dev if canonicalize_name(r.name) == tool]
    assert any(spec.operator == ">=" for spec in requirement.specifier), requirement


# --- version ------------------------------------------------------------------------


def test_the_version_is_written_once_in_pyproject() -> None:
    assert mlvs.__version__ == pyproject()["project"]["version"]
    literal = re.compile(r"""^\s*__version__\s*=\s*["']""", re.M)
    assert not [p for p in (REPO / "mlvs").rglob("*.py") if literal.search(p.read_text())]


def test_environment_yml_needs_python_3_11_or_newer() -> None:
    pythons = [
        d
        for d in conda_environment()["dependencies"]
        if isinstance(d, str) and re.match(r"python\b", d)
    ]
    assert len(pythons) == 1, pythons
    allowed = SpecifierSet(pythons[0].removeprefix("python").strip())
    assert "3.11" in allowed and "3.12" in allowed and "3.10" not in allowed


def test_pyproject_needs_python_3_11_or_newer() -> None:
    allowed = SpecifierSet(
        tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    )
    assert "3.11" in allowed and "3.10" not in allowed


# --- Makefile -----------------------------------------------------------------------


@pytest.fixture
def makefile_dir(tmp_path: Path) -> Path:
    """The Makefile alone in a scratch directory, so make cannot touch the checkout."""
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    return tmp_path


def make(directory: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "MAKEFLAGS", "MFLAGS")}
    result = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def test_every_required_make_target_has_a_description() -> None:
    described = dict(
        re.findall(r"^([A-Za-z_-]+):[^\n]*?## (\S[^\n]*)$", (REPO / "Makefile").read_text(), re.M)
    )
    assert set(REQUIRED_TARGETS) <= set(described), sorted(described)


def test_plain_make_prints_the_help_listing_every_target(makefile_dir: Path) -> None:
    listing = make(makefile_dir)
    for target in REQUIRED_TARGETS:
        assert re.search(rf"^\s*make {target}\s+\S", listing, re.M), listing


@pytest.mark.parametrize(
    ("target", "bind"), [("lab", "--ServerApp.ip=127.0.0.1"), ("ui", "--host 127.0.0.1")]
)
def test_lab_and_ui_bind_to_localhost_by_default(
    makefile_dir: Path, target: str, bind: str
) -> None:
    commands = make(makefile_dir, "-n", "-o", ".venv/.installed", target)
    assert bind in commands, commands
    assert "0.0.0.0" not in commands


def test_make_test_lints_first(makefile_dir: Path) -> None:
    commands = make(makefile_dir, "-n", "-o", ".venv/.installed", "test").splitlines()
    checks = ["ruff check", "ruff format --check", "mypy", "lint-imports"]
    positions = [next(i for i, c in enumerate(commands) if check in c) for check in checks]
    tests = next(i for i, c in enumerate(commands) if "pytest" in c)
    assert max(positions) < tests, commands


def test_pre_commit_runs_the_linters_from_the_project_environment() -> None:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff", "ruff-format", "mypy", "import-linter"} <= set(hooks)
    assert all(repo["repo"] == "local" for repo in config["repos"])
    for hook in hooks.values():
        assert hook["language"] == "system" and hook["entry"].startswith(".venv/bin/"), hook


def test_ci_runs_make_test() -> None:
    script = REPO / ".ci" / "run"
    commands = [
        line.strip()
        for line in script.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "make test" in commands
    assert os.access(script, os.X_OK)


# --- .gitignore ---------------------------------------------------------------------


@pytest.fixture
def ignore_repo(tmp_path: Path) -> Path:
    """A scratch git repository holding only the project's .gitignore (no global excludes)."""
    shutil.copy(REPO / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def ignored(repo: Path, path: str) -> bool:
    result = subprocess.run(
        ["git", "-c", "core.excludesFile=/dev/null", "check-ignore", "-q", "--no-index", path],
        cwd=repo,
        capture_output=True,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


@pytest.mark.parametrize(
    "path", [".venv/bin/python", "mlflow.db", "mlartifacts/1/model.pkl", ".mlvs/logs/mlvs.log"]
)
def test_gitignore_keeps_runtime_state_out_of_git(ignore_repo: Path, path: str) -> None:
    assert ignored(ignore_repo, path)


@pytest.mark.parametrize(
    "path",
    [
        "params/prepare.yaml",
        "notebooks/01_prepare.ipynb",
        "mlvs/ml/params.py",
        "dvc.yaml",
        "dvc.lock",
    ],
)
def test_gitignore_keeps_project_files_in_git(ignore_repo: Path, path: str) -> None:
    assert not ignored(ignore_repo, path)


# --- notebooks ----------------------------------------------------------------------


def code_cells(notebook: Path) -> list[dict]:
    return [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]


def source(cell: dict) -> str:
    text = "".join(cell["source"])
    # IPython magics and shell escapes are not Python; they define nothing either.
    return "\n".join(
        "pass" if line.lstrip().startswith(("%", "!")) else line for line in text.splitlines()
    )


def parameters_cells(notebook: Path) -> list[dict]:
    return [
        c for c in code_cells(notebook) if "parameters" in c.get("metadata", {}).get("tags", [])
    ]


def test_there_are_notebooks() -> None:
    assert {n.stem for n in NOTEBOOKS} >= set(STAGE_NOTEBOOKS.values())


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_one_parameters_cell_and_it_comes_first(notebook: Path) -> None:
    cells = parameters_cells(notebook)
    assert len(cells) == 1
    assert cells[0] == code_cells(notebook)[0]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_only_assigns_literals(notebook: Path) -> None:
    for statement in ast.parse(source(parameters_cells(notebook)[0])).body:
        assert isinstance(statement, ast.Assign), ast.unparse(statement)
        assert len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name), (
            ast.unparse(statement)
        )
        ast.literal_eval(statement.value)  # raises ValueError on anything but a literal


@pytest.mark.parametrize("stage", sorted(STAGE_NOTEBOOKS), ids=lambda s: STAGE_NOTEBOOKS[s])
def test_parameters_cell_declares_exactly_its_stage_keys(stage: str) -> None:
    notebook = REPO / "notebooks" / f"{STAGE_NOTEBOOKS[stage]}.ipynb"
    tree = ast.parse(source(parameters_cells(notebook)[0]))
    declared = sorted(s.targets[0].id for s in tree.body if isinstance(s, ast.Assign))
    assert declared == stage_keys(stage)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_defines_no_function_or_class(notebook: Path) -> None:
    for cell in code_cells(notebook):
        for node in ast.walk(ast.parse(source(cell))):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)), (
                ast.unparse(node)[:200]
            )
