"""Finite-difference checks (float64) of every op's backward, and of second derivatives.

Each case is an op written as a lambda plus the inputs it takes. Inputs are drawn so that
no value sits on a kink (|x| at 0, clip bounds, ties in max): there the derivative is not
defined and central differences would straddle it. Tie behaviour is tested separately.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
from minitransformer.autograd import Function
from minitransformer.errors import GradcheckError
from tests.op_cases import away_from, leaves, nonzero, normal, positive


# ----- inputs (the makers and leaves are shared with tests/op_cases.py) ----------------------
def case(name: str, fn, *inputs, **tolerances):
    return pytest.param(fn, inputs, tolerances, id=name)


# Constant (non-differentiable) arguments, fixed once.
_const = np.random.default_rng(123)
MASK_23 = np.array([[True, False, True], [False, False, True]])
MASK_234 = _const.random((2, 3, 4)) > 0.5
COND_31 = np.array([[True], [False], [True]])


# ----- elementwise: binary with broadcasting --------------------------------------------------
BINARY = {
    "add": (lambda a, b: a + b, normal),
    "sub": (lambda a, b: a - b, normal),
    "mul": (lambda a, b: a * b, normal),
    "div": (lambda a, b: a / b, nonzero),
    "pow": (lambda a, b: a**b, normal),  # base positive, exponent any
    "maximum": (mt.maximum, normal),
    "minimum": (mt.minimum, normal),
}
BROADCAST_PAIRS = [((2, 3), (2, 3)), ((3, 1), (1, 4)), ((2, 3, 4), (4,)), ((2, 3), ()),
                   ((), (2, 3)), ((1,), (2, 1, 3)), ((2, 1, 3), (2, 4, 1))]

BINARY_CASES = [
    case(f"{name}-{sa}-{sb}", fn, positive(*sa) if name == "pow" else normal(*sa), second(*sb))
    for name, (fn, second) in BINARY.items()
    for sa, sb in BROADCAST_PAIRS
]

SCALAR_CASES = [
    case("tensor+scalar", lambda x: x + 2.5, normal(2, 3)),
    case("scalar+tensor", lambda x: 2.5 + x, normal(2, 3)),
    case("scalar-tensor", lambda x: 1.0 - x, normal(2, 3)),
    case("tensor-scalar", lambda x: x - 1.0, normal(3)),
    case("scalar*tensor", lambda x: 3.0 * x, normal(2, 3)),
    case("tensor*int", lambda x: x * 2, normal(2, 3)),
    case("tensor/scalar", lambda x: x / 4.0, normal(2, 3)),
    case("scalar/tensor", lambda x: 2.0 / x, nonzero(2, 3)),
    case("tensor**2", lambda x: x**2, normal(2, 3)),
    case("tensor**3", lambda x: x**3, normal(4)),
    case("tensor**0.5", lambda x: x**0.5, positive(2, 3)),
    case("tensor**-1.5", lambda x: x**-1.5, positive(2, 3)),
    case("scalar**tensor", lambda x: 2.0**x, normal(2, 3)),
    case("e**tensor", lambda x: math.e**x, normal(3, 1)),
    case("maximum-scalar", lambda x: mt.maximum(x, 0.1), away_from(0.1, shape=(2, 3))),
    case("minimum-scalar", lambda x: mt.minimum(0.1, x), away_from(0.1, shape=(2, 3))),
    case("0d*0d", lambda a, b: a * b, normal(), normal()),
    case("same-tensor-twice", lambda x: x * x + x / (x * x + 1), normal(2, 3)),
]

UNARY = {
    "neg": (lambda x: -x, normal),
    "neg-fn": (mt.ops.neg, normal),
    "exp": (mt.exp, normal),
    "log": (mt.log, positive),
    "sqrt": (mt.sqrt, positive),
    "abs": (mt.abs, nonzero),
    "sin": (mt.sin, normal),
    "cos": (mt.cos, normal),
    "erf": (mt.erf, normal),
    "tanh": (mt.tanh, normal),
    "sigmoid": (mt.sigmoid, normal),
    "sigmoid-large": (lambda x: mt.sigmoid(x * 10), normal),
    "relu": (mt.relu, nonzero),
    "gelu": (mt.gelu, normal),
    "gelu-tanh": (lambda x: mt.gelu(x, approximate="tanh"), normal),
    "gelu-method": (lambda x: x.gelu("tanh"), normal),
    "methods": (lambda x: x.exp() + x.sin() * x.cos() - x.tanh().abs() + x.sigmoid().relu(),
                nonzero),
}
UNARY_CASES = [
    case(f"{name}-{shape}", fn, make(*shape))
    for name, (fn, make) in UNARY.items()
    for shape in [(2, 3), (), (1, 4, 1)]
] + [
    case("clip", lambda x: mt.clip(x, -0.5, 0.5), away_from(-0.5, 0.5, shape=(3, 4))),
    case("clip-min", lambda x: x.clip(min=0.2), away_from(0.2, shape=(3, 4))),
    case("clamp-max", lambda x: mt.clamp(x, max=-0.1), away_from(-0.1, shape=(3, 4))),
    case("clip-0d", lambda x: x.clamp(-0.5, 0.5), away_from(-0.5, 0.5, shape=())),
]

# ----- matmul -----------------------------------------------------------------------------------
MATMUL_SHAPES = [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((2, 3), (3, 4)),
                 ((2, 2, 3), (2, 3, 4)), ((2, 1, 3, 4), (5, 4, 2)), ((2, 3), (2, 3, 4)),
                 ((2, 2, 3), (3,)), ((3,), (2, 3, 2)), ((1, 3), (3, 1))]
MATMUL_CASES = [case(f"matmul-{sa}@{sb}", lambda a, b: a @ b, normal(*sa), normal(*sb))
                for sa, sb in MATMUL_SHAPES] + [
    case("matmul-fn", mt.matmul, normal(2, 3), normal(3, 2)),
    case("matmul-rmatmul-array", lambda b: np.ones((2, 3)) @ b, normal(3, 2)),
]

# ----- reductions -------------------------------------------------------------------------------
REDUCTIONS = {
    "sum": lambda x, axis, keep: x.sum(axis=axis, keepdims=keep),
    "mean": lambda x, axis, keep: x.mean(axis=axis, keepdims=keep),
    "amax": lambda x, axis, keep: x.amax(axis=axis, keepdims=keep),
    "amin": lambda x, axis, keep: mt.amin(x, axis=axis, keepdims=keep),
    "var": lambda x, axis, keep: x.var(axis=axis, keepdims=keep),
    "var-biased": lambda x, axis, keep: x.var(axis=axis, keepdims=keep, correction=0),
    "std": lambda x, axis, keep: x.std(axis=axis, keepdims=keep),
    "var-ddof1": lambda x, axis, keep: mt.var(x, axis=axis, keepdims=keep, ddof=1),
    "logsumexp": lambda x, axis, keep: x.logsumexp(axis=axis, keepdims=keep),
}
REDUCTION_CASES = [
    case(f"{name}-axis{axis}-keep{keep}", lambda x, f=f, a=axis, k=keep: f(x, a, k),
         normal(2, 3, 4))
    for name, f in REDUCTIONS.items()
    for axis in (None, 0, -1, (0, 2))
    for keep in (False, True)
] + [
    case("sum-size1-axis", lambda x: x.sum(axis=1), normal(3, 1, 2)),
    case("mean-fn-1d", lambda x: mt.mean(x), normal(5)),
    case("max-0d", lambda x: x.max(), normal()),
    case("max-dim-values", lambda x: x.max(1).values, normal(2, 3, 4)),
    case("min-dim-keepdim", lambda x: x.min(dim=-1, keepdim=True)[0], normal(2, 3, 4)),
    case("std-unbiased-false", lambda x: mt.std(x, 0, unbiased=False), normal(3, 2)),
    case("sum-fn-tuple-neg", lambda x: mt.sum(x, axis=(-1, -3), keepdims=True), normal(2, 3, 2)),
]

# ----- softmax family, dropout, dtype -----------------------------------------------------------
SOFTMAX_CASES = [
    case(f"{name}-axis{axis}", lambda x, f=f, a=axis: f(x, axis=a), normal(2, 3, 4))
    for name, f in {"softmax": mt.softmax, "log_softmax": mt.log_softmax}.items()
    for axis in (0, 1, -1)
] + [
    case("softmax-method-default", lambda x: x.softmax(), normal(3, 5)),
    case("log_softmax-method", lambda x: x.log_softmax(0), normal(3, 2)),
    case("softmax-size1-axis", lambda x: mt.softmax(x, axis=1), normal(3, 1)),
    case("logsumexp-fn", lambda x: mt.logsumexp(x, axis=1), normal(2, 5)),
    case("dropout-seed", lambda x: mt.dropout(x, 0.4, seed=7), normal(3, 4)),
    case("dropout-generator",
         lambda x: mt.dropout(x, 0.25, generator=np.random.default_rng(11)), normal(2, 5)),
    case("dropout-eval", lambda x: mt.dropout(x, 0.5, training=False), normal(2, 2)),
    case("to-float32-and-back", lambda x: (x.to(mt.float32) * 3).to(mt.float64), normal(2, 3),
         eps=1e-3, atol=1e-3, rtol=1e-2),
    case("float-double", lambda x: x.float().exp().double(), normal(4),
         eps=1e-3, atol=1e-3, rtol=1e-2),
    case("to-same-dtype", lambda x: x.to(mt.float64) * 2, normal(3)),
]

# ----- shape ops ---------------------------------------------------------------------------------
SHAPE_CASES = [
    case("reshape", lambda x: x.reshape(4, 6), normal(2, 3, 4)),
    case("reshape-tuple-neg1", lambda x: x.reshape((3, -1)), normal(2, 3, 4)),
    case("reshape-fn", lambda x: mt.reshape(x, (6,)), normal(2, 3)),
    case("view", lambda x: x.view(2, 12), normal(2, 3, 4)),
    case("transpose-reverse", lambda x: x.transpose(), normal(2, 3, 4)),
    case("transpose-axes", lambda x: x.transpose(1, 0, 2), normal(2, 3, 4)),
    case("transpose-fn-tuple", lambda x: mt.transpose(x, (2, 0, 1)), normal(2, 3, 4)),
    case("permute", lambda x: x.permute(2, 0, 1), normal(2, 3, 4)),
    case("permute-neg", lambda x: mt.permute(x, -1, 0, 1), normal(2, 3, 4)),
    case("swapaxes", lambda x: x.swapaxes(0, -1), normal(2, 3, 4)),
    case("swapaxes-fn", lambda x: mt.swapaxes(x, 1, 2), normal(2, 3, 4)),
    case(".T", lambda x: x.T, normal(2, 3)),
    case("expand_dims", lambda x: x.expand_dims(1), normal(2, 3)),
    case("expand_dims-end", lambda x: mt.expand_dims(x, -1), normal(2, 3)),
    case("unsqueeze", lambda x: mt.unsqueeze(x, 0), normal(3)),
    case("squeeze-all", lambda x: x.squeeze(), normal(2, 1, 3, 1)),
    case("squeeze-axis", lambda x: mt.squeeze(x, 1), normal(2, 1, 3, 1)),
    case("squeeze-tuple", lambda x: x.squeeze((1, -1)), normal(2, 1, 3, 1)),
    case("broadcast_to", lambda x: x.broadcast_to(2, 3, 4), normal(3, 1)),
    case("broadcast_to-fn", lambda x: mt.broadcast_to(x, (2, 3)), normal(3)),
    case("expand", lambda x: x.expand((4, 2, 3)), normal(1, 3)),
    case("flatten", lambda x: x.flatten(), normal(2, 3, 4)),
    case("flatten-start", lambda x: mt.flatten(x, 1), normal(2, 3, 4)),
    case("flatten-range", lambda x: x.flatten(0, 1), normal(2, 3, 4)),
]

INDEX_CASES = [
    case("int", lambda x: x[1], normal(3, 4)),
    case("negative-ints", lambda x: x[-1, 2], normal(3, 4)),
    case("slice", lambda x: x[0:2], normal(3, 4)),
    case("step-slice", lambda x: x[::2, 1::2], normal(3, 4)),
    case("negative-step", lambda x: x[::-1], normal(4)),
    case("None", lambda x: x[None, :, None], normal(3, 4)),
    case("Ellipsis", lambda x: x[..., 1], normal(2, 3, 4)),
    case("Ellipsis-None", lambda x: x[0, ..., None], normal(2, 3, 4)),
    case("int-array-repeated", lambda x: x[np.array([0, 2, 0, 0])], normal(3, 4)),
    case("list-repeated", lambda x: x[[1, 1, 0]], normal(3, 2)),
    case("tensor-index", lambda x: x[mt.tensor([2, 2, 1])], normal(3, 2)),
    case("two-int-arrays", lambda x: x[np.array([0, 1, 1]), np.array([3, 3, 3])], normal(3, 4)),
    case("slice-and-array", lambda x: x[:, [1, 1, 3]], normal(3, 4)),
    case("2d-int-array", lambda x: x[np.array([[0, 1], [1, 1]])], normal(2, 3)),
    case("bool-mask", lambda x: x[MASK_23], normal(2, 3)),
    case("bool-mask-rows", lambda x: x[np.array([True, False, True])], normal(3, 2)),
    case("bool-mask-3d", lambda x: x[MASK_234], normal(2, 3, 4)),
    case("bool-tensor-mask", lambda x: x[mt.tensor(MASK_23)], normal(2, 3)),
]

JOIN_CASES = [
    case("concat-axis0", lambda a, b: mt.concat([a, b]), normal(2, 3), normal(1, 3)),
    case("concat-axis1", lambda a, b, c: mt.concat([a, b, c], axis=1),
         normal(2, 3), normal(2, 1), normal(2, 2)),
    case("cat-neg-axis", lambda a, b: mt.cat([a, b], axis=-1), normal(2, 2, 1), normal(2, 2, 3)),
    case("concat-same-tensor", lambda a: mt.concat([a, a * 2], axis=0), normal(2, 2)),
    case("stack-axis0", lambda a, b: mt.stack([a, b]), normal(2, 3), normal(2, 3)),
    case("stack-axis-neg", lambda a, b, c: mt.stack([a, b, c], axis=-1),
         normal(2, 3), normal(2, 3), normal(2, 3)),
    case("split-int", lambda x: x.split(2, axis=1), normal(2, 5)),
    case("split-sections", lambda x: mt.split(x, [1, 3], axis=-1), normal(2, 4)),
    case("split-axis0", lambda x: x.split(1), normal(3, 2)),
    case("where", lambda a, b: mt.where(MASK_23, a, b), normal(2, 3), normal(2, 3)),
    case("where-broadcast", lambda a, b: mt.where(COND_31, a, b), normal(1, 4), normal(3, 1)),
    case("where-tensor-cond", lambda a, b: mt.where(mt.tensor(MASK_23), a, b),
         normal(2, 3), normal(3)),
    case("where-scalar", lambda a: mt.where(MASK_23, a, 0.0), normal(2, 3)),
    case("where-scalar-first", lambda b: mt.where(MASK_23, -1.0, b), normal(2, 3)),
    case("masked_fill", lambda x: x.masked_fill(MASK_234, -5.0), normal(2, 3, 4)),
    case("masked_fill-fn-broadcast", lambda x: mt.masked_fill(x, COND_31, 0.0), normal(3, 4)),
]

ALL_CASES = (BINARY_CASES + SCALAR_CASES + UNARY_CASES + MATMUL_CASES + REDUCTION_CASES
             + SOFTMAX_CASES + SHAPE_CASES + INDEX_CASES + JOIN_CASES)


@pytest.mark.parametrize("fn, inputs, tolerances", ALL_CASES)
def test_gradcheck(fn, inputs, tolerances, rng: np.random.Generator) -> None:
    xs = leaves(rng, inputs)
    assert mt.gradcheck(fn, xs, **tolerances)


# ----- second derivatives ------------------------------------------------------------------------
# Every registered op, as such, is gradgradchecked from its entry in tests/op_cases.py
# (tests/test_contract.py); these are the variants and compositions beyond those entries.
GRADGRAD_CASES = [
    case("cube", lambda x: x**3, normal(2, 3)),
    case("pow-tensor-tensor", lambda a, b: a**b, positive(2, 3), normal(3)),
    case("softmax-axis0", lambda x: mt.softmax(x, axis=0), normal(3, 2)),
    case("log_softmax", lambda x: mt.log_softmax(x, axis=1), normal(2, 3)),
    case("logsumexp", lambda x: mt.logsumexp(x, axis=1), normal(2, 3)),
    case("sqrt", mt.sqrt, positive(4)),
    case("div", lambda a, b: a / b, normal(2, 3), nonzero(3)),
    case("gelu-tanh", lambda x: mt.gelu(x, approximate="tanh"), normal(2, 3)),
    case("sin-cos", lambda x: x.sin() * x.cos(), normal(3)),
    case("matmul", lambda a, b: a @ b, normal(2, 3), normal(3, 2)),
    case("matmul-batched", lambda a, b: a @ b, normal(2, 1, 3), normal(2, 3, 2)),
    case("matmul-1d", lambda a, b: (a @ b) ** 2, normal(3), normal(3, 2)),
    case("sum", lambda x: (x * x).sum(axis=1), normal(2, 3)),
    case("mean", lambda x: (x * x).mean(axis=(0, 2), keepdims=True), normal(2, 2, 3)),
    case("var-all", lambda x: x.var(), normal(3, 2)),
    case("max", lambda x: (x * x).max(axis=0).values, normal(3, 2)),
    case("getitem", lambda x: x[np.array([0, 0, 1])] ** 2, normal(2, 3)),
    case("getitem-slice", lambda x: x[:, 1:] * x[:, :-1], normal(2, 3)),
    case("concat", lambda a, b: mt.concat([a * b, b**2], axis=0), normal(2, 3), normal(2, 3)),
    case("where", lambda a, b: mt.where(MASK_23, a * a, a * b), normal(2, 3), normal(2, 3)),
    case("broadcast", lambda a, b: (a * b).tanh(), normal(3, 1), normal(1, 4)),
    case("reshape-permute", lambda x: (x.reshape(3, 2).T * x.reshape(2, 3)).exp(), normal(6)),
    case("dropout", lambda x: mt.dropout(x, 0.5, seed=3) ** 2, normal(2, 3)),
]


@pytest.mark.parametrize("fn, inputs, tolerances", GRADGRAD_CASES)
def test_gradgradcheck(fn, inputs, tolerances, rng: np.random.Generator) -> None:
    xs = leaves(rng, inputs)
    assert mt.gradgradcheck(fn, xs, **tolerances)


def attention(x: mt.Tensor, wq: mt.Tensor, wk: mt.Tensor, wv: mt.Tensor) -> mt.Tensor:
    """One head of self-attention from primitives: softmax(q k^T / sqrt d) v."""
    q, k, v = x @ wq, x @ wk, x @ wv  # (T, d) each
    scores = q @ k.T / math.sqrt(q.shape[-1])  # (T, T)
    return mt.softmax(scores, axis=-1) @ v  # (T, d)


def test_attention_block_gradcheck_and_gradgradcheck(rng: np.random.Generator) -> None:
    params = leaves(rng, [normal(3, 4), normal(4, 4), normal(4, 4), normal(4, 4)])
    assert mt.gradcheck(attention, params)
    assert mt.gradgradcheck(attention, params)


def test_attention_hessian_vector_product_matches_finite_differences(
    rng: np.random.Generator,
) -> None:
    """H v from double backward equals (grad(theta + h v) - grad(theta - h v)) / 2h."""
    values = [rng.standard_normal(s) for s in [(3, 4), (4, 4), (4, 4), (4, 4)]]
    direction = [rng.standard_normal(v.shape) for v in values]
    weights = rng.standard_normal((3, 4))

    def loss(params: list[mt.Tensor]) -> mt.Tensor:
        return (attention(*params) * mt.tensor(weights)).sum()

    def gradient(arrays: list[np.ndarray]) -> list[np.ndarray]:
        params = [mt.tensor(a, requires_grad=True) for a in arrays]
        return [g.numpy() for g in mt.grad(loss(params), params)]

    params = [mt.tensor(v, requires_grad=True) for v in values]
    grads = mt.grad(loss(params), params, create_graph=True)
    assert all(g.requires_grad for g in grads)
    directional = sum((g * mt.tensor(d)).sum() for g, d in zip(grads, direction))
    hvp = [h.numpy() for h in mt.grad(directional, params)]

    h = 1e-5
    plus = gradient([v + h * d for v, d in zip(values, direction)])
    minus = gradient([v - h * d for v, d in zip(values, direction)])
    for analytic, p, m in zip(hvp, plus, minus):
        np.testing.assert_allclose(analytic, (p - m) / (2 * h), rtol=1e-5, atol=1e-7)
    assert max(np.abs(a).max() for a in hvp) > 1e-3  # the check is not vacuous


# ----- behaviour at kinks and of the helpers ----------------------------------------------------
def test_ties_split_the_gradient_evenly() -> None:
    x = mt.tensor([1.0, 2.0, 3.0], dtype=mt.float64, requires_grad=True)
    y = mt.tensor([1.0, 1.0, 3.0], dtype=mt.float64, requires_grad=True)
    mt.maximum(x, y).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.5, 1.0, 0.5])
    np.testing.assert_array_equal(y.grad.numpy(), [0.5, 0.0, 0.5])
    x.grad = y.grad = None
    mt.minimum(x, y).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.5, 0.0, 0.5])
    np.testing.assert_array_equal(y.grad.numpy(), [0.5, 1.0, 0.5])

    z = mt.tensor([[3.0, 1.0, 3.0], [0.0, 2.0, 2.0]], requires_grad=True)
    z.max().backward()
    np.testing.assert_array_equal(z.grad.numpy(), [[0.5, 0, 0.5], [0, 0, 0]])
    z.grad = None
    z.amin(axis=1).sum().backward()
    np.testing.assert_array_equal(z.grad.numpy(), [[0, 1, 0], [1, 0, 0]])
    z.grad = None
    z.amax(axis=1, keepdims=True).sum().backward()
    np.testing.assert_array_equal(z.grad.numpy(), [[0.5, 0, 0.5], [0, 0.5, 0.5]])


def test_derivative_at_kinks_follows_pytorch_conventions() -> None:
    x = mt.tensor([0.0, -1.0, 1.0, 2.0], requires_grad=True)
    x.relu().sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0, 1, 1])
    x.grad = None
    x.abs().sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, -1, 1, 1])
    x.grad = None
    x.clip(-1.0, 1.0).sum().backward()  # the bounds themselves count as inside
    np.testing.assert_array_equal(x.grad.numpy(), [1, 1, 1, 0])


def test_repeated_indices_accumulate() -> None:
    x = mt.tensor([10.0, 20.0, 30.0], requires_grad=True)
    (x[[0, 0, 2, 0]] * mt.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [7.0, 0.0, 3.0])
    m = mt.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    m[np.array([1, 1]), np.array([2, 2])].sum().backward()
    np.testing.assert_array_equal(m.grad.numpy(), [[0, 0, 0], [0, 0, 2]])


def test_dropout_is_reproducible_scaled_and_masks_the_gradient() -> None:
    x = mt.tensor(np.linspace(1.0, 2.0, 200), requires_grad=True)
    a, b = mt.dropout(x, 0.3, seed=5), mt.dropout(x, 0.3, seed=5)
    np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    c = mt.dropout(x, 0.3, seed=6)
    assert not np.array_equal(a.detach().numpy(), c.detach().numpy())
    kept = a.detach().numpy() != 0
    assert 0.5 < kept.mean() < 0.9
    np.testing.assert_allclose(a.detach().numpy()[kept], x.detach().numpy()[kept] / 0.7)
    a.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), kept / 0.7)
    assert mt.dropout(x, 0.3, training=False) is x
    # no seed: the default generator, which mt.manual_seed reseeds (PyTorch's global one)
    mt.manual_seed(11)
    first = mt.dropout(x, 0.3).detach().numpy()
    mt.manual_seed(11)
    np.testing.assert_array_equal(first, mt.dropout(x, 0.3).detach().numpy())
    with pytest.raises(ValueError, match="1.5"):
        mt.dropout(x, 1.5, seed=0)


def test_to_dtype_gradient_comes_back_in_the_input_dtype() -> None:
    x = mt.tensor([1.0, 2.0], dtype=mt.float64, requires_grad=True)
    y = x.to(mt.float32)
    assert y.dtype == mt.float32
    (y * 3).sum().backward()
    assert x.grad.dtype == mt.float64
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])
    w = mt.tensor([1.0, 2.0], requires_grad=True)  # float32
    (w.double() ** 2).sum().backward()
    assert w.grad.dtype == mt.float32
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 4.0])


class _WrongSquare(Function):
    """x^2 with a deliberately wrong derivative (x instead of 2x)."""

    def forward(self, x):
        return x * x

    def backward(self, grad):
        return (grad * self.inputs[0],)


def test_gradcheck_catches_a_wrong_backward(rng: np.random.Generator) -> None:
    x = mt.tensor(rng.uniform(1, 2, (2, 3)), requires_grad=True)
    x.name = "weights"
    with pytest.raises(GradcheckError, match=r"input 0 \(weights\) of shape \(2, 3\)"):
        mt.gradcheck(_WrongSquare.apply, [x])
    with pytest.raises(GradcheckError):
        mt.gradgradcheck(lambda t: _WrongSquare.apply(t) * t, [x])
    with pytest.raises(ValueError, match="requires_grad"):
        mt.gradcheck(mt.exp, [x.detach()])
    with pytest.warns(UserWarning, match="float32"):
        mt.gradcheck(mt.exp, [mt.tensor([0.5], requires_grad=True)], eps=1e-2, atol=1e-2)


@pytest.mark.parametrize("magnitude", [1e20, 1e-20, 1.0])
def test_layer_norm_of_huge_and_tiny_float32_values_matches_float64(magnitude: float) -> None:
    """(x - mean)^2 overflows float32 above ~1e19, which made every output 0 although the
    float64 answer is finite; the statistics are rescaled there. Gradients too."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 8)) * magnitude).astype(np.float32)
    x[2] = x[2, 0]  # a constant group: output 0
    w = rng.standard_normal(8).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    upstream = rng.standard_normal((3, 8))
    results = []
    for dtype in (mt.float32, mt.float64):
        xt = mt.tensor(x, dtype=dtype, requires_grad=True)
        y = F.layer_norm(xt, 8, mt.tensor(w, dtype=dtype), mt.tensor(b, dtype=dtype))
        (y * mt.tensor(upstream, dtype=dtype)).sum().backward()
        assert y.dtype == dtype and np.isfinite(y.detach().numpy()).all()
        results.append((y.detach().numpy(), xt.grad.numpy() * magnitude))
    (y32, dx32), (y64, dx64) = results
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx32, dx64, rtol=1e-3, atol=1e-3)
