"""Addresses of stores, shown without their credentials."""

from __future__ import annotations

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
