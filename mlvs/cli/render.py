"""Text for people: every command's typed result as the CLI prints it.

The operations return records; only this module turns them into lines. (The
records of the heavier operations are imported for their types only: a command
starts without what it does not run.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlvs.backends.dvc.outputs import (
    DATA,
    MODELS,
)
from mlvs.cli.style import bad, good, note

if TYPE_CHECKING:
    from mlvs.backends.mlflow.history import AliasHistory
    from mlvs.ops.deploy import DeployResult
    from mlvs.ops.drill.incidents import Scenario
    from mlvs.ops.pipeline import PipelineResult
    from mlvs.ops.repair import RecoveryOutcome
    from mlvs.ops.reproduce import Reproduction
    from mlvs.ops.rollback.plan import RollbackReport
    from mlvs.ops.snapshot.diff import SnapshotDiff
    from mlvs.ops.snapshot.manifest import Manifest
    from mlvs.ops.verify import Report
    from mlvs.state.interrupted import RecoveryReport


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
                ("auto" if m.automatic else "")
                + (" unhealthy" if m.health is not None and not m.health.healthy else ""),
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
        f"health       {health_text(manifest)}",
        *(
            f"  finding: {finding}"
            for finding in (manifest.health.findings if manifest.health else [])
        ),
        f"environment  Python {manifest.environment.python}, "
        + ", ".join(f"{k} {v}" for k, v in manifest.environment.packages.items() if v)
        + _lock_text(manifest),
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


def _lock_text(manifest: Manifest) -> str:
    environment = manifest.environment
    if not environment.lock_recorded:
        return ""  # taken before mlvs recorded the lock file
    return f"; uv.lock {_short(environment.uv_lock_sha256, 17) if environment.uv_lock_sha256 else 'absent'}"


def health_text(manifest: Manifest) -> str:
    """What a snapshot recorded of its state's health, in a few words."""
    health = manifest.health
    if health is None:
        return "not recorded (taken by an older mlvs)"
    if not health.healthy:
        kinds = sorted({f.kind for f in health.findings})
        return f"unhealthy when taken: {len(health.findings)} finding(s) ({', '.join(kinds)})"
    unchecked = f"; not deep-checked since the last change: {', '.join(health.unchecked)}"
    return "healthy" + (unchecked if health.unchecked else "")


def environment_lines(changes: dict[str, tuple[str | None, str | None]]) -> list[str]:
    """Environment changes (from `Environment.changes_to`), one indented line each: `what  old -> new`."""
    labels = {
        key: (
            "uv.lock sha256"
            if key == "uv_lock_sha256"
            else key.removeprefix("packages.")
            if key.startswith("packages.")
            else key
        )
        for key in changes
    }
    width = max((len(label) for label in labels.values()), default=0)
    lines = []
    for key, (old, new) in changes.items():
        if key == "uv_lock_sha256":
            old_text, new_text = (
                _short(old or "(no uv.lock)", 17),
                _short(new or "(no uv.lock)", 17),
            )
        else:
            old_text, new_text = old or "(not installed)", new or "(not installed)"
        lines.append(f"  {labels[key]:<{width}}  {old_text} -> {new_text}")
    return lines


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
    if diff.environment:
        lines.append("environment:")
        lines += environment_lines(diff.environment)
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
        summary = f"{note('Dry run:')} rolling back to {report.snapshot!r} ({', '.join(report.parts)}) would change {count}; nothing was changed."
        if not (report.files or report.aliases):
            summary = f"{note('Dry run:')} the project already matches snapshot {report.snapshot!r} ({', '.join(report.parts)})."
    elif report.verified:
        summary = (
            f"Rolled back to {report.snapshot!r} ({', '.join(report.parts)}): {verb.lower()} {count}; "
            f"{good('verified')} {report.checked_files} DVC-tracked file(s), git files and aliases in {report.seconds:.2f} s."
        )
    else:
        summary = f"Rolled back to {report.snapshot!r}, " + bad(
            f"but verification found {len(report.findings)} problem(s):"
        )
    lines.append(summary)
    lines += [f"  {bad('finding:')} {f}" for f in report.findings]
    lines += [f"  {note('note:')} {n}" for n in report.notes]
    if report.automatic_snapshot:
        lines.append(f"{note('Undo with:')} mlvs rollback {report.automatic_snapshot}")
    return "\n".join(lines)


