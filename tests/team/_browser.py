"""What the browser-facing tests drive: `make lab` / `make ui` servers, a static web server and Chromium.

Every process is started in a session of its own and stopped as a group, so a
server's children (kernels, web workers, renderers) go with it, even when a test fails.
Chromium is driven through its DevTools protocol: one browser serves every page a
test opens, and the test reads what the browser rendered, not what the server sent.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import BIN, clean_env

T = TypeVar("T")
OWNER_TAG = "BROWSER_TESTS_OWNER"
# The flags a root user needs for a headless Chromium that talks to nobody but the test.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on TCP `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        lines = Path(table).read_text().splitlines()[1:] if Path(table).exists() else []
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # IPv6 in /proc is four little-endian 32-bit words
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


class Started:
    """A process group the test started; `stop` ends all of it.

    Every descendant inherits a tag in its environment, so one that left the group
    (Jupyter starts each kernel in a session of its own) is found and ended too.
    """

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        import uuid

        self.command, self.log, self.tag = command, log, uuid.uuid4().hex
        with open(log, "wb") as sink:
            self.process = subprocess.Popen(
                command,
                cwd=cwd,
                env={**env, OWNER_TAG: self.tag},
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def output(self, tail: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-tail:] if self.log.exists() else ""

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the whole group (servers shut their kernels and workers down), then SIGKILL."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while group_alive(self.process.pid) and time.monotonic() < deadline:
                self.process.poll()  # reap the leader, or the group never empties
                time.sleep(0.1)
            if not group_alive(self.process.pid):
                break
        self.process.wait(timeout=5)
        for pid in self.leftovers():
            os.kill(pid, signal.SIGKILL)

    def leftovers(self) -> list[int]:
        """Live processes that carry this start's tag."""
        marker = f"{OWNER_TAG}={self.tag}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if marker in (entry / "environ").read_bytes().split(b"\0") and process_alive(
                        int(entry.name)
                    ):
                        found.append(int(entry.name))
                except OSError:
                    continue  # gone meanwhile, or not ours to read
        return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return not (state.exists() and state.read_text().split(")")[-1].split()[0] == "Z")


def wait_until(
    check: Callable[[], T | None], timeout: float, what: str, server: Started | None = None
) -> T:
    """Poll `check` until it returns something truthy; fail with the server's log if it dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if server is not None and not server.running():
            pytest.fail(
                f"{what}: {' '.join(server.command)} exited with {server.process.returncode}:\n{server.output()}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s\n{server.output() if server else ''}")
        time.sleep(0.1)


def http(
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, bytes, dict[str, str]]:
    """One HTTP request; returns status, body and headers (an error status is returned, not raised)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={
            **({"Content-Type": "application/json"} if data is not None else {}),
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def answers(url: str) -> bool:
    try:
        return http(url, timeout=2)[0] == 200
    except OSError:
        return False


# --- the Makefile's own commands -------------------------------------------------------


def make_target(
    root: Path, target: str, log: Path, env: dict[str, str], **variables: str
) -> Started:
    """Start `make TARGET` in a workspace exactly as a user would, with this test's interpreter.

    BIN points the Makefile at the test's virtual environment (a workspace has none
    of its own); `-o .venv/.installed` keeps make from building one.
    """
    env = {k: v for k, v in env.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "HOST")}
    command = [
        "make",
        "--no-print-directory",
        "-o",
        ".venv/.installed",
        target,
        f"BIN={BIN}",
        *(f"{k}={v}" for k, v in variables.items()),
    ]
    return Started(command, root, env, log)


def make_recipe(root: Path, target: str, **variables: str) -> list[str]:
    """The command lines `make TARGET` runs, without running them."""
    env = {
        k: v
        for k, v in clean_env(root).items()
        if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "HOST")
    }
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-n",
            "-o",
            ".venv/.installed",
            target,
            *(f"{k}={v}" for k, v in variables.items()),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.splitlines()


# --- a static web server for reports/ --------------------------------------------------


@contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """Serve `directory` on 127.0.0.1 (as `python -m http.server` does); yields its base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # `format`: the stdlib's name
            pass

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- Chromium ----------------------------------------------------------------------------


def chromium_binary() -> str:
    """Debian's Chromium; its absence fails the test (`.ci/system-deps` installs it)."""
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if not found:
        pytest.fail(
            "Chromium is not installed; run `.ci/system-deps` (or `apt-get install chromium`), "
            "then run the tests again"
        )
    return found


