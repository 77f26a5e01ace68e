"""The autograd engine itself: graph walking, accumulation, grad modes, hooks, memory."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import backend, tuning
from minitransformer.errors import DeviceError, DtypeError, GraphError, ShapeError


@pytest.fixture
def no_cycle_collector():
    """Turn the cycle collector off: only reference counting can free objects, and deep
    graphs build faster without the collector rescanning them."""
    with tuning.cycle_collector_paused():
        yield


def chain(n: int) -> tuple[mt.Tensor, mt.Tensor]:
    """A graph n ops deep: y = (((x + 0) * 1) + 0) * 1 ..."""
    x = mt.tensor([2.0], requires_grad=True)
    zero, one = mt.tensor([0.0]), mt.tensor([1.0])
    y = x
    for i in range(n):
        y = y + zero if i % 2 else y * one
    return x, y


# ----- graph walking ------------------------------------------------------------------------
def test_deep_graph_backward_is_iterative_and_linear(no_cycle_collector, monkeypatch) -> None:
    """100,000 ops deep (far past the recursion limit), and each node's backward runs
    exactly once: the work grows linearly with depth (counted, not timed)."""
    assert sys.getrecursionlimit() < 100_000
    calls = {"Add": 0, "Mul": 0}
    for name in calls:
        op = getattr(mt.ops.elementwise, name)
        original = op.backward

        def counted(self, grad, original=original, name=name):
            calls[name] += 1
            return original(self, grad)

        monkeypatch.setattr(op, "backward", counted)

    x, y = chain(100_000)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0])
    assert calls == {"Add": 50_000, "Mul": 50_000}


def test_reused_operands_get_exact_gradients() -> None:
    x = mt.tensor([3.0, -2.0], dtype=mt.float64, requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, -4.0])
    x.grad = None
    (x + x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])
    x.grad = None
    (x * x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [27.0, 12.0])


def test_diamond_graph() -> None:
    """x -> a, b -> c: the gradient reaching x is the sum over both paths."""
    x = mt.tensor(1.5, dtype=mt.float64, requires_grad=True)
    a = x * 2.0  # da/dx = 2
    b = x**2  # db/dx = 2x
    c = a * b  # dc/dx = 2 b + a * 2x = 6x^2
    d = c + a  # dd/dx = 6x^2 + 2
    d.backward()
    assert x.grad.item() == pytest.approx(6 * 1.5**2 + 2, rel=1e-15)


def test_each_node_runs_backward_once() -> None:
    """Wide sharing: every op result feeds the next two ops; backward stays linear."""
    x = mt.tensor(1.0, dtype=mt.float64, requires_grad=True)
    y = x
    for _ in range(40):  # a naive recursive backward would take 2^40 steps here
        y = y * 0.5 + y * 0.5
    y.backward()
    assert x.grad.item() == pytest.approx(1.0, rel=1e-12)


def test_grad_accumulates_across_backward_calls() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3 + 2, 3 + 4])
    x.zero_grad()
    assert x.grad is None


def test_grad_of_a_shared_leaf_is_not_aliased() -> None:
    """x + y hands one gradient to both; accumulating into one must not change the other."""
    x = mt.tensor([1.0], requires_grad=True)
    y = mt.tensor([1.0], requires_grad=True)
    (x + y).sum().backward()
    (x * 5).sum().backward()
    assert x.grad.item() == 6.0 and y.grad.item() == 1.0


def test_non_leaves_keep_no_grad_unless_retained() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    k = h * 3
    k.retain_grad()
    (k * k).sum().backward()
    with pytest.warns(UserWarning, match="not a leaf Tensor"):  # as PyTorch
        assert h.grad is None
    np.testing.assert_array_equal(k.grad.numpy(), 2 * k.detach().numpy())
    np.testing.assert_array_equal(x.grad.numpy(), 2 * k.detach().numpy() * 6)
    with pytest.raises(GraphError):
        mt.tensor([1.0]).retain_grad()


def test_second_backward_needs_retain_graph() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    first = x.grad.numpy().copy()
    with pytest.raises(GraphError, match="retain_graph=True"):
        y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), first)  # the failed call changed nothing

    x.grad = None
    z = (x.exp() * x).sum()
    z.backward(retain_graph=True)
    z.backward(retain_graph=True)
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * first, rtol=1e-6)


def test_failed_backward_leaves_every_grad_unchanged() -> None:
    """The graph meets a part freed by an earlier backward: nothing may be half-updated."""
    for combine in (lambda y, a: y * a, lambda y, a: y + a, lambda y, a: a * y):
        x = mt.tensor([1.0, 2.0], requires_grad=True)
        y = mt.tensor([3.0, 4.0], requires_grad=True)
        a = x * 2
        a.sum().backward()
        with pytest.raises(GraphError, match="retain_graph=True"):
            combine(y, a).sum().backward()
        assert y.grad is None
        np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])


# ----- higher order ---------------------------------------------------------------------------
def test_create_graph_second_derivatives() -> None:
    x0 = np.array([-1.5, 0.3, 2.0])
    x = mt.tensor(x0, requires_grad=True)
    (g,) = mt.grad(x.tanh().sum(), x, create_graph=True)
    assert g.requires_grad
    np.testing.assert_allclose(g.detach().numpy(), 1 - np.tanh(x0) ** 2, rtol=1e-14)
    (h,) = mt.grad(g.sum(), x)
    t = np.tanh(x0)
    np.testing.assert_allclose(h.numpy(), -2 * t * (1 - t**2), rtol=1e-12)

    y = (x**3).sum()
    y.backward(create_graph=True)
    np.testing.assert_allclose(x.grad.detach().numpy(), 3 * x0**2, rtol=1e-14)
    (h,) = mt.grad(x.grad.sum(), x)
    np.testing.assert_allclose(h.numpy(), 6 * x0, rtol=1e-14)
    (third,) = mt.grad(mt.grad((x**3).sum(), x, create_graph=True)[0].sum(), x,
                       create_graph=True)
    (fourth,) = mt.grad(third.sum(), x)
    np.testing.assert_allclose(fourth.numpy(), np.full(3, 6.0), rtol=1e-14)


def test_softmax_hessian_matches_the_formula() -> None:
    """d^2 s_0 / dx_i dx_j = s_0 ((d_0i - s_i)(d_0j - s_j) - s_i (d_ij - s_j))."""
    x0 = np.array([0.2, -1.0, 0.7])
    s = np.exp(x0) / np.exp(x0).sum()
    eye = np.eye(3)
    expected = s[0] * (np.outer(eye[0] - s, eye[0] - s) - (np.diag(s) - np.outer(s, s)))
    x = mt.tensor(x0, requires_grad=True)
    (g,) = mt.grad(mt.softmax(x, axis=0)[0], x, create_graph=True)
    rows = [mt.grad(g[i], x, retain_graph=True)[0].numpy() for i in range(3)]
    np.testing.assert_allclose(np.stack(rows), expected, rtol=1e-12, atol=1e-15)


# ----- mt.grad --------------------------------------------------------------------------------
def test_grad_returns_a_tuple_and_leaves_dot_grad_alone() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    w = mt.tensor([3.0], requires_grad=True)
    result = mt.grad((x * w).sum(), [x, w])
    assert isinstance(result, tuple) and len(result) == 2
    np.testing.assert_array_equal(result[0].numpy(), [3.0, 3.0])
    np.testing.assert_array_equal(result[1].numpy(), [3.0])
    assert x.grad is None and w.grad is None
    (single,) = mt.grad((x * x).sum(), x)
    np.testing.assert_array_equal(single.numpy(), [2.0, 4.0])


def test_grad_allow_unused() -> None:
    x = mt.tensor([1.0], requires_grad=True)
    unused = mt.tensor([5.0], requires_grad=True)
    with pytest.raises(GraphError, match=r"input 1 \(shape \(1,\)\).*allow_unused=True"):
        mt.grad((x * 2).sum(), [x, unused])
    gx, gu = mt.grad((x * 2).sum(), [x, unused], allow_unused=True)
    assert gx.item() == 2.0 and gu is None
    with pytest.raises(GraphError, match="does not require grad"):
        mt.grad((x * 2).sum(), [mt.tensor([1.0])])


def test_grad_outputs_weight_non_scalar_outputs() -> None:
    x = mt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * x
    (g,) = mt.grad(y, x, grad_outputs=mt.tensor([1.0, 0.0, -1.0]))
    np.testing.assert_array_equal(g.numpy(), [2.0, 0.0, -6.0])
    a, b = x * 2, x.sum()
    (g,) = mt.grad([a, b], x, grad_outputs=[mt.tensor([1.0, 1.0, 0.0]), None])
    np.testing.assert_array_equal(g.numpy(), [3.0, 3.0, 1.0])
    with pytest.raises(ValueError, match="2 grad_outputs for 1 outputs"):
        mt.grad(y, x, grad_outputs=[None, None])
    (x * x).backward(np.array([1.0, 1.0, 1.0], dtype=np.float32))  # arrays work too
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0, 6.0])


# ----- grad modes -------------------------------------------------------------------------------
def test_no_grad_records_nothing() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    with mt.no_grad():
        assert not mt.is_grad_enabled()
        y = (x * 2).exp().sum()
    assert mt.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None and y.is_leaf

    @mt.no_grad()
    def double(t: mt.Tensor) -> mt.Tensor:
        return t * 2

    z = double(x)
    assert not z.requires_grad and z._ctx is None
    assert mt.is_grad_enabled()


def test_enable_grad_inside_no_grad() -> None:
    x = mt.tensor([1.0], requires_grad=True)
    with mt.no_grad():
        with mt.enable_grad():
            y = x * 3
        z = x * 3
    assert y.requires_grad and y._ctx is not None
    assert not z.requires_grad
    y.sum().backward()
    assert x.grad.item() == 3.0
    with mt.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert mt.is_grad_enabled()


def test_grad_mode_is_restored_after_an_exception() -> None:
    with pytest.raises(ZeroDivisionError), mt.no_grad():
        raise ZeroDivisionError
    assert mt.is_grad_enabled()
    x = mt.tensor([1.0], requires_grad=True)
    y = x * 2

    def failing_hook(grad: mt.Tensor) -> None:
        assert not mt.is_grad_enabled()  # a plain backward records nothing
        raise KeyError("from a hook")

    y.register_hook(failing_hook)
    with pytest.raises(KeyError, match="from a hook"):
        y.sum().backward()
    assert mt.is_grad_enabled()


# ----- hooks, detach, flags ---------------------------------------------------------------------
def test_hooks_can_read_and_replace_gradients() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    h = x * 3
    h.register_hook(lambda g: g * 10)  # replaces the gradient flowing on to x
    remove = x.register_hook(lambda g: seen.append(g.numpy().copy()))  # observes only
    h.sum().backward()
    np.testing.assert_array_equal(seen[0], [30.0, 30.0])
    np.testing.assert_array_equal(x.grad.numpy(), [30.0, 30.0])
    remove()
    x.grad = None
    (x * 1).sum().backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])
    with pytest.raises(GraphError):
        mt.tensor([1.0]).register_hook(print)


def test_hooks_work_under_create_graph() -> None:
    x = mt.tensor([2.0], dtype=mt.float64, requires_grad=True)
    y = x * x
    y.register_hook(lambda g: g * x)  # the hook's result is part of the new graph
    (g,) = mt.grad(y.sum(), x, create_graph=True)  # g = x * 2x = 2x^2
    assert g.item() == 8.0
    (h,) = mt.grad(g.sum(), x)
    assert h.item() == 8.0  # d(2x^2)/dx = 4x


def test_detach_cuts_the_graph_and_shares_memory() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf and d.data is x.data
    (x * d).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0])  # d counts as a constant


def test_requires_grad_and_is_leaf() -> None:
    x = mt.tensor([1.0])
    assert not x.requires_grad and x.is_leaf
    assert x.requires_grad_() is x and x.requires_grad
    y = x * 2
    assert not y.is_leaf and y.grad_fn is y._ctx and y.grad_fn.name == "Mul"
    assert (mt.tensor([1.0]) * 2).is_leaf  # no input needs grad: nothing recorded
    with pytest.raises(GraphError, match="leaf"):
        y.requires_grad_(False)
    x.requires_grad_(False)
    assert not (x * 2).requires_grad
    w = mt.ones(2, requires_grad=True)
    assert w.requires_grad and w.is_leaf


def test_graph_structure_is_visible_for_drawing() -> None:
    x = mt.tensor([1.0], requires_grad=True)
    w = mt.tensor([2.0], requires_grad=True)
    y = (x * w).tanh()
    assert y._ctx.name == "Tanh"
    (product,) = y._ctx.inputs
    assert product._ctx.name == "Mul" and product._ctx.inputs == (x, w)
    assert y._ctx.module is None
    y.sum().backward()  # the structure outlives the release of saved values
    assert y._ctx.inputs == (product,) and y._ctx.released


# ----- memory -----------------------------------------------------------------------------------
def test_graph_is_freed_by_reference_counting(no_cycle_collector) -> None:
    x = mt.tensor(np.ones((3, 3)), requires_grad=True)
    hidden = (x @ x).tanh()
    probs = mt.softmax(hidden, axis=-1)
    out = (probs * hidden).sum()
    refs = [weakref.ref(t) for t in (hidden, probs, out)] + [weakref.ref(out._ctx)]
    del hidden, probs
    assert all(r() is not None for r in refs)  # the graph keeps its intermediates alive
    out.backward()
    del out
    alive = [type(r()).__name__ for r in refs if r() is not None]
    assert not alive, f"a reference cycle keeps {alive} alive"


def test_graph_is_freed_without_backward(no_cycle_collector) -> None:
    x = mt.tensor(np.ones(4), requires_grad=True)
    h = x.exp()
    out = mt.log_softmax(h * x, axis=0).sum()
    ref_h, ref_out = weakref.ref(h), weakref.ref(out)
    del h, out
    assert ref_h() is None and ref_out() is None


def test_create_graph_gradients_are_freed(no_cycle_collector) -> None:
    x = mt.tensor(np.ones(3), requires_grad=True)
    hidden = x.tanh()
    (g,) = mt.grad((hidden**2).sum(), x, create_graph=True)
    refs = [weakref.ref(hidden), weakref.ref(hidden._ctx), weakref.ref(g), weakref.ref(g._ctx)]
    del hidden
    assert refs[0]() is not None  # the graph of g (retained) still needs it
    del g
    alive = [type(r()).__name__ for r in refs if r() is not None]
    assert not alive, f"a reference cycle keeps {alive} alive"


def test_no_graph_is_kept_under_no_grad(no_cycle_collector) -> None:
    x = mt.tensor(np.ones(3), requires_grad=True)
    with mt.no_grad():
        h = x * 2
        out = h.exp()
    assert out._ctx is None and h._ctx is None
    ref = weakref.ref(h)
    del h
    assert ref() is None  # out does not hold on to h


# ----- construction, dtypes, devices -----------------------------------------------------------
def test_dtype_rules() -> None:
    assert mt.tensor(1.5).dtype == mt.float32
    assert mt.tensor([1.0, 2.0]).dtype == mt.float32
    assert mt.tensor(np.array([1.0, 2.0])).dtype == mt.float64
    assert mt.tensor(np.float64(2.0)).dtype == mt.float64
    assert mt.tensor([1, 2]).dtype == mt.int64
    assert mt.tensor([True, False]).dtype == mt.bool_
    assert mt.tensor([1, 2], dtype=mt.float64).dtype == mt.float64
    assert mt.tensor([1.0], dtype="float64").dtype == mt.float64
    x64 = mt.tensor(np.ones(2))
    assert (x64 + 1.5).dtype == mt.float64 and (2 * x64).dtype == mt.float64
    x32 = mt.tensor([1.0, 2.0])
    assert (x32 + 1.5).dtype == mt.float32 and (x32 / 3).dtype == mt.float32
    assert mt.zeros(2, 3).dtype == mt.float32 and mt.zeros(2, 3).shape == (2, 3)
    assert mt.ones((2, 3), dtype=mt.float64).dtype == mt.float64
    assert mt.arange(3).dtype == mt.int64
    with pytest.raises(DtypeError, match="floatish"):
        mt.tensor([1.0], dtype="floatish")


def test_tensor_copies_its_data() -> None:
    a = np.array([1.0, 2.0])
    t = mt.tensor(a)
    a[0] = 100.0
    assert t.data[0] == 1.0


def test_repr_is_readable() -> None:
    assert repr(mt.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(mt.tensor([1.0, 2.0], requires_grad=True)) == (
        "tensor([1., 2.], requires_grad=True)")
    y = mt.tensor(np.array([0.5]), requires_grad=True) * 2
    assert repr(y) == "tensor([1.], dtype=float64, grad_fn=<Mul>)"
    assert repr(mt.tensor([1, 2])) == "tensor([1, 2])"


def test_numpy_and_item() -> None:
    x = mt.tensor([[1.5]], requires_grad=True)
    with pytest.raises(GraphError, match=r"detach\(\)"):
        x.numpy()
    assert isinstance(x.detach().numpy(), np.ndarray)
    assert x.item() == 1.5 and isinstance(x.item(), float)
    assert float(x) == 1.5 and mt.tensor(3).item() == 3


def test_cuda_without_cupy_names_the_gpu_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail
    monkeypatch.setattr(backend, "_cupy", None)
    with pytest.raises(DeviceError, match=r"minitransformer\[gpu\]"):
        mt.tensor([1.0], device="cuda")
    with pytest.raises(DeviceError, match="gpu"):
        mt.zeros(2, device="cuda:0")
    with pytest.raises(DeviceError, match="gpu"):
        mt.tensor([1.0]).to("cuda")
    assert not mt.cuda_is_available()


def test_unknown_device_is_named() -> None:
    with pytest.raises(DeviceError, match="'tpu'.*cpu, cuda"):
        mt.tensor([1.0], device="tpu")
    with pytest.raises(DeviceError, match="'gpu0'"):
        mt.ones(2, device="gpu0")


def test_manual_seed_makes_randomness_reproducible() -> None:
    mt.manual_seed(7)
    a, b = mt.randn(3, 4), mt.rand(5)
    mt.manual_seed(7)
    np.testing.assert_array_equal(mt.randn(3, 4).numpy(), a.numpy())
    np.testing.assert_array_equal(mt.rand(5).numpy(), b.numpy())
    mt.manual_seed(8)
    assert not np.array_equal(mt.randn(3, 4).numpy(), a.numpy())
    g1, g2 = np.random.default_rng(1), np.random.default_rng(1)
    np.testing.assert_array_equal(mt.randn(2, generator=g1).numpy(),
                                  mt.randn(2, generator=g2).numpy())
    assert mt.randn(2, 2, dtype=mt.float64).dtype == mt.float64


def test_retain_freed_memory_applies_on_linux() -> None:
    applied = tuning.retain_freed_memory()
    assert applied is sys.platform.startswith("linux")


TUNING_SCRIPT = """
import minitransformer as mt
from minitransformer import tuning
calls = []
tuning.retain_freed_memory = lambda: calls.append("applied") or True
x = mt.tensor([1.0, 2.0], requires_grad=True)
(x * x).sum().backward()
print(len(calls))
print(tuning.tune_for_training(), len(calls))
"""


@pytest.mark.parametrize(("setting", "expected"), [(None, "True 1"), ("default", "False 0"),
                                                   (" Default ", "False 0")])
def test_backward_leaves_the_allocator_alone_and_trainers_opt_in(setting, expected) -> None:
    """A process-wide setting is no business of the engine: backward applies none; the
    entry points that train call tune_for_training, which MINITRANSFORMER_MALLOC=default
    turns off. A fresh process for each case."""
    env = {k: v for k, v in os.environ.items() if k != tuning.MALLOC_SETTING}
    if setting is not None:
        env[tuning.MALLOC_SETTING] = setting
    result = subprocess.run([sys.executable, "-c", TUNING_SCRIPT], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["0", expected]


def test_the_trainers_and_the_command_line_opt_into_the_allocator_setting() -> None:
    from pathlib import Path

    package = Path(mt.__file__).parent
    for name in ("cli/main.py", "coref/training.py", "gpt/training.py"):
        assert "tuning.tune_for_training()" in (package / name).read_text(encoding="utf-8"), name
    assert "tuning" not in (package / "autograd.py").read_text(encoding="utf-8")


def test_cycle_collector_paused_restores_the_collector_as_it_was() -> None:
    assert gc.isenabled()
    with tuning.cycle_collector_paused():
        assert not gc.isenabled()
        with tuning.cycle_collector_paused():  # nested: the inner one leaves it off
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_relu_of_minus_inf_is_zero_and_where_takes_two_scalars() -> None:
    np.testing.assert_array_equal(mt.relu(mt.tensor([-np.inf, -1.0, 2.0])).numpy(), [0, 0, 2])
    picked = mt.where(np.array([True, False]), 1.0, 2.0)
    np.testing.assert_array_equal(picked.numpy(), [1.0, 2.0])


def test_split_rejects_a_size_of_zero() -> None:
    with pytest.raises(ValueError, match="split size must be at least 1, got 0"):
        mt.arange(4).split(0)


def test_removing_a_hook_twice_is_harmless() -> None:
    x = mt.tensor([1.0], requires_grad=True)
    remove = x.register_hook(lambda g: g * 2)
    remove()
    remove()  # removing twice is harmless
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0])


# ----- what may be a gradient: PyTorch's checks ------------------------------------------------
def test_assigning_a_grad_of_another_shape_dtype_or_kind_raises_at_assignment() -> None:
    x = mt.tensor([1.0, 2.0, 3.0], dtype=mt.float64, requires_grad=True)
    with pytest.raises(ShapeError, match=r"assigned grad has data of a different size: shape "
                                         r"\(2,\) where shape \(3,\)"):
        x.grad = mt.zeros(2, dtype=mt.float64)
    with pytest.raises(TypeError, match="assigned grad must be a Tensor or None, not ndarray"):
        x.grad = np.zeros(3)
    with pytest.raises(TypeError, match="assigned grad has data of a different type: float32 "
                                        "where float64"):
        x.grad = mt.zeros(3, dtype=mt.float32)
    assert x.grad is None  # nothing was kept
    x.grad = mt.ones(3, dtype=mt.float64)  # the right kind accumulates as before
    (x * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0, 3.0])
    x.grad = None
    assert x.grad is None


@pytest.mark.parametrize("returned, error, message", [
    (lambda g: g[:2], ShapeError,
     "has data of a different size: shape \\(2,\\) where shape \\(3,\\)"),
    (lambda g: g.numpy(), TypeError, "must be a Tensor or None, not ndarray"),
    (lambda g: g.to(mt.float32), TypeError,
     "has data of a different type: float32 where float64"),
])
def test_a_hook_that_returns_another_shape_dtype_or_an_array_is_named(returned, error,
                                                                       message) -> None:
    x = mt.tensor([1.0, 2.0, 3.0], dtype=mt.float64, requires_grad=True)
    y = x * 2
    y.register_hook(returned)
    with pytest.raises(error, match="the value hook '<lambda>' returned " + message):
        y.sum().backward()


def test_a_leaf_grad_has_the_leaf_dtype() -> None:
    """A float32 weight in a float64 expression gets a float32 .grad, as in PyTorch."""
    w = mt.tensor([1.0, 2.0], dtype=mt.float32, requires_grad=True)
    d = mt.tensor([0.5, 3.0], dtype=mt.float64)
    (w * d).sum().backward()
    assert w.grad.dtype == mt.float32
    (w * d).sum().backward()  # accumulated: still float32
    assert w.grad.dtype == mt.float32
    np.testing.assert_allclose(w.grad.numpy(), [1.0, 6.0])
    w.grad = None
    (w * d * w).sum().backward(create_graph=True)
    assert w.grad.dtype == mt.float32 and w.grad.requires_grad
    (plain,) = mt.grad((w * d).sum(), w)  # mt.grad too, as torch.autograd.grad
    (recorded,) = mt.grad((w * d * w).sum(), w, create_graph=True)
    assert plain.dtype == recorded.dtype == mt.float32


@pytest.mark.parametrize("decorator, inside", [
    (mt.no_grad, False), (mt.enable_grad, True), (lambda: mt.set_grad_enabled(False), False)])
def test_grad_mode_decorators_hold_across_yield(decorator, inside: bool) -> None:
    """PyTorch's decorators wrap generators: the body runs in the mode at every step, and
    the caller gets its own mode back at each yield."""
    seen = []

    @decorator()
    def steps():
        for _ in range(3):
            seen.append(mt.is_grad_enabled())
            received = yield mt.is_grad_enabled()
            seen.append((received, mt.is_grad_enabled()))
        return "done"

    with mt.set_grad_enabled(not inside):
        gen = steps()
        assert next(gen) is inside
        assert mt.is_grad_enabled() is (not inside)  # the caller's mode, between steps
        assert gen.send("a") is inside
        with pytest.raises(StopIteration) as stop:
            gen.send("b")
            gen.send("c")
    assert stop.value.value == "done"
    assert seen[1] == ("a", inside) and all(s is inside or s[1] is inside for s in seen)


def test_an_observer_sees_every_walk_of_its_thread_before_and_after() -> None:
    """autograd.observing: the one hook point for traces and the explain page."""
    from minitransformer import autograd

    seen = []

    class Watcher:
        def watch(self, order):
            seen.append(("watch", len(order), order[-1]._grad is None))

        def unwatch(self, order):
            seen.append(("unwatch", len(order), order[0]._grad is not None))

    x = mt.tensor([1.0, 2.0], requires_grad=True)
    assert autograd.current_observers() == ()
    with autograd.observing(Watcher()) as watcher:
        assert autograd.current_observers() == (watcher,)
        (x * x).sum().backward()
        y = x * x
        y.register_hook(lambda g: 1 / 0)
        with pytest.raises(ZeroDivisionError):  # the walk fails: unwatch still runs
            y.sum().backward()
    (x * x).sum().backward()  # outside the block: not seen
    assert seen == [("watch", 3, True), ("unwatch", 3, True)] * 2
    assert autograd.current_observers() == ()


def test_a_no_grad_generator_sees_no_grad_when_thrown_into_and_closed() -> None:
    seen = []

    @mt.no_grad()
    def steps():
        try:
            while True:
                try:
                    yield
                except ValueError:
                    seen.append(("thrown", mt.is_grad_enabled()))
        finally:
            seen.append(("closed", mt.is_grad_enabled()))

    gen = steps()
    next(gen)
    gen.throw(ValueError())
    assert mt.is_grad_enabled()
    gen.close()
    assert seen == [("thrown", False), ("closed", False)] and mt.is_grad_enabled()


@pytest.mark.parametrize("value", [np.ones(2, np.float32), [1.0, 2.0]])
def test_an_op_given_a_non_tensor_says_so(value) -> None:
    # A NumPy 2 array has a .device ("cpu") but is not a Tensor: Function.apply names it.
    from minitransformer.ops.activations import Tanh

    with pytest.raises(TypeError, match="Tanh: an input must be a Tensor, got a"):
        Tanh.apply(value)


def _indexing_gradients(use_walk_path: bool) -> list[np.ndarray]:
    """Gradients through split pieces, an integer index with repeats, a boolean mask and a
    parent whose first gradient is an array shared with another tensor (Add's backward hands
    one array to both inputs): the walk's in-place path must copy that one, never write it."""
    from minitransformer.ops.shape import GetItem

    rng = np.random.default_rng(3)
    x = mt.tensor(rng.standard_normal((4, 6)), requires_grad=True)
    y = mt.tensor(rng.standard_normal((4, 6)), requires_grad=True)
    saved = GetItem.adds_into_input_gradient
    GetItem.adds_into_input_gradient = use_walk_path
    try:
        p, q = x * 2.0, y * 3.0
        w = p + q  # p and q get the very same gradient array
        a, b, c = p.split(2, dim=1)
        rows = p[np.array([0, 0, 3])]  # repeats add up
        masked = p[p.detach().numpy() > 0]
        loss = ((w * w).sum() + (a * 1.5).sum() + (b * b).sum() + c.sum() * 0.5
                + (rows * rows).sum() + masked.sum())
        loss.backward()
    finally:
        GetItem.adds_into_input_gradient = saved
    return [x.grad.numpy(), y.grad.numpy()]


