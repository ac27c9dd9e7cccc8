"""Project set-up files: dependencies, Makefile, CI, ignores, and notebook hygiene."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shlex
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


def uv_lock() -> dict:
    return tomllib.loads((REPO / "uv.lock").read_text())


def declared_requirements() -> list[Requirement]:
    """pyproject's runtime dependencies, then its `dev` extra (marked as uv records an extra)."""
    project = pyproject()["project"]
    dev = project["optional-dependencies"]["dev"]
    return [Requirement(r) for r in project["dependencies"]] + [
        Requirement(f'{r}; extra == "dev"') for r in dev
    ]


def locked_project(lock: dict) -> dict:
    (package,) = [p for p in lock["package"] if p["source"] == {"editable": "."}]
    return package


def test_uv_lock_records_the_requirements_pyproject_declares() -> None:
    recorded = [
        Requirement(
            r["name"] + r.get("specifier", "") + (f"; {r['marker']}" if "marker" in r else "")
        )
        for r in locked_project(uv_lock())["metadata"]["requires-dist"]
    ]
    assert requirement_set([str(r) for r in recorded]) == requirement_set(
        [str(r) for r in declared_requirements()]
    )


def test_uv_lock_pins_every_dependency_at_a_version_its_specifier_allows() -> None:
    lock = uv_lock()
    assert locked_project(lock)["name"] == pyproject()["project"]["name"]
    versions: dict[str, list[str]] = {}
    for package in lock["package"]:
        versions.setdefault(canonicalize_name(package["name"]), []).append(package["version"])
    for requirement in declared_requirements():
        pinned = versions.get(canonicalize_name(requirement.name), [])
        assert pinned, f"{requirement.name} is not in uv.lock: run `make lock`"
        # One version per Python range at most (numpy, for one): each must satisfy pyproject.
        for version in pinned:
            assert requirement.specifier.contains(version, prereleases=True), (requirement, version)


def test_every_locked_package_comes_from_pypi_with_hashes() -> None:
    for package in uv_lock()["package"]:
        if package["source"] == {"editable": "."}:
            continue
        assert package["source"] == {"registry": "https://pypi.org/simple"}, package["name"]
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        assert files and all(f["hash"].startswith("sha256:") for f in files), package["name"]


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
    (tmp_path / "uv.lock").write_text("")
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


def test_setup_installs_exactly_the_lock_with_uv_from_pypi_outside_the_synced_env(
    makefile_dir: Path,
) -> None:
    commands = make(makefile_dir, "-n", "-B", ".venv/.installed").splitlines()
    (bootstrap,) = [c for c in commands if "pip install" in c]
    assert re.search(r"\buv==\d+\.\d+\.\d+\b", bootstrap), bootstrap
    # `uv sync` removes what the lock does not name: uv must not live in .venv's own packages.
    assert not bootstrap.startswith(".venv/bin/"), bootstrap
    (sync,) = [c for c in commands if " sync " in c]
    assert "--frozen" in sync and "--extra dev" in sync, sync
    assert not any("pip install" in c and "-e" in c.split() for c in commands), commands


def test_make_lock_runs_uv_lock(makefile_dir: Path) -> None:
    commands = make(makefile_dir, "-n", "lock").splitlines()
    assert any(re.search(r"/uv lock$", c) for c in commands), commands


@pytest.mark.skipif(
    not (REPO / ".venv" / ".uv" / "bin" / "uv").is_file(),
    reason="the environment was not made by make",
)
def test_a_lock_out_of_date_with_pyproject_stops_make_in_one_line(tmp_path: Path) -> None:
    for name in ("Makefile", "uv.lock", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    # The project's own uv tool, so that nothing is fetched.
    (tmp_path / ".venv" / ".uv").symlink_to(REPO / ".venv" / ".uv")
    stale = (tmp_path / "pyproject.toml").read_text().replace('"click>=8.1"', '"click>=8.1.3"')
    (tmp_path / "pyproject.toml").write_text(stale)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    result = subprocess.run(
        ["make", "--no-print-directory", "-s", "setup"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if not line.startswith("make:")]
    assert len(errors) == 1 and "make lock" in errors[0], result.stderr
    assert not (tmp_path / ".venv" / ".installed").exists()


def test_make_clean_removes_the_venv(makefile_dir: Path) -> None:
    assert "rm -rf .venv" in make(makefile_dir, "-n", "clean").splitlines()


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


WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def workflow_jobs() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]


def run_lines(job: dict) -> list[str]:
    """Each command line of the job's `run:` steps."""
    return [
        line.strip()
        for step in job["steps"]
        for line in step.get("run", "").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_workflow_runs_what_ci_run_runs() -> None:
    script = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))
    ]
    commands = [line for job in workflow_jobs().values() for line in run_lines(job)]
    assert script and set(script) <= set(commands), (script, commands)
    # What `make test` installs on the machine is a step of its own, as in `make test`.
    assert ".ci/system-deps" in commands
    assert ".ci/system-deps" in make_recipe("test")


