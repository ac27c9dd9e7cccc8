"""`mlvs serve`'s options: each mistake is refused by name, with how to fix it, before anything starts."""

from __future__ import annotations

import socket

import pytest

from mlvs.errors import BadInputError
from mlvs.ops.serve.service import ServeOptions, bind, check_options


def test_the_defaults_serve_the_champion_on_loopback_port_8080() -> None:
    assert check_options("champion", "127.0.0.1", 8080) == ServeOptions()


@pytest.mark.parametrize(
    ("alias", "host", "port", "named"),
    [
        ("../champion", "127.0.0.1", 8080, "--alias"),
        ("", "127.0.0.1", 8080, "--alias"),
        ("champion", "127.0.0.1", 70000, "--port"),
        ("champion", "127.0.0.1", -1, "--port"),
        ("champion", "", 8080, "--host"),
        ("champion", "local host", 8080, "--host"),
    ],
    ids=[
        "path-alias",
        "empty-alias",
        "port-too-high",
        "negative-port",
        "empty-host",
        "spaced-host",
    ],
)
def test_a_bad_option_is_refused_by_name(alias: str, host: str, port: int, named: str) -> None:
    with pytest.raises(BadInputError, match=named):
        check_options(alias, host, port)


def test_a_port_in_use_is_refused_with_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(BadInputError, match=r"already in use; .*--port"):
            bind("127.0.0.1", port)


def test_port_0_listens_on_a_free_port_of_loopback() -> None:
    with bind("127.0.0.1", 0) as listening:
        host, port = listening.getsockname()[:2]
    assert (host, port > 0) == ("127.0.0.1", True)
