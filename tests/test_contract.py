"""The backward contract (``Function``'s docstring) and the op registry, checked.

Every registered op (``minitransformer.ops.registry.OPS``) has one entry in
``tests/op_cases.py``, and that entry runs through gradcheck, gradgradcheck, the PyTorch
comparison (where PyTorch has a twin) and the device sweep, so a new op gets all four
without anyone remembering them.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import backend, ops
from minitransformer.ops.registry import OPS
from minitransformer.tensor import Tensor
from tests.conftest import requires_torch, torch
from tests.contract import PACKAGE, backward_xp_names
from tests.op_cases import NOT_IN_A_CASE, OP_CASES, SAME, leaves

DIFFERENTIABLE = sorted(name for name, entry in OPS.items() if entry.differentiable)
WITH_TWIN = sorted(name for name in OPS if name in OP_CASES and OP_CASES[name].torch is not None)


def _case(name: str):
    if name not in OP_CASES:
        pytest.fail(f"op {name!r} is registered but has no entry in tests/op_cases.py")
    return OP_CASES[name]


def _run(name: str, xs: list) -> tuple:
    case = _case(name)
    out = (case.call or OPS[name].fn)(*xs)
    return (out,) if isinstance(out, Tensor) else tuple(out)


def test_every_registered_op_has_one_test_entry() -> None:
    missing = sorted(set(OPS) - set(OP_CASES))
    unknown = sorted(set(OP_CASES) - set(OPS))
    assert not missing, f"registered ops without an entry in tests/op_cases.py: {missing}"
    assert not unknown, f"entries in tests/op_cases.py for ops nobody registered: {unknown}"


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradcheck(name: str, rng: np.random.Generator) -> None:
    case = _case(name)
    xs = leaves(rng, case.inputs)
    assert mt.gradcheck(lambda *a: _run(name, list(a)), xs, **case.tolerances)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradgradcheck(name: str, rng: np.random.Generator) -> None:
    case = _case(name)
    xs = leaves(rng, case.inputs)
    assert mt.gradgradcheck(lambda *a: _run(name, list(a)), xs, **case.tolerances)


@requires_torch
@pytest.mark.parametrize("name", WITH_TWIN)
def test_matches_pytorch(name: str, rng: np.random.Generator) -> None:
    case = _case(name)
    twin = getattr(torch, name) if case.torch == SAME else case.torch
    xs = leaves(rng, case.inputs)
    ts = [torch.tensor(x.detach().numpy(), requires_grad=True) for x in xs]
    ours, theirs = _run(name, xs), twin(*ts)
    theirs = (theirs,) if isinstance(theirs, torch.Tensor) else tuple(theirs)
    assert len(ours) == len(theirs)
    tol = 1e-5 if any(o.dtype == mt.float32 for o in ours) else 1e-10
    upstream = [rng.standard_normal(o.shape) for o in ours]
    for o, t in zip(ours, theirs):
        assert o.shape == tuple(t.shape) and o.detach().numpy().dtype == t.detach().numpy().dtype
        np.testing.assert_allclose(o.detach().numpy(), t.detach().numpy(), rtol=tol, atol=tol)
    sum((o * mt.tensor(u, dtype=o.dtype)).sum() for o, u in zip(ours, upstream)).backward()
    sum((t * torch.tensor(u, dtype=t.dtype)).sum() for t, u in zip(theirs, upstream)).backward()
    for x, t in zip(xs, ts):
        np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(OPS))
def test_device_sweep(name: str, device: str) -> None:
    """Values and gradients on ``device`` equal the CPU's (the CUDA half needs a GPU)."""
    case = _case(name)
    on_device = leaves(np.random.default_rng(1), case.inputs, device)
    on_cpu = leaves(np.random.default_rng(1), case.inputs)
    out, ref = _run(name, on_device), _run(name, on_cpu)
    for o, r in zip(out, ref):
        assert o.device == device
        np.testing.assert_allclose(o.detach().numpy(), r.detach().numpy(), rtol=1e-6, atol=1e-9)
    sum(o.sum() for o in out).backward()
    sum(r.sum() for r in ref).backward()
    for x, y in zip(on_device, on_cpu):
        assert x.grad.device == device
        np.testing.assert_allclose(x.grad.numpy(), y.grad.numpy(), rtol=1e-6, atol=1e-9)


