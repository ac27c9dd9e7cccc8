"""No secret leaks, nothing listens beyond loopback.

A fake secret planted in the environment of `mlvs run` and `mlvs snapshot
create` must appear in no file they leave behind: executed notebooks and
their HTML, the MLflow store and artifacts, snapshot manifests and logs.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path

from conftest import BIN, REPO, clean_env


def _run(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mlvs"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and needle in p.read_bytes()
    )


def test_a_secret_in_the_environment_reaches_no_report_store_manifest_or_log(
    trained_workspace: Path,
) -> None:
    root = trained_workspace
    secret = f"mlvs-fake-secret-{secrets.token_hex(12)}"
    env = clean_env(root)
    env.update(
        {
            "AWS_SECRET_ACCESS_KEY": secret,
            "MLFLOW_TRACKING_PASSWORD": secret,
            "AWS_ACCESS_KEY_ID": f"AKIA{secret}",
            "DVC_REMOTE_PASSWORD": secret,
        }
    )
    ran = _run(root, env, "run", "01_prepare")
    assert ran.returncode == 0, ran.stderr[-2000:]
    created = _run(root, env, "snapshot", "create", "x")
    assert created.returncode == 0, created.stderr[-2000:]
    shown = _run(root, env, "snapshot", "show", "x", "--json")
    assert shown.returncode == 0, shown.stderr

    assert secret not in shown.stdout
    assert secret not in ran.stdout + ran.stderr + created.stdout + created.stderr
    assert list((root / "reports").glob("*.ipynb")), "the executed notebook is kept as a report"
    assert list((root / ".mlvs" / "logs").glob("*.log")), "the commands were logged"
    # Every file of the workspace: reports, mlartifacts/, mlflow.db, .mlvs/ (logs, manifests), .git.
    assert _files_containing(root, secret.encode()) == []


def _dry_run(target: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"HOST", "MAKEFLAGS", "MFLAGS"}}
    return subprocess.run(
        ["make", "-n", "-C", str(REPO), target], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_make_lab_binds_loopback_by_default() -> None:
    line = next(line for line in _dry_run("lab").splitlines() if "jupyter lab" in line)
    assert re.search(r"--ServerApp\.ip=127\.0\.0\.1(\s|$)", line), line


def test_make_ui_binds_loopback_by_default() -> None:
    line = next(line for line in _dry_run("ui").splitlines() if "mlflow ui" in line)
    assert re.search(r"--host 127\.0\.0\.1(\s|$)", line), line