def test_indexing_gradients_added_in_the_walk_equal_the_backward_formula() -> None:
    for walk, formula in zip(_indexing_gradients(True), _indexing_gradients(False),
                             strict=True):
        np.testing.assert_allclose(walk, formula, rtol=1e-14, atol=1e-14)
    x = mt.tensor(np.random.default_rng(4).standard_normal((3, 6)), requires_grad=True)
    assert mt.gradcheck(lambda t: sum((piece * piece).sum() for piece in t.split(2, dim=1))
                        + t[np.array([1, 1])].sum(), (x,))


def test_the_walk_never_adds_into_a_gradient_array_it_does_not_own() -> None:
    """_add_into_input_gradient copies a gradient the walk did not make (Add's backward
    hands one array to both its inputs) and writes in place only into arrays it owns."""
    from minitransformer import autograd

    x = mt.tensor(np.zeros((2, 3)), requires_grad=True)
    piece = x[:, 1:]  # a GetItem node
    shared = np.ones((2, 3))  # as if another node had sent it, and still held it
    grads, owned = {x: shared}, set()
    autograd._add_into_input_gradient(piece._ctx, np.full((2, 2), 5.0), grads, owned)
    np.testing.assert_array_equal(shared, 1.0)  # untouched
    np.testing.assert_array_equal(grads[x], [[1, 6, 6], [1, 6, 6]])
    assert id(grads[x]) in owned
    buffer = grads[x]
    autograd._add_into_input_gradient(piece._ctx, np.ones((2, 2)), grads, owned)
    assert grads[x] is buffer  # owned: added in place
    np.testing.assert_array_equal(buffer, [[1, 7, 7], [1, 7, 7]])