def snapshot_saved_text(manifest: Manifest) -> str:
    """The line `mlvs snapshot create` prints."""
    text = (
        good(f"Snapshot {manifest.name!r} saved:") + f" commit {str(manifest.commit)[:12]}, "
        f"{len(manifest.files)} DVC-tracked file(s), model version {manifest.model_version or '-'}"
    )
    health = manifest.health
    if health is not None and not health.healthy:
        return f"{text}; taken unhealthy, {len(health.findings)} finding(s) recorded in it."
    if health is not None and health.unchecked:
        # Only quick checks run here: say what they could not vouch for, and how to check it.
        return (
            f"{text}; not deep-checked since the last change: {', '.join(health.unchecked)} "
            "(`mlvs verify` runs those checks)."
        )
    return f"{text}."


def _names(paths: list[str], most: int = 10) -> str:
    shown = ", ".join(paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def untracked_text(included: list[str], withheld: list[str]) -> list[str]:
    """What `mlvs snapshot create` says about files git does not track."""
    lines = []
    if included:
        lines.append(
            f"Untracked files included in the snapshot commit: {_names(included)} "
            "(add them to .gitignore to keep them out)."
        )
    if withheld:
        lines.append(f"Left out as secrets, never put in a snapshot: {_names(withheld)}.")
    return lines


# The metrics `mlvs pipeline` shows, in this order.
PIPELINE_METRICS = (
    "test_accuracy",
    "test_precision",
    "test_recall",
    "test_f1",
    "test_roc_auc",
    "net_value",
    "roi",
)


def pipeline_text(result: PipelineResult) -> str:
    """A pipeline run, for people: what ran, the test metrics, where the reports are."""
    metrics = result.metrics
    ran, unchanged = ", ".join(result.ran) or "nothing", ", ".join(result.skipped) or "none"
    lines = [
        good(f"Pipeline done in {round(result.seconds, 1)} s")
        + f" (ran: {ran}; unchanged: {unchanged}).",
        "",
        "Metrics (test set):",
        *(f"  {name:<15} {metrics[name]:.4f}" for name in PIPELINE_METRICS if name in metrics),
        "",
        "Executed notebooks: " + (", ".join(result.reports) or "none yet"),
        "Open them in JupyterLab:   make lab",
        "Browse the MLflow runs:    make ui   (then http://127.0.0.1:5000)",
    ]
    return "\n".join(lines)


def verify_text(report: Report) -> str:
    """A verification, for people: healthy, or each finding on its own line."""
    skipped = [f"  skipped: {reason}" for reason in report.skipped]
    if report.healthy:
        return "\n".join([f"{good('healthy')}: every check passed", *skipped])
    lines = [
        bad(f"{len(report.findings)} finding(s):"),
        *(f"  {finding}" for finding in report.findings),
    ]
    if not report.damaged:
        # Said apart: `mlvs recover` has nothing to put back here, only a pipeline run helps.
        lines.append(
            "no damage: every output is what dvc.lock records, but the pipeline is stale; "
            "run `mlvs pipeline` to rebuild it from the current params and code"
        )
    return "\n".join([*lines, *skipped])


def interrupted_text(interrupted: RecoveryReport) -> str:
    """What finishing an interrupted command did, in one line."""
    return f"Interrupted operations: {interrupted.detail}."


def recovery_text(interrupted: RecoveryReport, outcome: RecoveryOutcome) -> str:
    """A recovery, for people: what was repaired from where, what is still wrong, where the evidence is."""
    lines = [interrupted_text(interrupted)]
    if not outcome.before:
        lines.append(f"{good('healthy')}: nothing to repair")
    lines += [
        f"  {good('repaired')} {repair.artifact} from {repair.rung}" for repair in outcome.repairs
    ]
    # Recovery has just tried every rung on these: running it again would not help.
    lines += [
        f"  {bad('still wrong:')} {finding}; no rung could repair it: roll back to a snapshot that "
        "verifies (`mlvs rollback NAME`) or rebuild it (`mlvs pipeline`)"
        for finding in outcome.after
    ]
    if outcome.evidence:
        lines.append(f"damaged files kept in {Path(outcome.evidence[0]).parent}")
    return "\n".join(lines)


def incidents_table(catalog: dict[str, Scenario]) -> str:
    """The incident catalog, one scenario a line."""
    width = max(len(name) for name in catalog)
    return "\n".join(
        f"{name:<{width}}  {s.family:<8}  {s.description}" for name, s in catalog.items()
    )


def reproduction_text(result: Reproduction) -> str:
    """A reproduction, for people: the environment differences first, then what was compared, or each difference."""
    lines = []
    if result.environment:
        lines += [
            note(f"the environment differs from the one snapshot {result.name!r} recorded")
            + " (recorded -> now):",
            *environment_lines(result.environment),
        ]
    if result.reproduces:
        lines.append(
            f"snapshot {result.name!r} {good('reproduces')}: {result.compared_files} file(s) byte for byte, "
            f"{result.compared_metrics} metric(s) exactly, golden predictions identical "
            f"({result.seconds:.0f} s)"
            + (" despite the environment differences" if result.environment else "")
        )
        return "\n".join(lines)
    lines += [
        f"snapshot {result.name!r} "
        + bad(f"does not reproduce, {len(result.differences)} difference(s):"),
        *(f"  {difference}" for difference in result.differences),
    ]
    if result.environment:
        lines.append(
            "these differences in results may come from the environment differences above; "
            "reproduce in the snapshot's environment (its uv.lock: `uv sync --frozen`) to tell"
        )
    return "\n".join(lines)


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout, never coloured (a document's text fields are plain)."""
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str), color=False)


