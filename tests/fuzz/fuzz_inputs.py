"""Fuzz the parsers of untrusted input for a bounded time (`make fuzz`).

Random YAML documents are written as params files and loaded; random names,
values and `-f` files go through the notebook-parameter validation (only
ParamsError and BadInputError may escape). Hostile bytes go into the files mlvs
reads back from disk: the journal, a snapshot manifest, the hash cache, `dvc.lock`
and DVC `.dir` objects (`hostile_files.py` says what each must withstand). Not
collected by pytest (no `test_` prefix): run `python tests/fuzz/fuzz_inputs.py`,
`FUZZ_SECONDS` bounds it (default 60). Findings become regression tests in
tests/reliability/ (the hostile files' in `test_fuzz_findings.py`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import InMemoryExampleDatabase

# The hostile-file targets live beside this script, in the tests' package space.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fuzz import hostile_files

from mlvs.errors import BadInputError
from mlvs.ml.params import STAGES, load_stage
from mlvs.ops.run import check_name, collect_parameters, parse_value

SECONDS = float(os.environ.get("FUZZ_SECONDS", "60"))
DEADLINE = time.monotonic() + SECONDS
WORKDIR = Path(tempfile.mkdtemp(prefix="mlvs-fuzz-"))
(WORKDIR / "params").mkdir()

KEYS = sorted(
    {k for model in STAGES.values() for k in model.model_fields}
    | {
        "n_estimators",
        "max_depth",
        "random_forest",
        "model_name",
        "min_roc_auc_gain",
        "true_positive",
    }
)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(KEYS),
)
DOCUMENT = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), SCALAR), inner, max_size=6),
    ),
    max_leaves=30,
)
YAML_NOISE = st.sampled_from(
    [
        "",
        "[",
        "{",
        "---\n---\n",
        "!!python/object/apply:os.system ['true']",
        "&a [*a]",
        "a: *b",
        "\t",
        "%YAML 9.9\n---\n",
        "? [a]\n: 1\n",
        "a: !!binary x\n",
        "\x00",
        "\ufeff",
        "a: 1\na: 2\n",
        "<<: {a: 1}\n",
        "a: " + "[" * 200,
    ]
)


def _yaml_text(document: object) -> str:
    try:
        return yaml.safe_dump(document, allow_unicode=True)
    except yaml.YAMLError:
        return repr(document)


# Each round is a fresh random batch, small enough that the time bound is kept; rounds repeat
# until the time is up.
ROUND = settings(
    max_examples=50,
    deadline=None,
    database=InMemoryExampleDatabase(),
    derandomize=False,
    suppress_health_check=list(HealthCheck),
)


@ROUND
@given(
    st.sampled_from(sorted(STAGES)),
    st.one_of(DOCUMENT.map(_yaml_text), st.text(max_size=200), YAML_NOISE, st.binary(max_size=200)),
    st.dictionaries(st.sampled_from(KEYS), SCALAR, max_size=3),
)
def fuzz_load_stage(stage: str, content: str | bytes, overrides: dict) -> None:
    path = WORKDIR / "params" / f"{stage}.yaml"
    path.write_bytes(
        content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass")
    )
    with contextlib.suppress(BadInputError):
        load_stage(stage, WORKDIR, overrides=overrides)


@ROUND
@given(
    st.lists(st.tuples(st.text(max_size=30), st.text(max_size=60)), max_size=4),
    st.lists(st.one_of(DOCUMENT.map(_yaml_text), YAML_NOISE, st.binary(max_size=100)), max_size=2),
)
def fuzz_notebook_parameters(pairs: list[tuple[str, str]], files: list[str | bytes]) -> None:
    paths = []
    for i, content in enumerate(files):
        path = WORKDIR / f"parameters-{i}.yaml"
        path.write_bytes(
            content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass")
        )
        paths.append(path)
    with contextlib.suppress(BadInputError):
        collect_parameters(pairs, paths)
    for name, text in pairs:
        try:
            check_name(name)
            parse_value(name, text)
        except BadInputError:
            pass


SANDBOX = hostile_files.Sandbox()
CASES = {name: 0 for name in ("journal", "manifest", "hash cache", "dvc.lock", ".dir object")}


@ROUND
@given(hostile_files.JOURNALS)
def fuzz_journal(payload: bytes) -> None:
    CASES["journal"] += 1
    hostile_files.check_journal(SANDBOX, payload)


@ROUND
@given(hostile_files.MANIFESTS)
def fuzz_manifest(payload: bytes) -> None:
    CASES["manifest"] += 1
    hostile_files.check_manifest(SANDBOX, payload)


@ROUND
@given(st.one_of(hostile_files.HASH_RECORDS, st.binary(max_size=400)))
def fuzz_hash_cache(record: tuple | bytes) -> None:
    CASES["hash cache"] += 1
    if isinstance(record, bytes):
        hostile_files.check_hash_cache_file(SANDBOX, record)
    else:
        hostile_files.check_hash_cache_record(SANDBOX, record)


@ROUND
@given(hostile_files.LOCKS)
def fuzz_lock(payload: bytes) -> None:
    CASES["dvc.lock"] += 1
    hostile_files.check_lock(SANDBOX, payload)


@ROUND
@given(hostile_files.DIR_OBJECTS)
def fuzz_dir_object(payload: bytes) -> None:
    CASES[".dir object"] += 1
    hostile_files.check_dir_object(SANDBOX, payload)


TARGETS = (
    fuzz_load_stage,
    fuzz_notebook_parameters,
    fuzz_journal,
    fuzz_manifest,
    fuzz_hash_cache,
    fuzz_lock,
    fuzz_dir_object,
)


def main() -> int:
    """Go round the fuzz targets until FUZZ_SECONDS have passed; a finding fails loudly."""
    rounds = 0
    try:
        while time.monotonic() < DEADLINE:
            for target in TARGETS:
                target()
            rounds += 1
    finally:
        SANDBOX.close()
    files = ", ".join(f"{count} {name}" for name, count in CASES.items())
    print(
        f"fuzzed for {SECONDS:.0f} s ({rounds} round(s)): params and notebook parameters, and "
        f"{sum(CASES.values())} hostile files ({files}): no finding"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