def test_registry_drives_the_namespace_and_the_methods() -> None:
    for entry in OPS.values():
        for n in (entry.name, *entry.aliases):
            if entry.top_level:
                assert getattr(mt, n) is entry.fn, f"mt.{n}"
                assert getattr(ops, n) is entry.fn, f"ops.{n}"
            else:
                assert getattr(mt, n, None) is not entry.fn, f"mt.{n} is not meant to exist"
            if entry.method:
                # installed from the registry, or spelled out by Tensor with another signature
                assert getattr(Tensor, n) is entry.fn or n in Tensor.__dict__, f"Tensor.{n}"
    x = mt.tensor([[0.5, -1.0]])
    np.testing.assert_array_equal(x.clamp(-0.5, 0.5).numpy(), mt.clip(x, -0.5, 0.5).numpy())
    assert x.sum(axis=1).shape == (1,) and x.unsqueeze(0).shape == (1, 1, 2)


# ----- rule 1: every self.xp.<name> exists in NumPy and in minitransformer.ops ----------------
def test_every_xp_name_in_a_backward_exists_in_numpy_and_ops() -> None:
    names = backward_xp_names()
    assert {"exp", "where", "softmax", "expand_dims"} <= set(names)  # the scan finds them
    numpy_math = backend.array_math("cpu")
    missing_numpy = {n: where for n, where in names.items() if not hasattr(numpy_math, n)}
    missing_ops = {n: where for n, where in names.items() if not hasattr(ops, n)}
    assert not missing_numpy, f"self.xp names NumPy lacks (plain backward): {missing_numpy}"
    assert not missing_ops, f"self.xp names minitransformer.ops lacks (create_graph): {missing_ops}"


def test_the_xp_scan_sees_aliases_and_would_catch_cosh(tmp_path: Path) -> None:
    (tmp_path / "sinh.py").write_text(textwrap.dedent("""
        class Sinh:
            def backward(self, grad):
                xp = self.xp
                return (grad * xp.cosh(self.args[0]),)
    """))
    assert backward_xp_names(tmp_path) == {"cosh": ["sinh.py:5"]}
    assert not hasattr(ops, "cosh")  # so the test above would fail for this backward


# ----- rule 3: a backward branches on self.create_graph, set by the engine --------------------
def test_no_backward_checks_the_mode_ad_hoc() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not (isinstance(fn, ast.FunctionDef) and "backward" in fn.name):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (
                    node.func.id == "is_grad_enabled"
                    or (node.func.id == "isinstance" and ast.unparse(node.args[1]) == "Tensor")
                ):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, f"use self.create_graph instead: {offenders}"


def test_a_backward_called_by_hand_works_on_arrays() -> None:
    """The mode is the node's, not the global grad flag: outside the engine it is plain."""
    x = mt.tensor([0.5, 1.0], dtype=mt.float64, requires_grad=True)
    y = x.tanh() * x
    assert mt.is_grad_enabled()
    (dx, _) = y.grad_fn.backward(np.ones(2))
    assert isinstance(dx, np.ndarray)
    t = x.tanh()  # the node keeps only a weak reference to its output
    (dt,) = t.grad_fn.backward(np.ones(2))
    np.testing.assert_allclose(dt, 1 - np.tanh([0.5, 1.0]) ** 2)


def test_the_engine_tells_each_node_its_mode() -> None:
    seen = []

    class Spy(mt.Function):
        def forward(self, x):
            return x * 2

        def backward(self, grad):
            seen.append((self.create_graph, type(grad), type(self.args[0])))
            return (grad * 2,)

    x = mt.tensor([1.0, 2.0], dtype=mt.float64, requires_grad=True)
    Spy.apply(x).sum().backward()
    mt.grad(Spy.apply(x).sum(), x, create_graph=True)
    assert seen == [(False, np.ndarray, np.ndarray), (True, Tensor, Tensor)]


