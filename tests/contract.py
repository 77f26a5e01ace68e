"""Helpers for the backward contract tests (rule 1 of ``Function``'s docstring).

``backward_xp_names()`` lists every ``self.xp.<name>`` the library's code uses, directly or
through a local alias (``xp = self.xp``), with where it is used. The test checks each name
against NumPy (a plain backward) and :mod:`minitransformer.ops` (create_graph); the CuPy
half uses the same list.
"""

from __future__ import annotations

import ast
from pathlib import Path

import minitransformer

PACKAGE = Path(minitransformer.__file__).parent


def _is_self_xp(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "xp"
            and isinstance(node.value, ast.Name) and node.value.id == "self")


def backward_xp_names(package: Path = PACKAGE) -> dict[str, list[str]]:
    """{name: ["ops/elementwise.py:215", ...]} for every ``self.xp.<name>`` in ``package``."""
    found: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            aliases = {target.id for node in ast.walk(function) if isinstance(node, ast.Assign)
                       and _is_self_xp(node.value)
                       for target in node.targets if isinstance(target, ast.Name)}
            for node in ast.walk(function):
                if not isinstance(node, ast.Attribute):
                    continue
                base = node.value
                if _is_self_xp(base) or (isinstance(base, ast.Name) and base.id in aliases):
                    where = f"{path.relative_to(package).as_posix()}:{node.lineno}"
                    locations = found.setdefault(node.attr, [])
                    if where not in locations:
                        locations.append(where)
    return found
