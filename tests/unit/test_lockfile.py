"""`dvc.lock` put together stage by stage, as a partial rollback writes it."""

from __future__ import annotations

import pytest
import yaml

from mlvs.backends.dvc.lockfile import compose_lock
from mlvs.backends.dvc.outputs import load_yaml
from mlvs.errors import IntegrityError


def lock(seed: int, trees: int) -> bytes:
    # The layout DVC writes: two-space stage keys under `stages:`, lists at the same depth.
    return (
        "schema: '2.0'\n"
        "stages:\n"
        "  prepare:\n"
        "    cmd: prepare\n"
        "    params:\n"
        "      params/prepare.yaml:\n"
        f"        seed: {seed}\n"
        "    outs:\n"
        "    - path: data/processed\n"
        f"      md5: {seed:032d}.dir\n"
        "  train:\n"
        "    cmd: train\n"
        "    params:\n"
        "      params/train.yaml:\n"
        f"        trees: {trees}\n"
        "    outs:\n"
        "    - path: models\n"
        f"      md5: {trees:032d}.dir\n"
    ).encode()


NOW, THEN = lock(2, 25), lock(1, 120)


def stages(payload: bytes | None) -> dict:
    assert payload is not None
    return yaml.safe_load(payload)["stages"]


def test_the_restored_stage_comes_from_the_snapshot_and_the_other_stays() -> None:
    composed = compose_lock(NOW, THEN, {"train"})

    assert stages(composed)["train"] == stages(THEN)["train"]
    assert stages(composed)["prepare"] == stages(NOW)["prepare"]
    # Spliced as text: DVC's own layout, so `dvc repro` has nothing to rewrite.
    assert composed == NOW.split(b"  train:")[0] + b"  train:" + THEN.split(b"  train:")[1]


def test_every_stage_restored_gives_the_snapshots_bytes_and_none_the_current_ones() -> None:
    assert compose_lock(NOW, THEN, {"prepare", "train"}) == THEN
    assert compose_lock(NOW, THEN, set()) == NOW


def test_a_layout_that_does_not_split_is_written_as_yaml_with_the_same_meaning() -> None:
    flowed = yaml.safe_dump(yaml.safe_load(NOW), default_flow_style=True).encode()

    composed = compose_lock(flowed, THEN, {"prepare"})

    assert stages(composed) == {"prepare": stages(THEN)["prepare"], "train": stages(NOW)["train"]}


def test_a_snapshot_lock_that_is_not_yaml_is_refused() -> None:
    with pytest.raises(IntegrityError, match=r"snapshot's dvc\.lock"):
        compose_lock(NOW, b"stages: [unclosed", {"train"})


def test_the_same_yaml_text_parsed_twice_gives_each_caller_its_own_document() -> None:
    text = lock(1, 10).decode()
    for _ in range(2):  # parsed, then remembered
        document = load_yaml(text)
        document["stages"]["train"]["params"]["params/train.yaml"]["trees"] = 99
        document["stages"].pop("prepare")

    again = load_yaml(text)

    assert again == yaml.safe_load(text)
    assert again["stages"]["train"]["params"]["params/train.yaml"]["trees"] == 10