def make_recipe(target: str) -> list[str]:
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_the_workflow_tests_python_3_11_and_3_12() -> None:
    (job,) = [j for j in workflow_jobs().values() if "make test" in run_lines(j)]
    assert job["runs-on"] == "ubuntu-latest"
    assert {"3.11", "3.12"} <= {str(v) for v in job["strategy"]["matrix"]["python-version"]}
    (setup,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
    assert setup["with"]["python-version"] == "${{ matrix.python-version }}"


def test_every_workflow_job_keeps_the_uv_cache_keyed_on_the_lock() -> None:
    for name, job in workflow_jobs().items():
        caches = [s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@")]
        assert caches, name
        assert "~/.cache/uv" in caches[0]["with"]["path"], name
        assert "hashFiles('uv.lock')" in caches[0]["with"]["key"], name


def notebook_parameters(notebook: Path) -> set[str]:
    tree = ast.parse(source(parameters_cells(notebook)[0]))
    return {s.targets[0].id for s in tree.body if isinstance(s, ast.Assign)}


def test_the_notebook_job_injects_parameters_the_notebooks_declare() -> None:
    batch = [
        (job, line)
        for job in workflow_jobs().values()
        for line in run_lines(job)
        if ".ipynb" in line and " -p " in f" {line} "
    ]
    assert batch, "no notebook runs with injected parameters"
    for _, line in batch:
        words = shlex.split(line)
        (notebook,) = [w for w in words if w.endswith(".ipynb")]
        names = [words[i + 1] for i, w in enumerate(words) if w in ("-p", "--parameters")]
        assert names and set(names) <= notebook_parameters(REPO / notebook), (line, names)
    for job in {id(job): job for job, _ in batch}.values():
        uploads = [
            s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")
        ]
        assert uploads and "reports/*.ipynb" in uploads[0]["with"]["path"]


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
    "path",
    [
        ".venv/bin/python",
        ".venv/.uv/bin/uv",
        "mlflow.db",
        "mlartifacts/1/model.pkl",
        ".mlvs/logs/mlvs.log",
    ],
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


# --- the committed pipeline state ----------------------------------------------------


def committed_lock_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]


def stage_params(stage: str) -> list[tuple[str, list[str]]]:
    """The params files `dvc.yaml` lists for `stage`, each with the keys it names (none: the whole file)."""
    entries = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage].get("params") or []
    listed = []
    for entry in entries:
        for name, keys in entry.items() if isinstance(entry, dict) else [(entry, None)]:
            listed.append((name, list(keys or [])))
    return listed


@pytest.mark.parametrize("stage", sorted(STAGE_NOTEBOOKS))
def test_the_committed_dvc_lock_describes_the_committed_code_and_params(stage: str) -> None:
    """A fresh clone's `make run` must find nothing changed: otherwise it rewrites dvc.lock,
    retrains for nothing, and the user's clean checkout is dirty after the first command."""
    entry = committed_lock_stages()[stage]
    stale = []
    for dep in entry["deps"]:
        path = REPO / dep["path"]
        if path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() != dep["md5"]:
            stale.append(dep["path"])
    for params_file, recorded in (entry.get("params") or {}).items():
        current = yaml.safe_load((REPO / params_file).read_text())
        # A stage that names the keys it reads (`params/prepare.yaml: [signal_strength]`) records those only.
        keyed = [name for name, deps in stage_params(stage) if name == params_file and deps]
        if keyed:
            current = {key: current.get(key) for key in recorded}
        if current != recorded:
            stale.append(params_file)
    assert not stale, f"dvc.lock is stale for {stale}: run `make run` and commit dvc.lock"


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
