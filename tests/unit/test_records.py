"""Typed results: what the operations return reads and writes the JSON documents unchanged."""

from __future__ import annotations

import json

import click
import pytest

from mlvs.cli.render import pipeline_text
from mlvs.errors import IntegrityError
from mlvs.ops.drill.drill import DrillFailure, DrillRecord, TimelineStep, Verification
from mlvs.ops.pipeline import PipelineResult, _stages
from mlvs.ops.repair import Repair


def _record(**overrides: object) -> DrillRecord:
    values: dict[str, object] = dict(
        scenario="model_bit_flips",
        family="model",
        description="flip bits",
        injected={"offsets": [3, 9]},
        detected=True,
        detected_by="model_hash",
        detection="[model_hash] models/model.skops: expected x, found y",
        findings=["[model_hash] models/model.skops: expected x, found y"],
        rung="dvc_cache",
        repairs=[Repair("models/model.skops", "dvc_cache", 42)],
        evidence=["reports/incidents/model_bit_flips/evidence/1/models__model.skops"],
        bytes_restored=42,
        time_to_detect_s=0.5,
        time_to_recover_s=0.25,
        verification=Verification(True, [], [], True),
        timeline=[TimelineStep("detect", 1.0, 0.5)],
        recovered=True,
    )
    values.update(overrides)
    return DrillRecord(**values)  # type: ignore[arg-type]


def test_a_drill_record_keeps_the_keys_of_record_json() -> None:
    document = _record().to_dict()
    assert sorted(document) == sorted(
        [
            "scenario", "family", "description", "injected", "detected", "detected_by",
            "detection", "findings", "rung", "repairs", "evidence", "bytes_restored",
            "time_to_detect_s", "time_to_recover_s", "verification", "timeline", "recovered",
        ]
    )  # fmt: skip
    assert document["repairs"] == [
        {"artifact": "models/model.skops", "rung": "dvc_cache", "bytes_restored": 42}
    ]
    assert document["verification"] == {
        "healthy": True,
        "changed_files": [],
        "lost_runs": [],
        "byte_identical": True,
    }
    assert document["timeline"] == [{"step": "detect", "start_s": 1.0, "duration_s": 0.5}]
    kept = _record(family="pipeline", failed_notebook="failed-01_prepare.ipynb").to_dict()
    assert kept["failed_notebook"] == "failed-01_prepare.ipynb"


def test_a_drill_record_read_back_is_the_record_written() -> None:
    payload = json.dumps(_record().to_dict(), indent=2, sort_keys=True)
    again = DrillRecord.from_dict(json.loads(payload), "record.json")
    assert again == _record()
    assert json.dumps(again.to_dict(), indent=2, sort_keys=True) == payload


def test_a_damaged_drill_record_is_refused_naming_the_file_and_field() -> None:
    document = _record().to_dict()
    document["verification"]["byte_identical"] = "perhaps"
    with pytest.raises(IntegrityError, match=r"x/record\.json: field verification\.byte_identical"):
        DrillRecord.from_dict(document, "x/record.json")


def test_a_failed_drill_is_a_record_of_its_error() -> None:
    assert DrillFailure("data_noise", "the notebook failed").to_dict() == {
        "scenario": "data_noise",
        "recovered": False,
        "error": "the notebook failed",
    }


def test_a_pipeline_result_lists_its_stages_in_dvcs_order() -> None:
    output = (
        "Stage 'prepare' didn't change, skipping\n"
        "Running stage 'train':\n> mlvs run notebooks/02_train.ipynb\n"
    )
    result = PipelineResult(_stages(output), 12.345, {"test_roc_auc": 0.8}, ["reports/x.html"])
    assert (result.ran, result.skipped) == (["train"], ["prepare"])
    assert result.to_dict() == {
        "ran": ["train"],
        "skipped": ["prepare"],
        "seconds": 12.3,
        "metrics": {"test_roc_auc": 0.8},
        "reports": ["reports/x.html"],
    }
    assert click.unstyle(pipeline_text(result)).splitlines()[:4] == [
        "Pipeline done in 12.3 s (ran: train; unchanged: prepare).",
        "",
        "Metrics (test set):",
        "  test_roc_auc    0.8000",
    ]
