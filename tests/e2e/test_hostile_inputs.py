"""Hostile inputs: paths and hashes from files others can write never lead mlvs outside the project.

Each test plants one hostile value in a manifest, `dvc.lock`, a `.dvc` file, a
`.dir` object (in the cache or on the remote), the journal, the incident catalog,
or the model card or golden predictions of a snapshot fetched from a teammate's
clone, with a sentinel file beside the workspace. The command must refuse with
exit code 2 and one line naming the source (or, for `verify` and `recover`, name
it in one finding and exit 1), and leave everything outside the workspace exactly
as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import clean_env, copy_workspace, git, mlvs, tree_hashes

pytestmark = pytest.mark.slow

MANIFEST = ".mlvs-snapshot.json"
REF = "refs/mlvs/snapshots/"


@pytest.fixture(scope="module")
def _snapshotted(_trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained workspace with one good snapshot, `first`; tests copy it and never change it."""
    root = copy_workspace(_trained_template, tmp_path_factory.mktemp("hostile") / "ws")
    result = mlvs(root, "snapshot", "create", "first", "-m", "baseline")
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.fixture
def ws(_snapshotted: Path, tmp_path: Path) -> Path:
    """A private copy of the snapshotted workspace, at `tmp_path/ws`, with a sentinel beside it."""
    root = copy_workspace(_snapshotted, tmp_path / "ws")
    (tmp_path / "victim").write_text("precious\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim.csv").write_text("precious,too\n")
    return root