def _fresh_gradient_graph(flags_on: bool) -> list[np.ndarray]:
    """Leaves reached through fresh-gradient ops (matmul, linear, attention, GELU) and
    pass-through ones (add, a shared parameter, a hook, retain_grad)."""
    classes = [c for c in _all_function_classes() if c.__dict__.get("fresh_input_gradients")]
    assert {"MatMul", "Linear", "Gelu"} <= {c.__name__ for c in classes}
    saved = {c: c.fresh_input_gradients for c in classes}
    for c in classes:
        c.fresh_input_gradients = flags_on
    try:
        rng = np.random.default_rng(7)
        a, b = (mt.tensor(rng.standard_normal((3, 4)), requires_grad=True) for _ in range(2))
        w = mt.tensor(rng.standard_normal((5, 4)), requires_grad=True)
        seen = []
        b.register_hook(lambda g: seen.append(g) or g)
        h = mt.nn.functional.linear(a, w) + mt.nn.functional.linear(b, w)  # w used twice
        mid = mt.gelu(a @ b.T)
        mid.retain_grad()
        q = (a + b).reshape(1, 1, 3, 4)
        att = mt.nn.functional.scaled_dot_product_attention(q, q, q)
        (h.sum() + (mid * mid).sum() + (att * att).sum()).backward()
        grads = [a.grad.numpy(), b.grad.numpy(), w.grad.numpy(), mid.grad.numpy()]
        assert len(seen) == 1
        for i, g in enumerate(grads):
            for other in grads[i + 1:]:
                assert not np.shares_memory(g, other)
        assert not np.shares_memory(seen[0], b.grad.numpy())  # a hook's array is copied
        return [g.copy() for g in grads]
    finally:
        for c, value in saved.items():
            c.fresh_input_gradients = value


def _all_function_classes() -> list[type]:
    from minitransformer.autograd import Function

    found, stack = [], [Function]
    while stack:
        for sub in stack.pop().__subclasses__():
            found.append(sub)
            stack.append(sub)
    return found


def test_gradients_kept_without_a_copy_equal_the_copied_ones_and_share_no_memory() -> None:
    for kept, copied in zip(_fresh_gradient_graph(True), _fresh_gradient_graph(False),
                            strict=True):
        np.testing.assert_allclose(kept, copied, rtol=1e-14, atol=1e-14)
