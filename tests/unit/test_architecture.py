"""The package's import structure: no cycle, and no import hidden inside a function to break one.

import-linter checks the layers (`make lint`); these tests read every module of `mlvs/`
with `ast`, imports inside functions included, so an import moved into a function to
dodge a cycle is caught as well.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mlvs"

# The word a comment must carry to justify a function-level import.
DEFERRAL_MARK = "deferred"


@dataclass(frozen=True)
class Import:
    """One import statement of a module."""

    module: str  # the importing module
    line: int
    # `import a.b` gives ("a.b",); `from a import b, c` gives ("a.b", "a.c") with `base` "a"
    targets: tuple[str, ...]
    base: str | None
    in_function: bool
    commented: bool  # a deferral comment on the same line or just above the group it opens


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _function_level_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    lines.add(inner.lineno)
    return lines


def _deferral_comment(text: str) -> bool:
    _, hash_, comment = text.partition("#")
    return bool(hash_) and DEFERRAL_MARK in comment.lower()


def imports_of(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import statement of `source` (the text of `module`), wherever it stands."""
    tree = ast.parse(source)
    lines = source.splitlines()
    in_function = _function_level_lines(tree)
    nodes = sorted(
        (n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))),
        key=lambda n: n.lineno,
    )
    found = []
    group_commented = False
    previous_end = -1
    for node in nodes:
        base = None if isinstance(node, ast.Import) else _absolute(node, module, is_package)
        if base is None:
            targets = tuple(alias.name for alias in node.names)
        else:
            targets = tuple(f"{base}.{alias.name}" for alias in node.names)
        # One comment may stand above a run of consecutive imports it explains.
        if node.lineno != previous_end + 1:
            above = lines[node.lineno - 2] if node.lineno >= 2 else ""
            group_commented = above.strip().startswith("#") and _deferral_comment(above)
        previous_end = node.end_lineno or node.lineno
        own_line = _deferral_comment(lines[node.lineno - 1])
        found.append(
            Import(
                module=module,
                line=node.lineno,
                targets=targets,
                base=base,
                in_function=node.lineno in in_function,
                commented=own_line or group_commented,
            )
        )
    return found


def package_imports(root: Path = PACKAGE) -> dict[str, tuple[Path, list[Import]]]:
    """Each module of the package with the imports it makes."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        modules[name] = (
            path,
            imports_of(path.read_text(encoding="utf-8"), name, path.stem == "__init__"),
        )
    return modules


def import_graph(modules: dict[str, tuple[Path, list[Import]]]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports.

    As in import-linter: `from a import b` is an import of the module `a.b` when there is
    one, else of `a`; the parent packages a name passes through are not counted.
    """
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (_, imports) in modules.items():
        for imp in imports:
            for target in imp.targets:
                if target not in modules and imp.base is not None:
                    target = imp.base
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def is_mlvs(target: str) -> bool:
    return target == "mlvs" or target.startswith("mlvs.")


def misplaced_imports(modules: dict[str, tuple[Path, list[Import]]]) -> list[str]:
    """Function-level imports that are not commented deferrals of another package's import."""
    problems = []
    for path, imports in modules.values():
        for imp in imports:
            if not imp.in_function:
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{imp.line}"
            if any(is_mlvs(t) for t in imp.targets):  # `from mlvs import x` gives "mlvs.x"
                problems.append(f"{where}: imports an mlvs module inside a function")
            elif not imp.commented:
                problems.append(
                    f"{where}: a function-level import needs a '# {DEFERRAL_MARK}: ...' comment "
                    "saying which slow import it keeps out of start-up"
                )
    return problems


# --- the package --------------------------------------------------------------------


@pytest.fixture(scope="module")
def modules() -> dict[str, tuple[Path, list[Import]]]:
    return package_imports()


def test_the_package_is_read(modules: dict[str, tuple[Path, list[Import]]]) -> None:
    assert {"mlvs", "mlvs.cli.app", "mlvs.ops.verify", "mlvs.ml.params"} <= set(modules)


def test_no_import_cycle_anywhere_in_mlvs(modules: dict[str, tuple[Path, list[Import]]]) -> None:
    assert cycles(import_graph(modules)) == []


def test_no_function_imports_an_mlvs_module_and_every_deferral_says_why(
    modules: dict[str, tuple[Path, list[Import]]],
) -> None:
    assert misplaced_imports(modules) == []


# --- the checks themselves ----------------------------------------------------------


def _modules(**sources: str) -> dict[str, tuple[Path, list[Import]]]:
    return {
        name: (PACKAGE / f"{name.replace('.', '/')}.py", imports_of(text, name))
        for name, text in sources.items()
    }


def test_a_cycle_through_a_function_level_import_is_found() -> None:
    graph = import_graph(
        _modules(
            **{
                "mlvs.a": "from mlvs.b import f\n",
                "mlvs.b": "def f():\n    from mlvs import a\n",
            }
        )
    )
    assert cycles(graph) == [["mlvs.a", "mlvs.b"]]


def test_a_relative_import_is_resolved() -> None:
    graph = import_graph(
        _modules(**{"mlvs.x.a": "from .b import f\n", "mlvs.x.b": "from . import a\n"})
    )
    assert cycles(graph) == [["mlvs.x.a", "mlvs.x.b"]]


def test_a_function_level_mlvs_import_is_refused_even_with_a_comment() -> None:
    problems = misplaced_imports(
        _modules(
            **{"mlvs.a": "def f():\n    # deferred: slow\n    from mlvs.b import g\n", "mlvs.b": ""}
        )
    )
    assert len(problems) == 1 and "mlvs module" in problems[0]


def test_a_function_level_third_party_import_needs_a_deferral_comment() -> None:
    bare = "def f():\n    import pandas\n"
    above = "def f():\n    # deferred: pandas (~1 s) is imported only when this runs\n    import pandas\n    import numpy\n"
    same_line = "def f():\n    import pandas  # deferred: ~1 s\n"
    assert len(misplaced_imports(_modules(**{"mlvs.a": bare}))) == 1
    assert misplaced_imports(_modules(**{"mlvs.a": above})) == []
    assert misplaced_imports(_modules(**{"mlvs.a": same_line})) == []


def test_a_deferral_comment_covers_only_the_imports_right_below_it() -> None:
    source = "def f():\n    # deferred: slow\n    import pandas\n\n    import numpy\n"
    assert len(misplaced_imports(_modules(**{"mlvs.a": source}))) == 1


def test_module_level_and_type_checking_imports_are_not_function_level() -> None:
    source = "from typing import TYPE_CHECKING\nimport json\nif TYPE_CHECKING:\n    import pandas\n"
    assert misplaced_imports(_modules(**{"mlvs.a": source})) == []
