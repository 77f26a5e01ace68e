"""Forward values and gradients of every op against PyTorch, in float64, on the same inputs.

Translation notes: the engine's ``axis=``/``keepdims=`` are torch's ``dim=``/``keepdim=``;
``var`` defaults to ddof=0, which is torch's ``correction=0``; a reduction over every axis
is written ``dim=tuple(range(ndim))``; ``max(axis)`` compares with ``amax`` (torch's
``max(dim)`` returns indices and sends the gradient to one of tied elements only).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import minitransformer as mt
from tests.conftest import requires_torch, torch
from tests.op_cases import nonzero, normal, positive

pytestmark = requires_torch

RTOL, ATOL = 1e-10, 1e-12


def case(name: str, mt_fn, torch_fn, *inputs):
    return pytest.param(mt_fn, torch_fn, inputs, id=name)


def both(name: str, fn, *inputs):
    """An op spelled the same way in both libraries."""
    return case(name, fn, fn, *inputs)


def all_dims(x) -> tuple[int, ...]:
    return tuple(range(x.ndim))


def dims(axis, x):
    return all_dims(x) if axis is None else axis


_const = np.random.default_rng(321)
MASK = _const.random((2, 3, 4)) > 0.5
MASK_23 = np.array([[True, False, True], [False, False, True]])
COND_31 = np.array([[True], [False], [True]])


def tmask(mask: np.ndarray):
    return torch.from_numpy(mask)


BROADCAST_PAIRS = [((2, 3), (2, 3)), ((3, 1), (1, 4)), ((2, 3, 4), (4,)), ((2, 3), ()),
                   ((), (2, 3)), ((2, 1, 3), (2, 4, 1))]

ARITHMETIC = [
    both(f"{name}-{sa}-{sb}", fn, first(*sa), second(*sb))
    for name, fn, first, second in [
        ("add", lambda a, b: a + b, normal, normal),
        ("sub", lambda a, b: a - b, normal, normal),
        ("mul", lambda a, b: a * b, normal, normal),
        ("div", lambda a, b: a / b, normal, nonzero),
        ("pow", lambda a, b: a**b, positive, normal),
    ]
    for sa, sb in BROADCAST_PAIRS
] + [
    case(f"{name}-{sa}-{sb}", getattr(mt, name), getattr(torch, name) if torch else None,
         normal(*sa), normal(*sb))
    for name in ("maximum", "minimum")
    for sa, sb in BROADCAST_PAIRS
] + [
    both("scalar-ops", lambda x: 2.0 - x * 3 + x / 4.0 - 1.0 / x, nonzero(2, 3)),
    both("pow-scalar-exponents", lambda x: x**2 + x**0.5 - x**-1.5 + x**3, positive(2, 3)),
    both("scalar**tensor", lambda x: 2.0**x + math.e**x, normal(2, 3)),
    both("neg", lambda x: -x, normal(2, 3)),
]

# The one-op entries (exp, log, sqrt, abs, sin, cos, erf, tanh, sigmoid, relu, ...) are in
# tests/op_cases.py, compared with PyTorch by tests/test_contract.py; here, the variants.
MATH = [
    case("sigmoid-extreme", mt.sigmoid, torch.sigmoid if torch else None,
         lambda rng: np.array([-800.0, -40.0, -1.0, 0.0, 2.0, 40.0, 800.0])),
    case("gelu", mt.gelu, lambda x: torch.nn.functional.gelu(x), normal(2, 3)),
    case("gelu-tanh", lambda x: mt.gelu(x, approximate="tanh"),
         lambda x: torch.nn.functional.gelu(x, approximate="tanh"), normal(2, 3)),
    case("clip", lambda x: x.clip(-0.5, 0.5), lambda x: x.clamp(-0.5, 0.5), normal(3, 4)),
    case("clip-min", lambda x: mt.clip(x, min=0.2), lambda x: x.clamp(min=0.2), normal(3, 4)),
    case("clamp-max", lambda x: mt.clamp(x, max=-0.1), lambda x: x.clamp(max=-0.1),
         normal(3, 4)),
    case("to-float32", lambda x: x.to(mt.float32) * 3, lambda x: x.to(torch.float32) * 3,
         normal(2, 3)),
]

MATMUL = [
    both(f"matmul-{sa}@{sb}", lambda a, b: a @ b, normal(*sa), normal(*sb))
    for sa, sb in [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((2, 3), (3, 4)),
                   ((2, 2, 3), (2, 3, 4)), ((2, 1, 3, 4), (5, 4, 2)), ((2, 3), (2, 3, 4)),
                   ((3,), (2, 3, 2))]
]

REDUCTIONS = [
    case(f"{name}-axis{axis}-keep{keep}",
         lambda x, f=f, a=axis, k=keep: f(x, a, k),
         lambda x, f=tf, a=axis, k=keep: f(x, dims(a, x), k),
         normal(2, 3, 4))
    for name, f, tf in [
        ("sum", lambda x, a, k: x.sum(axis=a, keepdims=k),
         lambda x, d, k: x.sum(dim=d, keepdim=k)),
        ("mean", lambda x, a, k: x.mean(axis=a, keepdims=k),
         lambda x, d, k: x.mean(dim=d, keepdim=k)),
        ("amax", lambda x, a, k: x.amax(axis=a, keepdims=k),
         lambda x, d, k: x.amax(dim=d, keepdim=k)),
        ("amin", lambda x, a, k: x.amin(axis=a, keepdims=k),
         lambda x, d, k: x.amin(dim=d, keepdim=k)),
        ("var", lambda x, a, k: x.var(axis=a, keepdims=k),
         lambda x, d, k: x.var(dim=d, keepdim=k)),
        ("var-biased", lambda x, a, k: x.var(axis=a, keepdims=k, correction=0),
         lambda x, d, k: x.var(dim=d, keepdim=k, correction=0)),
        ("var-ddof1", lambda x, a, k: x.var(axis=a, keepdims=k, ddof=1),
         lambda x, d, k: x.var(dim=d, keepdim=k, correction=1)),
        ("logsumexp", lambda x, a, k: x.logsumexp(axis=a, keepdims=k),
         lambda x, d, k: x.logsumexp(dim=d, keepdim=k)),
    ]
    for axis in (None, 0, -1, (0, 2))
    for keep in (False, True)
] + [
    case(f"{name}-axis{axis}", lambda x, f=f, a=axis: f(x, axis=a),
         lambda x, f=tf, a=axis: f(x, dim=a), normal(2, 3, 4))
    for name, f, tf in [("softmax", mt.softmax, torch.softmax if torch else None),
                        ("log_softmax", mt.log_softmax, torch.log_softmax if torch else None)]
    for axis in (0, 1, -1)
]

SHAPES = [
    both("reshape", lambda x: x.reshape(4, 6), normal(2, 3, 4)),
    both("reshape-neg1", lambda x: x.reshape(3, -1), normal(2, 3, 4)),
    both("view", lambda x: x.view(2, 12), normal(2, 3, 4)),
    case("transpose-reverse", lambda x: x.transpose(), lambda x: x.permute(2, 1, 0),
         normal(2, 3, 4)),
    case("transpose-axes", lambda x: x.transpose(1, 0, 2), lambda x: x.permute(1, 0, 2),
         normal(2, 3, 4)),
    both("permute", lambda x: x.permute(2, 0, 1), normal(2, 3, 4)),
    both("swapaxes", lambda x: x.swapaxes(0, -1), normal(2, 3, 4)),
    both(".T", lambda x: x.T, normal(2, 3)),
    case("expand_dims", lambda x: x.expand_dims(1), lambda x: x.unsqueeze(1), normal(2, 3)),
    both("unsqueeze", lambda x: x.unsqueeze(-1), normal(2, 3)),
    both("squeeze-all", lambda x: x.squeeze(), normal(2, 1, 3, 1)),
    both("squeeze-axis", lambda x: x.squeeze(1), normal(2, 1, 3, 1)),
    both("squeeze-tuple", lambda x: x.squeeze((1, 3)), normal(2, 1, 3, 1)),
    case("broadcast_to", lambda x: x.broadcast_to(2, 3, 4), lambda x: x.broadcast_to((2, 3, 4)),
         normal(3, 1)),
    both("expand", lambda x: x.expand(4, 2, 3), normal(1, 3)),
    both("flatten", lambda x: x.flatten(), normal(2, 3, 4)),
    both("flatten-range", lambda x: x.flatten(1, 2), normal(2, 3, 4, 1)),
    both("int", lambda x: x[1], normal(3, 4)),
    both("ints", lambda x: x[-1, 2], normal(3, 4)),
    both("slices", lambda x: x[::2, 1:3], normal(3, 4)),
    both("None", lambda x: x[None, :, None], normal(3, 4)),
    both("Ellipsis", lambda x: x[..., 1], normal(2, 3, 4)),
    both("Ellipsis-None", lambda x: x[0, ..., None], normal(2, 3, 4)),
    both("list-repeated", lambda x: x[[0, 2, 0, 0]], normal(3, 4)),
    case("int-arrays-repeated", lambda x: x[np.array([0, 1, 1]), np.array([3, 3, 3])],
         lambda x: x[torch.tensor([0, 1, 1]), torch.tensor([3, 3, 3])], normal(3, 4)),
    both("slice-and-list", lambda x: x[:, [1, 1, 3]], normal(3, 4)),
    case("bool-mask", lambda x: x[MASK], lambda x: x[tmask(MASK)], normal(2, 3, 4)),
    case("bool-rows", lambda x: x[np.array([True, False, True])],
         lambda x: x[torch.tensor([True, False, True])], normal(3, 2)),
]

JOINS = [
    case("concat", lambda a, b, c: mt.concat([a, b, c], axis=1),
         lambda a, b, c: torch.cat([a, b, c], dim=1), normal(2, 3), normal(2, 1), normal(2, 2)),
    case("cat-axis0", lambda a, b: mt.cat([a, b]), lambda a, b: torch.cat([a, b]),
         normal(2, 3), normal(1, 3)),
    case("stack", lambda a, b: mt.stack([a, b], axis=-1),
         lambda a, b: torch.stack([a, b], dim=-1), normal(2, 3), normal(2, 3)),
    case("split-int", lambda x: x.split(2, axis=1), lambda x: x.split(2, dim=1), normal(2, 5)),
    case("split-sections", lambda x: x.split([1, 3], axis=-1),
         lambda x: x.split([1, 3], dim=-1), normal(2, 4)),
    case("where", lambda a, b: mt.where(MASK_23, a, b),
         lambda a, b: torch.where(tmask(MASK_23), a, b), normal(2, 3), normal(3)),
    case("where-broadcast", lambda a, b: mt.where(COND_31, a, b),
         lambda a, b: torch.where(tmask(COND_31), a, b), normal(1, 4), normal(3, 1)),
    case("masked_fill", lambda x: x.masked_fill(MASK, -1e9),
         lambda x: x.masked_fill(tmask(MASK), -1e9), normal(2, 3, 4)),
]


def run(fn, arrays, lib):
    """Forward, then backward of sum(out * w) with fixed weights; values and grads as NumPy."""
    if lib == "mt":
        xs = [mt.tensor(a, requires_grad=True) for a in arrays]
    else:
        xs = [torch.tensor(a, requires_grad=True) for a in arrays]
    outs = fn(*xs)
    outs = [outs] if not isinstance(outs, tuple | list) else list(outs)
    weights = np.random.default_rng(99)
    total = 0
    values = []
    for out in outs:
        w = weights.standard_normal(tuple(out.shape))
        values.append(out.detach().numpy())
        w = mt.tensor(w, dtype=out.dtype) if lib == "mt" else torch.tensor(w, dtype=out.dtype)
        total = total + (out * w).sum()
    total.backward()
    return values, [x.grad.numpy() if x.grad is not None else np.zeros(x.shape) for x in xs]


@pytest.mark.parametrize("mt_fn, torch_fn, inputs",
                         ARITHMETIC + MATH + MATMUL + REDUCTIONS + SHAPES + JOINS)
def test_matches_pytorch(mt_fn, torch_fn, inputs, rng: np.random.Generator) -> None:
    arrays = [np.asarray(make(rng), dtype=np.float64) for make in inputs]
    ours, our_grads = run(mt_fn, arrays, "mt")
    theirs, their_grads = run(torch_fn, arrays, "torch")
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    for a, b, x in zip(our_grads, their_grads, arrays):
        assert a.shape == x.shape
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


TIES = [
    case("maximum-ties", mt.maximum, torch.maximum if torch else None,
         lambda rng: np.array([1.0, 2.0, 3.0, -1.0]), lambda rng: np.array([1.0, 1.0, 3.0, 0.0])),
    case("minimum-ties", mt.minimum, torch.minimum if torch else None,
         lambda rng: np.array([1.0, 2.0, 3.0, -1.0]), lambda rng: np.array([1.0, 1.0, 3.0, 0.0])),
    case("maximum-broadcast-ties", mt.maximum, torch.maximum if torch else None,
         lambda rng: np.array([[1.0], [2.0]]), lambda rng: np.array([1.0, 2.0, 0.0])),
    case("max-all-ties", lambda x: x.max(), lambda x: x.amax(),
         lambda rng: np.array([[3.0, 1.0, 3.0], [3.0, 0.0, 2.0]])),
    case("max-axis-ties", lambda x: x.amax(axis=1), lambda x: x.amax(dim=1),
         lambda rng: np.array([[3.0, 1.0, 3.0], [2.0, 0.0, 2.0]])),
    case("min-axis-ties", lambda x: x.amin(axis=0), lambda x: x.amin(dim=0),
         lambda rng: np.array([[3.0, 1.0, 3.0], [3.0, 1.0, 2.0]])),
    case("relu-abs-at-zero", lambda x: x.relu() + x.abs(), lambda x: x.relu() + x.abs(),
         lambda rng: np.array([0.0, -1.0, 1.0])),
    case("clip-at-bounds", lambda x: x.clip(-1.0, 1.0), lambda x: x.clamp(-1.0, 1.0),
         lambda rng: np.array([-1.0, 1.0, 0.0, 2.0, -2.0])),
]


@pytest.mark.parametrize("mt_fn, torch_fn, inputs", TIES)
def test_ties_and_kinks_match_pytorch(mt_fn, torch_fn, inputs, rng: np.random.Generator) -> None:
    test_matches_pytorch(mt_fn, torch_fn, inputs, rng)


def test_attention_block_matches_pytorch(rng: np.random.Generator) -> None:
    arrays = [rng.standard_normal(s) for s in [(2, 3, 4), (4, 4), (4, 4), (4, 4)]]

    def attention(softmax, x, wq, wk, wv):
        q, k, v = x @ wq, x @ wk, x @ wv  # (B, T, d)
        scores = q @ k.swapaxes(-1, -2) / math.sqrt(4)  # (B, T, T)
        return softmax(scores) @ v  # (B, T, d)

    ours, our_grads = run(lambda *xs: attention(lambda s: s.softmax(-1), *xs), arrays, "mt")
    theirs, their_grads = run(lambda *xs: attention(lambda s: s.softmax(-1), *xs), arrays,
                              "torch")
    np.testing.assert_allclose(ours[0], theirs[0], rtol=RTOL, atol=ATOL)
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def test_second_derivatives_match_pytorch(rng: np.random.Generator) -> None:
    """d/dx of (v . grad f(x)) for f = sum(softmax(x) * tanh(x) ** 3)."""
    x0, v0 = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))

    def hvp(lib):
        tensor = mt.tensor if lib == "mt" else torch.tensor
        x = tensor(x0, requires_grad=True)
        y = (x.softmax(-1) * x.tanh() ** 3).sum()
        if lib == "mt":
            (g,) = mt.grad(y, x, create_graph=True)
            (h,) = mt.grad((g * tensor(v0)).sum(), x)
        else:
            (g,) = torch.autograd.grad(y, x, create_graph=True)
            (h,) = torch.autograd.grad((g * tensor(v0)).sum(), x)
        return g.detach().numpy(), h.numpy()

    for ours, theirs in zip(hvp("mt"), hvp("torch")):
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shapes", [((2, 3), (3, 4)), ((5, 2, 3), (5, 3, 4)), ((5, 2, 3), (3, 4)),
                                    ((3,), (3, 4))])
@pytest.mark.parametrize("dtypes", [("float32", "float64"), ("float64", "float32"),
                                    ("float16", "float32")])
def test_matmul_of_two_float_dtypes_is_refused_as_in_torch(shapes, dtypes):
    from minitransformer.errors import DtypeError, DtypeMismatchError

    a = mt.ones(*shapes[0], dtype=getattr(mt, dtypes[0]))
    b = mt.ones(*shapes[1], dtype=getattr(mt, dtypes[1]))
    ta = torch.ones(*shapes[0], dtype=getattr(torch, dtypes[0]))
    tb = torch.ones(*shapes[1], dtype=getattr(torch, dtypes[1]))
    with pytest.raises(RuntimeError) as theirs:
        ta @ tb
    for product in (lambda: a @ b, lambda: mt.matmul(a, b)):
        with pytest.raises(DtypeMismatchError) as ours:
            product()
        assert isinstance(ours.value, RuntimeError) and isinstance(ours.value, DtypeError)
        assert "b.to(a.dtype)" in str(ours.value)
        if "m1 and m2" in str(theirs.value):  # the 2-D message; batched ones are worded apart
            assert str(ours.value).startswith(str(theirs.value))
    np.testing.assert_array_equal((a @ b.to(a.dtype)).numpy(), (ta @ tb.to(ta.dtype)).numpy())


@requires_torch
def test_linear_of_two_dtypes_is_refused_as_in_torch() -> None:
    """F.linear never promotes in PyTorch: the input against the weight, then the bias."""
    import minitransformer.nn.functional as F

    x, w, b = np.ones((2, 3)), np.ones((4, 3), np.float32), np.ones(4, np.float32)
    cases = [((x, w, None), "expected m1 and m2 to have the same dtype, but got: double != float"),
             ((x.astype(np.float32), w, b.astype(np.float64)),
              "self and mat2 must have the same dtype, but got Double and Float")]
    for (xi, wi, bi), message in cases:
        with pytest.raises(RuntimeError) as theirs:
            torch.nn.functional.linear(*(None if a is None else torch.from_numpy(a)
                                         for a in (xi, wi, bi)))
        assert message in str(theirs.value)
        with pytest.raises(RuntimeError, match=re.escape(message)):
            F.linear(*(None if a is None else mt.tensor(a) for a in (xi, wi, bi)))
    layer = mt.nn.Linear(3, 4)
    with pytest.raises(RuntimeError, match=r"x.to\(float32\), or the layer, layer.to\(float64\)"):
        layer(mt.tensor(x))
