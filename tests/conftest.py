"""Shared fixtures: every test works in its own temporary copy of the project.

`workspace` is a fresh clone-like copy (git-committed, DVC-initialised, tiny
parameters so notebooks run in seconds). `trained_workspace` is a copy of one
that has run the pipeline once per session, so tests that need a trained state
do not each pay for training.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@localhost",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@localhost",
}
# Small enough for a notebook to run in seconds, large enough for stratified 3-fold CV.
TINY_PREPARE = {"n_rows": 400}
TINY_TRAIN = {
    "cv_folds": 3,
    "golden_sample_size": 20,
    "compare_model_types": False,
    "hyperparameters": {
        "random_forest": {"n_estimators": 15, "max_depth": 5, "min_samples_leaf": 5}
    },
}


def clean_env(root: Path) -> dict[str, str]:
    """An environment for mlvs commands in a test workspace: its own stores, no outside config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLVS_"))}
    env.update(GIT_IDENTITY)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    return env


def tracked_files() -> list[str]:
    """The project's files as a fresh clone would have them."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    return [p for p in out.decode().split("\0") if p and (REPO / p).is_file()]


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_workspace(dest: Path, tiny: bool = True) -> Path:
    """Copy the project into `dest`, shrink its parameters, and commit it to a new git repo."""
    for rel in tracked_files():
        if rel.startswith(("tests/", "dvc.lock", "reports/metrics.json")):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    if tiny:
        for stage, extra in (("prepare", TINY_PREPARE), ("train", TINY_TRAIN)):
            path = dest / "params" / f"{stage}.yaml"
            data = _merge(yaml.safe_load(path.read_text()), extra)
            path.write_text(yaml.safe_dump(data, sort_keys=False))
    env = clean_env(dest)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "initial"], cwd=dest, check=True, env=env)
    return dest


def mlvs(
    root: Path, *args: str, check: bool = False, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the mlvs CLI in `root` as a user would."""
    return subprocess.run(
        [str(BIN / "mlvs"), *args],
        cwd=root,
        env=clean_env(root),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def tree_hashes(root: Path, skip: tuple[str, ...] = (".git/",)) -> dict[str, str]:
    """SHA-256 of every file under `root`, computed by the test itself."""
    hashes = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        # Bytecode is written whenever a process first imports the workspace's own modules.
        if "__pycache__" in rel.split("/"):
            continue
        if path.is_file() and not path.is_symlink() and not any(rel.startswith(s) for s in skip):
            hashes[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def git(root: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run git in a test workspace with a test identity (or `env`), feeding it `input`."""
    return subprocess.run(
        ["git", *args],
        cwd=root,
        env=clean_env(root) if env is None else env,
        input=input,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def make_story_workspace(dest: Path, trained: Path | None = None) -> Path:
    """A tiny workspace with history: trained, snapshot `first`, retrained with more trees, snapshot `second`.

    The state the incident and rollback notebooks are stored against (`make golden`)
    and re-executed against (nbval). `trained`: a copy of the trained template (the
    same first steps, already run) instead of training here.
    """
    root = copy_workspace(trained, dest) if trained is not None else _build_trained_template(dest)
    mlvs(root, "snapshot", "create", "first", "-m", "baseline", check=True)
    params = root / "params" / "train.yaml"
    data = yaml.safe_load(params.read_text())
    data["hyperparameters"]["random_forest"]["n_estimators"] = 30
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    mlvs(root, "pipeline", check=True)
    mlvs(root, "snapshot", "create", "second", "-m", "more trees", check=True)
    return root


def make_monitor_workspace(dest: Path, trained: Path | None = None) -> Path:
    """A tiny trained workspace with batch 1 of the `price_rise` scenario: what `05_monitor` judges.

    The state `05_monitor` is stored against (`make golden`) and re-executed against (nbval).
    """
    root = copy_workspace(trained, dest) if trained is not None else _build_trained_template(dest)
    mlvs(root, "batches", "generate", "--scenario", "price_rise", check=True)
    return root


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A fresh, committed copy of the project with tiny parameters."""
    return make_workspace(tmp_path / "ws")


def pipeline_console(template: Path) -> Path:
    """Where the trained template keeps what its first `mlvs pipeline` printed (beside it, not in it)."""
    return template.parent / "pipeline-console.txt"


def _build_trained_template(root: Path) -> Path:
    make_workspace(root)
    result = mlvs(root, "pipeline")
    assert result.returncode == 0, result.stderr[-3000:]
    pipeline_console(root).write_text(result.stdout + result.stderr, encoding="utf-8")
    env = clean_env(root)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "trained"], cwd=root, check=True, env=env)
    return root


@pytest.fixture(scope="session")
def _trained_template(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A trained workspace that tests copy and never change.

    Under xdist it is built once per test run and shared by the workers (the first to
    need it builds it under a file lock): a training costs about 50 s of a core.
    """
    if worker_id == "master":
        return _build_trained_template(tmp_path_factory.mktemp("template") / "ws")
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # this run's directory, common to its workers
    root, built = shared / "trained-template" / "ws", shared / "trained-template" / "built"
    with FileLock(str(shared / "trained-template.lock")):
        if not built.exists():
            shutil.rmtree(root.parent, ignore_errors=True)
            _build_trained_template(root)
            built.touch()
    return root


@pytest.fixture
def trained_workspace(_trained_template: Path, tmp_path: Path) -> Path:
    """A workspace whose pipeline has run once and whose outputs are committed (dvc.lock)."""
    return copy_workspace(_trained_template, tmp_path / "ws")


def copy_workspace(source: Path, dest: Path) -> Path:
    """A private copy of a workspace, its MLflow store pointed at the copy's own artifacts."""
    shutil.copytree(source, dest, symlinks=True)
    relocate_mlflow_store(source, dest)
    return dest


def register_inverted_version(root: Path) -> str:
    """Register a clearly worse version: a model fitted on the inverted labels of the training set.

    In process: the caller points MLflow at `root`'s store (MLFLOW_TRACKING_URI, MLVS_ROOT).
    """
    from mlvs.ml.data import features_and_target, read_customers
    from mlvs.ml.features import build_model
    from mlvs.ml.modeling import LogisticRegressionHyper, build_classifier
    from mlvs.paths import ProjectPaths
    from mlvs.stages.versions import register_fitted_model

    paths = ProjectPaths(root)
    X, y = features_and_target(read_customers(paths.train_data))
    inverted = build_model(build_classifier("logistic_regression", LogisticRegressionHyper(), 0))
    inverted.fit(X, 1 - y)
    return register_fitted_model(paths, inverted, "inverted", {"decision_threshold": "0.5"})


def make_newest_version_champion(root: Path) -> None:
    """Put `champion` on the newest registered version, whether or not it won its promotion."""
    subprocess.run(
        [
            str(BIN / "python"),
            "-c",
            "import mlflow, sys; c = mlflow.MlflowClient(sys.argv[1]); "
            "v = max(int(m.version) for m in c.search_model_versions(\"name='churn-classifier'\")); "
            "c.set_registered_model_alias('churn-classifier', 'champion', str(v))",
            f"sqlite:///{root / 'mlflow.db'}",
        ],
        check=True,
        env=clean_env(root),
        capture_output=True,
    )


def relocate_mlflow_store(old_root: Path, new_root: Path) -> None:
    """Point a copied MLflow store's absolute artifact locations at the copy's own artifacts."""
    import sqlite3

    old, new = old_root.as_uri(), new_root.as_uri()
    with sqlite3.connect(new_root / "mlflow.db") as db:
        db.execute(
            "UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)",
            (old, new),
        )
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "logged_models" in tables:
            db.execute(
                "UPDATE logged_models SET artifact_location = replace(artifact_location, ?, ?)",
                (old, new),
            )
        if "model_versions" in tables:
            db.execute(
                "UPDATE model_versions SET storage_location = replace(storage_location, ?, ?)",
                (old, new),
            )
            db.execute("UPDATE model_versions SET source = replace(source, ?, ?)", (old, new))


# Hypothesis keeps its example database in memory: tests leave nothing in the checkout.
from hypothesis import settings as _hypothesis_settings  # noqa: E402
from hypothesis.database import InMemoryExampleDatabase  # noqa: E402

_hypothesis_settings.register_profile("mlvs", database=InMemoryExampleDatabase(), deadline=None)
_hypothesis_settings.load_profile("mlvs")


# The files that take longest, heaviest first (seconds of one worker, measured on 2 cores).
# `make test` runs them first (with `--no-loadscope-reorder`): xdist hands out whole files,
# and a heavy file handed out last keeps one worker busy while the other idles.
_HEAVY_FILES = (
    "tests/e2e/test_crash_random.py",  # ~320 s: 111 kills
    "tests/reliability/test_power_cut.py",  # ~260 s under load: 200 crash states, five commands traced
    "tests/team/test_tracking_server.py",  # ~250 s: PostgreSQL, mlflow server, two clones
    "tests/e2e/test_drills.py",  # every scenario of the catalog
    "tests/notebooks/test_nbval.py",  # ~135 s: four notebooks
    "tests/e2e/test_rollback.py",
    "tests/e2e/test_snapshots.py",
    "tests/team/test_browser.py",
    "tests/e2e/test_reproduce.py",
    "tests/e2e/test_pipeline.py",
    "tests/reliability/test_disk_faults.py",
    "tests/reliability/test_bad_inputs.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Heaviest files first, every other file after them in collection order."""
    rank = {name: position for position, name in enumerate(_HEAVY_FILES)}
    root = Path(str(config.rootpath))

    def weight(item: pytest.Item) -> int:
        relative = Path(str(item.path)).relative_to(root).as_posix()
        return rank.get(relative, len(rank))

    items.sort(key=weight)  # stable: the order inside a file is kept
