"""A rollback checks a staged model card or golden file by its content, and each content once per check code.

The verdict depends on the bytes and the check code alone, so bytes that passed
before (known by the SHA-256 the staged copy was read back with) are not parsed
again; bytes that failed are refused every time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlvs.backends.dvc.hashcache import HashCache
from mlvs.errors import BadInputError
from mlvs.ops.health import PassedChecks
from mlvs.ops.rollback import apply
from mlvs.paths import ProjectPaths

CARD = "models/model_card.json"


def _stage(root: Path, card: dict[str, object]) -> tuple[Path, SimpleNamespace]:
    """A staged card, and a target snapshot whose manifest records its SHA-256."""
    payload = json.dumps(card).encode()
    staged = root / "staged.json"
    staged.write_bytes(payload)
    entry = SimpleNamespace(sha256=hashlib.sha256(payload).hexdigest())
    return staged, SimpleNamespace(name="fetched", files={CARD: entry})


def _check(paths: ProjectPaths, staged: Path, target: SimpleNamespace, **code: object) -> None:
    hashes = HashCache(paths)  # a new one each time, as each command opens its own
    try:
        apply._refuse_unusable(paths, target, CARD, staged, PassedChecks(paths, hashes, **code))  # type: ignore[arg-type]
    finally:
        hashes.close()


def _parsing_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # From here on, parsing a card would import a module that does not exist.
    monkeypatch.setattr(apply, "_MODEL_FILES", "mlvs.no_such_module")


def test_a_card_that_passed_is_not_parsed_again_by_the_next_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = ProjectPaths(tmp_path)
    staged, target = _stage(tmp_path, {"model_sha256": "a" * 64, "model_file": "model.skops"})
    _check(paths, staged, target)
    _parsing_fails(monkeypatch)
    _check(paths, staged, target)


def test_a_malformed_card_is_refused_every_time(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path)
    staged, target = _stage(tmp_path, {"model_sha256": "a" * 64, "model_file": "../outside"})
    for _ in range(2):
        with pytest.raises(BadInputError, match=r"model_card\.json of snapshot 'fetched'"):
            _check(paths, staged, target)


def test_other_check_code_parses_the_same_bytes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = ProjectPaths(tmp_path)
    staged, target = _stage(tmp_path, {"model_sha256": "a" * 64, "model_file": "model.skops"})
    _check(paths, staged, target)
    _parsing_fails(monkeypatch)
    with pytest.raises(ModuleNotFoundError, match=r"mlvs\.no_such_module"):
        _check(paths, staged, target, code=lambda: b"the check code, changed")
