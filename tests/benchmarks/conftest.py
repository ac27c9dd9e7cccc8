"""Benchmarks run only under `make bench` (`pytest -m bench`); plain `pytest` skips them at once."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "bench" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `make bench` (pytest -m bench)")
    for item in items:
        if item.get_closest_marker("bench"):
            item.add_marker(skip)
