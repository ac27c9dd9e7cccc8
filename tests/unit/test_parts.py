"""Which part a file belongs to is decided by the project's layout and outputs, not by a manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlvs.backends.dvc.outputs import PartRule
from mlvs.paths import ProjectPaths

OUTPUTS = {
    "data/raw/customer_data.csv": "data",
    "models": "models",
    "reports/metrics.json": "models",  # written by the stage that writes the model
    "features": "data",
    "features/embeddings": "models",  # a nested output wins over the one around it
}


@pytest.mark.parametrize(
    ("path", "part"),
    [
        ("params/train.yaml", "params"),
        ("params", "params"),
        ("data/raw/customer_data.csv", "data"),
        ("data/processed/train.csv", "data"),  # under data/, whatever dvc.yaml says
        ("models/model.skops", "models"),
        ("reports/metrics.json", "models"),
        ("features/a.parquet", "data"),
        ("features/embeddings/e.npy", "models"),
        ("mlvs/__init__.py", "code"),
        ("dvc.yaml", "code"),
        ("notebooks/02_train.ipynb", "code"),
        ("datasets/x.csv", "code"),  # a prefix of a name is not a folder
        ("modelsX", "code"),
    ],
)
def test_the_part_of_a_path_comes_from_the_project(tmp_path: Path, path: str, part: str) -> None:
    assert PartRule(ProjectPaths(tmp_path), OUTPUTS)(path) == part


def test_params_stay_params_even_when_an_output_claims_them(tmp_path: Path) -> None:
    rule = PartRule(ProjectPaths(tmp_path), {"params": "data"})
    assert rule("params/prepare.yaml") == "params"
