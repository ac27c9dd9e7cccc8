"""The requirements a logged model carries, and MLflow's check of them that mlvs skips."""

from __future__ import annotations

import types
from importlib.metadata import PackageNotFoundError, version

import pytest

from mlvs.backends.mlflow import tracking


def test_the_model_requirements_pin_this_environments_versions_of_what_the_model_needs() -> None:
    pinned = dict(line.split("==") for line in tracking._requirements())
    xgboost = "xgboost-cpu" if "xgboost-cpu" in pinned else "xgboost"
    for name in ("scikit-learn", "skops", "pandas", "numpy", "mlflow", xgboost):
        assert pinned[name] == version(name), name


def test_an_installed_distribution_is_found_among_its_alternatives() -> None:
    assert (
        tracking._installed("no-such-distribution-here", "pytest") == f"pytest=={version('pytest')}"
    )
    with pytest.raises(PackageNotFoundError):
        tracking._installed("no-such-distribution-here")


def test_the_requirements_check_is_skipped_inside_and_restored_after() -> None:
    calls: list[list[str]] = []

    def check(requirements: list[str]) -> None:
        calls.append(requirements)

    writer = types.SimpleNamespace(warn_dependency_requirement_mismatches=check)
    loader = types.SimpleNamespace(warn_dependency_requirement_mismatches=check)
    with tracking._requirements_taken_as_given(writer, loader):
        writer.warn_dependency_requirement_mismatches(["a==1"])
        loader.warn_dependency_requirement_mismatches(["b==2"])
    assert calls == []
    writer.warn_dependency_requirement_mismatches(["a==1"])
    loader.warn_dependency_requirement_mismatches(["b==2"])
    assert calls == [["a==1"], ["b==2"]]


def test_an_mlflow_without_the_check_logs_models_as_before() -> None:
    environment = types.SimpleNamespace()
    with tracking._requirements_taken_as_given(environment):
        pass
    assert vars(environment) == {}
