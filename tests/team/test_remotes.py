"""DVC remotes over the network: OpenSSH and S3 on loopback, reached through a link that can fail.

Each remote is a real server started here: OpenSSH's `sshd` (Debian's
`openssh-server`, installed by `.ci/system-deps`) with its own config, a throwaway
host key and a throwaway client key in a temporary directory, on a free port; and
moto's S3 server (`moto[server]`), an S3 emulator speaking the S3 HTTP protocol. DVC
reaches either through a TCP relay that the tests cut mid-push. The credentials (the
client's private key, the S3 secret key) live in `.dvc/config.local` only, as DVC
documents; the tests grep the workspace and the MLflow store for them.

One trained workspace per remote is built for the module: its pipeline pushes to
the remote and it takes snapshot `first`. Tests that damage a workspace work on
their own copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, clean_env, copy_workspace, git

from team.conftest import FlakyLink, free_port, stop_process

pytestmark = pytest.mark.slow

SSHD = Path("/usr/sbin/sshd")
BUCKET = "mlvs-remote"
SNAPSHOT_REFS = "refs/mlvs/snapshots/*:refs/mlvs/snapshots/*"
# What a snapshot restores byte for byte: the DVC-tracked data and model.
OUTPUTS = (
    "data/raw/customer_data.csv",
    "data/processed/train.csv",
    "data/processed/test.csv",
    "models/model.skops",
    "models/model_card.json",
    "models/golden_predictions.json",
)


def output_hashes(root: Path) -> dict[str, str | None]:
    """SHA-256 of the data and model files, computed here (a missing file is None)."""
    return {
        rel: hashlib.sha256((root / rel).read_bytes()).hexdigest()
        if (root / rel).is_file()
        else None
        for rel in OUTPUTS
    }


def lock_md5s(root: Path) -> dict[str, str]:
    """Each DVC-tracked file's MD5 as `dvc.lock` records it (path -> md5), read here."""
    import yaml

    found = {}
    for stage in yaml.safe_load((root / "dvc.lock").read_text())["stages"].values():
        for out in stage.get("outs", []):
            if out["path"].startswith(("data/", "models")):  # the metrics are kept by git, not DVC
                found[out["path"]] = out["md5"]
    return found


def cache_object(root: Path, md5: str) -> Path:
    return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            pytest.fail(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


class CuttableLink(FlakyLink):
    """The relay, also able to go down once the client has sent a number of bytes (mid-upload)."""

    def __init__(self, target_port: int) -> None:
        self.budget: int | None = None
        self.sent = 0
        super().__init__(target_port)

    def cut_after_sent(self, n_bytes: int) -> None:
        """Go down once `n_bytes` more have come from clients, whatever the protocol."""
        self.sent, self.budget = 0, n_bytes

    def restore(self) -> None:
        self.budget = None
        super().restore()

    def go_down(self) -> None:
        # A listener closed while a thread waits in accept() stays bound until the wait ends:
        # shut it down first, so that `restore` can listen on the same port at once.
        listener = self._listener
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
        super().go_down()

    def _pump(self, source: Any, sink: Any, armed: threading.Event, from_client: bool) -> None:
        if not from_client:
            super()._pump(source, sink, armed, from_client)
            return
        while not self.cut.is_set():
            try:
                chunk = source.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            self.sent += len(chunk)
            if self.budget is not None and self.sent > self.budget:
                self.go_down()
                break
            try:
                sink.sendall(chunk)
            except OSError:
                break
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@dataclass
class Remote:
    """A running remote server: how DVC reaches it, and the secret that must never leak."""

    kind: str
    url: str
    config: dict[str, str]  # the remote's settings beside the url, in .dvc/config
    local_config: dict[str, str]  # its credentials, in .dvc/config.local only
    secret: str
    link: CuttableLink

    def objects(self) -> dict[str, bytes]:
        """Every object the remote holds (md5 -> bytes), read by the test from the server itself."""
        raise NotImplementedError


@dataclass
class SshRemote(Remote):
    directory: Path | None = None

    def objects(self) -> dict[str, bytes]:
        # sshd serves this machine's own files: the test reads the remote's directory directly.
        assert self.directory is not None
        base = self.directory / "files" / "md5"
        return {
            p.parent.name + p.name: p.read_bytes()
            for p in base.glob("*/*")
            if p.is_file() and len(p.parent.name) == 2
        }


@dataclass
class S3Remote(Remote):
    endpoint: str = ""

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.local_config["access_key_id"],
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
        )

    def objects(self) -> dict[str, bytes]:
        client = self.client()
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                parts = item["Key"].split("/")
                if parts[-3:-2] == ["md5"] or (len(parts) >= 2 and len(parts[-2]) == 2):
                    body = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
                    found[parts[-2] + parts[-1]] = body
        return found