# ----- one masked softmax: the fully-masked-row rule, the same on every path ------------------
def test_every_attention_path_zeroes_a_fully_masked_row(rng: np.random.Generator) -> None:
    import minitransformer.functional as F
    from minitransformer import nn

    allowed = np.tril(np.ones((4, 4), dtype=bool))
    allowed[2] = False  # query 2 may look at no key
    float_mask = np.where(allowed, 0.0, -np.inf)
    x = mt.tensor(rng.standard_normal((2, 4, 4)), requires_grad=True)
    layer = nn.Attention(4).double()
    paths = {
        "fused bool": lambda q, k, v: F.scaled_dot_product_attention_with_weights(
            q, k, v, allowed)[1],
        "fused float": lambda q, k, v: F.scaled_dot_product_attention_with_weights(
            q, k, v, float_mask)[1],
        "composed": lambda q, k, v: F.attention_reference(q, k, v, attn_mask=allowed)[1],
        "masked_softmax": lambda q, k, v: mt.masked_softmax(q @ k.swapaxes(-1, -2) * 0.5,
                                                            allowed),
        "nn.Attention bool": lambda q, k, v: layer(q, attn_mask=allowed)[1],
        "nn.Attention float": lambda q, k, v: layer(q, attn_mask=float_mask)[1],
    }
    weights = {}
    for name, path in paths.items():
        x.grad = None
        w = path(x, x * 2.0, x - 1.0)
        (w * w).sum().backward()
        weights[name] = w.detach().numpy()
        assert np.isfinite(x.grad.numpy()).all(), name
        assert (weights[name][:, 2] == 0).all() and (weights[name][:, ~allowed] == 0).all(), name
        np.testing.assert_allclose(weights[name][:, [0, 1, 3]].sum(-1), 1, rtol=1e-12)
    np.testing.assert_allclose(weights["fused bool"], weights["masked_softmax"], rtol=1e-12)
    np.testing.assert_allclose(weights["fused bool"], weights["composed"], rtol=1e-12)


