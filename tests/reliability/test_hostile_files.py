"""Hostile files never run: a booby-trapped pickle where a model belongs, and hostile archives.

The pickle would create a marker file when loaded. Whatever mlvs command meets
it (verify, recover, snapshot, rollback), the marker must never appear, verify
must name the file, and recover must put the recorded bytes back.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import stat
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import git, mlvs

MODEL = "models/model.skops"
CARD = "models/model_card.json"


class _Trap:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _trap_bytes(marker: Path) -> bytes:
    return pickle.dumps(_Trap(marker))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "MARKER"


def _cache_object(root: Path, content: bytes) -> Path:
    md5 = hashlib.md5(content).hexdigest()
    return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _overwrite(path: Path, content: bytes) -> None:
    path.chmod(path.stat().st_mode | stat.S_IWUSR)
    path.write_bytes(content)


def _no_marker(root: Path, marker: Path) -> None:
    assert not marker.exists(), "a hostile pickle was executed"
    assert not (root / "MARKER").exists()


def test_pickle_in_place_of_the_model_is_reported_never_run_and_repaired(
    trained_workspace: Path, marker: Path
) -> None:
    root = trained_workspace
    good = (root / MODEL).read_bytes()
    _overwrite(root / MODEL, _trap_bytes(marker))

    verified = mlvs(root, "verify", "--only", "file_hash,model,registry")
    _no_marker(root, marker)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert MODEL in verified.stdout
    assert "Traceback" not in verified.stderr

    recovered = mlvs(root, "recover")
    _no_marker(root, marker)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert (root / MODEL).read_bytes() == good


def test_pickle_with_a_matching_card_is_still_never_loaded(
    trained_workspace: Path, marker: Path
) -> None:
    root = trained_workspace
    good = (root / MODEL).read_bytes()
    mlvs(root, "snapshot", "create", "base", check=True)
    trap = _trap_bytes(marker)
    _overwrite(root / MODEL, trap)
    card = json.loads((root / CARD).read_text())
    card["model_sha256"] = hashlib.sha256(trap).hexdigest()
    (root / CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")

    verified = mlvs(root, "verify", "--only", "file_hash,model,metrics")
    _no_marker(root, marker)
    assert verified.returncode == 1
    assert MODEL in verified.stdout

    snapshot = mlvs(root, "snapshot", "create", "hostile")
    _no_marker(root, marker)
    assert "Traceback" not in snapshot.stderr

    rolled = mlvs(root, "rollback", "base")
    _no_marker(root, marker)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert (root / MODEL).read_bytes() == good


def test_pickle_in_the_dvc_cache_is_reported_never_run_and_repaired(
    trained_workspace: Path, marker: Path
) -> None:
    root = trained_workspace
    good = (root / MODEL).read_bytes()
    cached = _cache_object(root, good)
    assert cached.is_file()
    _overwrite(cached, _trap_bytes(marker))

    verified = mlvs(root, "verify", "--only", "dvc_cache,model")
    _no_marker(root, marker)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert MODEL in verified.stdout or cached.name in verified.stdout

    recovered = mlvs(root, "recover")
    _no_marker(root, marker)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert cached.read_bytes() == good
    assert (root / MODEL).read_bytes() == good

    git(root, "status")  # the workspace is still a healthy repository
    rolled = mlvs(root, "snapshot", "create", "after")
    _no_marker(root, marker)
    assert rolled.returncode == 0, rolled.stderr


def test_mlflow_pickle_deserialization_is_switched_off_before_mlflow_is_imported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlvs.backends.mlflow import tracking
    from mlvs.paths import ProjectPaths

    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # stop configure at its `import mlflow`
    with pytest.raises(ImportError):
        tracking.configure(ProjectPaths(tmp_path))
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"


def test_the_cli_switches_mlflow_pickle_deserialization_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from mlvs.cli.app import cli

    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    monkeypatch.chdir(tmp_path)
    CliRunner().invoke(cli, ["incidents"])
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"


# --- hostile archives ---------------------------------------------------------------


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, content in members:
            if content is not None:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return out.getvalue()


def _file(name: str, content: bytes = b"pwned") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), content


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


HOSTILE_ARCHIVES = {
    "absolute_path": lambda outside: _tar(_file(str(outside / "abs.txt"))),
    "dot_dot": lambda outside: _tar(_file("../outside/dotdot.txt")),
    "nested_dot_dot": lambda outside: _tar(_file("a/../../outside/nested.txt")),
    "symlink_out": lambda outside: _tar(_link("escape", str(outside))),
    "relative_symlink_out": lambda outside: _tar(_link("escape", "../outside")),
    "write_through_symlink": lambda outside: _tar(
        _link("escape", "../outside"), _file("escape/through.txt")
    ),
    "hardlink_out": lambda outside: _tar(
        _link("hard", str(outside / "victim.txt"), tarfile.LNKTYPE)
    ),
    "device": lambda outside: _tar(
        (lambda i: (setattr(i, "type", tarfile.CHRTYPE), (i, None))[1])(tarfile.TarInfo("dev"))
    ),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_ARCHIVES))
def test_hostile_archive_is_refused_and_writes_nothing_outside(tmp_path: Path, kind: str) -> None:
    from mlvs.errors import BadInputError
    from mlvs.ops.reproduce import _safe_extract

    destination, outside = tmp_path / "dest", tmp_path / "outside"
    destination.mkdir()
    outside.mkdir()
    (outside / "victim.txt").write_text("keep me")
    with pytest.raises(BadInputError):
        _safe_extract(HOSTILE_ARCHIVES[kind](outside), destination)
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (outside / "victim.txt").read_text() == "keep me"
    assert not any(p.is_symlink() for p in destination.rglob("*"))


def test_a_plain_archive_is_extracted(tmp_path: Path) -> None:
    from mlvs.ops.reproduce import _safe_extract

    _safe_extract(_tar(_file("a/b.txt", b"ok"), _link("a/c", "b.txt")), tmp_path)
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"ok"
