"""The registered model's name, read without the parameter schemas, refused as they would refuse it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from mlvs.errors import ParamsError
from mlvs.ml.params_files import well_formed_model_name
from mlvs.ops.history import registered_model_name
from mlvs.paths import ProjectPaths


def project_with_name(tmp_path: Path, name: object) -> Path:
    train = yaml.safe_load((REPO / "params" / "train.yaml").read_text())
    train["registry"]["model_name"] = name
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "train.yaml").write_text(yaml.safe_dump(train))
    return tmp_path


def test_a_well_formed_name_is_read_without_importing_the_schemas(tmp_path: Path) -> None:
    root = project_with_name(tmp_path, "churn-classifier")
    probe = (
        "import sys; from pathlib import Path; from mlvs.ml.params_files import well_formed_model_name; "
        f"print(well_formed_model_name(Path({str(root)!r}))); print('mlvs.ml.params' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["churn-classifier", "False"]


@pytest.mark.parametrize("name", ["bad name", "-leading-dash", "x" * 101, 42, None, "ok\n"])
def test_a_malformed_name_is_refused_by_the_schema_in_its_words(
    tmp_path: Path, name: object
) -> None:
    root = project_with_name(tmp_path, name)
    assert well_formed_model_name(root) is None
    with pytest.raises(ParamsError, match=r"params/train.yaml \(registry\).*model_name"):
        registered_model_name(ProjectPaths(root))
