"""The pieces under snapshots and rollback: manifests, DVC objects, the hash cache, names, parts."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlvs._io import FileHash, copy_checked, copy_verified, durable_writes
from mlvs.backends.dvc import hashcache
from mlvs.backends.dvc.hashcache import (
    HASH_DB,
    PASSED_KEPT,
    WRITTEN_BYTES_WORTH_WAITING_FOR,
    HashCache,
    file_identity,
)
from mlvs.backends.dvc.objects import TEMP_DIR, TEMP_SUFFIX, ObjectStore
from mlvs.backends.dvc.outputs import dir_object, dvc_outputs, output_files
from mlvs.backends.git.refs import MAX_NAME_LENGTH, validate_snapshot_name
from mlvs.backends.mlflow.registry import RegistryState, VersionInfo
from mlvs.backends.uris import safe_uri
from mlvs.errors import BadInputError, IntegrityError
from mlvs.mappings import flatten
from mlvs.ops.rollback.plan import auto_snapshot_name, parse_parts
from mlvs.ops.snapshot.capture import current_environment
from mlvs.ops.snapshot.manifest import (
    FORMAT,
    MAX_MANIFEST_BYTES,
    PARTS,
    Environment,
    FileEntry,
    Manifest,
    OutputEntry,
)
from mlvs.paths import ProjectPaths


def _manifest(**overrides: object) -> Manifest:
    values: dict[str, object] = dict(
        name="base",
        message="a message",
        created_at="2026-01-01T00:00:00.000000Z",
        automatic=False,
        base_commit="a" * 40,
        branch="main",
        outputs={
            "models": OutputEntry(
                "models",
                "train",
                True,
                "dir",
                "a" * 32 + ".dir",
                3,
                nfiles=1,
                matches_dvc_lock=True,
            ),
            "reports/metrics.json": OutputEntry("models", "train", False),
        },
        files={"models/m.bin": FileEntry("1" * 32, "2" * 64, 3, "models")},
        params={"train": {"seed": 1, "nested": {"a": 2}}},
        metrics={"test_f1": 0.5},
        registry=RegistryState(
            "sqlite:///x.db",
            "model",
            VersionInfo("1", "run", "m-1", "models:/m-1"),
            {"champion": VersionInfo("1", "run", "m-1", "models:/m-1")},
        ),
        environment=Environment("3.11.9", "CPython", "Linux", {"mlvs": "0.1.0", "dvc": None}),
    )
    values.update(overrides)
    return Manifest(**values)  # type: ignore[arg-type]


# --- the manifest ----------------------------------------------------------------


def test_manifest_round_trips_through_its_file_bytes() -> None:
    manifest = _manifest()
    document = json.loads(manifest.to_bytes())
    assert document["format"] == FORMAT
    assert "commit" not in document["git"]  # a commit cannot name itself
    again = Manifest.from_dict(document, commit="c" * 40)
    assert again.commit == "c" * 40
    assert again.to_dict() == {
        **manifest.to_dict(),
        "git": {**manifest.to_dict()["git"], "commit": "c" * 40},
    }


def test_manifest_of_an_unknown_format_is_refused() -> None:
    document = json.loads(_manifest().to_bytes())
    document["format"] = "mlvs-snapshot/99"
    with pytest.raises(IntegrityError, match="upgrade mlvs"):
        Manifest.from_dict(document)


def test_manifest_records_read_and_write_the_files_json_unchanged() -> None:
    payload = _manifest().to_bytes()
    document = json.loads(payload)
    assert document["outputs"] == {
        "models": {
            "part": "models",
            "stage": "train",
            "cache": True,
            "kind": "dir",
            "md5": "a" * 32 + ".dir",
            "size": 3,
            "nfiles": 1,
            "matches_dvc_lock": True,
        },
        "reports/metrics.json": {"part": "models", "stage": "train", "cache": False},
    }
    assert document["files"] == {
        "models/m.bin": {"md5": "1" * 32, "sha256": "2" * 64, "size": 3, "output": "models"}
    }
    assert document["dvc"] == {"remote": None, "remote_url": None}
    assert Manifest.from_bytes(payload, commit="c" * 40).to_bytes() == payload


def _damaged(document: dict, path: tuple, value: object) -> dict:
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("files", "models/m.bin", "size"), "3", "files['models/m.bin'].size"),
        (("files", "models/m.bin", "size"), True, "files['models/m.bin'].size"),
        (("files", "models/m.bin", "sha256"), KeyError, "files['models/m.bin'].sha256"),
        (("files", "models/m.bin", "output"), "elsewhere", "files['models/m.bin'].output"),
        (("files", "models/m.bin"), ["md5"], "files['models/m.bin']"),
        (("outputs",), [], "outputs"),
        (("outputs", "models", "cache"), "yes", "outputs['models'].cache"),
        (("outputs", "models", "size"), KeyError, "outputs['models'].size"),
        (("registry", "aliases", "champion", "version"), 1, "registry.aliases['champion'].version"),
        (("registry", "model"), "1", "registry.model"),
        (("environment",), KeyError, "environment"),
        (("environment", "packages", "dvc"), 3, "environment.packages['dvc']"),
        (("git", "branch"), 7, "git.branch"),
        (("name",), KeyError, "name"),
    ],
)
def test_a_manifest_of_the_wrong_shape_is_refused_naming_the_file_and_field(
    path: tuple, value: object, named: str
) -> None:
    document = _damaged(json.loads(_manifest().to_bytes()), path, value)
    with pytest.raises(IntegrityError) as refused:
        Manifest.from_bytes(json.dumps(document).encode(), commit="c" * 40)
    message = str(refused.value)
    assert ".mlvs-snapshot.json of snapshot commit cccccccccccc" in message
    assert named in message


def test_a_manifest_that_is_not_json_is_refused_in_one_line() -> None:
    with pytest.raises(IntegrityError, match=r"\.mlvs-snapshot\.json .*not valid JSON"):
        Manifest.from_bytes(b"{not json", commit="c" * 40)
    with pytest.raises(IntegrityError, match="should be an object"):
        Manifest.from_bytes(b"[1, 2]")
    with pytest.raises(IntegrityError, match="nested too deeply"):
        Manifest.from_bytes(b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(IntegrityError, match="more than the"):
        Manifest.from_bytes(b" " * (MAX_MANIFEST_BYTES + 1))


# --- the environment -------------------------------------------------------------

LOCK = "e" * 64


def _environment(**overrides: object) -> Environment:
    values: dict[str, object] = dict(
        python="3.11.9",
        implementation="CPython",
        platform="Linux",
        packages={"numpy": "2.0.0", "dvc": None},
        uv_lock_sha256=LOCK,
        lock_recorded=True,
    )
    values.update(overrides)
    return Environment(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("lock", [LOCK, None])
def test_the_uv_lock_hash_round_trips_beside_the_versions(lock: str | None) -> None:
    manifest = _manifest(environment=_environment(uv_lock_sha256=lock))
    document = json.loads(manifest.to_bytes())
    assert document["environment"]["uv_lock_sha256"] == lock
    again = Manifest.from_bytes(manifest.to_bytes())
    assert again.environment == manifest.environment
    assert again.to_bytes() == manifest.to_bytes()


def test_a_manifest_written_before_the_lock_hash_reads_and_claims_no_lock_change() -> None:
    document = json.loads(_manifest().to_bytes())
    document["environment"].pop("uv_lock_sha256", None)
    old = Manifest.from_dict(document).environment
    assert old.lock_recorded is False and old.uv_lock_sha256 is None
    assert "uv_lock_sha256" not in old.to_dict()  # written back as it was read
    # An old snapshot is not said to have had another lock file: it recorded none.
    assert old.changes_to(_environment(packages=old.packages, python=old.python)) == {}


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("environment", "uv_lock_sha256"), "abc", "environment.uv_lock_sha256"),
        (("environment", "uv_lock_sha256"), "E" * 64, "environment.uv_lock_sha256"),
        (("environment", "uv_lock_sha256"), "g" * 64, "environment.uv_lock_sha256"),
        (("environment", "uv_lock_sha256"), "e" * 65, "environment.uv_lock_sha256"),
        (("environment", "uv_lock_sha256"), 7, "environment.uv_lock_sha256"),
        (("environment", "packages", "numpy"), "2.0\x1b[31m", "environment.packages['numpy']"),
        (("environment", "packages", "numpy"), "2 0", "environment.packages['numpy']"),
        (("environment", "packages", "numpy"), "9" * 101, "environment.packages['numpy']"),
        (("environment", "packages", "numpy"), "", "environment.packages['numpy']"),
        (("environment", "packages", "\x1b[2Jnumpy"), "1", "environment.packages["),
        (("environment", "packages", "a" * 101), "1", "environment.packages["),
        (("environment", "packages", ""), "1", "environment.packages['']"),
    ],
)
def test_a_bad_lock_hash_or_package_entry_is_refused_in_one_line(
    path: tuple, value: object, named: str
) -> None:
    manifest = _manifest(environment=_environment())
    document = _damaged(json.loads(manifest.to_bytes()), path, value)
    with pytest.raises(IntegrityError) as refused:
        Manifest.from_bytes(json.dumps(document).encode(), commit="c" * 40)
    message = str(refused.value)
    assert named in message and "\n" not in message and "\x1b" not in message
    assert ".mlvs-snapshot.json of snapshot commit cccccccccccc" in message


def test_environment_changes_name_python_each_package_and_the_lock() -> None:
    old = _environment()
    new = _environment(
        python="3.12.1",
        packages={"numpy": "2.1.0", "dvc": "3.0.0", "pandas": "2.2.0"},
        uv_lock_sha256=None,
    )
    assert old.changes_to(new) == {
        "python": ("3.11.9", "3.12.1"),
        "packages.dvc": (None, "3.0.0"),
        "packages.numpy": ("2.0.0", "2.1.0"),
        "packages.pandas": (None, "2.2.0"),
        "uv_lock_sha256": (LOCK, None),
    }
    assert old.changes_to(_environment(platform="Linux-6.9")) == {}  # a kernel update


def test_the_current_environment_records_the_lock_hash_read_once_and_null_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = ProjectPaths(tmp_path)
    without = current_environment(paths)
    assert without.lock_recorded and without.uv_lock_sha256 is None
    (tmp_path / "uv.lock").write_bytes(b"version = 1\n")
    time.sleep(0.1)  # past the window in which a same-tick change could hide
    first = current_environment(paths)
    assert first.uv_lock_sha256 == hashlib.sha256(b"version = 1\n").hexdigest()
    assert first.packages == without.packages  # the versions come from the cache in .mlvs/

    def no_reading(path: object) -> None:
        raise AssertionError("an unchanged uv.lock was read again")

    monkeypatch.setattr(hashcache, "hash_file", no_reading)
    assert current_environment(paths) == first


def test_manifest_knows_the_part_of_each_tracked_path() -> None:
    manifest = _manifest()
    assert manifest.part_of("models/m.bin") == "models"
    assert manifest.part_of("models") == "models"
    assert manifest.part_of("modelsx/m.bin") is None
    assert manifest.model_version == "1"


def test_flatten_turns_nested_params_into_dotted_keys() -> None:
    assert flatten({"train": {"seed": 1, "rf": {"n": 2}}, "empty": {}}) == {
        "train.seed": 1,
        "train.rf.n": 2,
        "empty": {},
    }


def test_registry_state_round_trips() -> None:
    state = _manifest().registry
    assert RegistryState.from_dict(state.to_dict()) == state
    assert state.alias_versions() == {"champion": "1"}


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            "https://user:secret@mlflow.example.com:5000/path?token=abc",
            "https://mlflow.example.com:5000/path",
        ),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("postgresql://me:pw@db/mlflow", "postgresql://db/mlflow"),
    ],
)
def test_tracking_uris_lose_their_credentials(uri: str, shown: str) -> None:
    assert safe_uri(uri) == shown


# --- DVC objects -------------------------------------------------------------------


def test_dir_object_is_byte_identical_to_dvcs_own() -> None:
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    members = {"b.csv": "0" * 32, "a/x.json": "1" * 32, "a/y.json": "2" * 32}
    tree = Tree()
    for relpath, md5 in members.items():
        tree.add(tuple(relpath.split("/")), Meta(), HashInfo("md5", md5))
    tree.digest()
    name, payload = dir_object(members)
    assert payload == tree.as_bytes()
    assert name == tree.hash_info.value


def _project(tmp_path: Path, dvc_yaml: str, config: str = "") -> ProjectPaths:
    root = tmp_path / "p"
    (root / "params").mkdir(parents=True)
    (root / ".dvc").mkdir()
    (root / "dvc.yaml").write_text(dvc_yaml)
    (root / ".dvc" / "config").write_text(config)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return ProjectPaths(root)


def test_outputs_come_from_stages_and_dvc_files_with_their_parts(tmp_path: Path) -> None:
    paths = _project(
        tmp_path,
        "stages:\n"
        "  prepare:\n    cmd: x\n    outs:\n      - data/raw.csv\n      - data/processed\n"
        "  train:\n    cmd: y\n    outs:\n      - models\n    metrics:\n      - reports/metrics.json:\n          cache: false\n",
    )
    (paths.root / "extra").mkdir()
    (paths.root / "extra" / "big.bin.dvc").write_text("outs:\n- md5: abc\n  path: big.bin\n")
    outputs = {o.path: (o.stage, o.cache, o.part) for o in dvc_outputs(paths)}
    assert outputs == {
        "data/raw.csv": ("prepare", True, "data"),
        "data/processed": ("prepare", True, "data"),
        "models": ("train", True, "models"),
        "reports/metrics.json": ("train", False, "models"),  # it describes the model it came with
        "extra/big.bin": (None, True, "data"),
    }


def test_output_files_skip_interrupted_temporaries(tmp_path: Path) -> None:
    (tmp_path / "out" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "a.csv").write_text("a")
    (tmp_path / "out" / "sub" / "b.csv").write_text("b")
    (tmp_path / "out" / f"x{TEMP_SUFFIX}").write_text("partial")
    assert output_files(tmp_path, "out") == ["out/a.csv", "out/sub/b.csv"]
    assert output_files(tmp_path, "missing") == []


def test_object_store_finds_a_relative_local_remote_and_hides_remote_credentials(
    tmp_path: Path,
) -> None:
    paths = _project(
        tmp_path,
        "stages: {}\n",
        "[core]\n    remote = local\n['remote \"local\"']\n    url = ../store\n",
    )
    store = ObjectStore(paths)
    assert store.remote is not None and store.remote.directory == (paths.root / "store").resolve()
    assert store.cache_path(
        "ab" + "c" * 30
    ) == paths.root / ".dvc" / "cache" / "files" / "md5" / "ab" / ("c" * 30)
    (paths.root / ".dvc" / "config").write_text(
        "[core]\n    remote = s3\n['remote \"s3\"']\n    url = s3://key:secret@bucket/path\n"
    )
    remote = ObjectStore(paths).remote
    assert remote is not None and remote.directory is None and "secret" not in remote.url


def test_put_file_refuses_a_source_whose_bytes_changed(tmp_path: Path) -> None:
    paths = _project(tmp_path, "stages: {}\n")
    source = paths.root / "f.bin"
    source.write_bytes(b"hello")
    store = ObjectStore(paths)
    md5 = hashlib.md5(b"hello").hexdigest()
    store.put_file(md5, hashlib.sha256(b"hello").hexdigest(), [source])
    assert store.cache_path(md5).read_bytes() == b"hello"
    assert not os.access(store.cache_path(md5), os.W_OK) or os.geteuid() == 0
    with pytest.raises(IntegrityError, match="changed while"):
        store.put_file("0" * 32, "0" * 64, [source])
    assert not (store.cache / TEMP_DIR).exists()  # no partial object, no empty directory left


# --- the hash cache ------------------------------------------------------------------


def test_hash_cache_does_not_read_an_unchanged_file_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = ProjectPaths(tmp_path)
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 1000)
    time.sleep(0.1)  # past the window in which a same-tick change could hide
    cache = HashCache(paths)
    first = cache.file_hash("data.bin")
    assert first.sha256 == hashlib.sha256(b"x" * 1000).hexdigest()
    assert first.md5 == hashlib.md5(b"x" * 1000).hexdigest()
    cache.close()

    def no_reading(path: object) -> None:
        raise AssertionError("an unchanged file was read again")

    monkeypatch.setattr(hashcache, "hash_file", no_reading)
    again = HashCache(paths)  # a later command: a new connection to the same cache
    assert again.file_hash("data.bin") == first
    again.close()


@pytest.mark.parametrize(
    ("md5", "sha256"),
    [("01/../../../../victim", "b" * 64), ("a" * 32, "1 OR 1"), ("A" * 32, "b" * 64)],
)
def test_a_hash_cache_record_that_is_not_two_digests_is_a_miss(
    tmp_path: Path, md5: str, sha256: str
) -> None:
    paths = ProjectPaths(tmp_path)
    data = tmp_path / "data.bin"
    data.write_bytes(b"a" * 100)
    cache = HashCache(paths)
    info = os.stat(data)
    cache.remember("data.bin", info, FileHash(md5, sha256, 100), info.st_ctime_ns + 1_000_000_000)
    # The record's stat matches, but its values are no digests: the file is hashed again.
    assert cache.file_hash("data.bin") == FileHash(
        hashlib.md5(b"a" * 100).hexdigest(), hashlib.sha256(b"a" * 100).hexdigest(), 100
    )
    cache.close()


def test_hash_cache_reuses_an_old_entry_and_rehashes_a_changed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = ProjectPaths(tmp_path)
    data = tmp_path / "data.bin"
    data.write_bytes(b"a" * 100)
    cache = HashCache(paths)
    info = os.stat(data)
    # Pretend it was hashed a second after its last change: outside the racy window.
    hashed = FileHash("a" * 32, "b" * 64, 100)
    cache.remember("data.bin", info, hashed, info.st_ctime_ns + 1_000_000_000)
    assert cache.file_hash("data.bin") == hashed  # remembered: not read
    # Same size, mtime put back: ctime still moves, so the file is read again.
    data.write_bytes(b"b" * 100)
    os.utime(data, ns=(info.st_atime_ns, info.st_mtime_ns))
    fresh = cache.file_hash("data.bin")
    assert fresh.sha256 == hashlib.sha256(b"b" * 100).hexdigest()
    cache.close()


def test_hash_cache_forgets_nothing_it_should_not_trust(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path)
    data = tmp_path / "data.bin"
    data.write_bytes(b"z")
    cache = HashCache(paths)
    info = os.stat(data)
    cache.remember(
        "data.bin", info, FileHash("a" * 32, "b" * 64, 1), info.st_ctime_ns
    )  # changed just now: racy
    assert cache.file_hash("data.bin").sha256 == hashlib.sha256(b"z").hexdigest()
    cache.close()


def test_a_corrupt_hash_cache_is_rebuilt(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path)
    paths.state.mkdir()
    (paths.state / HASH_DB).write_bytes(b"not a database" * 100)
    (tmp_path / "f").write_bytes(b"q")
    cache = HashCache(paths)
    assert cache.file_hash("f").sha256 == hashlib.sha256(b"q").hexdigest()
    cache.close()


def test_a_passed_check_is_remembered_by_its_fingerprint_only(tmp_path: Path) -> None:
    cache = HashCache(ProjectPaths(tmp_path))
    assert not cache.check_passed("f1")
    cache.remember_passed("schema", "f1")
    assert cache.check_passed("f1") and not cache.check_passed("f2")
    for i in range(PASSED_KEPT + 5):
        cache.remember_passed("schema", f"later-{i}")
    assert not cache.check_passed("f1")  # only the newest few per check are kept
    cache.close()


def test_an_md5_seen_with_two_contents_is_never_proved_by_sha256_again(tmp_path: Path) -> None:
    md5, s, t = "a" * 32, "b" * 64, "c" * 64
    cache = HashCache(ProjectPaths(tmp_path))
    assert cache.known_object(md5) is None
    cache.remember_object(FileHash(md5, s, 1))
    assert cache.known_object(md5) == FileHash(md5, s, 1)
    cache.remember_object(FileHash(md5, t, 1))  # a collision: MD5 allows them
    assert cache.known_object(md5) is None
    cache.remember_object(FileHash(md5, s, 1))
    assert cache.known_object(md5) is None
    cache.close()


def test_hashing_a_file_remembers_which_sha256_its_md5_stands_for(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"payload")
    cache = HashCache(ProjectPaths(tmp_path))
    hashed = cache.file_hash("f")
    assert cache.known_object(hashlib.md5(b"payload").hexdigest()) == hashed
    cache.close()


def test_written_files_are_remembered_only_while_they_are_the_file_that_was_verified(
    tmp_path: Path,
) -> None:
    paths = ProjectPaths(tmp_path)
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    big.write_bytes(os.urandom(WRITTEN_BYTES_WORTH_WAITING_FOR))
    small.write_bytes(b"s")
    cache = HashCache(paths)
    claimed = FileHash("a" * 32, "b" * 64, big.stat().st_size)
    changed = FileHash("c" * 32, "d" * 64, 1)
    small_identity = file_identity(small)
    small.write_bytes(b"t")  # changed after it was verified: not the verified file any more
    os.utime(small, ns=(0, 1))
    cache.remember_written(
        [("big.bin", claimed, file_identity(big)), ("small.bin", changed, small_identity)]
    )
    assert cache.file_hash("big.bin") == claimed  # trusted by its unchanged stat, not read
    assert cache.file_hash("small.bin").sha256 == hashlib.sha256(b"t").hexdigest()
    cache.close()


@pytest.mark.parametrize("size", [0, 5, (64 << 20) + 5])
def test_checked_copy_gives_both_hashes_of_what_landed(tmp_path: Path, size: int) -> None:
    source, copy = tmp_path / "source", tmp_path / "copy"
    payload = os.urandom(size)
    source.write_bytes(payload)
    hashed = copy_checked(source, copy, durable=False, with_md5=True)
    assert hashed == FileHash(
        hashlib.md5(payload).hexdigest(), hashlib.sha256(payload).hexdigest(), size
    )
    assert copy.read_bytes() == payload


# --- names and parts -----------------------------------------------------------------


def test_automatic_snapshot_names_are_valid_unique_and_short_enough() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert auto_snapshot_name("best", set(), now) == "auto-20260102T030405Z-before-best"
    assert auto_snapshot_name("best", {"auto-20260102T030405Z-before-best"}, now).endswith("-2")
    long_name = "x" * MAX_NAME_LENGTH
    name = auto_snapshot_name(long_name, set(), now)
    assert len(name) <= MAX_NAME_LENGTH and validate_snapshot_name(name) == name
    dotted = auto_snapshot_name("a" * 60 + "." + "b" * 60, set(), now)
    assert validate_snapshot_name(dotted) == dotted


def test_automatic_snapshot_names_do_not_nest() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    nested = "auto-20260101T000000Z-before-auto-20251231T000000Z-before-baseline"
    assert auto_snapshot_name(nested, set(), now) == "auto-20260102T030405Z-before-baseline"
    # A user's own name that merely starts like one is kept whole.
    assert auto_snapshot_name("auto-tuned", set(), now) == "auto-20260102T030405Z-before-auto-tuned"


def test_parts_default_to_all_and_unknown_parts_are_refused() -> None:
    assert parse_parts(None) == set(PARTS)
    assert parse_parts("models, registry") == {"models", "registry"}
    assert parse_parts(["data"]) == {"data"}
    with pytest.raises(BadInputError, match="unknown part"):
        parse_parts("models,weights")
    with pytest.raises(BadInputError, match="no part"):
        parse_parts(",")


@pytest.mark.parametrize("size", [0, 1, 4095, 4097, (64 << 20) + 5])
@pytest.mark.parametrize("durable", [True, False])
def test_verified_copy_hashes_what_landed(tmp_path: Path, size: int, durable: bool) -> None:
    source, copy = tmp_path / "source", tmp_path / "copy"
    source.write_bytes(os.urandom(size))
    assert copy_verified(source, copy, durable) == hashlib.sha256(source.read_bytes()).hexdigest()
    assert copy.read_bytes() == source.read_bytes()
    with pytest.raises(FileExistsError):  # never over an existing file: callers rename into place
        copy_verified(source, copy, durable)


@pytest.mark.parametrize(
    ("value", "durable"), [(None, True), ("1", True), ("0", False), ("off", False), ("no", False)]
)
def test_durable_writes_are_the_default(
    monkeypatch: pytest.MonkeyPatch, value: str | None, durable: bool
) -> None:
    if value is None:
        monkeypatch.delenv("MLVS_FSYNC", raising=False)
    else:
        monkeypatch.setenv("MLVS_FSYNC", value)
    assert durable_writes() is durable


# --- the git pieces snapshots add ------------------------------------------------------------


def _repository(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "a.txt").write_text("a\n")
    subprocess.run(["git", "add", "a.txt"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "one"], cwd=root, check=True, env=env)
    return root


def test_extra_files_go_into_the_commit_only(tmp_path: Path) -> None:
    from mlvs.backends.git.tree import commit_worktree, read_files_at

    root = _repository(tmp_path)
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True
    ).stdout
    sha = commit_worktree(root, "snap", extra_files={".manifest.json": b'{"x": 1}\n'})
    assert read_files_at(
        root, [(sha, ".manifest.json"), (sha, "a.txt"), (sha, "nope"), (sha, ".")]
    ) == [b'{"x": 1}\n', b"a\n", None, None]
    assert not (root / ".manifest.json").exists()
    assert (
        subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True
        ).stdout
        == status
    )
    with pytest.raises(BadInputError):
        commit_worktree(root, "snap", extra_files={"../escape": b""})


def test_a_snapshot_commit_with_a_damaged_manifest_is_refused_in_one_line(tmp_path: Path) -> None:
    from mlvs.backends.git.tree import commit_worktree
    from mlvs.ops.snapshot.read import manifest_at

    root = _repository(tmp_path)
    document = json.loads(_manifest().to_bytes())
    document["files"]["models/m.bin"]["md5"] = None
    sha = commit_worktree(
        root, "snap", extra_files={".mlvs-snapshot.json": json.dumps(document).encode()}
    )
    with pytest.raises(IntegrityError, match=r"files\['models/m.bin'\]\.md5 should be a string"):
        manifest_at(ProjectPaths(root), sha)
