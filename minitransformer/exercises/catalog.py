"""The exercises, in the order the docs teach them, and the cases each is checked on.

Every exercise compares the learner's code with minitransformer's own op (autograd on the
project's tensors, in float64) on several shapes, the op's edge cases among them, and
lists the mistakes of its own that the checker recognises by name (on top of the general
ones in :mod:`minitransformer.exercises.checker`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from minitransformer.exercises.checker import (
    IGNORED_UPSTREAM,
    Case,
    Mistake,
    call_learner,
    learner_function,
)

Alternative = Callable[..., Sequence[np.ndarray | None]]  # (dout, *inputs) -> wrong answers


@dataclass(frozen=True)
class Exercise:
    """One exercise: its file, its docs, the project op it is checked against, its cases."""

    number: int
    name: str  # what `minitransformer exercise check NAME` takes
    title: str
    derivation: str  # the docs page (and section) that derives the backward
    compared_with: str  # the project's op that gives the expected answers
    edge_cases: str
    mistakes: tuple[Mistake, ...]  # its own named mistakes (the general ones come on top)
    build: Callable[[np.random.Generator], list[Case]]

    @property
    def filename(self) -> str:
        return f"{self.number:02d}_{self.name}.py"

    def cases(self, seed: int = 0) -> list[Case]:
        return self.build(np.random.default_rng(seed))


# ----------------------------------------------------------------------------- helpers


def _project_gradients(reference: Callable[..., Any], inputs: Sequence[Any],
                       wrt: Sequence[int], dout: np.ndarray) -> tuple[np.ndarray, list]:
    """The project's output and the gradients of sum(dout * output) for the inputs ``wrt``."""
    from minitransformer import autograd
    from minitransformer.tensor import Tensor, float64

    tensors = [Tensor(x, requires_grad=True, dtype=float64) if i in wrt else x
               for i, x in enumerate(inputs)]
    out = reference(*tensors)
    total = (out * Tensor(dout, dtype=float64)).sum()
    grads = autograd.grad(total, [tensors[i] for i in wrt], allow_unused=True)
    return out.detach().numpy(), [np.zeros(np.shape(inputs[i])) if g is None else g.numpy()
                         for i, g in zip(wrt, grads)]


def _copies(inputs: Sequence[Any]) -> list[Any]:
    """Fresh copies, so that a learner's in-place edit cannot change the next call."""
    return [x.copy() if isinstance(x, np.ndarray) else x for x in inputs]


def gradient_case(label: str, rng: np.random.Generator, *, forward: str, backward: str,
                  op: str, inputs: Sequence[Any], wrt: Sequence[int], names: Sequence[str],
                  reference: Callable[..., Any],
                  mistakes: Sequence[tuple[Mistake, Alternative]] = (),
                  scale: float | None = None, non_finite: Mistake | None = None) -> Case:
    """A case that calls ``forward(*inputs)`` and ``backward(dout, *inputs)`` in the learner's
    file and expects the gradients that ``reference`` (the project's op) gets for ``wrt``."""
    inputs = list(inputs)
    out_shape = np.shape(_project_gradients(reference, inputs, wrt, np.ones(()))[0])
    dout = np.asarray(rng.standard_normal(out_shape), dtype=np.float64)
    output, expected = _project_gradients(reference, inputs, wrt, dout)
    _, ones = _project_gradients(reference, inputs, wrt, np.ones(out_shape))
    alternatives = [(mistake, tuple(wrong(dout, *_copies(inputs)))) for mistake, wrong in mistakes]
    alternatives.append((IGNORED_UPSTREAM, tuple(ones)))

    def call_forward(module: ModuleType) -> Any:
        learner_function(module, backward)  # both named functions exist, before any runs
        return call_learner(learner_function(module, forward), *_copies(inputs))

    def call(module: ModuleType) -> Any:
        return call_learner(learner_function(module, backward), dout.copy(), *_copies(inputs))

    return Case(label, call, tuple(expected), tuple(names), alternatives, scale,
                differentiated=(forward, inputs, tuple(wrt), dout), call_forward=call_forward,
                forward_output=output, forward_name=forward, op=op, non_finite=non_finite)


# ----------------------------------------------------------------------------- 1 chain rule

MISSED_PATH = Mistake(
    "missed a path",
    "a is used twice (in e = a * b and in out = f * a), so da is the sum of two terms, one "
    "per path from a to out")


def _chain_rule(rng: np.random.Generator) -> list[Case]:
    def reference(a: Any, b: Any, c: Any) -> Any:
        return (a * b + c).tanh() * a

    def through_e_only(dout: Any, a: Any, b: Any, c: Any) -> tuple:
        f = np.tanh(a * b + c)
        return dout * a * (1 - f**2) * b, None, None

    def through_out_only(dout: Any, a: Any, b: Any, c: Any) -> tuple:
        return dout * np.tanh(a * b + c), None, None

    cases = []
    for label, shape in (("scalars", ()), ("vectors of 5", (5,)), ("a (2, 3) array", (2, 3))):
        a, b, c = (rng.standard_normal(shape) for _ in range(3))
        cases.append(gradient_case(
            label, rng, forward="forward", backward="backward", op="tanh(a * b + c) * a",
            inputs=(a, b, c), wrt=(0, 1, 2), names=("da", "db", "dc"), reference=reference,
            mistakes=[(MISSED_PATH, through_e_only), (MISSED_PATH, through_out_only)]))
    return cases


# ----------------------------------------------------------------------------- 2 broadcast


def _broadcast(rng: np.random.Generator) -> list[Case]:
    shapes = [("x (3, 4) times w (4,)", (3, 4), (4,)),
              ("x (2, 3, 4) times w (3, 1)", (2, 3, 4), (3, 1)),
              ("both broadcast, batch size 1: x (1, 3, 4) times w (2, 1, 4)", (1, 3, 4),
               (2, 1, 4)),
              ("a 0-d w: x (2, 3) times w ()", (2, 3), ()),
              ("no broadcasting: x (2, 2) times w (2, 2)", (2, 2), (2, 2))]
    return [gradient_case(label, rng, forward="forward", backward="backward",
                          op="minitransformer's Mul", inputs=(rng.standard_normal(xs),
                                                              rng.standard_normal(ws)),
                          wrt=(0, 1), names=("dx", "dw"), reference=lambda x, w: x * w)
            for label, xs, ws in shapes]


