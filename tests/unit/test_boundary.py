"""The workspace boundary refuses every path or hash that would leave the project."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlvs.boundary import UnsafeInputError, inside, md5_value, relative_path, workspace_file

HOSTILE_PATHS = [
    "../x",
    "a/../../x",
    "/tmp/x",
    "",
    "   ",
    ".",
    "a\\..\\x",
    "C:/x",
    "a\x00b",
    None,
    42,
    ["a"],
]


@pytest.mark.parametrize("value", HOSTILE_PATHS)
def test_hostile_paths_are_refused_with_their_source_named(value: object) -> None:
    with pytest.raises(UnsafeInputError, match=r"^manifest files\[0\]"):
        relative_path(value, "manifest files[0]")


def test_relative_paths_are_normalised() -> None:
    assert relative_path("./models//model.skops", "x") == "models/model.skops"


def test_a_symlink_out_of_the_workspace_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "data" / "link").symlink_to(outside)
    (root / "file-link").symlink_to(outside / "victim")
    with pytest.raises(UnsafeInputError, match="outside"):
        inside(root, "data/link/x.csv", ".dvc file")
    with pytest.raises(UnsafeInputError, match="outside"):
        inside(root, "file-link", ".dvc file")
    assert inside(root, "data/new.csv", ".dvc file") == root / "data" / "new.csv"


def test_a_symlink_inside_the_workspace_is_allowed(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "alias").symlink_to(root / "data")
    assert inside(root, "alias/x", "x") == root / "alias" / "x"


@pytest.mark.parametrize(
    "value", [".git/config", ".dvc/config", ".mlvs/journal.json", ".GIT/hooks/x"]
)
def test_the_tools_state_is_never_a_workspace_file(tmp_path: Path, value: str) -> None:
    with pytest.raises(UnsafeInputError, match="never restores"):
        workspace_file(tmp_path, value, "manifest")


@pytest.mark.parametrize(
    "value",
    [
        "01/../../../../tmp/victim",
        "0" * 31,
        "0" * 33,
        "G" * 32,
        "A" * 32,
        "",
        None,
        5,
        "0" * 32 + ".dir/x",
    ],
)
def test_hashes_that_are_not_md5_digests_are_refused(value: object) -> None:
    with pytest.raises(UnsafeInputError, match=r"dvc\.lock"):
        md5_value(value, "dvc.lock")


def test_md5_kinds() -> None:
    digest = "0123456789abcdef" * 2
    assert md5_value(digest, "x") == digest
    assert md5_value(digest + ".dir", "x", directory=True) == digest + ".dir"
    with pytest.raises(UnsafeInputError):
        md5_value(digest + ".dir", "x", directory=False)
    with pytest.raises(UnsafeInputError):
        md5_value(digest, "x", directory=True)


# The readers of each outside source, checked without a trained workspace.


@pytest.mark.parametrize("md5", ["01/../../../../tmp/victim", "../" * 4 + "x", "0" * 31 + "/"])
def test_no_object_location_is_made_from_a_value_that_is_no_digest(md5: str) -> None:
    from mlvs.backends.dvc.objects import object_relpath

    with pytest.raises(UnsafeInputError, match="not an MD5 digest"):
        object_relpath(md5)


def test_an_object_location_is_made_from_a_digest() -> None:
    from mlvs.backends.dvc.objects import object_relpath

    assert object_relpath("ab" + "c" * 30) == "files/md5/ab/" + "c" * 30
    assert object_relpath("ab" + "c" * 30 + ".dir") == "files/md5/ab/" + "c" * 30 + ".dir"


@pytest.mark.parametrize(
    ("base", "path"),
    [(".", "/tmp/x"), (".", "../x"), ("data", "../../x"), (".", ".git/config"), ("", ".dvc/x")],
)
def test_dvc_outputs_outside_the_project_are_refused(tmp_path: Path, base: str, path: str) -> None:
    from mlvs.backends.dvc.outputs import _join

    with pytest.raises(UnsafeInputError, match=r"^dvc\.lock output"):
        _join(tmp_path, base, path, "dvc.lock")


def test_a_dvc_output_may_climb_within_the_project(tmp_path: Path) -> None:
    from mlvs.backends.dvc.outputs import _join

    assert _join(tmp_path, "src", "../data/x.csv", "dvc.yaml") == "data/x.csv"


def _journal(tmp_path: Path, data: dict[str, object]) -> object:
    import json

    from mlvs.paths import ProjectPaths
    from mlvs.state.journal import Journal

    journal = Journal(ProjectPaths(tmp_path))
    journal.path.parent.mkdir(parents=True, exist_ok=True)
    record = {"operation": "pipeline", "data": data, "step": None, "steps": []}
    journal.path.write_text(json.dumps(record) + "\n")
    return journal.current()


@pytest.mark.parametrize(
    "data",
    [
        {"kept": {"../f": "x"}},
        {"kept": {"/etc/passwd": None}},
        {"kept": {".git/config": "x"}},
        {"kept": ["dvc.lock"]},
        {"added_cache": ["../f"]},
        {"auto_added_remote": ["01/../../../../tmp/victim"]},
    ],
)
def test_a_journal_naming_files_outside_is_refused_when_read(
    tmp_path: Path, data: dict[str, object]
) -> None:
    with pytest.raises(UnsafeInputError, match=r"^\.mlvs/journal\.json field"):
        _journal(tmp_path, data)


def test_a_journal_of_project_files_and_digests_is_read(tmp_path: Path) -> None:
    data = {"kept": {"dvc.lock": "x", "reports/metrics.json": None}, "added_cache": ["0" * 32]}
    assert _journal(tmp_path, data) is not None


@pytest.mark.parametrize(
    "listing",
    [
        [{"relpath": "../../x", "md5": "0" * 32}],
        [{"relpath": "/tmp/x", "md5": "0" * 32}],
        [{"relpath": "a.csv", "md5": "01/../../x"}],
        [{"relpath": "a.csv", "md5": "0" * 32 + ".dir"}],
        ["a.csv"],
        {"relpath": "a.csv"},
    ],
)
def test_hostile_dir_object_entries_are_refused(tmp_path: Path, listing: object) -> None:
    from mlvs.ops.recorded import _listed_files
    from mlvs.paths import ProjectPaths

    with pytest.raises(UnsafeInputError, match="DVC directory object"):
        _listed_files(ProjectPaths(tmp_path), "data/processed", "0" * 32 + ".dir", listing)
