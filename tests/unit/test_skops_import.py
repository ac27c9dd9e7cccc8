"""skops.io imported through `mlvs.ml.modelio.skops_io`: the same trusted-type names, found faster.

skops names each public ufunc of numpy and scipy by the first loaded module that holds it.
mlvs answers that search from an index of the modules' namespaces while skops.io is imported,
and puts skops' own search back afterwards. Nothing skops computes may differ.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
import skops.io._utils as skops_utils

from mlvs.ml.modelio import _indexed

# What a kernel, `mlvs verify` or `mlvs serve` has loaded before the first model is read.
LOADED_FIRST = "import sys, mlflow, pandas, sklearn.ensemble, mlvs.ops.verify"
TRUSTED_NAMES = """
import json, sys
import skops.io._trusted_types as names
lists = {k: v for k, v in vars(names).items() if k.isupper() and isinstance(v, list)}
json.dump({k: [str(x) for x in v] for k, v in lists.items()}, sys.stdout)
"""


def trusted_names(import_line: str) -> dict[str, list[str]]:
    code = f"{LOADED_FIRST}\n{import_line}\n{TRUSTED_NAMES}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_skops_computes_the_same_trusted_type_names_as_when_imported_plainly() -> None:
    plain = trusted_names("import skops.io")
    indexed = trusted_names(
        "from mlvs.ml.modelio import skops_io; skops_io()\n"
        "import skops.io._utils as u\n"
        "assert u.whichmodule.__qualname__ == 'whichmodule', u.whichmodule.__qualname__\n"
        "assert not any(type(h).__module__ == 'mlvs.ml.modelio' for h in sys.meta_path)"
    )
    assert indexed == plain
    # The lists the search decides are there, not empty by a failure both runs share.
    assert len(plain["SCIPY_UFUNC_TYPE_NAMES"]) > 100 and len(plain["NUMPY_UFUNC_TYPE_NAMES"]) > 50


@pytest.fixture
def hidden() -> object:
    """An object without a `__module__`, as scipy's ufuncs are."""
    return type("Hidden", (), {"__module__": None})()


def test_an_object_held_in_a_modules_namespace_is_named_by_that_module(
    hidden: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = types.ModuleType("mlvs_test_holder")
    holder.hidden = hidden  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlvs_test_holder", holder)
    assert skops_utils.whichmodule(hidden, "hidden") == "mlvs_test_holder"
    assert _indexed(skops_utils.whichmodule)(hidden, "hidden") == "mlvs_test_holder"


def test_an_object_only_a_modules_getattr_hook_gives_is_found_by_the_search_as_before(
    hidden: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    lazy = types.ModuleType("mlvs_test_lazy")

    def lookup(name: str) -> object:
        if name == "hidden":
            return hidden
        raise AttributeError(name)

    lazy.__getattr__ = lookup  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "mlvs_test_lazy", lazy)
    assert skops_utils.whichmodule(hidden, "hidden") == "mlvs_test_lazy"
    assert _indexed(skops_utils.whichmodule)(hidden, "hidden") == "mlvs_test_lazy"
