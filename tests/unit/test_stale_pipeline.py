"""A stale pipeline (params or code changed since `dvc.lock` recorded the outputs) is a finding of its own kind.

Each test builds a two-file project by hand: a stage with one code dependency, one
params file and one output, and a `dvc.lock` that records their MD5s and values as
DVC would. No DVC, no notebook: the check reads the files.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from mlvs.backends.dvc.hashcache import HashCache
from mlvs.ops import health, verify
from mlvs.ops.recorded import DAMAGE, STALE
from mlvs.paths import ProjectPaths


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.fixture
def project(tmp_path: Path) -> ProjectPaths:
    root = tmp_path / "proj"
    (root / "params").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "out").mkdir()
    (root / "params" / "make.yaml").write_text("seed: 1\nmodel:\n  trees: 10\n")
    (root / "src" / "make.py").write_text("print('make')\n")
    (root / "out" / "result.txt").write_text("result\n")
    (root / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "make": {
                        "cmd": "python src/make.py",
                        "deps": ["src/make.py"],
                        "params": [{"params/make.yaml": None}],
                        "outs": ["out/result.txt"],
                    }
                }
            }
        )
    )
    lock = {
        "schema": "2.0",
        "stages": {
            "make": {
                "cmd": "python src/make.py",
                "deps": [{"path": "src/make.py", "md5": md5(root / "src" / "make.py"), "size": 14}],
                "params": {"params/make.yaml": {"seed": 1, "model": {"trees": 10}}},
                "outs": [
                    {"path": "out/result.txt", "md5": md5(root / "out" / "result.txt"), "size": 7}
                ],
            }
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return ProjectPaths(root)


def pipeline_findings(paths: ProjectPaths) -> list:
    hashes = HashCache(paths)
    try:
        return health.check_pipeline(paths, hashes)
    finally:
        hashes.close()


def test_an_unchanged_pipeline_is_no_finding(project: ProjectPaths) -> None:
    assert pipeline_findings(project) == []
    assert health.quick_health(project).healthy


def test_a_changed_param_makes_its_stage_stale_naming_the_key(project: ProjectPaths) -> None:
    (project.root / "params" / "make.yaml").write_text("seed: 1\nmodel:\n  trees: 12\n")

    (finding,) = pipeline_findings(project)

    assert (finding.check, finding.artifact, finding.kind) == ("pipeline", "stage make", STALE)
    assert "params/make.yaml: model.trees 10 -> 12" in finding.actual
    assert finding.fix == "mlvs pipeline"


def test_a_param_added_to_a_whole_file_dependency_makes_its_stage_stale(
    project: ProjectPaths,
) -> None:
    (project.root / "params" / "make.yaml").write_text("seed: 1\nmodel:\n  trees: 10\nextra: 3\n")

    (finding,) = pipeline_findings(project)

    assert "extra (absent) -> 3" in finding.actual


def test_a_changed_code_dependency_makes_its_stage_stale(project: ProjectPaths) -> None:
    (project.root / "src" / "make.py").write_text("print('made differently')\n")

    (finding,) = pipeline_findings(project)

    assert finding.kind == STALE and "src/make.py: modified" in finding.actual


def test_damaged_output_is_damage_and_not_staleness(project: ProjectPaths) -> None:
    (project.root / "out" / "result.txt").write_text("tampered\n")

    found = health.quick_health(project).findings

    assert [(f.check, f.kind) for f in found] == [("file_hash", DAMAGE)]


def test_verify_tells_a_stale_pipeline_from_damage(project: ProjectPaths) -> None:
    (project.root / "params" / "make.yaml").write_text("seed: 2\nmodel:\n  trees: 10\n")

    report = verify.verify(project, ("file_hash", "pipeline"))
    document = report.to_dict()

    assert not report.healthy and report.stale and not report.damaged
    assert document["stale"] is True and document["damaged"] is False
    assert document["findings"][0]["kind"] == STALE


def test_the_quick_checks_fingerprint_the_check_code_as_verify_does() -> None:
    # The quick checks vouch for a deep check only by verify's own fingerprint of it.
    assert tuple(m.__name__ for m in verify.DEEP_CHECK_CODE) == health.DEEP_CHECK_MODULES
    assert health.named_code_identity() == verify._code_identity()


def test_a_health_check_that_cannot_run_is_recorded_as_a_finding_not_raised(
    project: ProjectPaths,
) -> None:
    # The automatic snapshot of a rollback must be taken whatever state it finds.
    (project.root / "dvc.lock").write_text("stages: [unclosed\n")

    recorded = health.health_never_refusing(project)

    assert not recorded.healthy and recorded.findings[0].check == "health"
    assert "dvc.lock" in recorded.findings[0].actual
