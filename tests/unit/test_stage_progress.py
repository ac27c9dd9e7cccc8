"""What `mlvs pipeline` shows of `dvc repro`: a line per stage start and end, DVC's errors as they are."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from mlvs.ops.pipeline import DVC_PUSH_HINT, StageProgress

REPRO = [
    "Running stage 'prepare':\n",
    "> mlvs run notebooks/01_prepare.ipynb\n",
    "mlvs: 01_prepare.ipynb finished in 9.4 s\n",
    "Generating lock file 'dvc.lock'\n",
    "Updating lock file 'dvc.lock'\n",
    "Stage 'train' didn't change, skipping\n",
    "ERROR: something DVC wants you to read\n",
    f"{DVC_PUSH_HINT}\n",
]


@pytest.fixture
def said() -> Iterator[list[str]]:
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("mlvs.pipeline")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_each_stage_gets_a_start_and_an_end_line_and_other_lines_pass(said: list[str]) -> None:
    progress = StageProgress()
    shown = [line for line in map(progress.line, REPRO) if line is not None]
    progress.finish(ok=True)
    assert shown == [
        "mlvs: 01_prepare.ipynb finished in 9.4 s\n",
        "ERROR: something DVC wants you to read\n",
    ]
    assert said[0] == "stage prepare: started"
    assert said[1].startswith("stage prepare: done in ") and said[1].endswith(" s")
    assert said[2:] == ["stage train: unchanged, skipped"]


def test_a_stage_that_never_records_its_outputs_ends_as_failed(said: list[str]) -> None:
    progress = StageProgress()
    progress.line("Running stage 'train':\n")
    progress.finish(ok=False)
    assert said[-1].startswith("stage train: failed after ")
