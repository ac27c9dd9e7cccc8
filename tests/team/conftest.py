"""Team-mode fixtures: a real PostgreSQL, a real `mlflow server` on top of it, and a link that can fail.

Each server is started only when a test asks for it, once per test session (per
pytest-xdist worker), and stopped at the end. PostgreSQL comes from the system's
packages (`.ci/system-deps` installs them); when it is missing the tests fail, they
do not skip. PostgreSQL refuses to run as root, so as root it runs as the
`postgres` system user (or `nobody`) in a directory of its own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import BIN, clean_env

PG_DATABASE = "mlflow"
PG_USER = "mlflow"


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postgres_bindir() -> Path:
    """The newest PostgreSQL server programs installed (Debian keeps them off PATH)."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    candidates = [c for c in candidates if (c / "initdb").is_file() and (c / "postgres").is_file()]
    if candidates:
        return candidates[-1]
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).parent
    pytest.fail(
        "PostgreSQL is not installed (no initdb/postgres); run `.ci/system-deps` "
        "or `apt-get install postgresql`, then run the tests again"
    )


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as when the tests run as root (it refuses root itself)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.fail(
        "the tests run as root and there is neither a `postgres` nor a `nobody` user to run PostgreSQL as"
    )


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1, trust authentication, no fsync."""

    home: Path
    port: int
    process: subprocess.Popen[bytes]

    def uri(self, database: str = PG_DATABASE) -> str:
        """The SQLAlchemy URI of `database` (psycopg2, the driver mlvs depends on)."""
        return f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URI."""
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=PG_USER, dbname="postgres"
        )
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.uri(name)


def start_postgres(home: Path) -> Postgres:
    """initdb a cluster in `home/data` and run `postgres` on a free loopback port until ready."""
    import psycopg2

    bindir = postgres_bindir()
    user = _unprivileged_user()
    as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    if user:
        os.chown(home, user.pw_uid, user.pw_gid)
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    data, log = home / "data", home / "postgres.log"
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            PG_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        cwd=home,
        env=env,
        check=True,
        capture_output=True,
        **as_user,
    )
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={home}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **as_user,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg2.connect(
                host="127.0.0.1", port=port, user=PG_USER, dbname="postgres", connect_timeout=2
            ).close()
            break
        except psycopg2.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"PostgreSQL did not start:\n{_log_tail(log)}")
            time.sleep(0.2)
    return Postgres(home, port, process)


def stop_process(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30
) -> None:
    """Stop a process this module started (its own session, so its children go too)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


@dataclass
class TrackingServer:
    """`mlflow server` over PostgreSQL, artifacts served through it from a local directory."""

    backend_uri: str
    artifacts: Path
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> None:
        """Start the server and wait until it answers /health."""
        # No background job runner (a consumer pool mlvs never uses): it would only compete for the CPU.
        env = clean_env(self.artifacts) | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    str(BIN / "mlflow"),
                    "server",
                    "--backend-store-uri",
                    self.backend_uri,
                    "--serve-artifacts",
                    "--artifacts-destination",
                    str(self.artifacts),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                cwd=self.artifacts.parent,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mlflow server did not start:\n{_log_tail(self.log)}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class FlakyLink:
    """A TCP relay in front of a server that can go down like the server itself would.

    `cut_after(marker)`: once a request containing `marker` has been answered, the
    relay closes every connection and stops listening, so clients see "connection
    refused" exactly from that point of a run on. `restore()` listens again.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.marker: bytes | None = None
        self.cut = threading.Event()
        self.requests: list[bytes] = []
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        """Accept connections again (after a cut)."""
        self.marker = None
        self.cut.clear()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut_after(self, marker: bytes) -> None:
        """Go down right after the response to the first request that contains `marker`."""
        self.marker = marker

    def go_down(self) -> None:
        """Stop listening and drop every open connection."""
        self.cut.set()
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def close(self) -> None:
        self.go_down()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets.update((client, upstream))
            armed = threading.Event()
            threading.Thread(
                target=self._pump, args=(client, upstream, armed, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, armed, False), daemon=True
            ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, armed: threading.Event, from_client: bool
    ) -> None:
        while not self.cut.is_set():
            try:
                chunk = source.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            if from_client:
                self.requests.append(chunk.split(b"\r\n", 1)[0])
                if self.marker is not None and self.marker in chunk:
                    armed.set()
            try:
                sink.sendall(chunk)
            except OSError:
                break
            if not from_client and armed.is_set():
                self.go_down()  # the marked request was answered: the "server" is gone from now on
                break
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server on loopback for the whole session, in a temporary directory."""
    # Not under pytest's basetemp: that is private to root, and PostgreSQL runs as another user.
    home = Path(tempfile.mkdtemp(prefix="mlvs-postgres-"))
    server = start_postgres(home)
    try:
        server.create_database(PG_DATABASE)
        yield server
    finally:
        stop_process(server.process, signal.SIGINT)  # PostgreSQL's "fast shutdown"
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def tracking_server(
    postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrackingServer]:
    """`mlflow server` with PostgreSQL as backend store and proxied artifacts, for the whole session."""
    home = tmp_path_factory.mktemp("mlflow-server")
    server = TrackingServer(postgres.uri(), home / "artifacts", home / "server.log")
    server.artifacts.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def flaky_link(tracking_server: TrackingServer) -> Iterator[FlakyLink]:
    """A relay to the tracking server that a test can cut mid-run and bring back."""
    link = FlakyLink(tracking_server.port)
    try:
        yield link
    finally:
        link.close()
