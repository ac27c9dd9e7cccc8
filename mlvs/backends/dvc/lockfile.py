"""`dvc.lock` put together from two versions, stage by stage.

A partial rollback restores some stages' outputs and keeps the others: the lock must
then describe the bytes in place, so each stage's entry (its outputs, and the deps
and params they were produced with) comes from the version whose outputs are there.
The entries are spliced as text, so the file keeps DVC's own layout and a later
`dvc repro` has nothing to rewrite; when the text does not split cleanly, the
mapping is written as YAML instead (DVC reads either).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from mlvs.backends.dvc.outputs import load_yaml
from mlvs.errors import IntegrityError

LOCK_FILE = "dvc.lock"

_STAGE_LINE = re.compile(r"^  ([^\s:#][^:]*):\s*$")


def lock_document(payload: bytes | None, source: str) -> dict[str, Any]:
    """A lock's mapping ({} for none); a lock that is not a YAML mapping of stages is refused."""
    if payload is None:
        return {}
    try:
        document = load_yaml(payload.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise IntegrityError(
            f"{source} cannot be read as YAML ({type(error).__name__}); restore it from git"
        ) from None
    document = document or {}
    if not isinstance(document, dict) or not isinstance(document.get("stages") or {}, dict):
        raise IntegrityError(f"{source} is not a mapping of stages; restore it from git")
    return document


def lock_stages(document: dict[str, Any]) -> dict[str, Any]:
    """Stage name -> entry of a lock's mapping."""
    return dict(document.get("stages") or {})


def stage_outputs(entry: Any) -> list[str]:
    """The output paths a lock entry records (as written there)."""
    if not isinstance(entry, dict):
        return []
    return [str(o["path"]) for o in entry.get("outs") or [] if isinstance(o, dict) and "path" in o]


def _blocks(text: str) -> tuple[str, dict[str, str]] | None:
    """The text before `stages:` and each stage's block of lines; None if the layout is not DVC's."""
    lines = text.splitlines(keepends=True)
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip() == "stages:")
    except StopIteration:
        return None
    blocks: dict[str, str] = {}
    name: str | None = None
    for line in lines[start + 1 :]:
        match = _STAGE_LINE.match(line)
        if match:
            name = match.group(1)
            blocks[name] = line
        elif line.startswith("   ") and name is not None:
            blocks[name] += line
        elif line.strip():
            return None  # something after the stages, or a layout of another writer
    return "".join(lines[:start]), blocks


def compose_lock(
    current: bytes | None, target: bytes | None, from_target: set[str]
) -> bytes | None:
    """The lock whose entries for `from_target` stages are the target's, and the current one's otherwise.

    None: no lock at all (neither version has an entry to keep). Each argument is
    the lock file's bytes (None: that version has none).
    """
    now = lock_document(current, LOCK_FILE)
    then = lock_document(target, f"the snapshot's {LOCK_FILE}")
    now_stages, then_stages = lock_stages(now), lock_stages(then)
    names = list(dict.fromkeys([*then_stages, *now_stages]))
    wanted = {
        name: (then_stages if name in from_target else now_stages)[name]
        for name in names
        if name in (then_stages if name in from_target else now_stages)
    }
    if all(name in from_target for name in names):
        return target
    if wanted == now_stages:
        return current
    if not wanted:
        return None
    header = {k: v for k, v in (now or then).items() if k != "stages"}
    spliced = _splice(current, target, names, from_target, wanted)
    if spliced is not None:
        return spliced
    document = {**header, "stages": wanted}
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False).encode("utf-8")


def _splice(
    current: bytes | None,
    target: bytes | None,
    names: list[str],
    from_target: set[str],
    wanted: dict[str, Any],
) -> bytes | None:
    """The composed lock as DVC's own text, or None when either version's text does not split cleanly."""
    now = _blocks(current.decode("utf-8")) if current is not None else ("", {})
    then = _blocks(target.decode("utf-8")) if target is not None else ("", {})
    if now is None or then is None:
        return None
    header = now[0] if current is not None else then[0]
    body = []
    for name in names:
        blocks = then[1] if name in from_target else now[1]
        if name in wanted:
            if name not in blocks:
                return None
            body.append(blocks[name])
    text = header + "stages:\n" + "".join(body)
    # The splice must mean exactly the mapping intended; anything else falls back to YAML.
    try:
        if lock_stages(lock_document(text.encode("utf-8"), LOCK_FILE)) != wanted:
            return None
    except IntegrityError:
        return None
    return text.encode("utf-8")