# ----------------------------------------------------------------------------- 3 matmul


def _matmul(rng: np.random.Generator) -> list[Case]:
    shapes = [("(3, 4) @ (4, 2)", (3, 4), (4, 2)),
              ("a batch: (2, 3, 4) @ (2, 4, 5)", (2, 3, 4), (2, 4, 5)),
              ("B shared by the batch: (2, 3, 4) @ (4, 5)", (2, 3, 4), (4, 5)),
              ("batch size 1, square: (1, 3, 3) @ (1, 3, 3)", (1, 3, 3), (1, 3, 3)),
              ("broadcast batch axes: (2, 1, 3, 4) @ (3, 4, 2)", (2, 1, 3, 4), (3, 4, 2))]
    return [gradient_case(label, rng, forward="forward", backward="backward",
                          op="minitransformer's MatMul",
                          inputs=(rng.standard_normal(a), rng.standard_normal(b)), wrt=(0, 1),
                          names=("dA", "dB"), reference=lambda a, b: a @ b)
            for label, a, b in shapes]


# ----------------------------------------------------------------------------- 4 softmax

DIAGONAL_ONLY = Mistake(
    "only the diagonal of the Jacobian",
    "y_i depends on every x_j of its row, not only on x_i: dy_i/dx_j = y_i (delta_ij - y_j), "
    "so dx_j = y_j (dy_j - sum_i dy_i y_i)")


NO_ROWSUM = Mistake(
    "softmax's backward without the row-sum term",
    "every output of a row depends on every input of it, so softmax's backward is "
    "dx = y * (dy - sum(dy * y, last axis, keepdims)); y * dy drops the row sum "
    "(in attention: dS = A * (dA - sum(dA * A, last axis)))")
WRONG_AXIS = Mistake(
    "softmax along the wrong axis",
    "softmax normalises each row over the last axis (the keys, in attention): its max, "
    "its sum and the backward's row sum all take axis=-1 with keepdims=True")
NO_MAX_SHIFT = Mistake(
    "exp without the max shift",
    "these logits are around 1000: exp(1000) overflows to inf and inf / inf is nan. "
    "softmax(x) = softmax(x - max x): subtract each row's max before exp, as forward() does")


