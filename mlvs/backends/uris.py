"""Addresses of stores, shown without their credentials."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


def safe_uri(uri: str) -> str:
    """`uri` without user, password or query (where tokens hide), fit for a manifest."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file", "sqlite") or len(parts.scheme) == 1:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_credentials(text: str) -> str:
    """`text` (a tool's error message) with every URL in it shown as `safe_uri` shows it."""
    return _URL.sub(lambda found: safe_uri(found.group(0)), text)
