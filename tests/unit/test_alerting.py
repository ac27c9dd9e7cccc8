"""The alert webhook (`mlvs.ops.alerting`): a POST of each alert, retried, never failing the run."""

from __future__ import annotations

import pytest

from mlvs.ops import alerting

ALERT = {"rule": "feature_drift", "severity": "warning", "subject": "monthly_charges"}


def test_without_a_webhook_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLVS_ALERT_WEBHOOK", raising=False)
    assert alerting.deliver([ALERT]) == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "hooks.example.com"])
def test_a_webhook_that_is_not_http_is_reported_not_used(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("MLVS_ALERT_WEBHOOK", url)
    (problem,) = alerting.deliver([ALERT])
    assert "MLVS_ALERT_WEBHOOK" in problem and "http" in problem


def test_a_webhook_that_does_not_answer_is_tried_three_times_and_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(alerting, "FIRST_PAUSE_SECONDS", 0.0)
    attempts = []

    def refuse(request: object, timeout: float) -> object:
        attempts.append(timeout)
        raise OSError("connection refused")

    monkeypatch.setattr(alerting.urllib.request, "urlopen", refuse)
    monkeypatch.setenv("MLVS_ALERT_WEBHOOK", "https://user:secret@hooks.example.com/mlvs?token=x")
    (problem,) = alerting.deliver([ALERT])
    assert attempts == [alerting.TIMEOUT_SECONDS] * alerting.ATTEMPTS
    assert "after 3 attempts" in problem
    assert "secret" not in problem and "token" not in problem
