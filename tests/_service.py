"""The scoring service as tests and benchmarks use it: `mlvs serve` started for real, on a free loopback port."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import BIN, clean_env

_LISTENING = re.compile(r"on http://127\.0\.0\.1:(\d+) ")


@dataclass
class Service:
    """A running `mlvs serve`: its process, its port and everything it printed on stderr."""

    process: subprocess.Popen[str]
    port: int = 0
    lines: list[str] = field(default_factory=list)

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        """A new keep-alive connection to the service."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        """One request on its own connection: (status, decoded JSON body)."""
        connection = self.connection()
        try:
            payload = (
                raw if raw is not None else (None if body is None else json.dumps(body).encode())
            )
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()

    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as a supervisor stops it; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_service(
    root: Path, *args: str, timeout: float = 120.0, env: dict[str, str] | None = None
) -> Service:
    """`mlvs serve --port 0 ARGS` in `root`, once it listens (its port read from its first lines)."""
    process = subprocess.Popen(
        [str(BIN / "mlvs"), "serve", "--port", "0", *args],
        cwd=root,
        env=env or clean_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    service = Service(process)
    listening = threading.Event()

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            service.lines.append(line.rstrip("\n"))
            found = _LISTENING.search(line)
            if found:
                service.port = int(found.group(1))
                listening.set()
        listening.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not listening.wait(0.05):
        if time.monotonic() > deadline:
            service.stop()
            raise AssertionError(f"mlvs serve did not start in {timeout} s:\n{service.log()}")
    if not service.port:
        service.stop()
        raise AssertionError(f"mlvs serve stopped before it listened:\n{service.log()}")
    return service


def records_of(root: Path, count: int) -> list[dict[str, Any]]:
    """`count` customer records in the request's form: rows of the golden sample, repeated as needed."""
    rows = json.loads((root / "models" / "golden_predictions.json").read_text())["rows"]
    return [rows[i % len(rows)] for i in range(count)]