def outside_state(tmp_path: Path) -> dict[str, str]:
    """SHA-256 of every file beside the workspace (everything under `tmp_path` but `ws/`)."""
    found = {}
    for path in sorted(tmp_path.rglob("*")):
        rel = path.relative_to(tmp_path).as_posix()
        if rel == "ws" or rel.startswith("ws/"):
            continue
        found[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return found


def refused(root: Path, tmp_path: Path, *args: str, source: str, code: int = 2) -> str:
    """Run mlvs; assert it refused in one line naming `source`, and nothing outside changed."""
    before = outside_state(tmp_path)
    result = mlvs(root, *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert source in lines[0], lines[0]
    assert outside_state(tmp_path) == before
    assert (tmp_path / "victim").read_text() == "precious\n"
    return lines[0]


def _git_env(root: Path, index: Path) -> dict[str, str]:
    return {**clean_env(root), "GIT_INDEX_FILE": str(index)}


def plant_snapshot(
    root: Path, name: str, change: Callable[[dict[str, Any]], None], *, rename: bool = True
) -> None:
    """A snapshot `name`: `first`'s commit with its manifest changed by `change` (and named `name`)."""
    commit = git(root, "rev-parse", REF + "first").strip()
    document = json.loads(git(root, "show", f"{commit}:{MANIFEST}"))
    if rename:
        document["name"] = name
    change(document)
    env = _git_env(root, root.parent / "index")

    def plumbing(*args: str, text: str | None = None) -> str:
        return git(root, *args, input=text, env=env).strip()

    blob = plumbing("hash-object", "-w", "--stdin", text=json.dumps(document, indent=2))
    plumbing("read-tree", commit)
    plumbing("update-index", "--add", "--cacheinfo", f"100644,{blob},{MANIFEST}")
    tree = plumbing("write-tree")
    planted = plumbing("commit-tree", tree, "-p", commit, "-m", "planted")
    plumbing("update-ref", REF + name, planted)
    (root.parent / "index").unlink()


def _first_file(document: dict[str, Any]) -> str:
    return sorted(document["files"])[0]


def _rename_file(new: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["files"][new] = document["files"].pop(_first_file(document))

    return change


def _set_md5(md5: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["files"][_first_file(document)]["md5"] = md5

    return change


def _rename_output(new: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["outputs"][new] = document["outputs"]["models"]

    return change


# What a planted manifest carries, by a short name; "{outside}" is the sentinel's absolute path.
MANIFEST_ATTACKS = {
    "climbs-out": ("files", "../victim"),
    "deep-climb": ("files", "data/../../victim"),
    "absolute": ("files", "{outside}"),
    "into-git": ("files", ".git/hooks/post-checkout"),
    "into-dvc": ("files", ".dvc/config"),
    "into-mlvs": ("files", ".mlvs/journal.json"),
    "md5-climbs": ("md5", "01/../../../../victim"),
    "md5-not-hex": ("md5", "z" * 32),
    "output-climbs": ("output", "../outside"),
}


def _manifest_change(kind: str, value: str, tmp_path: Path) -> Callable[[dict[str, Any]], None]:
    value = value.replace("{outside}", str(tmp_path / "victim"))
    return {"files": _rename_file, "md5": _set_md5, "output": _rename_output}[kind](value)


MANIFEST_COMMANDS = {
    "show": ("snapshot", "show", "evil"),
    "diff": ("snapshot", "diff", "first", "evil"),
    "dry-run": ("rollback", "evil", "--dry-run"),
    "rollback": ("rollback", "evil"),
}


@pytest.mark.parametrize("attack", sorted(MANIFEST_ATTACKS))
def test_a_hostile_manifest_is_refused_by_snapshot_show(
    ws: Path, tmp_path: Path, attack: str
) -> None:
    plant_snapshot(ws, "evil", _manifest_change(*MANIFEST_ATTACKS[attack], tmp_path))
    refused(ws, tmp_path, *MANIFEST_COMMANDS["show"], source=MANIFEST)


@pytest.mark.parametrize("command", ["diff", "dry-run", "rollback"])
@pytest.mark.parametrize("attack", ["climbs-out", "absolute", "into-git", "md5-climbs"])
def test_a_hostile_manifest_is_refused_by_diff_and_rollback(
    ws: Path, tmp_path: Path, attack: str, command: str
) -> None:
    plant_snapshot(ws, "evil", _manifest_change(*MANIFEST_ATTACKS[attack], tmp_path))
    before = git(ws, "status", "--porcelain")
    refused(ws, tmp_path, *MANIFEST_COMMANDS[command], source=MANIFEST)
    assert git(ws, "status", "--porcelain") == before


@pytest.mark.parametrize("command", ["dry-run", "rollback"])
def test_a_manifest_path_through_a_symlink_out_of_the_project_is_refused(
    ws: Path, tmp_path: Path, command: str
) -> None:
    (ws / "data" / "escape").symlink_to(tmp_path / "outside")
    plant_snapshot(ws, "evil", _rename_file("data/escape/victim.csv"))
    line = refused(ws, tmp_path, *MANIFEST_COMMANDS[command], source="data/escape/victim.csv")
    assert "outside" in line


def _lock(root: Path) -> dict[str, Any]:
    return yaml.safe_load((root / "dvc.lock").read_text())


def _set_lock_out(root: Path, output: str, **fields: str) -> None:
    """Change the fields of `dvc.lock`'s entry for `output`."""
    document = _lock(root)
    for spec in document["stages"].values():
        for out in spec.get("outs") or []:
            if out["path"] == output:
                out.update(fields)
    (root / "dvc.lock").write_text(yaml.safe_dump(document, sort_keys=False))


@pytest.mark.parametrize(
    "hostile",
    ["{outside}", "../victim", "data/../../victim", ".git/config"],
)
def test_a_dvc_lock_output_outside_the_project_is_refused(
    ws: Path, tmp_path: Path, hostile: str
) -> None:
    path = hostile.replace("{outside}", str(tmp_path / "victim"))
    _set_lock_out(ws, "data/raw/customer_data.csv", path=path)
    refused(ws, tmp_path, "verify", source="dvc.lock")


@pytest.mark.parametrize("md5", ["01/../../../../victim", "../" * 6 + "victim", "Z" * 32])
def test_a_dvc_lock_md5_that_is_no_digest_is_refused(ws: Path, tmp_path: Path, md5: str) -> None:
    _set_lock_out(ws, "data/raw/customer_data.csv", md5=md5)
    refused(ws, tmp_path, "verify", source="dvc.lock")


def test_a_dvc_lock_output_through_a_symlink_out_of_the_project_is_refused(
    ws: Path, tmp_path: Path
) -> None:
    raw = ws / "data" / "raw"
    shutil.rmtree(raw)
    raw.symlink_to(tmp_path / "outside")
    line = refused(ws, tmp_path, "verify", source="dvc.lock")
    assert "outside" in line


@pytest.mark.parametrize("hostile", ["{outside}", "../../victim"])
def test_a_dvc_file_output_outside_the_project_is_refused(
    ws: Path, tmp_path: Path, hostile: str
) -> None:
    path = hostile.replace("{outside}", str(tmp_path / "victim"))
    (ws / "data" / "extra.dvc").write_text(
        yaml.safe_dump({"outs": [{"md5": "0" * 32, "path": path, "size": 1}]})
    )
    refused(ws, tmp_path, "snapshot", "create", "evil", source="data/extra.dvc")


def _store_dirs(root: Path) -> dict[str, Path]:
    return {
        "cache": root / ".dvc" / "cache" / "files" / "md5",
        "remote": root / ".mlvs" / "dvc-remote" / "files" / "md5",
    }


def plant_dir_object(root: Path, where: str, entries: list[dict[str, Any]]) -> str:
    """A `.dir` object listing `entries`, in the cache or only on the remote; `data/processed` points at it."""
    payload = json.dumps(entries, sort_keys=True).encode()
    md5 = hashlib.md5(payload).hexdigest()
    location = _store_dirs(root)[where] / md5[:2] / f"{md5[2:]}.dir"
    location.parent.mkdir(parents=True, exist_ok=True)
    location.write_bytes(payload)
    _set_lock_out(root, "data/processed", md5=md5 + ".dir")
    return md5


DIR_ATTACKS = {
    "relpath-climbs": {"relpath": "../../victim", "md5": "0" * 32},
    "relpath-absolute": {"relpath": "{outside}", "md5": "0" * 32},
    "md5-climbs": {"relpath": "train.csv", "md5": "01/../../../../victim"},
    "md5-not-hex": {"relpath": "train.csv", "md5": "not-a-digest"},
}


@pytest.mark.parametrize("where", ["cache", "remote"])
@pytest.mark.parametrize("attack", sorted(DIR_ATTACKS))
def test_a_hostile_dir_object_is_refused(ws: Path, tmp_path: Path, attack: str, where: str) -> None:
    entry = {
        key: value.replace("{outside}", str(tmp_path / "victim"))
        for key, value in DIR_ATTACKS[attack].items()
    }
    md5 = plant_dir_object(ws, where, [entry])
    line = refused(ws, tmp_path, "verify", source="DVC directory object")
    assert md5 in line


def plant_journal(root: Path, operation: str, data: dict[str, Any], step: str | None) -> None:
    record = {
        "operation": operation,
        "data": data,
        "step": step,
        "steps": [step] if step else [],
        "pid": 1,
        "started_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
    }
    (root / ".mlvs" / "journal.json").write_text(json.dumps(record) + "\n")


JOURNAL_ATTACKS = {
    "kept-climbs": ("pipeline", {"kept": {"../victim": "overwritten\n"}}, None),
    "kept-absolute": ("pipeline", {"kept": {"{outside}": None}}, None),
    "kept-into-git": ("pipeline", {"kept": {".git/config": "overwritten\n"}}, None),
    "added-cache-climbs": (
        "snapshot",
        {"name": "x", "added_cache": ["01/../../../../victim"], "added_remote": []},
        "storing",
    ),
    "added-remote-climbs": (
        "snapshot",
        {"name": "x", "added_cache": [], "added_remote": ["../" * 7 + "victim"]},
        "storing",
    ),
}


@pytest.mark.parametrize("attack", sorted(JOURNAL_ATTACKS))
def test_a_journal_naming_files_outside_is_refused_before_the_replay(
    ws: Path, tmp_path: Path, attack: str
) -> None:
    operation, data, step = JOURNAL_ATTACKS[attack]
    text = json.dumps(data).replace("{outside}", str(tmp_path / "victim"))
    plant_journal(ws, operation, json.loads(text), step)
    refused(ws, tmp_path, "recover", source=".mlvs/journal.json")
    assert (ws / ".mlvs" / "journal.json").is_file()  # kept for inspection


def test_a_journal_kept_file_through_a_symlink_out_of_the_project_is_refused(
    ws: Path, tmp_path: Path
) -> None:
    (ws / "reports" / "escape").symlink_to(tmp_path / "outside")
    plant_journal(ws, "pipeline", {"kept": {"reports/escape/victim.csv": "x\n"}}, None)
    refused(ws, tmp_path, "recover", source=".mlvs/journal.json")


@pytest.mark.parametrize("target", ["{outside}", "../victim", ".git/config", "data/escape/x.csv"])
def test_a_drill_target_outside_the_project_is_refused(
    ws: Path, tmp_path: Path, target: str
) -> None:
    (ws / "data" / "escape").symlink_to(tmp_path / "outside")
    catalog_file = ws / "params" / "incidents.yaml"
    catalog = yaml.safe_load(catalog_file.read_text())
    scenario = next(n for n, s in catalog["scenarios"].items() if s.get("family") == "data")
    catalog["scenarios"][scenario]["target"] = target.replace("{outside}", str(tmp_path / "victim"))
    catalog_file.write_text(yaml.safe_dump(catalog, sort_keys=False))
    refused(ws, tmp_path, "drill", scenario, source="params/incidents.yaml")


def test_the_refusals_leave_no_file_outside_the_workspace_even_when_named_absolutely(
    ws: Path, tmp_path: Path
) -> None:
    """The sentinel sits where an absolute path points; after a refusal nothing new sits beside it."""
    planted = str(tmp_path / "new-file")
    plant_journal(ws, "pipeline", {"kept": {planted: "created\n"}}, None)
    refused(ws, tmp_path, "recover", source=".mlvs/journal.json")
    assert not os.path.exists(planted)


def test_a_ref_whose_manifest_names_another_snapshot_is_refused(ws: Path, tmp_path: Path) -> None:
    # A fetched ref `zz` holding `first`'s manifest would show as a second `first`.
    plant_snapshot(ws, "zz", lambda document: None, rename=False)
    source = "snapshot ref 'zz' holds a manifest named 'first'"
    for command in (
        ("snapshot", "show", "zz"),
        ("rollback", "zz"),
        ("rollback", "zz", "--dry-run"),
    ):
        line = refused(ws, tmp_path, *command, source=source)
        assert "git update-ref -d refs/mlvs/snapshots/zz" in line, line

    listed = mlvs(ws, "snapshot", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [m["name"] for m in json.loads(listed.stdout)] == ["first"]
    assert "zz" in listed.stderr and "skipped" in listed.stderr, listed.stderr


def test_a_manifest_cannot_make_the_project_code_part_of_its_data(ws: Path) -> None:
    """Which part a file belongs to is the project's call: a manifest claiming `mlvs/` as a data
    output does not make `rollback --only data` rewrite mlvs's own code."""

    def claim_code_as_data(document: dict[str, Any]) -> None:
        document["outputs"]["mlvs"] = {"part": "data", "stage": "prepare", "cache": False}

    plant_snapshot(ws, "evil", claim_code_as_data)
    code = ws / "mlvs" / "__init__.py"
    edited = code.read_text() + "# a local edit the snapshot does not have\n"
    code.write_text(edited)

    planned = mlvs(ws, "rollback", "evil", "--only", "data", "--dry-run", "--json")
    assert planned.returncode == 0, planned.stderr
    files = json.loads(planned.stdout)["files"]
    assert not [f for f in files if f["path"].startswith("mlvs/")], files
    done = mlvs(ws, "rollback", "evil", "--only", "data", "--json")
    assert done.returncode == 0, done.stderr
    assert code.read_text() == edited
    assert not [f for f in json.loads(done.stdout)["files"] if f["path"].startswith("mlvs/")]


def test_a_hostile_ref_fetched_from_a_second_clone_is_refused_and_the_rest_still_listed(
    ws: Path, tmp_path: Path
) -> None:
    """The way a bad ref really arrives: a teammate's clone makes it, `git fetch` brings it."""
    teammate = tmp_path / "teammate"
    subprocess.run(["git", "clone", "-q", str(ws), str(teammate)], check=True, env=clean_env(ws))
    git(teammate, "fetch", "-q", "origin", f"{REF}*:{REF}*")
    plant_snapshot(teammate, "evil", _rename_file("../../victim"))
    git(ws, "fetch", "-q", str(teammate), f"{REF}evil:{REF}evil")

    for command in (
        ("snapshot", "show", "evil"),
        ("rollback", "evil"),
        ("rollback", "evil", "--dry-run"),
    ):
        refused(ws, tmp_path, *command, source="snapshot commit")
    listed = mlvs(ws, "snapshot", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [m["name"] for m in json.loads(listed.stdout)] == ["first"]
    assert "evil" in listed.stderr


CARD = "models/model_card.json"
GOLDEN = "models/golden_predictions.json"


def _object(store: Path, md5: str, suffix: str = "") -> Path:
    return store / md5[:2] / f"{md5[2:]}{suffix}"


def plant_model_file(ws: Path, teammate: Path, name: str, path: str, payload: bytes) -> None:
    """In `teammate`'s clone, snapshot `name`: `first` with `path` (under models/) holding `payload`.

    Both the manifest and the commit's `dvc.lock` record the new bytes, and the objects
    are pushed where a teammate's `dvc push` puts them: the shared DVC remote.
    """
    stores = _store_dirs(ws)
    commit = git(teammate, "rev-parse", REF + "first").strip()
    document = json.loads(git(teammate, "show", f"{commit}:{MANIFEST}"))
    lock = yaml.safe_load(git(teammate, "show", f"{commit}:dvc.lock"))
    models = document["outputs"]["models"]
    entries = json.loads(_object(stores["cache"], models["md5"][:-4], ".dir").read_bytes())
    md5 = hashlib.md5(payload).hexdigest()
    for entry in entries:
        if entry["relpath"] == path.removeprefix("models/"):
            entry["md5"] = md5
    listing = json.dumps(entries, sort_keys=True).encode()
    dir_md5 = hashlib.md5(listing).hexdigest()
    for location, data in (
        (_object(stores["remote"], md5), payload),
        (_object(stores["remote"], dir_md5, ".dir"), listing),
    ):
        location.parent.mkdir(parents=True, exist_ok=True)
        location.write_bytes(data)
    size = models["size"] - document["files"][path]["size"] + len(payload)
    document["files"][path] = {
        "md5": md5,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
        "output": "models",
    }
    models.update(md5=f"{dir_md5}.dir", size=size)
    document["name"] = name
    for spec in lock["stages"].values():
        for out in spec.get("outs") or []:
            if out["path"] == "models":
                out.update(md5=f"{dir_md5}.dir", size=size)
    env = _git_env(teammate, teammate.parent / "index")

    def plumbing(*args: str, text: str | None = None) -> str:
        return git(teammate, *args, input=text, env=env).strip()

    manifest = plumbing("hash-object", "-w", "--stdin", text=json.dumps(document, indent=2))
    locked = plumbing("hash-object", "-w", "--stdin", text=yaml.safe_dump(lock, sort_keys=False))
    plumbing("read-tree", commit)
    plumbing("update-index", "--add", "--cacheinfo", f"100644,{manifest},{MANIFEST}")
    plumbing("update-index", "--add", "--cacheinfo", f"100644,{locked},dvc.lock")
    planted = plumbing("commit-tree", plumbing("write-tree"), "-p", commit, "-m", "planted")
    plumbing("update-ref", REF + name, planted)
    (teammate.parent / "index").unlink()


def fetch_from_teammate(ws: Path, tmp_path: Path, path: str, payload: bytes) -> None:
    """A teammate's clone makes snapshot `evil` with `payload` at `path`; `git fetch` brings it."""
    teammate = tmp_path / "teammate"
    subprocess.run(["git", "clone", "-q", str(ws), str(teammate)], check=True, env=clean_env(ws))
    git(teammate, "fetch", "-q", "origin", f"{REF}*:{REF}*")
    plant_model_file(ws, teammate, "evil", path, payload)
    git(ws, "fetch", "-q", str(teammate), f"{REF}evil:{REF}evil")


def _good(ws: Path, path: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ws / path).read_text())
    return document


def _card(**fields: Any) -> Callable[[Path], bytes]:
    return lambda ws: json.dumps({**_good(ws, CARD), **fields}).encode()


def _golden(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], bytes]:
    def payload(ws: Path) -> bytes:
        document = _good(ws, GOLDEN)
        change(document)
        return json.dumps(document).encode()

    return payload


def _every_number(value: float) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        for row in document["rows"]:
            for key, cell in row.items():
                if isinstance(cell, int | float) and not isinstance(cell, bool):
                    row[key] = value

    return change


# Model files a snapshot may carry that `verify` could never accept: rollback refuses them.
MALFORMED_MODEL_FILES: dict[str, tuple[str, Callable[[Path], bytes]]] = {
    "card-is-a-list": (CARD, lambda ws: b"[]"),
    "card-sha256-not-hex": (CARD, _card(model_sha256="z" * 64)),
    "card-names-a-file-outside": (CARD, _card(model_file="../../victim")),
    "card-nested-too-deep": (CARD, lambda ws: b"[" * 100_000 + b"]" * 100_000),
    "card-not-utf8": (CARD, lambda ws: b"\xff\xfe{\x00"),
    "golden-empty-object": (GOLDEN, lambda ws: b"{}"),
    "golden-nan-in-rows": (GOLDEN, _golden(_every_number(float("nan")))),
    "golden-too-many-rows": (
        GOLDEN,
        _golden(
            lambda d: d.update(rows=d["rows"][:1] * 10_001, churn_probability=["0.5"] * 10_001)
        ),
    ),
}

# Well-formed golden files that only loading the model can judge, and the finding each gives:
# rows the model cannot score, or rows it scores to other numbers than the file records (XGBoost's
# trees take a feature of 1e308 as any other large value).
HOSTILE_GOLDEN: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "wrong-columns": (
        _golden(lambda d: d.update(rows=[{"x": 1} for _ in d["rows"]])),
        "cannot score",
    ),
    "huge-integers": (_golden(_every_number(10**400)), "cannot score"),
    "huge-floats": (_golden(_every_number(1e308)), "differ"),
}


def _models_state(ws: Path) -> dict[str, str]:
    return {k: v for k, v in tree_hashes(ws).items() if k.startswith(("models/", "dvc.lock"))}


def _one_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one `mlvs: error:` line of a command that exited with `code`, with no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("mlvs: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize("attack", sorted(MALFORMED_MODEL_FILES))
def test_a_malformed_model_file_fetched_from_a_second_clone_is_refused_by_rollback(
    ws: Path, tmp_path: Path, attack: str
) -> None:
    path, payload = MALFORMED_MODEL_FILES[attack]
    fetch_from_teammate(ws, tmp_path, path, payload(ws))
    before, models, status = (
        outside_state(tmp_path),
        _models_state(ws),
        git(ws, "status", "--porcelain"),
    )

    shown = mlvs(ws, "snapshot", "show", "evil")  # reads the manifest only, never a model file
    assert shown.returncode == 0 and "evil" in shown.stdout, shown.stderr
    line = _one_error(mlvs(ws, "rollback", "evil"), 2)
    assert path in line and "nothing was changed" in line, line
    assert _models_state(ws) == models
    assert git(ws, "status", "--porcelain") == status
    for command in ("verify", "recover"):
        after = mlvs(ws, command)
        assert after.returncode == 0, after.stdout + after.stderr
    assert outside_state(tmp_path) == before
    assert (tmp_path / "victim").read_text() == "precious\n"


@pytest.mark.parametrize("attack", sorted(HOSTILE_GOLDEN))
def test_a_golden_file_the_model_cannot_match_is_one_finding_of_verify_and_recover(
    ws: Path, tmp_path: Path, attack: str
) -> None:
    make_payload, finding = HOSTILE_GOLDEN[attack]
    payload = make_payload(ws)
    fetch_from_teammate(ws, tmp_path, GOLDEN, payload)
    before = outside_state(tmp_path)

    rolled = mlvs(ws, "rollback", "evil", "--json")  # the recorded bytes land, verified as bytes
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    undo = json.loads(rolled.stdout)["automatic_snapshot"]
    for command in ("verify", "recover"):
        result = mlvs(ws, command)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        named = [line for line in result.stdout.splitlines() if "golden predictions" in line]
        assert len(named) == 1 and finding in named[0], result.stdout
    assert (ws / GOLDEN).read_bytes() == payload  # recover neither hid nor replaced it

    back = mlvs(ws, "rollback", undo)
    assert back.returncode == 0, back.stdout + back.stderr
    assert mlvs(ws, "verify").returncode == 0
    assert outside_state(tmp_path) == before


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_recover_repairs_what_it_can_and_names_what_it_cannot(ws: Path, tmp_path: Path) -> None:
    """Three faults at once: a corrupted data file and a deleted model, both in the DVC cache,
    and a golden file the model cannot score that `dvc.lock` itself records (no good copy exists)."""
    fetch_from_teammate(ws, tmp_path, GOLDEN, HOSTILE_GOLDEN["wrong-columns"][0](ws))
    assert mlvs(ws, "rollback", "evil").returncode == 0
    raw, model = ws / "data" / "raw" / "customer_data.csv", ws / "models" / "model.skops"
    good = {raw: _sha256(raw), model: _sha256(model)}
    raw.write_bytes(raw.read_bytes()[:-200] + b"garbage\n")
    model.unlink()
    before = outside_state(tmp_path)

    result = mlvs(ws, "recover")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert {path: _sha256(path) for path in good} == good  # checked by the test, not by mlvs
    assert "repaired data/raw/customer_data.csv from dvc_cache" in result.stdout, result.stdout
    assert "repaired models/model.skops from dvc_cache" in result.stdout, result.stdout
    remaining = [line for line in result.stdout.splitlines() if "still wrong" in line]
    assert len(remaining) == 1, result.stdout
    assert "golden predictions" in remaining[0] and "cannot score" in remaining[0]
    assert "mlvs rollback NAME" in remaining[0] and "mlvs pipeline" in remaining[0]
    assert outside_state(tmp_path) == before
    assert (tmp_path / "victim").read_text() == "precious\n"
