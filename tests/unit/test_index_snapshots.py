"""The reports index lists the snapshots git holds, reading each snapshot's manifest once.

A commit's manifest never changes, so what the index shows of it is remembered under
`.mlvs/`; that file is anyone's, so an entry of the wrong shape is read again from git.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mlvs.backends.git.refs import delete_snapshot_ref, save_snapshot_ref
from mlvs.backends.git.tree import commit_worktree
from mlvs.backends.mlflow.registry import RegistryState
from mlvs.ops import reports_index
from mlvs.ops.reports_index import SNAPSHOT_ROWS, render_index
from mlvs.ops.snapshot.manifest import MANIFEST_PATH, Environment, Manifest
from mlvs.paths import ProjectPaths

ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@localhost",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@localhost",
}


def snapshot(root: Path, name: str, minute: int, roc_auc: float) -> str:
    manifest = Manifest(
        name=name,
        message=f"<b>{name}</b>",
        created_at=f"2026-01-01T00:{minute:02d}:00.000000Z",
        automatic=False,
        base_commit=None,
        branch="main",
        outputs={},
        files={},
        params={},
        metrics={"test_roc_auc": roc_auc},
        registry=RegistryState("sqlite:///mlflow.db", None),
        environment=Environment("3.11.9", "CPython", "Linux", {"mlvs": "0.1.0"}),
    )
    commit = commit_worktree(root, name, extra_files={MANIFEST_PATH: manifest.to_bytes()})
    save_snapshot_ref(root, name, commit)
    return commit


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProjectPaths:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    (tmp_path / "README.md").write_text("project\n")
    snapshot(tmp_path, "first", 1, 0.75)
    snapshot(tmp_path, "second", 2, 0.8)
    return ProjectPaths(tmp_path)


def snapshot_rows(page: str) -> list[str]:
    section = page.split('<table id="snapshots">', 1)[1].split("</table>", 1)[0]
    return [line for line in section.splitlines() if line.startswith("<tr data-")]


def no_manifest_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(paths: ProjectPaths, refs: list[tuple[str, str]]) -> list[Manifest]:
        assert not refs, f"read again: {refs}"
        return []

    monkeypatch.setattr(reports_index, "read_snapshots", refuse)


def test_each_snapshot_is_listed_and_its_manifest_read_only_once(
    paths: ProjectPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = render_index(paths)
    rows = snapshot_rows(page)
    assert [r.split('"')[1] for r in rows] == ["first", "second"]
    assert "&lt;b&gt;first&lt;/b&gt;" in rows[0] and "0.7500" in rows[0]

    no_manifest_read(monkeypatch)
    assert render_index(paths) == page


def test_a_deleted_ref_leaves_the_list_and_a_new_one_is_read(
    paths: ProjectPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    render_index(paths)
    delete_snapshot_ref(paths.root, "first")
    third = snapshot(paths.root, "third", 3, 0.9)

    rows = snapshot_rows(render_index(paths))

    assert [r.split('"')[1] for r in rows] == ["second", "third"]
    assert third[:12] in rows[1]
    no_manifest_read(monkeypatch)
    assert snapshot_rows(render_index(paths)) == rows


TAMPERS = {
    "a flag that is text": lambda entry: entry.update(automatic="yes"),
    "a message that is a list": lambda entry: entry.update(message=["<script>"]),
    "a metric that is text": lambda entry: entry.update(test_roc_auc="0.99"),
    "no name": lambda entry: entry.pop("name"),
    "another name": lambda entry: entry.update(name="someone-else"),
}


def test_a_remembered_entry_of_the_wrong_shape_or_an_unreadable_file_is_read_again_from_git(
    paths: ProjectPaths,
) -> None:
    page = render_index(paths)
    remembered = paths.state / SNAPSHOT_ROWS
    for what, tamper in TAMPERS.items():
        document = json.loads(remembered.read_text())
        for entry in document.values():
            tamper(entry)
        remembered.write_text(json.dumps(document))

        assert render_index(paths) == page, what

    remembered.write_bytes(b"\xff not json")
    assert render_index(paths) == page
    assert json.loads(remembered.read_text()).keys()  # rebuilt
