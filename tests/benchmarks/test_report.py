"""The benchmark report's format and the list of misses that fails `make bench` (cheap, not a benchmark)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ._bench import entry, misses, record


def test_an_entry_meets_a_lower_is_better_target_only_at_or_below_it() -> None:
    under = entry("a", {}, value=0.4, unit="s", target=0.5, target_text="<= 0.5 s")
    over = entry("a", {}, value=0.6, unit="s", target=0.5, target_text="<= 0.5 s")
    assert under["met"] is True and over["met"] is False
    assert {k: under[k] for k in ("name", "value", "unit", "target", "target_text")} == {
        "name": "a",
        "value": 0.4,
        "unit": "s",
        "target": 0.5,
        "target_text": "<= 0.5 s",
    }


def test_an_entry_meets_a_higher_is_better_target_only_at_or_above_it() -> None:
    assert entry("a", {}, value=4.0, unit="x", target=4.0, target_text="", better="higher")["met"]
    assert not entry("a", {}, value=3.9, unit="x", target=4.0, target_text="", better="higher")[
        "met"
    ]


def test_a_target_of_several_parts_is_judged_by_the_benchmark() -> None:
    # Under its time target, but the benchmark says another part of the target failed.
    found = entry("cv", {}, value=0.5, unit="s", target=1.0, target_text="", met=False)
    assert found["met"] is False


def test_an_entry_keeps_the_figures_and_names_its_baseline_and_ratio() -> None:
    found = entry(
        "r",
        {"runs_s": [1.0, 2.0]},
        value=1.2,
        unit="x",
        target=1.5,
        target_text="",
        baseline=2.0,
        baseline_unit="s",
        ratio=1.2,
    )
    assert found["runs_s"] == [1.0, 2.0]
    assert (found["baseline"], found["baseline_unit"], found["ratio"]) == (2.0, "s", 1.2)
    assert "baseline" not in entry("n", {}, value=1.0, unit="s", target=2.0, target_text="")


@pytest.mark.parametrize(
    "figures, headline",
    [
        ({"target": "<= 1 s"}, {}),  # the prose goes to target_text, the key holds the number
        ({"met": True}, {}),
        ({}, {"target": "1 s"}),
        ({}, {"value": True}),
    ],
)
def test_an_entry_refuses_figures_that_would_hide_the_headline(
    figures: dict, headline: dict
) -> None:
    keywords = {"value": 1.0, "unit": "s", "target": 1.0, "target_text": "", **headline}
    with pytest.raises(ValueError):
        entry("bad", figures, **keywords)


def test_record_merges_entries_and_misses_lists_only_this_runs_misses(tmp_path: Path) -> None:
    report = tmp_path / "latest.json"
    report.write_text(
        json.dumps({"old": {"name": "old", "met": False, "measured_at_epoch": 1.0}}),
        encoding="utf-8",
    )
    record("fast", {}, path=report, value=0.1, unit="s", target=0.5, target_text="<= 0.5 s")
    record("slow", {}, path=report, value=0.9, unit="s", target=0.5, target_text="<= 0.5 s")
    results = json.loads(report.read_text(encoding="utf-8"))
    assert sorted(results) == ["fast", "old", "slow"]
    assert results["slow"]["met"] is False and results["fast"]["met"] is True
    assert misses(results, since=2.0) == ["slow: 0.9 s, target <= 0.5 s"]
    assert misses(results, since=0.0) == [
        "old: None , target None",
        "slow: 0.9 s, target <= 0.5 s",
    ]