# ----- the engine's only run-time dependency is NumPy ------------------------------------------
def test_importing_the_package_imports_no_drawing_or_progress_library() -> None:
    """matplotlib, graphviz and tqdm serve drawing and the command line: imported lazily,
    only where used, so that ``import minitransformer`` needs NumPy alone."""
    import subprocess
    import sys

    code = ("import sys, minitransformer, minitransformer.coref.training; "
            "print(sorted(m for m in ('matplotlib', 'graphviz', 'tqdm') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_with_numpy_alone_the_library_trains_and_the_command_line_says_what_is_missing(
        tmp_path: Path) -> None:
    """A Python that sees only NumPy (``-S``: no site-packages) and the source tree: a model
    trains; the command prints one line naming the ``demo`` extra."""
    import subprocess
    import sys

    site = Path(np.__file__).parent.parent
    alone = tmp_path / "numpy-only"
    alone.mkdir()
    for name in ("numpy", "numpy.libs"):
        if (site / name).exists():
            (alone / name).symlink_to(site / name)
    code = textwrap.dedent("""
        import sys
        import minitransformer as mt
        from minitransformer import nn, optim
        model = nn.TransformerEncoderLayer(8, 2, batch_first=True, dim_feedforward=16,
                                           dropout=0.0)
        opt = optim.AdamW(model.parameters(), lr=1e-2)
        x = mt.randn(2, 5, 8)
        losses = []
        for _ in range(3):
            loss = (model(x) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], losses
        from minitransformer.cli import main
        sys.exit(main(["demo"]))
    """)
    env = {"PYTHONPATH": f"{alone}:{PACKAGE.parent}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "graphviz, tqdm, matplotlib" in lines[0], result.stderr
    assert "pip install 'minitransformer[demo]'" in lines[0]


def test_the_engine_does_not_import_the_coreference_application() -> None:
    offenders = []
    for folder in ("ops", "nn", "optim", "viz"):
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            if "minitransformer.coref" in path.read_text(encoding="utf-8"):
                offenders.append(str(path.relative_to(PACKAGE)))
    for name in ("autograd.py", "tensor.py", "backend.py", "functional.py", "gradcheck.py",
                 "runs.py"):
        if "minitransformer.coref" in (PACKAGE / name).read_text(encoding="utf-8"):
            offenders.append(name)
    assert not offenders, f"the engine imports the coreference application: {offenders}"


# ----- create_graph: the recorded first derivative is the plain one -------------------------
def create_graph_mismatch(name: str, seed: int = 0) -> str | None:
    """Where the first derivative of op ``name`` under create_graph=True differs from the
    plain one (same inputs, same upstream gradient, float64): a message, else None.

    gradgradcheck cannot see this: it checks the recorded gradient's own derivative, so a
    create_graph path with a sign error passes it, and every second derivative is wrong."""
    case = _case(name)
    rng = np.random.default_rng(seed)
    xs = leaves(rng, case.inputs)
    outs = _run(name, xs)
    upstream = [mt.tensor(rng.standard_normal(o.shape), dtype=o.dtype) for o in outs]

    def first(create_graph: bool) -> list[np.ndarray | None]:
        total = sum((o * u).sum() for o, u in zip(_run(name, xs), upstream))
        found = mt.grad(total, xs, create_graph=create_graph, allow_unused=True)
        return [None if g is None else g.detach().numpy() for g in found]

    tol = 1e-6 if any(o.dtype == mt.float32 for o in outs) else 1e-12
    for i, (plain, graph) in enumerate(zip(first(False), first(True))):
        if (plain is None) != (graph is None):
            return f"{name}: input {i} has a gradient on one path only"
        if plain is not None and not np.allclose(plain, graph, rtol=tol, atol=tol):
            worst = float(np.max(np.abs(plain - graph)))
            return f"{name}: input {i}, create_graph differs from plain by up to {worst:.3g}"
    return None


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_create_graph_first_derivative_equals_the_plain_one(name: str) -> None:
    mismatch = create_graph_mismatch(name)
    assert mismatch is None, mismatch


def _op_class(name: str, class_name: str) -> type:
    """The Function class called ``class_name`` that op ``name`` records (found in its
    graph, not imported from a module: robust to the op moving between files)."""
    case = _case(name)
    outs = _run(name, leaves(np.random.default_rng(0), case.inputs))
    stack, seen = [o for o in outs], set()
    while stack:
        t = stack.pop()
        fn = t._ctx
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        if type(fn).__name__ == class_name:
            return type(fn)
        stack.extend(fn.inputs)
    raise AssertionError(f"{name} records no {class_name}")


def _negate_under_create_graph(monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
    """Plant a sign error in ``cls``'s backward, only when it runs under create_graph."""
    backward = cls.backward

    def planted(self, grad):
        grads = backward(self, grad)
        if not self.create_graph:
            return grads
        return tuple(None if g is None else -g for g in grads)

    monkeypatch.setattr(cls, "backward", planted)


def test_a_sign_error_in_layer_norms_create_graph_branch_fails_the_contract(
        monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator) -> None:
    from minitransformer.ops import norm

    assert create_graph_mismatch("layer_norm") is None
    recorded = norm.LayerNorm._backward_recorded

    def planted(self, grad):
        dx, d_weight, d_bias = recorded(self, grad)
        return dx, -d_weight, d_bias  # dgamma = -sum(g * x_hat): a sign error

    monkeypatch.setattr(norm.LayerNorm, "_backward_recorded", planted)
    assert "input 1" in create_graph_mismatch("layer_norm")
    # ... which gradgradcheck, on its own, does not notice
    case = _case("layer_norm")
    xs = leaves(rng, case.inputs)
    assert mt.gradgradcheck(lambda *a: _run("layer_norm", list(a)), xs)


@pytest.mark.parametrize("name, planted_in", [
    ("scaled_dot_product_attention", "planned_attention_reference"),
    ("scaled_dot_product_attention_with_weights", "composed_weights"),
])
def test_a_wrong_scale_in_attentions_reference_composition_fails_the_contract(
        monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator, name: str,
        planted_in: str) -> None:
    """The fused attention nodes' create_graph branches differentiate the reference
    composition: an error planted there (the scale doubled) shows as a mismatch with the
    plain backward, which never calls it; gradgradcheck alone does not notice."""
    import dataclasses

    from minitransformer.ops import attention

    assert create_graph_mismatch(name) is None
    composition = getattr(attention, planted_in)

    def planted(*args):
        *tensors, plan = args
        return composition(*tensors, dataclasses.replace(plan, scale=2 * plan.scale))

    monkeypatch.setattr(attention, planted_in, planted)
    assert "input 0" in create_graph_mismatch(name)  # dQ
    case = _case(name)
    xs = leaves(rng, case.inputs)
    assert mt.gradgradcheck(lambda *a: _run(name, list(a)), xs)


@pytest.mark.parametrize("name, class_name", [
    ("softmax", "Softmax"),
    ("scaled_dot_product_attention", "ScaledDotProductAttention"),
    ("tiled_attention", "TiledAttention"),
])
def test_a_sign_error_in_a_create_graph_path_fails_the_contract(
        monkeypatch: pytest.MonkeyPatch, name: str, class_name: str) -> None:
    assert create_graph_mismatch(name) is None
    _negate_under_create_graph(monkeypatch, _op_class(name, class_name))
    assert create_graph_mismatch(name) is not None


# ----- every Function in minitransformer/ops is tested through the registry -----------------
def _function_classes_in_ops() -> dict[str, type]:
    import importlib
    import inspect
    import pkgutil

    found = {}
    for info in pkgutil.iter_modules(ops.__path__):
        module = importlib.import_module(f"minitransformer.ops.{info.name}")
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, mt.Function) and cls is not mt.Function
                    and cls.__module__ == module.__name__):
                found[cls_name] = cls
    return found


