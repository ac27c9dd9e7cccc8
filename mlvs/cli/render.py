"""Text for people: snapshots, diffs and rollback reports as the CLI prints them."""

from __future__ import annotations

import json
from typing import Any

import click

from mlvs.backends.dvc.outputs import (
    DATA,
    MODELS,
)
from mlvs.ops.rollback.plan import RollbackReport
from mlvs.ops.snapshot.diff import SnapshotDiff
from mlvs.ops.snapshot.manifest import Manifest


def _short(value: Any, width: int = 12) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def fingerprint(manifest: Manifest, part: str) -> str | None:
    """A short digest of every file of `part` (DATA or MODELS): equal digests, equal bytes."""
    import hashlib

    lines = sorted(
        f"{path}\0{entry.sha256}"
        for path, entry in manifest.files.items()
        if manifest.part_of_file(path) == part
    )
    if not lines:
        return None
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:10]


def snapshots_table(manifests: list[Manifest]) -> str:
    """The snapshots as a compact table, oldest first."""
    if not manifests:
        return "No snapshots yet; create one with `mlvs snapshot create NAME`."
    rows = []
    for m in manifests:
        aliases = ",".join(f"{a}={v}" for a, v in m.registry.alias_versions().items()) or "-"
        rows.append(
            [
                m.name,
                m.created_at[:19].replace("T", " "),
                "auto" if m.automatic else "",
                _short(m.model_version, 6),
                aliases,
                _short(fingerprint(m, DATA), 10),
                _short(fingerprint(m, MODELS), 10),
                _short(m.message.splitlines()[0] if m.message else "", 40),
            ]
        )
    return _table(
        ["NAME", "CREATED (UTC)", "KIND", "MODEL", "ALIASES", "DATA", "MODELS", "MESSAGE"], rows
    )


def manifest_text(manifest: Manifest) -> str:
    """One snapshot, for people."""
    registry = manifest.registry
    lines = [
        f"snapshot     {manifest.name}{' (automatic)' if manifest.automatic else ''}",
        f"created      {manifest.created_at}",
        f"message      {manifest.message or '-'}",
        f"commit       {manifest.commit}",
        f"based on     {manifest.base_commit or '(no commit yet)'} on {manifest.branch or 'a detached HEAD'}",
        f"registry     {registry.model_name or '-'}: model version {manifest.model_version or '-'}, "
        f"aliases {', '.join(f'{a}={v}' for a, v in registry.alias_versions().items()) or '-'}"
        + (f" (unreadable: {registry.error})" if registry.error else ""),
        f"environment  Python {manifest.environment.python}, "
        + ", ".join(f"{k} {v}" for k, v in manifest.environment.packages.items() if v),
        "",
    ]
    rows = []
    for path, entry in sorted(manifest.outputs.items()):
        where = "git" if not entry.cache else _short(entry.md5, 16)
        size = "-" if entry.size is None else str(entry.size)
        rows.append([path, entry.part, entry.kind or "git", where, size])
    lines.append(_table(["OUTPUT", "PART", "KIND", "MD5", "BYTES"], rows))
    if manifest.metrics:
        lines += [
            "",
            "metrics      "
            + ", ".join(
                f"{k}={v}" for k, v in sorted(manifest.metrics.items()) if k.startswith("test_")
            ),
        ]
    return "\n".join(lines)


def diff_text(diff: SnapshotDiff) -> str:
    """A diff, for people."""
    title = f"{diff.a} -> {diff.b if diff.b is not None else '(current state)'}"
    if diff.empty:
        return f"{title}: no differences."
    lines = [title]
    sections = [
        ("params", diff.params),
        ("metrics", diff.metrics),
        ("data and models", diff.outputs),
        ("files", diff.files),
        ("registry", diff.registry),
    ]
    for heading, changes in sections:
        if changes:
            lines.append(f"{heading}:")
            width = max(len(k) for k in changes)
            lines += [
                f"  {k:<{width}}  {_short(a, 40)} -> {_short(b, 40)}"
                for k, (a, b) in changes.items()
            ]
    if diff.code:
        lines.append(f"code: {len(diff.code)} file(s) changed")
        lines += [f"  {p}" for p in diff.code]
    return "\n".join(lines)


def report_text(report: RollbackReport) -> str:
    """A rollback report, for people."""
    verb = "Would change" if report.dry_run else "Changed"
    lines = []
    if report.files or report.aliases:
        width = max([len(c.path) for c in report.files] + [20])
        lines.append(f"{'PART':<9}{'ACTION':<8}{'PATH':<{width + 2}}SOURCE")
        lines += [
            f"{c.part:<9}{c.action:<8}{c.path:<{width + 2}}{c.source or '-'}" for c in report.files
        ]
        lines += [
            f"{'registry':<9}{'alias':<8}{f'{alias} of {report.model_name}':<{width + 2}}{old or '-'} -> {new or '-'}"
            for alias, (old, new) in report.aliases.items()
        ]
    count = f"{len(report.files)} file(s), {len(report.aliases)} alias(es)"
    if report.dry_run:
        summary = f"Dry run: rolling back to {report.snapshot!r} ({', '.join(report.parts)}) would change {count}; nothing was changed."
        if not (report.files or report.aliases):
            summary = f"Dry run: the project already matches snapshot {report.snapshot!r} ({', '.join(report.parts)})."
    elif report.verified:
        summary = (
            f"Rolled back to {report.snapshot!r} ({', '.join(report.parts)}): {verb.lower()} {count}; "
            f"verified {report.checked_files} DVC-tracked file(s), git files and aliases in {report.seconds:.2f} s."
        )
    else:
        summary = f"Rolled back to {report.snapshot!r}, but verification found {len(report.findings)} problem(s):"
    lines.append(summary)
    lines += [f"  finding: {f}" for f in report.findings]
    lines += [f"  note: {n}" for n in report.notes]
    if report.automatic_snapshot:
        lines.append(f"Undo with: mlvs rollback {report.automatic_snapshot}")
    return "\n".join(lines)


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))