def out_of_step_text(differ: list[str]) -> str:
    """The last line of a one-off `mlvs run` whose outputs no longer match `dvc.lock`."""
    shown = ", ".join(differ[:3]) + (f" and {len(differ) - 3} more" if len(differ) > 3 else "")
    return (
        f"{note('mlvs: note:')} this run's outputs no longer match dvc.lock ({shown}); run `mlvs pipeline` "
        "to rebuild them from params/, or `mlvs recover` to put back the ones dvc.lock records"
    )


def deploy_text(result: DeployResult) -> str:
    """The gate's decision, figure by figure, and what the deploy did."""
    d = result.decision
    lines = [
        f"{result.model_name}: version {result.candidate} (candidate) against version "
        f"{result.champion_before} (champion), {d.rows} test rows, {d.method}, "
        f"{d.resamples} resamples, {d.confidence:.0%} intervals"
    ]
    rows = [
        [
            c.metric,
            f"{c.champion:.4f}",
            f"{c.candidate:.4f}",
            f"{c.gain:+.4f}",
            f"{c.required_gain:.4f}",
            f"[{c.interval_low:+.4f}, {c.interval_high:+.4f}]",
            good("pass") if c.passed else bad("fail"),
        ]
        for c in d.comparisons
    ]
    if rows:
        lines.append(
            _table(["metric", "champion", "candidate", "gain", "needed", "interval", ""], rows)
        )
    lines.append(f"gate: {good('passed') if d.promote else bad('refused')}: {d.reason}")
    if result.dry_run:
        would = "would be deployed" if (d.promote or result.forced) else "would stay the challenger"
        lines.append(f"{note('dry run:')} nothing changed; version {result.candidate} {would}")
    elif result.deployed:
        forced = f" {bad('FORCED past the refusal')}" if result.forced else ""
        lines.append(
            f"{good('deployed:')} {result.model_name}@champion is version {result.candidate}{forced}"
        )
        lines.append(f"{note('undo with:')} mlvs rollback {result.snapshot}")
    else:
        lines.append(f"{bad('not deployed:')} the champion stays version {result.champion_before}")
    if result.report:
        lines.append(f"report: {result.report}")
    return "\n".join(lines)


def history_text(history: AliasHistory) -> str:
    """The alias history as a table, oldest first."""
    if not history.moves:
        return f"{history.model_name}: no alias move recorded yet"
    rows = [
        [
            m.time.replace("T", " ")[:19],
            m.command + (" --force" if m.forced else ""),
            m.alias,
            m.from_version or "-",
            m.to_version or "-",
            m.snapshot or "-",
            m.reason if len(m.reason) <= 80 else m.reason[:79] + "…",
        ]
        for m in history.moves
    ]
    return _table(["when (UTC)", "command", "alias", "from", "to", "snapshot", "reason"], rows)
