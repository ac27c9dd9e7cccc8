"""Sending alerts where a team sees them: a webhook (an HTTP POST of each alert's JSON).

The URL comes from the environment (`MLVS_ALERT_WEBHOOK`), never from a file in the
workspace, so a fetched branch cannot point alerts elsewhere. Each POST has a timeout and
a few retries with a growing pause; a webhook that fails never fails the monitoring run:
what failed is returned, and the caller says it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from mlvs.errors import BadInputError
from mlvs.logs import get_logger
from mlvs.settings import ALERT_WEBHOOK

log = get_logger("alerts")

WEBHOOK_ENV = ALERT_WEBHOOK.name
TIMEOUT_SECONDS = 5.0
ATTEMPTS = 3
FIRST_PAUSE_SECONDS = 0.5


def webhook_url() -> str | None:
    """The webhook's URL from the environment, or None when none is set."""
    return ALERT_WEBHOOK.get()


def _shown(url: str) -> str:
    # Never print credentials a URL may carry (user:password@, a token in the query).
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}{parts.path}"


def post_alert(url: str, alert: dict[str, Any]) -> str | None:
    """POST one alert's JSON to `url`; None when it was taken (2xx), else why not."""
    if urlsplit(url).scheme not in ("http", "https"):
        return f"{WEBHOOK_ENV} must be an http or https URL, not {urlsplit(url).scheme or 'none'}"
    body = json.dumps(alert, sort_keys=True).encode()
    problem = "not tried"
    pause = FIRST_PAUSE_SECONDS
    for attempt in range(1, ATTEMPTS + 1):
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
                if 200 <= answer.status < 300:
                    return None
                problem = f"HTTP {answer.status}"
        except urllib.error.HTTPError as error:
            problem = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            problem = f"{type(reason).__name__}: {reason}"
        log.debug("webhook attempt %d to %s failed: %s", attempt, _shown(url), problem)
        if attempt < ATTEMPTS:
            time.sleep(pause)
            pause *= 2
    return f"the webhook {_shown(url)} did not take the alert after {ATTEMPTS} attempts ({problem})"


def deliver(alerts: list[dict[str, Any]]) -> list[str]:
    """Send each alert to the webhook, if one is set; what could not be sent, one line each."""
    try:
        url = webhook_url()
    except BadInputError as error:  # a misconfigured webhook is said, never fails the run
        return [str(error)]
    if url is None:
        return []
    return [p for p in (post_alert(url, a) for a in alerts) if p is not None]