def _classes_recorded_by_the_cases() -> set[str]:
    """The Function classes in the graphs of every case's outputs and of their first
    derivatives under create_graph (IndexAdd, say, is only recorded by GetItem's backward)."""
    recorded: set[str] = set()
    seen: set = set()  # the nodes themselves (kept alive: an id could be reused)

    def walk(stack: list) -> None:
        while stack:
            fn = stack.pop()._ctx
            if fn is not None and fn not in seen:
                seen.add(fn)
                recorded.add(type(fn).__name__)
                stack.extend(fn.inputs)

    for name, case in OP_CASES.items():
        xs = leaves(np.random.default_rng(0), case.inputs)
        outs = _run(name, xs)
        walk(list(outs))
        if OPS[name].differentiable:
            # upstream gradients that require grad: a backward that uses only the upstream
            # gradient (GetItem's IndexAdd) records too
            total = sum((o * mt.ones(o.shape, dtype=o.dtype, requires_grad=True)).sum()
                        for o in outs)
            walk([g for g in mt.grad(total, xs, create_graph=True, allow_unused=True)
                  if g is not None])
    return recorded


def test_every_function_in_ops_is_reached_by_a_registered_case_or_listed_with_a_reason(
        ) -> None:
    classes = _function_classes_in_ops()
    assert {"LayerNorm", "Softmax", "MatMul"} <= set(classes)  # the scan finds them
    unreached = set(classes) - _classes_recorded_by_the_cases() - set(NOT_IN_A_CASE)
    assert not unreached, (
        f"Function classes in minitransformer/ops that no entry of tests/op_cases.py records: "
        f"{sorted(unreached)}; add a case (or list the class in NOT_IN_A_CASE with a reason)")
    stale = set(NOT_IN_A_CASE) - set(classes)
    assert not stale, f"NOT_IN_A_CASE lists classes that no longer exist: {sorted(stale)}"
    assert all(reason.strip() for reason in NOT_IN_A_CASE.values())