def start_sshd(home: Path) -> tuple[subprocess.Popen[bytes], int, Path, Path]:
    """OpenSSH's server with its own config, host key and authorized client key; loopback only."""
    if not SSHD.is_file():
        pytest.fail(
            "OpenSSH's server is not installed (/usr/sbin/sshd); run `.ci/system-deps` "
            "or `apt-get install openssh-server`, then run the tests again"
        )
    keys = home / "keys"
    keys.mkdir(mode=0o700)
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True
        )
    shutil.copy(keys / "client_key.pub", keys / "authorized_keys")
    port = free_port()
    config = home / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host_key'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPidFile {home / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
        "MaxStartups 100\nLogLevel ERROR\n"
    )
    if os.geteuid() == 0:
        # sshd started as root wants its privilege-separation directory, which the
        # package's service unit creates at boot; no service runs here.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = home / "sshd.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(port, process, log, "sshd")
    return process, port, keys / "client_key", log


def start_moto(home: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = home / "moto.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=clean_env(home),
        )
    wait_for_port(port, process, log, "moto's S3 server")
    return process, port


@pytest.fixture(scope="module")
def ssh_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    home = tmp_path_factory.mktemp("sshd")
    process, port, key, _ = start_sshd(home)
    link = CuttableLink(port)
    directory = home / "remote"
    directory.mkdir()
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    try:
        yield SshRemote(
            kind="ssh",
            url=f"ssh://{user}@127.0.0.1:{link.port}{directory}",
            config={},
            local_config={"keyfile": str(key)},
            # The key's base64 body, without its armour lines: the secret itself.
            secret="".join(key.read_text().splitlines()[1:-1]),
            link=link,
            directory=directory,
        )
    finally:
        link.close()
        stop_process(process)


@pytest.fixture(scope="module")
def s3_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    home = tmp_path_factory.mktemp("s3")
    process, port = start_moto(home)
    link = CuttableLink(port)
    secret = "mlvsTEST" + hashlib.sha256(os.urandom(16)).hexdigest()[:32]
    remote = S3Remote(
        kind="s3",
        url=f"s3://{BUCKET}/store",
        config={"endpointurl": f"http://127.0.0.1:{link.port}", "region": "us-east-1"},
        local_config={"access_key_id": "AKIAMLVSTESTKEY00001", "secret_access_key": secret},
        secret=secret,
        link=link,
        endpoint=f"http://127.0.0.1:{port}",
    )
    remote.client().create_bucket(Bucket=BUCKET)
    try:
        yield remote
    finally:
        link.close()
        stop_process(process)


def dvc(root: Path, *args: str) -> str:
    result = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=root, env=clean_env(root), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def use_remote(root: Path, remote: Remote, commit: bool = True) -> None:
    """Make `remote` the workspace's default DVC remote; its credentials only in config.local."""
    if commit:
        dvc(root, "remote", "add", "-d", "-f", "shared", remote.url)
        for key, value in remote.config.items():
            dvc(root, "remote", "modify", "shared", key, value)
    for key, value in remote.local_config.items():
        dvc(root, "remote", "modify", "--local", "shared", key, value)
    if commit:
        git(root, "add", ".dvc/config")
        git(root, "commit", "-qm", f"the shared {remote.kind} DVC remote")


