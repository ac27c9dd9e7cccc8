"""Several commands at once: changes are serialised by the state lock, reads never wait for it.

A rollback is held open under the lock (`MLVS_PAUSE` stops it at a journal step
until the test releases it). While it waits there, four `snapshot create`, a `recover`
and a second rollback are started together, and `verify`, `snapshot list` and
`snapshot show` run. Every change either finishes, or, when its lock timeout is
shorter than the wait, fails with the lock message alone and changes nothing.
Afterwards every snapshot that reported success exists, is complete (commit,
manifest, cached objects with the recorded bytes) and the project verifies.

A drill and `mlvs run` hold the lock too, for as long as they change the workspace:
a rollback or a snapshot started meanwhile waits for them (or, impatient, gives up
with the lock message) and nothing either of them did is lost.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, clean_env, copy_workspace, git, mlvs

from mlvs.state.lock import HOLDER_FILE

pytestmark = pytest.mark.slow

PAUSE_SECONDS = 120.0  # at most: the test releases the held command as soon as its reads are done
LOCK_MESSAGE = "another mlvs command is changing this project"


def held(root: Path, step: str) -> tuple[dict[str, str], Path]:
    """The environment that holds a command at journal step `step`, and the file that releases it."""
    release = root.parent / f"release-{step.replace(':', '-')}"
    return {
        "MLVS_PAUSE": step,
        "MLVS_PAUSE_SECONDS": str(PAUSE_SECONDS),
        "MLVS_PAUSE_RELEASE": str(release),
    }, release


def start(root: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "mlvs"), *args],
        cwd=root,
        env={**clean_env(root), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_step(
    root: Path, step: str, holder: subprocess.Popen[str], timeout: float = 120
) -> None:
    """Until the journal says the held command reached `step` (it holds the lock from before then)."""
    journal = root / ".mlvs" / "journal.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert holder.poll() is None, holder.communicate()
        try:
            # JSON lines: the last complete line holds the step reached.
            if json.loads(journal.read_text().splitlines()[-1]).get("step") == step:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"the held command never reached {step}")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for_lock(root: Path, holder: subprocess.Popen[str], timeout: float = 60) -> None:
    """Until `holder` holds the state lock (its holder publishes the token file beside it)."""
    published = root / ".mlvs" / HOLDER_FILE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert holder.poll() is None, holder.communicate()
        if published.is_file():
            return
        time.sleep(0.05)
    raise AssertionError("the command never took the state lock")


def refused_for_the_lock(proc: subprocess.Popen[str]) -> None:
    """`proc` gave up waiting for the lock: exit 1 and the lock message as its one error line."""
    stdout, stderr = proc.communicate(timeout=120)
    errors = [line for line in stderr.splitlines() if line.startswith("mlvs: error:")]
    assert proc.returncode == 1, stdout + stderr
    assert len(errors) == 1 and LOCK_MESSAGE in errors[0], stderr


def snapshot_refs(root: Path) -> dict[str, str]:
    out = git(root, "for-each-ref", "--format=%(refname) %(objectname)", "refs/mlvs/snapshots")
    return {
        ref.removeprefix("refs/mlvs/snapshots/"): sha
        for ref, sha in (line.split() for line in out.splitlines())
    }


def snapshot_problems(root: Path, name: str) -> list[str]:
    """Snapshot `name` is whole: its commit holds its manifest, every object it names is cached with its bytes."""
    shown = mlvs(root, "snapshot", "show", name, "--json")
    if shown.returncode != 0:
        return [f"`snapshot show {name}` exit {shown.returncode}: {shown.stderr[-300:]}"]
    manifest = json.loads(shown.stdout)
    problems = []
    if manifest["name"] != name or manifest["git"]["commit"] != snapshot_refs(root).get(name):
        problems.append(
            f"{name}: manifest names {manifest['name']!r} at {manifest['git']['commit']}"
        )
    for path, recorded in manifest["files"].items():
        cached = (
            root / ".dvc" / "cache" / "files" / "md5" / recorded["md5"][:2] / recorded["md5"][2:]
        )
        if (
            not cached.is_file()
            or hashlib.sha256(cached.read_bytes()).hexdigest() != recorded["sha256"]
        ):
            problems.append(f"{name}: the cached bytes of {path} are missing or wrong")
    committed = subprocess.run(
        ["git", "cat-file", "-e", f"refs/mlvs/snapshots/{name}:dvc.lock"],
        cwd=root,
        env=clean_env(root),
        capture_output=True,
    )
    if committed.returncode != 0:
        problems.append(f"{name}: its commit has no dvc.lock")
    return problems


@pytest.fixture
def ws(_trained_template: Path, tmp_path: Path) -> Path:
    """A trained workspace with snapshot `base`, then a newer state: edited code and params."""
    root = copy_workspace(_trained_template, tmp_path / "ws")
    mlvs(root, "snapshot", "create", "base", check=True)
    (root / "README.md").write_text((root / "README.md").read_text() + "\nedited\n")
    params = root / "params" / "prepare.yaml"
    params.write_text(params.read_text() + "# note\n")
    return root


def test_changes_started_together_are_serialised_and_reads_go_on_meanwhile(ws: Path) -> None:
    refs_before = snapshot_refs(ws)
    hold, release = held(ws, "rollback:staged")
    holder = start(ws, "rollback", "base", **hold)
    wait_for_step(ws, "staged", holder)
    patient = {"MLVS_LOCK_TIMEOUT": "120"}
    impatient = {"MLVS_LOCK_TIMEOUT": "0.5"}
    changes = {
        "snapshot c1": start(ws, "snapshot", "create", "c1", **patient),
        "snapshot c2": start(ws, "snapshot", "create", "c2", **patient),
        "snapshot c3": start(ws, "snapshot", "create", "c3", **impatient),
        "snapshot c4": start(ws, "snapshot", "create", "c4", **impatient),
        "recover": start(ws, "recover", **patient),
        "rollback params": start(ws, "rollback", "base", "--only", "params", **patient),
    }

    # While the rollback holds the lock (and the others wait for it), reads answer at once and correctly.
    reads_started = time.monotonic()
    verified = mlvs(ws, "verify", "--json")
    listed = mlvs(ws, "snapshot", "list", "--json")
    shown = mlvs(ws, "snapshot", "show", "base", "--json")
    reads_took = time.monotonic() - reads_started
    assert holder.poll() is None, (
        "the held rollback ended before the reads: they did not overlap it"
    )
    # The impatient two gave up meanwhile; the others still wait for the lock.
    for name in ("snapshot c3", "snapshot c4"):
        changes[name].wait(timeout=60)
    assert all(
        changes[name].poll() is None
        for name in changes
        if name not in ("snapshot c3", "snapshot c4")
    )
    release.touch()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["healthy"] is True
    assert listed.returncode == 0, listed.stderr
    assert [m["name"] for m in json.loads(listed.stdout)] == sorted(refs_before)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["git"]["commit"] == refs_before["base"]
    assert reads_took < 60

    outputs = {
        name: proc.communicate(timeout=300) for name, proc in {"holder": holder, **changes}.items()
    }
    codes = {name: proc.returncode for name, proc in {"holder": holder, **changes}.items()}
    for name, (stdout, stderr) in outputs.items():
        assert "Traceback" not in stdout + stderr, f"{name}: {stderr}"
    assert codes["holder"] == 0, outputs["holder"]
    assert codes["recover"] == 0, outputs["recover"]
    assert codes["rollback params"] == 0, outputs["rollback params"]
    for name in ("snapshot c1", "snapshot c2"):
        assert codes[name] == 0, outputs[name]
    for name in ("snapshot c3", "snapshot c4"):
        errors = [line for line in outputs[name][1].splitlines() if line.startswith("mlvs: error:")]
        assert codes[name] == 1, outputs[name]
        assert len(errors) == 1 and LOCK_MESSAGE in errors[0], outputs[name][1]

    refs = snapshot_refs(ws)
    assert {"c1", "c2"} <= set(refs) and not {"c3", "c4"} & set(refs), sorted(refs)
    automatic = {r for r in refs if r.startswith("auto-")}
    assert len(automatic) == 2, sorted(refs)  # one before each rollback, none lost, none extra
    assert set(refs) == set(refs_before) | {"c1", "c2"} | automatic
    for name in sorted(set(refs) - set(refs_before)):
        assert not snapshot_problems(ws, name), snapshot_problems(ws, name)
    assert not (ws / ".mlvs" / "journal.json").exists()
    final = mlvs(ws, "verify")
    assert final.returncode == 0, final.stdout + final.stderr


def test_reads_answer_while_a_snapshot_is_being_written(ws: Path) -> None:
    hold, release = held(ws, "snapshot:stored")
    holder = start(ws, "snapshot", "create", "held", **hold)
    wait_for_step(ws, "stored", holder)
    listed = mlvs(ws, "snapshot", "list", "--json")
    shown = mlvs(ws, "snapshot", "show", "held")
    verified = mlvs(ws, "verify", "--only", "file_hash,dvc_cache")
    assert holder.poll() is None, "the held snapshot ended before the reads"
    # The unfinished snapshot is invisible until its ref is saved: no half snapshot is ever listed.
    assert [m["name"] for m in json.loads(listed.stdout)] == ["base"], listed.stdout
    assert shown.returncode == 2 and "no snapshot named 'held'" in shown.stderr, shown.stderr
    assert verified.returncode == 0, verified.stdout
    release.touch()
    _, stderr = holder.communicate(timeout=120)
    assert holder.returncode == 0, stderr
    assert not snapshot_problems(ws, "held")


def test_a_rollback_waits_for_a_drill_from_its_injection_to_its_verification(ws: Path) -> None:
    model = ws / "models" / "model.skops"
    healthy_model = sha256_of(model)
    hold, release = held(ws, "drill:injected")
    drill = start(ws, "drill", "model_bit_flips", "--json", **hold)
    wait_for_lock(ws, drill)
    deadline = time.monotonic() + 90
    while sha256_of(model) == healthy_model:  # the drill is held right after its injection
        assert drill.poll() is None and time.monotonic() < deadline, drill.communicate()
        time.sleep(0.1)
    patient = start(ws, "rollback", "base", "--json", MLVS_LOCK_TIMEOUT="120")
    impatient = start(ws, "rollback", "base", MLVS_LOCK_TIMEOUT="0.5")

    refused_for_the_lock(impatient)
    assert patient.poll() is None, "the rollback did not wait for the drill"
    assert sha256_of(model) != healthy_model  # nothing restored the model behind the drill's back
    assert not any(name.startswith("auto-") for name in snapshot_refs(ws))
    release.touch()

    drilled, rolled = drill.communicate(timeout=180), patient.communicate(timeout=180)
    assert drill.returncode == 0, drilled
    (record,) = json.loads(drilled[0])["drills"]
    assert record["recovered"] and record["verification"]["byte_identical"], record
    assert patient.returncode == 0, rolled
    assert json.loads(rolled[0])["verified"] is True
    assert sha256_of(model) == healthy_model
    assert (ws / "README.md").read_text() == git(ws, "show", "refs/mlvs/snapshots/base:README.md")
    automatic = [name for name in snapshot_refs(ws) if name.startswith("auto-")]
    assert len(automatic) == 1 and not snapshot_problems(ws, automatic[0])
    final = mlvs(ws, "verify")
    assert final.returncode == 0, final.stdout + final.stderr


def test_a_snapshot_waits_for_a_notebook_run_and_both_are_kept(ws: Path) -> None:
    # The notebook is held inside its prepare step, under the lock of `mlvs run`.
    hold, release = held(ws, "prepare:preprocess")
    run = start(ws, "run", "01_prepare", "--json", **hold)
    wait_for_lock(ws, run)
    patient = start(ws, "snapshot", "create", "after-run", MLVS_LOCK_TIMEOUT="120")
    impatient = start(ws, "snapshot", "create", "during-run", MLVS_LOCK_TIMEOUT="0.5")

    refused_for_the_lock(impatient)
    assert patient.poll() is None, "the snapshot did not wait for the run"
    assert "after-run" not in snapshot_refs(ws)
    release.touch()

    ran, snapped = run.communicate(timeout=180), patient.communicate(timeout=180)
    assert run.returncode == 0, ran
    result = json.loads(ran[0])
    assert result["run_id"] and Path(result["report"]).is_file()
    assert patient.returncode == 0, snapped
    refs = snapshot_refs(ws)
    assert "after-run" in refs and "during-run" not in refs, sorted(refs)
    assert not snapshot_problems(ws, "after-run")
    final = mlvs(ws, "verify")
    assert final.returncode == 0, final.stdout + final.stderr