def _softmax_of(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _softmax(rng: np.random.Generator) -> list[Case]:
    from minitransformer import ops

    def diagonal(dy: np.ndarray, x: np.ndarray) -> tuple:
        y = _softmax_of(x)
        return (dy * y * (1 - y),)

    def no_rowsum(dy: np.ndarray, x: np.ndarray) -> tuple:
        return (dy * _softmax_of(x),)

    def row_sum_along(axis: int) -> Alternative:
        def wrong(dy: np.ndarray, x: np.ndarray) -> tuple:
            y = _softmax_of(x)
            return (y * (dy - (dy * y).sum(axis=axis, keepdims=True)),)
        return wrong

    inputs = [("a vector of 5", rng.standard_normal(5)),
              ("(3, 4)", rng.standard_normal((3, 4))),
              ("batch size 1: (1, 4)", rng.standard_normal((1, 4))),
              # 1000 + x: exp without the max shift overflows (float64's exp stops at ~709),
              # and softmax's shift invariance keeps the gradient as rich as for x
              ("large logits (1000 + 3 x): (2, 3, 6)", 1000 + 3 * rng.standard_normal((2, 3, 6)))]
    return [gradient_case(label, rng, forward="forward", backward="backward",
                          op="minitransformer.ops.softmax", inputs=(x,), wrt=(0,),
                          names=("dx",), reference=lambda t: ops.softmax(t, -1),
                          mistakes=[(DIAGONAL_ONLY, diagonal), (NO_ROWSUM, no_rowsum)]
                          + [(WRONG_AXIS, row_sum_along(a)) for a in range(x.ndim - 1)],
                          non_finite=NO_MAX_SHIFT if x.min() > 700 else None)
            for label, x in inputs]


# ----------------------------------------------------------------------------- 5 cross-entropy

NO_MEAN = Mistake(
    "forgot the 1/N of the mean",
    "the loss is the mean over the N rows (every row of z but the last axis), so each "
    "row's gradient p - onehot is divided by N")
NO_ONEHOT = Mistake(
    "forgot the one-hot term",
    "-log softmax(z)[t] = logsumexp(z) - z[t]: logsumexp gives p = softmax(z), and -z[t] "
    "gives -1 at the target, so a row's gradient is p - onehot(t)")


def _cross_entropy(rng: np.random.Generator) -> list[Case]:
    from minitransformer import functional as F

    def as_sum(dloss: np.ndarray, z: np.ndarray, t: np.ndarray) -> tuple:
        onehot = np.eye(z.shape[-1])[t]
        return ((_softmax_of(z) - onehot) * dloss,)

    def no_onehot(dloss: np.ndarray, z: np.ndarray, t: np.ndarray) -> tuple:
        return (_softmax_of(z) * dloss / t.size,)

    def classes_last(z: Any, t: Any) -> Any:  # the exercise's layout (..., C), as rows
        return F.cross_entropy(z.reshape(-1, z.shape[-1]), t.reshape(-1))

    cases = []
    for label, shape, targets in (
            ("4 rows of 5 classes", (4, 5), None),
            ("one row: (1, 3)", (1, 3), None),
            ("repeated targets: (6, 4)", (6, 4), np.array([2, 2, 0, 2, 3, 2])),
            ("a batch of sequences: (2, 3, 5)", (2, 3, 5), None)):
        z = rng.standard_normal(shape)
        t = rng.integers(0, shape[-1], shape[:-1]) if targets is None else targets
        cases.append(gradient_case(
            label, rng, forward="forward", backward="backward",
            op="minitransformer.functional.cross_entropy", inputs=(z, t), wrt=(0,),
            names=("dz",), reference=classes_last,
            mistakes=[(NO_MEAN, as_sum), (NO_ONEHOT, no_onehot)]))
    return cases


# ----------------------------------------------------------------------------- 6 layer norm

CONSTANT_STATISTICS = Mistake(
    "mean and variance treated as constants",
    "mu and var are computed from x, so x reaches y three ways (directly, through mu, "
    "through var): dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var + eps), "
    "g = dy * gamma")
NO_VARIANCE_PATH = Mistake(
    "forgot the path through the variance",
    "you took the mean's path into account but not the variance's: subtract also "
    "x_hat * mean(g * x_hat), g = dy * gamma, before dividing by sqrt(var + eps)")


NO_GAMMA = Mistake(
    "forgot gamma in dx",
    "y = gamma * x_hat + beta, so the gradient reaching x_hat is g = dy * gamma: every term "
    "of dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var + eps) uses g, not dy")
DDOF_ONE = Mistake(
    "variance with n - 1 (ddof=1)",
    "layer norm's variance is the plain mean of squares, 1/n (np.var's default ddof=0, as "
    "in the forward); with 1/(n - 1) your x_hat and 1/sqrt(var + eps) are not the forward's")


def _layer_norm_backward(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray, *,
                         ddof: int = 0, use_gamma: bool = True) -> tuple:
    """Layer norm's backward (the right one, or with one typical mistake switched on)."""
    n = x.shape[-1]
    mu = x.mean(axis=-1, keepdims=True)
    inv_std = 1 / np.sqrt(((x - mu) ** 2).sum(axis=-1, keepdims=True) / (n - ddof) + 1e-5)
    x_hat = (x - mu) * inv_std
    g = dy * gamma if use_gamma else dy
    dx = (g - g.mean(axis=-1, keepdims=True)
          - x_hat * (g * x_hat).mean(axis=-1, keepdims=True)) * inv_std
    return dx, (dy * x_hat).sum(axis=tuple(range(x.ndim - 1))), None


def _layer_norm(rng: np.random.Generator) -> list[Case]:
    from minitransformer import functional as F

    def statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = x.mean(axis=-1, keepdims=True)
        inv_std = 1 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + 1e-5)
        return mu, inv_std

    def no_gamma(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> tuple:
        return _layer_norm_backward(dy, x, gamma, use_gamma=False)

    def ddof_one(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> tuple:
        return _layer_norm_backward(dy, x, gamma, ddof=1)

    def constants(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> tuple:
        return dy * gamma * statistics(x)[1], None, None

    def no_variance(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray,
                    beta: np.ndarray) -> tuple:
        g = dy * gamma
        return (g - g.mean(axis=-1, keepdims=True)) * statistics(x)[1], None, None

    cases = []
    for label, shape in (("4 rows of 6", (4, 6)), ("batch size 1: (1, 5)", (1, 5)),
                         ("a batch of sequences: (2, 3, 8)", (2, 3, 8))):
        n = shape[-1]
        x = 2 * rng.standard_normal(shape) + 1
        gamma, beta = 1 + 0.5 * rng.standard_normal(n), rng.standard_normal(n)
        cases.append(gradient_case(
            label, rng, forward="forward", backward="backward",
            op="minitransformer.functional.layer_norm", inputs=(x, gamma, beta),
            wrt=(0, 1, 2), names=("dx", "dgamma", "dbeta"),
            reference=lambda x, g, b, n=n: F.layer_norm(x, n, g, b, eps=1e-5),
            mistakes=[(CONSTANT_STATISTICS, constants), (NO_VARIANCE_PATH, no_variance),
                      (NO_GAMMA, no_gamma), (DDOF_ONE, ddof_one)]))
    return cases


# ----------------------------------------------------------------------------- 7 attention

FORGOTTEN_MASK = Mistake(
    "forgotten mask",
    "your gradients are those of attention without the mask: compute A with the mask "
    "(weights(Q, K, mask)), so that the masked weights are 0 and no gradient flows "
    "through them")
SKIPPED_SOFTMAX = Mistake(
    "skipped the softmax's backward",
    "dA = dZ V^T is the gradient of the weights, not of the scores: go through the softmax "
    "first, dS = A * (dA - sum(dA * A, last axis)), then dQ = dS K / sqrt(d_k)")


def _attention_reference(mask: np.ndarray | None) -> Callable[..., Any]:
    from minitransformer import functional as F

    def reference(q: Any, k: Any, v: Any, _mask: Any) -> Any:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    return reference


def _unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    from minitransformer.ops.shape import unbroadcast

    return unbroadcast(grad, shape)


NO_TRANSPOSE_KV = Mistake(
    "a forgotten transpose in dK or dV",
    "S = Q K^T and Z = A V put K and V on the right, transposed or not: dK = dS^T Q / "
    "sqrt(d_k) and dV = A^T dZ. Without the transpose (dS Q, A dZ) the shapes agree only "
    "when L = S, and the values are wrong")


def _attention_backward(dz: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                        mask: np.ndarray | None, *, rowsum: bool = True, axis: int = -1,
                        sum_axis: int | None = None, transpose_k: bool = True,
                        transpose_v: bool = True) -> list[np.ndarray | None]:
    """Attention's backward in NumPy, with one typical mistake switched on: the softmax's
    row sum dropped, the softmax along ``axis``, its backward's row sum along ``sum_axis``
    (default: ``axis``), or dK = dS Q, dV = A dZ.
    A gradient whose wrong formula does not fit the shapes is None (a learner's code would
    have raised)."""
    scale = 1 / np.sqrt(q.shape[-1])
    with np.errstate(all="ignore"):
        s = q @ k.swapaxes(-1, -2) * scale
        if mask is not None:
            s = np.where(mask, s, -np.inf)
        top = s.max(axis=axis, keepdims=True)
        e = np.exp(s - np.where(np.isneginf(top), 0.0, top))
        total = e.sum(axis=axis, keepdims=True)
        a = e / np.where(total == 0, 1.0, total)  # a row masked throughout: weights 0
        da = dz @ v.swapaxes(-1, -2)
        row_sum = (da * a).sum(axis=axis if sum_axis is None else sum_axis, keepdims=True)
        ds = a * (da - row_sum) if rowsum else a * da
    grads: list[np.ndarray | None] = []
    for compute, shape in ((lambda: ds @ k * scale, q.shape),
                           (lambda: (ds.swapaxes(-1, -2) if transpose_k else ds) @ q * scale,
                            k.shape),
                           (lambda: (a.swapaxes(-1, -2) if transpose_v else a) @ dz, v.shape)):
        try:
            grads.append(_unbroadcast(compute(), shape))
        except ValueError:
            grads.append(None)
    return grads


def _attention_mistakes(mask_of: Callable[[np.ndarray], np.ndarray | None]
                        ) -> list[tuple[Mistake, Alternative]]:
    """The softmax and transpose mistakes of attention; ``mask_of(q)`` is the case's mask."""
    def variant(**wrong: Any) -> Alternative:
        return lambda dz, q, k, v, *_: _attention_backward(dz, q, k, v, mask_of(q), **wrong)

    return [(NO_ROWSUM, variant(rowsum=False)), (WRONG_AXIS, variant(axis=-2)),
            (WRONG_AXIS, variant(sum_axis=-2)),
            (NO_TRANSPOSE_KV, variant(transpose_k=False)),
            (NO_TRANSPOSE_KV, variant(transpose_v=False))]


def _attention(rng: np.random.Generator) -> list[Case]:
    def no_mask(dz: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                mask: np.ndarray | None) -> Sequence[np.ndarray | None]:
        if mask is None:
            return None, None, None
        return _project_gradients(_attention_reference(None), (q, k, v, None), (0, 1, 2),
                                  dz)[1]

    def skipped_softmax(dz: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                        mask: np.ndarray | None, masked: bool = False
                        ) -> Sequence[np.ndarray | None]:
        d_a = dz @ v.swapaxes(-1, -2)  # (..., L, S)
        if masked and mask is not None:
            d_a = np.where(mask, d_a, 0.0)
        scale = 1 / np.sqrt(q.shape[-1])
        return (_unbroadcast(d_a @ k * scale, q.shape),
                _unbroadcast(d_a.swapaxes(-1, -2) @ q * scale, k.shape), None)

    def skipped_softmax_masked(*args: np.ndarray | None) -> Sequence[np.ndarray | None]:
        return skipped_softmax(*args, masked=True)

    some = np.array([[True, False, True], [True, True, True], [False, True, True]])
    lower = np.tril(np.ones((4, 5), dtype=bool), k=1)  # query i sees keys 0..i+1
    dead = np.array([[True, True, False], [False, False, False], [True, False, True]])
    shapes = [  # label, Q, K, V, mask
        ("L = S = 3, d_k = 3, two masked positions", (3, 3), (3, 3), (3, 2), some),
        ("a batch (2, 2), L = 4, S = 5, d_k = 5, a causal-like mask", (2, 2, 4, 5),
         (2, 2, 5, 5), (2, 2, 5, 3), lower),
        ("a query whose every key is masked", (2, 3, 3), (2, 3, 3), (2, 3, 4), dead),
        ("batch size 1, no mask", (1, 4, 5), (1, 4, 5), (1, 4, 3), None),
        ("K and V shared by a batch of 2 (a broadcast axis)", (2, 4, 3), (5, 3), (5, 2),
         lower),
    ]
    cases = []
    for label, qs, ks, vs, mask in shapes:
        q, k, v = rng.standard_normal(qs), rng.standard_normal(ks), rng.standard_normal(vs)
        cases.append(gradient_case(
            label, rng, forward="forward", backward="backward",
            op="minitransformer.functional.scaled_dot_product_attention",
            inputs=(q, k, v, mask), wrt=(0, 1, 2), names=("dQ", "dK", "dV"),
            reference=_attention_reference(mask),
            mistakes=[(FORGOTTEN_MASK, no_mask), (SKIPPED_SOFTMAX, skipped_softmax),
                      (SKIPPED_SOFTMAX, skipped_softmax_masked),
                      *_attention_mistakes(lambda _, mask=mask: mask)],
            scale=1 / np.sqrt(qs[-1])))
    return cases


# ----------------------------------------------------------------------------- 8 heads

NO_TRANSPOSE = Mistake(
    "reshaped without undoing the transpose",
    "a plain reshape puts the numbers back in the wrong places (heads and positions mix): "
    "undo the moves in reverse order, the transpose first, then the reshape "
    "(the backward of split_heads is merge_heads)")


def _heads(rng: np.random.Generator) -> list[Case]:
    def split(x: Any, num_heads: int) -> Any:
        B, T, E = x.shape
        return x.reshape(B, T, num_heads, E // num_heads).transpose(0, 2, 1, 3)

    def merge(z: Any) -> Any:
        B, nh, T, hs = z.shape
        return z.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)

    cases = []
    for label, shape, heads in (("split (2, 5, 6) into 3 heads", (2, 5, 6), 3),
                                ("split, batch size 1: (1, 4, 8) into 2 heads", (1, 4, 8), 2),
                                ("split (2, 3, 4) into 4 heads of 1", (2, 3, 4), 4)):
        cases.append(gradient_case(
            label, rng, forward="split_heads", backward="split_heads_backward",
            op="minitransformer's reshape and transpose",
            inputs=(rng.standard_normal(shape), heads), wrt=(0,), names=("dx",),
            reference=split,
            mistakes=[(NO_TRANSPOSE, lambda dout, x, _: (dout.reshape(x.shape),))]))
    for label, shape in (("merge (2, 3, 5, 2)", (2, 3, 5, 2)),
                         ("merge, batch size 1: (1, 2, 4, 4)", (1, 2, 4, 4))):
        cases.append(gradient_case(
            label, rng, forward="merge_heads", backward="merge_heads_backward",
            op="minitransformer's transpose and reshape",
            inputs=(rng.standard_normal(shape),), wrt=(0,), names=("dz",), reference=merge,
            mistakes=[(NO_TRANSPOSE, lambda dout, z: (dout.reshape(z.shape),))]))
    return cases


# ----------------------------------------------------------------------------- 9 embedding

OVERWRITTEN = Mistake(
    "repeated index overwritten instead of added",
    "a row read several times gets the sum of all their gradients; dW[idx] = dout (and "
    "dW[idx] += dout, which NumPy buffers) keeps only one of them: use np.add.at(dW, idx, "
    "dout)")


def _embedding(rng: np.random.Generator) -> list[Case]:
    from minitransformer import functional as F

    def overwrite(dout: np.ndarray, idx: np.ndarray, W: np.ndarray) -> tuple:
        dW = np.zeros_like(W)
        dW[idx] += dout  # buffered: a repeated row keeps one gradient
        return (dW,)

    cases = []
    for label, idx, rows in (("a repeated index: [1, 4, 1, 1] of 6 rows", np.array([1, 4, 1, 1]),
                              6),
                             ("(2, 3) indices with repeats, unused rows", np.array(
                                 [[0, 2, 2], [5, 0, 2]]), 7),
                             ("batch size 1: [[3]]", np.array([[3]]), 4),
                             ("every index the same: [2, 2, 2]", np.array([2, 2, 2]), 3)):
        W = rng.standard_normal((rows, 3))
        cases.append(gradient_case(
            label, rng, forward="forward", backward="backward",
            op="minitransformer.functional.embedding", inputs=(idx, W), wrt=(1,),
            names=("dW",), reference=F.embedding, mistakes=[(OVERWRITTEN, overwrite)]))
    return cases


# ----------------------------------------------------------------------------- 10 adam

NO_BIAS_CORRECTION = Mistake(
    "no bias correction",
    "m and v start at 0, so early on they are too small by the factors 1 - beta1^t and "
    "1 - beta2^t: divide them by those before the step (m_hat, v_hat)")


def _adam(rng: np.random.Generator) -> list[Case]:
    from minitransformer.optim import Adam
    from minitransformer.tensor import Tensor, float64

    cases = []
    for shape, lr, betas, eps, steps in (((3,), 1e-3, (0.9, 0.999), 1e-8, (1, 3)),
                                         ((2, 4), 0.1, (0.8, 0.99), 1e-6, (1, 2, 10)),
                                         ((), 0.01, (0.9, 0.999), 1e-8, (5,))):
        param = Tensor(rng.standard_normal(shape), requires_grad=True, dtype=float64)
        optimizer = Adam([param], lr=lr, betas=betas, eps=eps)
        m = v = np.zeros(shape)
        for t in range(1, max(steps) + 1):
            before = param.detach().numpy().copy()
            grad = rng.standard_normal(shape)
            param.grad = Tensor(grad, dtype=float64)
            optimizer.step()
            state = optimizer.state[param]
            after = (param.detach().numpy().copy(), state["exp_avg"].copy(),
                     state["exp_avg_sq"].copy())
            if t in steps:
                cases.append(_adam_case(shape, lr, betas, eps, t, before, grad, m, v, after))
            m, v = after[1], after[2]
    return cases


def _adam_case(shape: tuple, lr: float, betas: tuple, eps: float, t: int, param: np.ndarray,
               grad: np.ndarray, m: np.ndarray, v: np.ndarray, after: tuple) -> Case:
    beta1, beta2 = betas
    new_m, new_v = after[1], after[2]
    uncorrected = -lr * new_m / (np.sqrt(new_v) + eps)

    def call(module: ModuleType) -> Any:
        step = learner_function(module, "adam_step")
        return call_learner(step, param.copy(), grad.copy(), m.copy(), v.copy(), t, lr=lr,
                            beta1=beta1, beta2=beta2, eps=eps)

    def move(result: Any) -> Any:
        """Judge the move (in the parent), so that a wrong sign or factor shows as such."""
        if (isinstance(result, tuple) and len(result) == 3
                and isinstance(result[0], np.ndarray) and result[0].dtype.kind == "f"
                and result[0].shape == param.shape):
            return (result[0] - param, *result[1:])
        return result

    label = f"step {t} of a {shape} parameter, lr={lr}, betas={betas}, eps={eps}"
    return Case(label, call, (after[0] - param, new_m, new_v),
                ("the update (new param - param)", "m", "v"),
                [(NO_BIAS_CORRECTION, (uncorrected, None, None))], adjust=move)


# ----------------------------------------------------------------------------- 11 causal

FORGOTTEN_CAUSAL_MASK = Mistake(
    "forgotten causal mask",
    "your gradients are those of attention over all T keys: query i reads keys 0..i only, "
    "so the weights of keys j > i are 0 and no gradient flows to them")
CAUSAL_OFF_BY_ONE = Mistake(
    "causal mask off by one",
    "query i reads keys 0..i, itself included: key j is allowed when j <= i (np.tril with "
    "k=0, or K[..., : i + 1, :]); j < i drops the diagonal, j <= i + 1 lets in the next key")
KV_OVERWRITTEN = Mistake(
    "gradients of K and V overwritten, not accumulated",
    "key j is read by every query i >= j, so dK[j] and dV[j] are sums over those queries: "
    "add each query's contribution (+=) instead of assigning it")


def _causal_attention(rng: np.random.Generator) -> list[Case]:
    from minitransformer import functional as F

    def reference(q: Any, k: Any, v: Any) -> Any:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def full(dz: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> Sequence:
        return _project_gradients(lambda a, b, c: F.scaled_dot_product_attention(a, b, c),
                                  (q, k, v), (0, 1, 2), dz)[1]

    def last_query_only(dz: np.ndarray, q: np.ndarray, k: np.ndarray,
                        v: np.ndarray) -> Sequence:
        last = np.zeros_like(dz)
        last[..., -1:, :] = dz[..., -1:, :]  # what survives when each query overwrites
        _, d_k, d_v = _project_gradients(reference, (q, k, v), (0, 1, 2), last)[1]
        return None, d_k, d_v

    def causal(q: np.ndarray, shift: int = 0) -> np.ndarray:
        T = q.shape[-2]
        return np.tril(np.ones((T, T), dtype=bool), k=shift)

    def off_by(shift: int) -> Alternative:
        return lambda dz, q, k, v: _attention_backward(dz, q, k, v, causal(q, shift))

    cases = []
    for label, batch, T, d_k, d_v in (("T = 4, d_k = 3", (), 4, 3, 3),
                                      ("a batch of (2, 2) heads, T = 5, d_k = 5", (2, 2), 5, 5,
                                       2),
                                      ("a single token (T = 1): its weight is 1", (2,), 1, 3, 2),
                                      ("batch size 1, T = 3", (1,), 3, 3, 4)):
        q, k = rng.standard_normal((*batch, T, d_k)), rng.standard_normal((*batch, T, d_k))
        v = rng.standard_normal((*batch, T, d_v))
        cases.append(gradient_case(
            label, rng, forward="forward", backward="backward",
            op="minitransformer.functional.scaled_dot_product_attention(is_causal=True)",
            inputs=(q, k, v), wrt=(0, 1, 2), names=("dQ", "dK", "dV"), reference=reference,
            mistakes=[(FORGOTTEN_CAUSAL_MASK, full), (KV_OVERWRITTEN, last_query_only),
                      *[(CAUSAL_OFF_BY_ONE, off_by(shift)) for shift in (-1, 1)],
                      *_attention_mistakes(causal)],
            scale=1 / np.sqrt(d_k)))
    return cases


# ----------------------------------------------------------------------------- 12 online softmax

NO_RESCALE_SUM = Mistake(
    "forgot to rescale the running sum l",
    "when a tile raises the running max from m to m_new, what l summed was exp(s - m): "
    "multiply it by alpha = exp(m - m_new) before adding the tile, "
    "l = alpha * l + rowsum(exp(S - m_new))")
NO_RESCALE_ACCUMULATOR = Mistake(
    "forgot to rescale the accumulator",
    "the unnormalised output o was summed against the old max, like l: rescale it too, "
    "o = alpha * o + exp(S - m_new) V_tile, alpha = exp(m - m_new)")
DIVIDED_PER_TILE = Mistake(
    "divided per tile instead of at the end",
    "no tile knows the softmax's denominator, the sum over ALL keys: keep o and l "
    "unnormalised through the loop (both rescaled by alpha) and divide once, O = o / l, "
    "after the last tile")
NO_RUNNING_MAX = Mistake(
    "exp without the running max",
    "these scores are in the hundreds: exp overflows to inf (float64 stops near 709) and "
    "inf / inf is nan. Subtract the running max: P = exp(S - m_new), every entry <= 1")


def _online_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, block: int, *,
                    rescale_l: bool = True, rescale_o: bool = True,
                    per_tile: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The online softmax (O, L), with one typical mistake switched on: l or o not
    rescaled, or the output divided per tile ("running": by the sum so far; "own": by the
    tile's own sum) instead of once at the end."""
    scale = 1 / np.sqrt(q.shape[-1])
    m = np.full((*q.shape[:-1], 1), -np.inf)
    l = np.zeros((*q.shape[:-1], 1))
    o = np.zeros((*q.shape[:-1], v.shape[-1]))
    for j in range(0, k.shape[-2], block):
        s = q @ k[..., j : j + block, :].swapaxes(-1, -2) * scale
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
        p = np.exp(s - m_new)
        alpha = np.exp(m - m_new)
        l = (l * alpha if rescale_l else l) + p.sum(axis=-1, keepdims=True)
        tile = p @ v[..., j : j + block, :]
        if per_tile == "running":
            tile = tile / l
        elif per_tile == "own":
            tile = tile / p.sum(axis=-1, keepdims=True)
        o = (o * alpha if rescale_o else o) + tile
        m = m_new
    return (o if per_tile else o / l), m + np.log(l)


class KeyTiles:
    """K or V as exercise 12 hands them to the learner: ``shape`` and ``ndim`` as an
    array's, and tiles of at most ``block`` keys, ``K[..., j : j + block, :]`` (a fresh
    ndarray), each key once. Anything that would read more keys at once, or a key a
    second time, raises, with what to do: so a forward that builds the (L, S) scores, or
    takes two passes (the max first, then the sums), fails, however right its numbers.

    Which keys an index selects is read off an array of key numbers indexed the same way,
    so any form of index (slices, ``...``, integers, lists) is judged alike.
    """

    def __init__(self, array: np.ndarray, block: int, name: str) -> None:
        self._array, self._block, self._name = array, block, name
        keys = np.arange(array.shape[-2]).reshape(-1, 1)
        self._keys = np.broadcast_to(keys, array.shape)  # each entry's key number
        self._seen = np.zeros(0, dtype=keys.dtype)  # the keys handed out so far
        self.shape, self.ndim, self.dtype = array.shape, array.ndim, array.dtype

    def _refuse(self, what: str) -> TypeError:
        return TypeError(
            f"{self._name} hands out its keys one tile at a time ({what}): read "
            f"{self._name}[..., j : j + block, :] for j in range(0, {self._name}.shape[-2], "
            "block), never all the keys at once")

    def __getitem__(self, index: Any) -> np.ndarray:
        keys = np.unique(self._keys[index])
        if keys.size > self._block:
            raise self._refuse(f"this index reads {keys.size} keys, block is {self._block}")
        again = np.intersect1d(keys, self._seen)
        if again.size:  # a second pass (a max first, then the sums) is not the online way
            raise TypeError(
                f"{self._name} gives each key once: key {int(again[0])} was read before. The "
                "online softmax visits every tile once, rescaling what it has summed when "
                "the running max grows")
        self._seen = np.union1d(self._seen, keys)
        return np.array(self._array[index])

    def __len__(self) -> int:
        return len(self._array)

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise self._refuse("np.asarray or an operation on the whole array")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # NumPy's and Python's own probes (__array_interface__...)
            raise AttributeError(name)
        raise AttributeError(f"{self._name}.{name} is not there: " + str(
            self._refuse("it has only .shape, .ndim, .dtype and tiles")))

    def __repr__(self) -> str:
        return f"KeyTiles({self._name}, shape={self.shape}, block={self._block})"


def _online_softmax(rng: np.random.Generator) -> list[Case]:
    from minitransformer.ops.tiled_attention import tiled_attention
    from minitransformer.tensor import Tensor, float64

    def variant(**wrong: Any) -> Alternative:
        return lambda q, k, v, block: _online_forward(q, k, v, block, **wrong)

    mistakes = [(NO_RESCALE_SUM, variant(rescale_l=False)),
                (NO_RESCALE_ACCUMULATOR, variant(rescale_o=False)),
                (DIVIDED_PER_TILE, variant(per_tile="running")),
                (DIVIDED_PER_TILE, variant(per_tile="own"))]
    cases = []
    for label, batch, L, S, d_k, d_v, block, size, growing in (
            ("tiles of 2 keys, L = 4, S = 6", (), 4, 6, 3, 2, 2, 1, False),
            ("scores that grow tile by tile (the max moves at every tile)", (2,), 3, 8, 4, 3,
             2, 1, True),
            ("a ragged last tile: 7 keys in tiles of 3, a batch of 2", (2,), 3, 7, 3, 3, 3, 1,
             False),
            ("one tile holding every key (block 8 > S = 5)", (), 4, 5, 5, 2, 8, 1, False),
            ("one key at a time (block 1), batch size 1", (1,), 3, 4, 5, 2, 1, 1, False),
            ("scores in the hundreds (Q x 300): exp overflows without the max", (2, 2), 4, 8,
             3, 2, 4, 300, False)):
        q = size * rng.standard_normal((*batch, L, d_k))
        k, v = rng.standard_normal((*batch, S, d_k)), rng.standard_normal((*batch, S, d_v))
        if growing:  # key s points along the queries, more so with s: each tile outbids
            k = np.abs(k) * np.arange(1, S + 1)[:, None]
            q = np.abs(q)
        scores = q @ k.swapaxes(-1, -2) / np.sqrt(d_k)  # the parent's reference, all at once
        top = scores.max(axis=-1, keepdims=True)
        lse = top + np.log(np.exp(scores - top).sum(axis=-1, keepdims=True))
        out = tiled_attention(*(Tensor(x, dtype=float64) for x in (q, k, v)), block_k=block,
                              workers=1).numpy()
        cases.append(_output_case(
            label, "forward", (q, k, v, block), (out, lse), ("O", "L"), mistakes,
            NO_RUNNING_MAX if size > 100 else None,
            given=(q, KeyTiles(k, block, "K"), KeyTiles(v, block, "V"), block)))
    return cases


def _output_case(label: str, function: str, inputs: Sequence[Any],
                 expected: tuple[np.ndarray, ...], names: tuple[str, ...],
                 mistakes: Sequence[tuple[Mistake, Alternative]],
                 non_finite: Mistake | None = None, given: Sequence[Any] | None = None) -> Case:
    """A case that calls the learner's ``function`` and expects ``expected``; the
    function gets ``given`` (default: ``inputs``), the same numbers perhaps wrapped."""
    alternatives = [(mistake, tuple(wrong(*_copies(inputs)))) for mistake, wrong in mistakes]

    def call(module: ModuleType) -> Any:
        return call_learner(learner_function(module, function),
                            *_copies(inputs if given is None else given))

    return Case(label, call, expected, names, alternatives, non_finite=non_finite,
                inputs=tuple(inputs))


# ----------------------------------------------------------------------------- 13 tiled backward

TILE_SOFTMAX = Mistake(
    "each tile normalised on its own",
    "a tile's weights are a slice of the softmax over ALL keys, not a softmax of their "
    "own: recompute them from the saved log-sum-exp, P = exp(S_tile - L)")
TILE_ROWSUM = Mistake(
    "softmax's row sum taken over one tile",
    "dS = P * (dP - sum(dP * P)) needs the sum over all keys, which no single tile has: "
    "use D = rowsum(dO * O) (the same number, from the saved output), once per row")


NO_D = Mistake(
    "the tiled backward without D = rowsum(dO * O)",
    "dS = P * (dP - D): softmax's backward keeps its row-sum term, which tile by tile is "
    "D = rowsum(dO * O), computed once per row from the saved output; P * dP drops it")


def _tiled_backward(d_out: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                    block: int, tile_softmax: bool = False, tile_rowsum: bool = False,
                    no_d: bool = False) -> tuple[np.ndarray, ...]:
    """The tiled backward with one of the typical mistakes switched on."""
    scale = 1 / np.sqrt(q.shape[-1])
    scores = q @ k.swapaxes(-1, -2) * scale  # (..., L, S): the checker's inputs are tiny
    top = scores.max(axis=-1, keepdims=True)
    lse = top + np.log(np.exp(scores - top).sum(axis=-1, keepdims=True))  # (..., L, 1)
    rowsum = (d_out * (np.exp(scores - lse) @ v)).sum(axis=-1, keepdims=True)  # D
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for j in range(0, k.shape[-2], block):
        tile = scores[..., j : j + block]
        p = _softmax_of(tile) if tile_softmax else np.exp(tile - lse)
        dv[..., j : j + block, :] = p.swapaxes(-1, -2) @ d_out
        dp = d_out @ v[..., j : j + block, :].swapaxes(-1, -2)
        ds = p * (dp - ((dp * p).sum(axis=-1, keepdims=True) if tile_rowsum else rowsum))
        if no_d:
            ds = p * dp
        dq += ds @ k[..., j : j + block, :] * scale
        dk[..., j : j + block, :] = ds.swapaxes(-1, -2) @ q * scale
    return dq, dk, dv


def _tiled_backward_cases(rng: np.random.Generator) -> list[Case]:
    from minitransformer.ops.tiled_attention import tiled_attention

    def reference(q: Any, k: Any, v: Any, block: int) -> Any:
        return tiled_attention(q, k, v, block_k=block, workers=1)

    cases = []
    for label, batch, L, S, d_k, d_v, block, size in (
            ("tiles of 2 keys, L = 4, S = 6", (), 4, 6, 3, 2, 2, 1),
            ("a ragged last tile: 7 keys in tiles of 3, a batch of 2", (2,), 3, 7, 3, 3, 3, 1),
            ("one tile holding every key (block 8 > S = 5)", (), 4, 5, 5, 2, 8, 1),
            ("one key at a time (block 1), batch size 1", (1,), 3, 4, 5, 2, 1, 1),
            ("a batch of (2, 2) heads, large scores (x 8)", (2, 2), 4, 8, 3, 2, 4, 8)):
        q = size * rng.standard_normal((*batch, L, d_k))
        k, v = rng.standard_normal((*batch, S, d_k)), rng.standard_normal((*batch, S, d_v))
        cases.append(gradient_case(
            label, rng, forward="forward", backward="backward",
            op="minitransformer.ops.tiled_attention.tiled_attention",
            inputs=(q, k, v, block), wrt=(0, 1, 2), names=("dQ", "dK", "dV"),
            reference=reference,
            mistakes=[(TILE_SOFTMAX, lambda *a: _tiled_backward(*a, tile_softmax=True)),
                      (TILE_ROWSUM, lambda *a: _tiled_backward(*a, tile_rowsum=True)),
                      (NO_D, lambda *a: _tiled_backward(*a, no_d=True))],
            scale=1 / np.sqrt(d_k)))
    return cases


# ----------------------------------------------------------------------------- the list

EXERCISES: tuple[Exercise, ...] = (
    Exercise(1, "chain_rule", "The chain rule by hand",
             "docs/autograd.md#gradients-add-up-when-a-tensor-is-used-twice",
             "the engine's Mul, Add and Tanh", "0-d scalars; a variable used twice",
             (MISSED_PATH,), _chain_rule),
    Exercise(2, "broadcast", "Summing a gradient back to a broadcast shape",
             "docs/autograd.md#broadcasting-and-summing-it-back-out",
             "the engine's Mul (which calls unbroadcast)",
             "added leading axes, size-1 axes, both inputs broadcast, a 0-d factor",
             (), _broadcast),
    Exercise(3, "matmul", "Batched matrix product",
             "docs/matmul.md#derived-entry-by-entry", "the engine's MatMul",
             "a matrix shared by the batch, broadcast batch axes, square matrices, batch 1",
             (), _matmul),
    Exercise(4, "softmax", "Softmax", "docs/softmax.md#the-backward-step-by-step",
             "minitransformer.ops.softmax", "a single row, batch 1, large logits",
             (DIAGONAL_ONLY, NO_ROWSUM, WRONG_AXIS, NO_MAX_SHIFT), _softmax),
    Exercise(5, "cross_entropy", "Log-softmax with cross-entropy",
             "docs/softmax.md#cross-entropy-softmax--one-hot",
             "minitransformer.functional.cross_entropy",
             "one row, repeated targets, a batch of sequences", (NO_MEAN, NO_ONEHOT),
             _cross_entropy),
    Exercise(6, "layer_norm", "Layer norm", "docs/layernorm.md#backward-step-by-step",
             "minitransformer.functional.layer_norm", "batch 1, a batch of sequences",
             (CONSTANT_STATISTICS, NO_VARIANCE_PATH, NO_GAMMA, DDOF_ONE), _layer_norm),
    Exercise(7, "attention", "Scaled dot-product attention with a mask",
             "docs/attention.md#backward-equation-by-equation",
             "minitransformer.functional.scaled_dot_product_attention",
             "masked positions, a query with every key masked, L != S, batch 1, K and V "
             "shared by the batch", (FORGOTTEN_MASK, SKIPPED_SOFTMAX, NO_ROWSUM, WRONG_AXIS,
                                     NO_TRANSPOSE_KV), _attention),
    Exercise(8, "heads", "Splitting and merging heads",
             "docs/multi-head.md#splitting-and-merging-heads",
             "the engine's reshape and transpose", "batch 1, heads of size 1",
             (NO_TRANSPOSE,), _heads),
    Exercise(9, "embedding", "Embedding with repeated indices",
             "docs/embeddings.md#the-embeddings-backward-a-scatter-add",
             "minitransformer.functional.embedding",
             "a repeated index, unused rows, batch 1, one row read throughout",
             (OVERWRITTEN,), _embedding),
    Exercise(10, "adam", "An Adam step", "minitransformer/optim/optimizers.py (class Adam)",
             "minitransformer.optim.Adam", "step 1 (the largest bias correction), a 0-d "
                                           "parameter, other betas and eps",
             (NO_BIAS_CORRECTION,), _adam),
    Exercise(11, "causal_attention", "Causal attention, one query at a time",
             "docs/gpt.md#1-the-causal-mask",
             "minitransformer.functional.scaled_dot_product_attention with is_causal=True",
             "a single token, batch 1, a batch of heads",
             (FORGOTTEN_CAUSAL_MASK, KV_OVERWRITTEN, CAUSAL_OFF_BY_ONE, NO_ROWSUM, WRONG_AXIS,
              NO_TRANSPOSE_KV), _causal_attention),
    Exercise(12, "online_softmax", "The online softmax (FlashAttention's forward)",
             "docs/tiled-attention.md#the-online-softmax",
             "minitransformer.ops.tiled_attention.tiled_attention (O) and the log-sum-exp "
             "of all the scores (L)",
             "a max that moves at every tile, a ragged last tile, one tile, one key per "
             "tile, batch 1, scores that overflow exp",
             (NO_RESCALE_SUM, NO_RESCALE_ACCUMULATOR, DIVIDED_PER_TILE, NO_RUNNING_MAX),
             _online_softmax),
    Exercise(13, "tiled_backward", "The tiled backward (FlashAttention's backward)",
             "docs/tiled-attention.md#the-recompute-backward",
             "minitransformer.ops.tiled_attention.tiled_attention",
             "a ragged last tile, one tile, one key per tile, batch 1, large scores",
             (TILE_SOFTMAX, TILE_ROWSUM, NO_D), _tiled_backward_cases),
)
