"""`mlvs serve`: check the arguments, load and verify the alias's model, listen, follow the alias until stopped."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from mlvs.errors import BadInputError
from mlvs.logs import get_logger
from mlvs.ml.params import load_stage
from mlvs.ops.serve.app import create_app
from mlvs.ops.serve.follow import AliasWatcher, ServingState
from mlvs.ops.serve.status import ALIAS_PATTERN
from mlvs.paths import ProjectPaths

log = get_logger("serve")

DEFAULT_ALIAS = "champion"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class ServeOptions:
    """What `mlvs serve` was asked for, checked."""

    alias: str = DEFAULT_ALIAS
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT


def check_options(alias: str, host: str, port: int) -> ServeOptions:
    """The options, or a BadInputError naming the one that is wrong and how to fix it."""
    if not ALIAS_PATTERN.match(alias):
        raise BadInputError(
            f"--alias {alias[:80]!r} is not an alias name; use letters, digits, '_' and '-' (e.g. champion)"
        )
    if not 0 <= port <= 65535:
        raise BadInputError(
            f"--port {port} is not a TCP port; choose one from 1 to 65535 (0: any free port)"
        )
    if not host or len(host) > 253 or any(c.isspace() for c in host):
        raise BadInputError(f"--host {host[:80]!r} is not a host name or address; e.g. 127.0.0.1")
    return ServeOptions(alias, host, port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host`:`port`, or a BadInputError saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError):
        raise BadInputError(
            f"--host {host!r} is not an address of this machine; use e.g. 127.0.0.1"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise BadInputError(
                f"port {port} on {host} is already in use; stop what listens there or choose another with --port"
            ) from None
        if error.errno in (errno.EACCES, errno.EPERM):
            raise BadInputError(
                f"port {port} on {host} needs privileges this user lacks; choose a port above 1023"
            ) from None
        raise BadInputError(
            f"cannot listen on {host}:{port} ({error.strerror or error}); use e.g. --host 127.0.0.1"
        ) from None
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, except that SIGINT or SIGTERM ends `run` normally.

    uvicorn raises a stop signal again once it has shut down, which would end `mlvs
    serve` with the signal's status; the contract says a clean stop exits 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        originals = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def serve(paths: ProjectPaths, options: ServeOptions) -> None:
    """Serve the model `options.alias` points at until stopped (SIGINT or SIGTERM), following the alias."""
    name = load_stage("train", paths.root).registry.model_name
    # The port first: a port in use is told at once, before seconds of loading a model.
    sock = bind(options.host, options.port)
    state = ServingState(paths, name, options.alias)
    host, port = sock.getsockname()[:2]
    # Recorded in the status file: a service that dies is started again where it listened.
    state.host, state.port = options.host, port
    try:
        state.start()
    except BaseException:
        sock.close()
        raise
    shown = f"[{host}]" if ":" in host else host
    if not _is_loopback(options.host):
        log.warning(
            "listening on %s, beyond this machine: mlvs speaks plain HTTP without authentication; "
            "put a reverse proxy with TLS in front (see the README)",
            options.host,
        )
    config = uvicorn.Config(
        create_app(state),
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        # Longer than a reverse proxy's idle timeout (nginx: 60 s), so that the proxy never
        # sends a request on a connection the service has just closed.
        timeout_keep_alive=75,
        lifespan="off",
    )
    watcher = AliasWatcher(state)
    watcher.start()
    log.info(
        "serving %s@%s on http://%s:%d (GET /health, GET /model, POST /predict, /docs)",
        name,
        options.alias,
        shown,
        port,
    )
    try:
        _Server(config).run(sockets=[sock])
    finally:
        watcher.stop()
        sock.close()
    # Only a clean stop gets here: a killed service leaves its status open, for `mlvs recover`.
    watcher.join(timeout=5)
    state.mark_stopped()
    log.info("stopped serving %s@%s", name, options.alias)
