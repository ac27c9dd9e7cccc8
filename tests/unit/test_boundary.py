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