def run_mlvs(root: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [str(BIN / "mlvs"), *args],
        cwd=root,
        env=env or clean_env(root),
        capture_output=True,
        text=True,
        timeout=600,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"{result.args}: exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )
    return result


@dataclass
class Story:
    remote: Remote
    root: Path
    pipeline: subprocess.CompletedProcess[str]
    logs: str  # everything the module's mlvs commands printed
    hashes: dict[str, str | None]  # the outputs when snapshot `first` was taken, hashed here


@pytest.fixture(scope="module", params=["ssh", "s3"])
def story(
    request: pytest.FixtureRequest,
    _trained_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Story:
    """A trained workspace on the remote: its pipeline pushed there, then snapshot `first` taken."""
    remote: Remote = request.getfixturevalue(f"{request.param}_remote")
    root = copy_workspace(_trained_template, tmp_path_factory.mktemp(request.param) / "ws")
    use_remote(root, remote)
    pipeline = ok(run_mlvs(root, "pipeline"))
    hashes = output_hashes(root)
    snapshot = ok(run_mlvs(root, "snapshot", "create", "first", "-m", "on the shared remote"))
    return Story(
        remote, root, pipeline, pipeline.stdout + pipeline.stderr + snapshot.stderr, hashes
    )


def test_the_pipeline_pushes_every_output_to_the_remote(story: Story) -> None:
    held = story.remote.objects()
    wanted = dict(lock_md5s(story.root))
    for path, md5 in list(wanted.items()):
        if md5.endswith(".dir"):  # a directory output: its listing, then each file it lists
            assert md5 in held, f"{path}'s listing ({md5}) is not on the {story.remote.kind} remote"
            for entry in json.loads(held[md5]):
                wanted[f"{path}/{entry['relpath']}"] = entry["md5"]
    assert {p for p in wanted if not wanted[p].endswith(".dir")} >= set(OUTPUTS)
    for path, md5 in wanted.items():
        assert md5 in held, f"{path} ({md5}) is not on the {story.remote.kind} remote"
        assert hashlib.md5(held[md5], usedforsecurity=False).hexdigest() == md5.removesuffix(
            ".dir"
        ), path


def test_a_fresh_clone_rolls_back_with_only_the_remote(story: Story, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(story.root), str(clone)], check=True)
    git(clone, "fetch", "-q", "origin", SNAPSHOT_REFS)
    use_remote(clone, story.remote, commit=False)  # a teammate's own credentials
    assert (
        not (clone / ".dvc" / "cache").exists() and not (clone / "models" / "model.skops").exists()
    )
    # The registry is the first workspace's (a shared MLflow store); the data comes from the remote alone.
    env = clean_env(clone) | {"MLFLOW_TRACKING_URI": f"sqlite:///{story.root / 'mlflow.db'}"}
    ok(run_mlvs(clone, "rollback", "first", "--json", env=env))
    assert output_hashes(clone) == story.hashes


def md5_of(path: Path) -> str | None:
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else None


def test_recover_fetches_a_missing_and_a_corrupt_cache_object_from_the_remote(
    story: Story, tmp_path: Path
) -> None:
    root = copy_workspace(story.root, tmp_path / "ws")
    listing = json.loads(cache_object(root, lock_md5s(root)["models"]).read_bytes())
    (model,) = [e["md5"] for e in listing if e["relpath"] == "model.skops"]
    data = lock_md5s(root)["data/raw/customer_data.csv"]
    # Neither the workspace nor the cache has a good copy: only the remote does.
    (root / "models" / "model.skops").unlink()
    (root / "data" / "raw" / "customer_data.csv").unlink()
    cache_object(root, data).unlink()
    corrupt = cache_object(root, model)
    corrupt.chmod(0o644)
    damaged = bytearray(corrupt.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(damaged))
    assert md5_of(corrupt) != model and md5_of(cache_object(root, data)) is None

    outcome = json.loads(ok(run_mlvs(root, "recover", "--json")).stdout)
    from_remote = {
        r["artifact"].removesuffix(" (cache object)")
        for r in outcome["repairs"]
        if r["rung"] == "dvc_remote"
    }
    assert {"models/model.skops", "data/raw/customer_data.csv"} <= from_remote, outcome["repairs"]
    assert output_hashes(root) == story.hashes
    assert md5_of(cache_object(root, model)) == model
    assert md5_of(cache_object(root, data)) == data


def test_a_push_cut_by_the_remote_going_down_says_so_and_the_next_push_completes(
    story: Story, tmp_path: Path
) -> None:
    root = copy_workspace(story.root, tmp_path / "ws")
    # New data for the remote: 1 MiB that no snapshot has pushed yet.
    extra = root / "data" / "extra.bin"
    extra.write_bytes(os.urandom(1 << 20))
    dvc(root, "add", "-q", str(extra.relative_to(root)))
    md5 = hashlib.md5(extra.read_bytes()).hexdigest()
    before = git(root, "for-each-ref", "refs/mlvs/snapshots/")
    link = story.remote.link
    link.cut_after_sent(256 * 1024)  # past the handshake, inside the upload of the new object
    try:
        cut = run_mlvs(root, "snapshot", "create", "extra")
    finally:
        link.restore()
    assert cut.returncode != 0
    lines = [line for line in cut.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "remote" in lines[0], cut.stderr
    assert "Traceback" not in cut.stderr
    assert git(root, "for-each-ref", "refs/mlvs/snapshots/") == before  # no snapshot half-made
    assert hashlib.md5(extra.read_bytes()).hexdigest() == md5  # nothing lost
    assert hashlib.md5(cache_object(root, md5).read_bytes()).hexdigest() == md5

    ok(run_mlvs(root, "snapshot", "create", "extra"))
    assert story.remote.objects()[md5] == extra.read_bytes()


def test_no_credential_reaches_a_manifest_report_log_or_the_mlflow_store(story: Story) -> None:
    secret = story.remote.secret.encode()
    assert secret not in story.logs.encode()
    leaks = []
    for path in story.root.rglob("*"):
        # config.local is where the user put the credential; DVC keeps it out of git.
        mine = path == story.root / ".dvc" / "config.local"
        if path.is_file() and not mine and secret in path.read_bytes():
            leaks.append(path.relative_to(story.root).as_posix())
    assert leaks == []
    manifest = json.loads(ok(run_mlvs(story.root, "snapshot", "show", "first", "--json")).stdout)
    assert story.remote.secret not in json.dumps(manifest)