class Chromium:
    """A headless Chromium with one tab, driven over the DevTools protocol."""

    def __init__(self, workdir: Path) -> None:
        import websocket

        profile, home = workdir / "chromium-profile", workdir / "home"
        profile.mkdir(parents=True)
        home.mkdir()
        # Chromium also writes under the home directory (.pki, dconf, crash reports): a private one.
        env = os.environ | {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local/share"),
        }
        self.server = Started(
            [
                chromium_binary(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            workdir,
            env,
            workdir / "chromium.log",
        )
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        try:
            active = profile / "DevToolsActivePort"
            port = wait_until(
                lambda: active.exists() and active.read_text().split("\n")[0].strip(),
                60,
                "Chromium's DevTools endpoint",
                self.server,
            )
            pages = wait_until(
                lambda: [
                    t
                    for t in json.loads(http(f"http://127.0.0.1:{port}/json/list")[1])
                    if t["type"] == "page"
                ],
                30,
                "Chromium's first tab",
                self.server,
            )
            self.socket = websocket.create_connection(
                pages[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True
            )
            self.call("Page.enable")
            self.call("Runtime.enable")
            # The viewport itself 1280x900 (the window size includes the window's own frame).
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=1280,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.server.stop(grace=5)
            raise

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events that arrive meanwhile are kept)."""
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        self.socket.settimeout(60)
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise AssertionError(f"{method} failed in Chromium: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def _event(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == name:
                    return self.events.pop(i)
            if time.monotonic() > deadline:
                raise AssertionError(f"Chromium sent no {name} within {timeout:.0f} s")
            self.socket.settimeout(max(0.1, deadline - time.monotonic()))
            self.events.append(json.loads(self.socket.recv()))

    def open(self, url: str, timeout: float = 60) -> None:
        """Navigate the tab to `url` and wait until the page has loaded."""
        self.events.clear()
        result = self.call("Page.navigate", url=url)
        assert not result.get("errorText"), f"Chromium could not open {url}: {result['errorText']}"
        self._event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} raised in the page: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """Poll a JavaScript expression until it is truthy (for pages that render after loading)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{expression!r} stayed falsy for {timeout:.0f} s")
            time.sleep(0.2)

    def status(self) -> int | None:
        """The HTTP status of the page now shown (None for file:// pages)."""
        return self.evaluate(
            "performance.getEntriesByType('navigation')[0]?.responseStatus ?? null"
        )

    def screenshot(self, path: Path) -> Path:
        """A PNG of the tab's viewport."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.socket.close()
        finally:
            self.server.stop(grace=5)


@contextmanager
def chromium(workdir: Path) -> Iterator[Chromium]:
    """A Chromium for the duration of a block, always stopped afterwards."""
    browser = None
    try:
        browser = Chromium(workdir)
        yield browser
    finally:
        if browser is not None:
            browser.close()


# --- a notebook front end's kernel channel ----------------------------------------------


class KernelChannel:
    """The websocket a notebook front end (JupyterLab) opens to a kernel of a Jupyter server.

    Requests go out on the `shell` channel; the kernel's outputs come back on `iopub`,
    each as JSON naming its channel (the Jupyter messaging protocol over websockets).
    """

    def __init__(self, base_url: str, token: str, kernel_id: str) -> None:
        import uuid

        import websocket

        self.session = uuid.uuid4().hex
        url = (
            base_url.replace("http://", "ws://", 1).rstrip("/")
            + f"/api/kernels/{kernel_id}/channels"
        )
        self.socket = websocket.create_connection(
            f"{url}?session_id={self.session}",
            timeout=120,
            header=[f"Authorization: token {token}"],
        )

    def execute(self, code: str, timeout: float = 120) -> tuple[list[Any], dict[str, Any]]:
        """Run `code` as one cell; return its outputs (as nbformat output nodes) and the execute reply."""
        import datetime
        import uuid

        from nbformat.v4 import output_from_msg

        msg_id = uuid.uuid4().hex
        self.socket.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "session": self.session,
                        "username": "test",
                        "version": "5.3",
                        "date": datetime.datetime.now(datetime.UTC).isoformat(),
                    },
                    "parent_header": {},
                    "metadata": {},
                    "buffers": [],
                    "channel": "shell",
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": True,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                }
            )
        )
        outputs: list[Any] = []
        reply: dict[str, Any] | None = None
        idle = False
        deadline = time.monotonic() + timeout
        while not (idle and reply is not None):
            self.socket.settimeout(max(0.1, deadline - time.monotonic()))
            frame = self.socket.recv()
            if isinstance(frame, bytes):
                continue  # binary frames carry buffers (widgets); a plain notebook sends none
            message = json.loads(frame)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["header"]["msg_type"]
            if message["channel"] == "shell" and kind == "execute_reply":
                reply = message["content"]
            elif message["channel"] == "iopub":
                if kind == "status":
                    idle = message["content"]["execution_state"] == "idle"
                elif kind == "clear_output":
                    outputs.clear()
                elif kind in ("stream", "display_data", "execute_result", "error"):
                    outputs.append(output_from_msg(message))
        return outputs, reply

    def close(self) -> None:
        self.socket.close()
