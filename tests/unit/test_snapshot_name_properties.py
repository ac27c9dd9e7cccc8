"""Properties of snapshot-name validation: any text is either a safe ref name or a clean refusal."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mlvs.backends.git.refs import validate_snapshot_name
from mlvs.errors import BadInputError

NAME_ALPHABET = st.characters(codec="utf-8")
REF_LIKE = st.text(alphabet="abcXYZ019._-/~^:?*[\\@{} \t\n", min_size=0, max_size=12)
ANY_TEXT = st.one_of(st.text(alphabet=NAME_ALPHABET, max_size=120), REF_LIKE)


def _git_accepts(name: str) -> bool:
    result = subprocess.run(
        ["git", "check-ref-format", f"refs/mlvs/snapshots/{name}"], capture_output=True
    )
    return result.returncode == 0


@settings(max_examples=200)
@given(ANY_TEXT)
@example("..")
@example("a/b")
@example("-x")
@example("x.lock")
@example("a" * 300)
@example("a@{b")
@example("")
def test_any_text_is_accepted_unchanged_or_refused_with_bad_input(name: str) -> None:
    try:
        accepted = validate_snapshot_name(name)
    except BadInputError as refusal:
        assert str(refusal).startswith("snapshot name")
        return
    assert accepted == name


@settings(max_examples=60)
@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True))
def test_every_accepted_name_is_a_valid_git_ref(name: str) -> None:
    try:
        validate_snapshot_name(name)
    except BadInputError:
        return
    assert _git_accepts(name), name


@settings(max_examples=40)
@given(REF_LIKE)
def test_accepted_ref_like_names_pass_git_check_ref_format(name: str) -> None:
    try:
        validate_snapshot_name(name)
    except BadInputError:
        return
    assert _git_accepts(name), name


@settings(max_examples=200)
@given(
    st.text(max_size=20),
    st.sampled_from(["/", "..", " ", "\t", "\n", "\x00", "\x7f", "\x1b", "\u00a0", "\\"]),
    st.text(max_size=20),
)
def test_separators_dot_dot_whitespace_and_control_characters_are_always_refused(
    before: str, bad: str, after: str
) -> None:
    with pytest.raises(BadInputError):
        validate_snapshot_name(before + bad + after)


@settings(max_examples=50)
@given(st.one_of(st.integers(), st.none(), st.binary(), st.lists(st.text())))
def test_non_text_is_refused_with_bad_input(value: object) -> None:
    with pytest.raises(BadInputError):
        validate_snapshot_name(value)  # type: ignore[arg-type]
