"""Benchmarks run only under `make bench` (`pytest -m bench`); plain `pytest` skips them at once.

A benchmark that misses its target fails the run: after the report is written, its misses
are listed last, one line each, and the exit status is non-zero.
"""

from __future__ import annotations

import time
from collections.abc import Generator

import pytest

from ._bench import RESULTS, misses, read_results

# Entries measured from here on are this run's; older ones in the report are not judged again.
LOADED_AT = time.time()
MISSED: list[str] = []


def bench_selected(config: pytest.Config) -> bool:
    return "bench" in (config.getoption("-m") or "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if bench_selected(config):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `make bench` (pytest -m bench)")
    for item in items:
        if item.get_closest_marker("bench"):
            item.add_marker(skip)


# Outermost, so that the list comes after pytest's own summary and is the last thing printed.
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None]:
    if bench_selected(session.config):
        MISSED[:] = misses(read_results(RESULTS), since=LOADED_AT)
        if MISSED and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    result = yield
    if MISSED:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["MISSED:", *(f"  {line}" for line in MISSED)]
        for line in lines:
            if reporter is not None:
                reporter.write_line(line, red=True, bold=line == "MISSED:")
            else:
                print(line)
    return result
