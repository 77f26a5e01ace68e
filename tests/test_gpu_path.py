"""The GPU path, as far as a machine without a GPU can check it.

CuPy imports without a GPU, so these tests can assert that every CuPy function the
backend and the ops call exists in the installed (pinned) CuPy, and that data moves
between host and device only through ``backend.to_device`` / ``backend.to_numpy``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import requires_cupy
from tests.contract import PACKAGE, backward_xp_names

# Names that hold NumPy or CuPy in the library's code (xp = backend.array_module_of(x)).
ARRAY_MODULE_NAMES = {"xp", "_xp"}
# Supplied by backend._ArrayMath itself (NumPy has no erf or softmax), not looked up in CuPy.
SUPPLIED = {"erf", "softmax"}


def _array_module_names(package: Path = PACKAGE) -> dict[str, list[str]]:
    """{name: [where]} for every ``xp.<name>`` the library uses on an array module, in
    forward code as well as backward (backward_xp_names covers ``self.xp``)."""
    found: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in ARRAY_MODULE_NAMES):
                where = f"{path.relative_to(package).as_posix()}:{node.lineno}"
                found.setdefault(node.attr, []).append(where)
    for name, places in backward_xp_names(package).items():
        found.setdefault(name, []).extend(places)
    return found


def test_the_scan_finds_the_array_functions_the_ops_use() -> None:
    names = _array_module_names()
    assert {"exp", "where", "zeros", "log"} <= set(names)


@requires_cupy
def test_every_cupy_function_the_library_calls_exists() -> None:
    import cupy
    import cupyx
    import cupyx.scipy.special

    names = _array_module_names()
    missing = {name: places for name, places in names.items()
               if name not in SUPPLIED and not hasattr(cupy, name)}
    assert not missing, f"CuPy {cupy.__version__} lacks: {missing}"
    # The two helpers backend.py takes from cupyx:
    assert hasattr(cupyx, "scatter_add") and hasattr(cupyx.scipy.special, "erf")
    # And the ndarray methods the ops call on arrays (x.max(...), x.astype(...)...):
    for method in ("max", "sum", "mean", "astype", "reshape", "transpose", "copy", "get",
                   "any", "all", "argmax", "swapaxes", "item", "tolist"):
        assert hasattr(cupy.ndarray, method), method


TRANSFERS = {"asnumpy", "asarray"}  # on an array module: host -> device or back


def _transfers_outside_backend(package: Path = PACKAGE) -> list[str]:
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "backend.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            func, where = node.func, f"{path.relative_to(package).as_posix()}:{node.lineno}"
            base = func.value
            on_module = isinstance(base, ast.Name) and base.id in {*ARRAY_MODULE_NAMES, "cupy"}
            if func.attr in TRANSFERS and on_module:
                offenders.append(f"{where} {ast.unparse(node)[:60]}")
            # array.get() copies from the GPU; ContextVar.get() and dict.get(key) do not
            if func.attr == "get" and not node.args and not node.keywords and not (
                    isinstance(base, ast.Name) and base.id.startswith("_")):
                offenders.append(f"{where} {ast.unparse(node)[:60]}")
    return offenders


def test_host_device_transfers_go_through_the_backend_helpers() -> None:
    offenders = _transfers_outside_backend()
    assert not offenders, ("move data with backend.to_device / backend.to_numpy, not by "
                           f"hand: {offenders}")


def test_the_transfer_scan_would_catch_one(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def f(xp, a):\n    return xp.asarray(a), a.get()\n")
    assert len(_transfers_outside_backend(tmp_path)) == 2
