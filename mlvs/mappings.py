"""Nested mappings as flat dotted keys, the shape MLflow stores and diffs compare.

A base module of its own so that reading or diffing snapshots does not load the
tracking backend (and through it the model types)."""

from __future__ import annotations

from typing import Any


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as MLflow's flat dotted keys: {'a': {'b': 1}} -> {'a.b': 1}.

    An empty mapping stays a value of its own, so that a section emptied is still seen.
    """
    if not isinstance(values, dict):
        return {prefix: values} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat
