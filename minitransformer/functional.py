"""Stateless building blocks of a transformer: losses, normalisation, attention.

    import minitransformer.functional as F
    loss = F.cross_entropy(logits, targets)
    out, weights = F.scaled_dot_product_attention(q, k, v, is_causal=True)

Most functions here are compositions of engine ops, so autograd differentiates them with
no new code. Three are fused :class:`~minitransformer.autograd.Function` s with a backward
derived by hand, because they are where learners study backprop and where speed matters:
:class:`CrossEntropy`, :class:`LayerNorm` and :class:`ScaledDotProductAttention`. Each is
checked against finite differences and against PyTorch in the tests, and layer norm and
attention also against :func:`layer_norm_reference` and :func:`attention_reference`, the
same maths built from primitive ops only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from minitransformer import backend, ops
from minitransformer.autograd import Function, is_grad_enabled
from minitransformer.errors import DtypeError, ShapeError
from minitransformer.ops.shape import unbroadcast
from minitransformer.tensor import Tensor

# The activations and the softmax family are engine ops; they are re-exported here so that
# ``F.<name>`` covers everything a layer needs. ``softmax``, ``log_softmax`` and
# ``logsumexp`` subtract the row maximum before exponentiating, so logits of +-1e4 are fine.
softmax = ops.softmax
log_softmax = ops.log_softmax
logsumexp = ops.logsumexp
relu = ops.relu
tanh = ops.tanh
sigmoid = ops.sigmoid

__all__ = [
    "AttentionWeights", "CrossEntropy", "LayerNorm", "ScaledDotProductAttention",
    "attention_reference", "cross_entropy", "dropout", "embedding", "gelu", "layer_norm",
    "layer_norm_reference", "linear", "log_softmax",
    "logsumexp", "mse_loss", "relu", "scaled_dot_product_attention", "sigmoid", "softmax",
    "tanh",
]


def _xp(array: Any) -> Any:
    """NumPy or CuPy, whichever holds ``array``."""
    return backend.array_module(backend.device_of(array))


def _constant(array: Any, device: str) -> Tensor:
    """An array as a tensor outside the graph (masks, one-hot targets, saved values)."""
    return Tensor._from_array(array, device)


def _integer_array(indices: Any, device: str, what: str) -> Any:
    """Integer indices (a Tensor, an array or a list) as a backend array on ``device``."""
    data = indices.data if isinstance(indices, Tensor) else indices
    if not backend.is_array(data):
        data = np.asarray(data)
    if data.dtype.kind not in "iu":
        raise DtypeError(f"{what} must hold integers, got dtype {data.dtype}")
    return backend.to_device(data, device)


# ----- activations -------------------------------------------------------------------------------
def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU(x) = x * Phi(x), Phi the standard normal CDF.

    ``approximate="none"``: Phi(x) = (1 + erf(x / sqrt 2)) / 2 (exact).
    ``approximate="tanh"``: Phi(x) ~ (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2 (GPT-2's).
    """
    return ops.gelu(x, approximate)


def dropout(
    x: Tensor,
    p: float = 0.5,
    training: bool = True,
    generator: np.random.Generator | None = None,
    seed: int | None = None,
) -> Tensor:
    """Zero each element with probability ``p`` and scale the survivors by 1 / (1 - p), so
    the expected value is unchanged. The identity when ``training`` is False or ``p`` is 0.
    Randomness is explicit: pass a ``numpy.random.Generator`` or a ``seed``."""
    return ops.dropout(x, p, training=training, generator=generator, seed=seed)


# ----- layers as functions ---------------------------------------------------------------------
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, with W of shape (out_features, in_features) as in PyTorch.

    x (..., in) @ W^T (in, out) -> y (..., out); b (out,) broadcasts over the leading axes.
    """
    if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ShapeError(
            f"linear: input of shape {x.shape} does not fit weight of shape {weight.shape}; "
            "the weight must be (out_features, in_features) with in_features = input.shape[-1]"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ShapeError(
            f"linear: bias of shape {bias.shape} does not fit weight of shape {weight.shape}; "
            f"expected ({weight.shape[0]},)"
        )
    y = x @ weight.T  # (..., in) @ (in, out) -> (..., out)
    return y if bias is None else y + bias


def embedding(indices: Any, weight: Tensor) -> Tensor:
    """Row ``indices[...]`` of ``weight`` (num_embeddings, dim) -> (*indices.shape, dim).

    Looking up rows is indexing, so the backward is indexing's: the gradient of each output
    row is added to the row it came from, and a row looked up twice gets both gradients.
    """
    if weight.ndim != 2:
        raise ShapeError(f"embedding weight must be (num_embeddings, dim), got {weight.shape}")
    index = _integer_array(indices, weight.device, "embedding indices")
    num_embeddings = weight.shape[0]
    if index.size and (int(index.min()) < 0 or int(index.max()) >= num_embeddings):
        bad = int(index.max()) if int(index.max()) >= num_embeddings else int(index.min())
        raise IndexError(
            f"embedding index {bad} is out of range for {num_embeddings} embeddings "
            f"(valid indices are 0 to {num_embeddings - 1}; max index given {int(index.max())})"
        )
    return weight[index]  # (*indices.shape, dim)


def _normalized_axes(x: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None,
                     bias: Tensor | None) -> tuple[int, ...]:
    """The last ``len(normalized_shape)`` axes of ``x``, after checking the shapes."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or x.shape[x.ndim - len(shape) :] != shape or len(shape) > x.ndim:
        raise ShapeError(
            f"layer_norm: normalized_shape {shape} must match the last axes of the input, "
            f"whose shape is {x.shape}"
        )
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and param.shape != shape:
            raise ShapeError(
                f"layer_norm: {name} has shape {param.shape}, expected normalized_shape {shape}"
            )
    return tuple(range(x.ndim - len(shape), x.ndim))


def _normalize(x: Any, axes: tuple[int, ...], eps: float, xp: Any) -> tuple[Any, Any]:
    """x_hat = (x - mean) / sqrt(var + eps) and 1 / sqrt(var + eps), over ``axes``.

    Works on arrays (``xp`` NumPy/CuPy) and on tensors (``xp`` the engine's ops)."""
    mean = x.mean(axis=axes, keepdims=True)  # (..., 1)
    centered = x - mean  # (..., n)
    var = (centered * centered).mean(axis=axes, keepdims=True)  # (..., 1), biased (divide by n)
    inv_std = 1 / xp.sqrt(var + eps)  # (..., 1)
    return centered * inv_std, inv_std


class LayerNorm(Function):
    """y = x_hat * gamma + beta, x_hat = (x - mean) / sigma, sigma = sqrt(var + eps), with the
    mean and the (biased) variance taken over the last axes, one group of n values at a time.

    Backward, from g = dL/dy (mean(.) over the normalised axes, sum(.) over the others):
        dbeta  = sum(g)                              (beta is added at every position)
        dgamma = sum(g * x_hat)                      (gamma multiplies x_hat)
        dx     = (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat)) / sigma,  g_hat = g * gamma

    Derivation of dx: x_hat_i = (x_i - mu) / sigma with d mu / dx_j = 1/n and
    d sigma / dx_j = x_hat_j / n (from var = mean((x - mu)^2)), so
        d x_hat_i / dx_j = (delta_ij - 1/n - x_hat_i x_hat_j / n) / sigma,
    and dx_j = sum_i g_hat_i d x_hat_i / dx_j gives the line above: the gradient minus its
    mean (the mean was subtracted) minus its component along x_hat (the scale was divided).

    :func:`layer_norm_reference` is the same maths from primitive ops, for the tests.
    """

    def forward(self, x: Any, weight: Any, bias: Any, axes: tuple[int, ...], eps: float) -> Any:
        self.axes, self.eps = axes, eps
        self.x_hat, self.inv_std = _normalize(x, axes, eps, _xp(x))  # saved for backward
        return self.x_hat * weight + bias  # (..., n)

    def backward(self, grad: Any) -> tuple[Any, Any, Any]:
        x, weight, _ = self.args
        axes = self.axes
        if is_grad_enabled():  # create_graph: x_hat as a function of x, to differentiate again
            x_hat, inv_std = _normalize(x, axes, self.eps, self.xp)
        else:
            x_hat, inv_std = self.x_hat, self.inv_std
        need_x, need_weight, need_bias = self.needs_input_grad
        dx = d_weight = d_bias = None
        if need_x:
            g_hat = grad * weight  # dL/dx_hat, (..., n)
            mean_g = g_hat.mean(axis=axes, keepdims=True)  # (..., 1)
            mean_g_x_hat = (g_hat * x_hat).mean(axis=axes, keepdims=True)  # (..., 1)
            dx = (g_hat - mean_g - x_hat * mean_g_x_hat) * inv_std  # (..., n)
        if need_weight:
            d_weight = unbroadcast(grad * x_hat, weight.shape)  # (..., n) -> (n,)
        if need_bias:
            d_bias = unbroadcast(grad, weight.shape)  # (..., n) -> (n,)
        return dx, d_weight, d_bias


def layer_norm(
    x: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise over the last ``len(normalized_shape)`` axes, then scale and shift:

        y = (x - mean) / sqrt(var + eps) * weight + bias

    with the biased variance (divide by n), as in PyTorch. One fused node,
    :class:`LayerNorm`, with its backward derived by hand.
    """
    axes = _normalized_axes(x, normalized_shape, weight, bias)
    shape = x.shape[axes[0] :]
    xp = _xp(x.data)
    if weight is None:  # no scale: gamma = 1, a constant
        weight = _constant(xp.ones(shape, dtype=x.dtype), x.device)
    if bias is None:  # no shift: beta = 0, a constant
        bias = _constant(xp.zeros(shape, dtype=x.dtype), x.device)
    return LayerNorm.apply(x, weight, bias, axes=axes, eps=eps)


def layer_norm_reference(
    x: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """The same as :func:`layer_norm`, composed of primitive engine ops (mean, var, sqrt,
    ...) so that autograd derives its backward. Slower; it exists to check the fused node."""
    axes = _normalized_axes(x, normalized_shape, weight, bias)
    mean = x.mean(axis=axes, keepdims=True)  # (..., 1, ..., 1)
    var = x.var(axis=axes, keepdims=True)  # (..., 1, ..., 1), ddof=0
    y = (x - mean) / (var + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


# ----- losses -----------------------------------------------------------------------------------
_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Squared error (input - target)^2, averaged ("mean"), added ("sum") or kept ("none")."""
    _check_reduction(reduction)
    if not isinstance(target, Tensor):
        target = Tensor(target, dtype=input.dtype, device=input.device)
    if input.shape != target.shape:
        raise ShapeError(
            f"mse_loss: input of shape {input.shape} and target of shape {target.shape} differ"
        )
    diff = input - target
    squared = diff * diff
    if reduction == "none":
        return squared
    return squared.mean() if reduction == "mean" else squared.sum()


class CrossEntropy(Function):
    """loss_n = -log softmax(z_n)[t_n] = logsumexp(z_n) - z_n[t_n] for each row n of logits z.

    Derivation. With p = softmax(z_n) and y the one-hot vector of the target t_n,
        d logsumexp(z_n) / dz_j = e^{z_j} / sum_k e^{z_k} = p_j,    d z_n[t_n] / dz_j = y_j,
    so  d loss_n / dz_j = p_j - y_j.  The reduction scales each row: "sum" by 1, "mean" by
    1 / count (count = the rows not ignored), and rows whose target is ``ignore_index``
    count for nothing, so

        dz = (softmax(z) - onehot(t)) * upstream / count,   and 0 on ignored rows.

    ``forward`` gets the logits array; the targets and options are parameters.
    """

    def forward(self, logits: Any, target: Any, keep: Any, reduction: str) -> Any:
        xp = _xp(logits)
        self.target, self.keep, self.reduction = target, keep, reduction
        self.count = max(int(keep.sum()), 1)  # all rows ignored: a mean of nothing is 0
        shifted = logits - logits.max(axis=-1, keepdims=True)  # (..., C), max is 0: no overflow
        picked = xp.take_along_axis(shifted, target[..., None], axis=-1)[..., 0]  # (...)
        log_total = xp.log(xp.exp(shifted).sum(axis=-1))  # (...)
        losses = (log_total - picked) * keep  # (...), 0 on ignored rows
        if reduction == "none":
            return losses
        total = losses.sum()
        return total / self.count if reduction == "mean" else total

    def backward(self, grad: Any) -> tuple[Any]:
        (logits,) = self.args
        probs = self.xp.softmax(logits, axis=-1)  # (..., C)
        classes = _xp(self.target).arange(logits.shape[-1])
        onehot = (classes == self.target[..., None]).astype(logits.dtype)  # (..., C)
        row_weight = self.keep[..., None].astype(logits.dtype)  # (..., 1): 0 on ignored rows
        if self.reduction == "mean":
            row_weight = row_weight / self.count
        if self.reduction == "none":
            grad = grad.reshape(grad.shape + (1,))  # (...) -> (..., 1)
        return ((probs - onehot) * (grad * row_weight),)


def cross_entropy(
    logits: Tensor,
    target: Any,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Cross-entropy of ``logits`` (..., C) against integer class ``target`` (...).

    loss = logsumexp(logits) - logits[target] per row (computed stably), then reduced:
    "mean" over the rows whose target is not ``ignore_index``, "sum", or "none" (shape (...),
    0 on ignored rows). If every row is ignored, the "mean" is 0 with zero gradients (PyTorch
    gives NaN). See :class:`CrossEntropy` for the gradient.
    """
    _check_reduction(reduction)
    if logits.ndim == 0:
        raise ShapeError("cross_entropy: logits must have a class axis, got a 0-d tensor")
    target = _integer_array(target, logits.device, "cross_entropy target")
    if target.shape != logits.shape[:-1]:
        raise ShapeError(
            f"cross_entropy: target of shape {target.shape} does not fit logits of shape "
            f"{logits.shape}; expected target shape {logits.shape[:-1]}"
        )
    num_classes = logits.shape[-1]
    xp = _xp(target)
    if ignore_index is None:
        keep = xp.ones(target.shape, dtype=bool)  # (...), True for the rows that count
    else:
        keep = target != ignore_index
    bad = keep & ((target < 0) | (target >= num_classes))
    if bad.any():
        value = int(target[bad].reshape(-1)[0])
        raise IndexError(
            f"cross_entropy: target value {value} is out of range for {num_classes} classes "
            f"(valid targets are 0 to {num_classes - 1}"
            + (f", or ignore_index={ignore_index})" if ignore_index is not None else ")")
        )
    safe_target = xp.where(keep, target, 0)  # ignored rows pick class 0, weight 0
    return CrossEntropy.apply(logits, target=safe_target, keep=keep, reduction=reduction)


# ----- attention -----------------------------------------------------------------------------
@dataclass
class _AttentionPlan:
    """What one attention call needs besides Q, K, V; shared by its graph nodes.

    ``blocked`` (bool, True where a query may NOT look at a key) and ``bias`` (added to the
    scores) broadcast to the scores' shape (..., L, S); ``dead`` (..., L, 1) marks the
    queries whose every key is masked. Each is None when absent. ``forward`` adds the
    weights and the dropout multipliers it computed.
    """

    scale: float
    blocked: Any = None
    bias: Any = None
    dead: Any = None
    dropout_p: float = 0.0
    generator: np.random.Generator | None = None
    weights: Any = None  # A = softmax(S), (..., L, S), before dropout
    keep: Any = None  # dropout multipliers: 0 or 1 / (1 - p), (..., L, S)


class ScaledDotProductAttention(Function):
    """Z = softmax(Q K^T * scale + mask) V, forward and backward in one node.

    Forward, for Q (..., L, E), K (..., S, E), V (..., S, Ev):
        S = Q K^T * scale (+ float mask; -inf where a boolean mask forbids)   (..., L, S)
        A = softmax(S) along the keys (a fully masked row: A = 0)              (..., L, S)
        Z = A V                                                                (..., L, Ev)

    Backward, from dZ (..., L, Ev):
        dV = A^T dZ                                   (..., S, L) @ (..., L, Ev) -> (..., S, Ev)
        dA = dZ V^T                                   (..., L, Ev) @ (..., Ev, S) -> (..., L, S)
        dS = A * (dA - sum(dA * A, last axis))        softmax's Jacobian, one row at a time
        dQ = dS K * scale                             (..., L, S) @ (..., S, E) -> (..., L, E)
        dK = dS^T Q * scale                           (..., S, L) @ (..., L, E) -> (..., S, E)
    Masked positions have A = 0, hence dS = 0: no gradient flows through them, and a
    fully masked row (A = 0 throughout) gets a zero row of dQ.
    With dropout, Z = (A * keep) V, so dV uses A * keep and dA is multiplied by keep.

    Two savings in the fast backward, both exact: the row sums of dA * A over the S keys
    equal those of dZ * Z over the Ev features (with dA = dZ V^T and Z = A V, both are
    sum_s sum_e dZ[l, e] A[l, s] V[s, e]; with dropout, A * keep takes A's place in both),
    so they come from two small (..., L, Ev) arrays instead of an (..., L, S) product; and
    the scale is applied to Q in the forward and to dQ and dK in the backward, which are
    (..., L, E) rather than (..., L, S).

    The backward exists twice, line for line: on the saved arrays, in place (the usual
    case), and with tensor ops under ``create_graph=True``, where A is recomputed from Q
    and K so that second derivatives can flow through it.
    """

    def forward(self, q: Any, k: Any, v: Any, plan: _AttentionPlan) -> Any:
        xp = _xp(q)
        self.plan = plan
        scaled_q = q * plan.scale  # (..., L, E): scaling Q is cheaper than scaling the scores
        scores = scaled_q @ k.swapaxes(-1, -2)  # (..., L, E) @ (..., E, S) -> (..., L, S)
        if plan.bias is not None:
            scores += plan.bias
        if plan.blocked is not None:
            xp.copyto(scores, -xp.inf, where=plan.blocked)
        # softmax along the keys, in place: shift by the row max so exp cannot overflow
        row_max = scores.max(axis=-1, keepdims=True)  # (..., L, 1)
        row_max[xp.isneginf(row_max)] = 0  # a fully masked row stays -inf, exp -> 0
        scores -= row_max
        weights = xp.exp(scores, out=scores)  # (..., L, S), unnormalised
        total = weights.sum(axis=-1, keepdims=True)  # (..., L, 1)
        total[total == 0] = 1  # only a fully masked row sums to 0: its weights stay 0
        weights /= total
        plan.weights = weights
        if plan.dropout_p > 0:
            kept = plan.generator.random(weights.shape) >= plan.dropout_p
            plan.keep = backend.to_device(
                kept.astype(weights.dtype) / (1 - plan.dropout_p), backend.device_of(q)
            )
            weights = weights * plan.keep
        self.z = weights @ v  # (..., L, S) @ (..., S, Ev) -> (..., L, Ev), kept for backward
        return self.z

    def backward(self, grad: Any) -> tuple[Any, ...]:
        if is_grad_enabled():  # create_graph: the backward must itself be recorded
            return self._backward_recorded(grad)
        return self._backward_fast(grad)

    def _backward_fast(self, d_out: Any) -> tuple[Any, ...]:
        """The formulas above on the saved arrays, updating fresh arrays in place."""
        q, k, v = self.args  # arrays
        need_q, need_k, need_v = self.needs_input_grad
        plan = self.plan
        weights = plan.weights  # A (..., L, S); d_out is dZ (..., L, Ev)
        dropped = weights if plan.keep is None else weights * plan.keep  # what multiplied V
        dq = dk = dv = None
        if need_v:
            dv = dropped.swapaxes(-1, -2) @ d_out  # (..., S, L) @ (..., L, Ev) -> (..., S, Ev)
            dv = unbroadcast(dv, v.shape)
        if need_q or need_k:
            # dA = dZ V^T: (..., L, Ev) @ (..., Ev, S) -> (..., L, S), turned into dS in place
            d_scores = d_out @ v.swapaxes(-1, -2)
            if plan.keep is not None:
                d_scores *= plan.keep
            row_dot = (d_out * self.z).sum(axis=-1, keepdims=True)  # = sum(dA * A), (..., L, 1)
            d_scores -= row_dot  # dA - sum(dA * A)
            d_scores *= weights  # dS = A * (dA - sum(dA * A)), (..., L, S)
            if need_q:
                dq = d_scores @ k  # (..., L, S) @ (..., S, E) -> (..., L, E)
                dq *= plan.scale  # the scale of S = Q K^T * scale
                dq = unbroadcast(dq, q.shape)
            if need_k:
                dk = d_scores.swapaxes(-1, -2) @ q  # (..., S, L) @ (..., L, E) -> (..., S, E)
                dk *= plan.scale
                dk = unbroadcast(dk, k.shape)
        return dq, dk, dv

    def _backward_recorded(self, grad: Tensor) -> tuple[Tensor | None, ...]:
        """The same formulas with tensor ops, A recomputed from Q and K, so that the
        gradients are functions of the inputs that autograd can differentiate again."""
        q, k, v = self.inputs
        need_q, need_k, _ = self.needs_input_grad
        plan = self.plan
        weights = _composed_weights(q, k, plan)  # A, (..., L, S)
        keep = None if plan.keep is None else _constant(plan.keep, grad.device)
        dropped = weights if keep is None else weights * keep  # what multiplied V
        dv = None
        if v.requires_grad:
            dv = dropped.swapaxes(-1, -2) @ grad  # (..., S, L) @ (..., L, Ev) -> (..., S, Ev)
            dv = unbroadcast(dv, v.shape)
        dq = dk = None
        if q.requires_grad or k.requires_grad:
            d_weights = grad @ v.swapaxes(-1, -2)  # (..., L, Ev) @ (..., Ev, S) -> (..., L, S)
            if keep is not None:
                d_weights = d_weights * keep
            dq, dk = _softmax_scores_backward(weights, d_weights, q, k, plan.scale,
                                              need_q, need_k)
        return dq, dk, dv


class AttentionWeights(Function):
    """The weights A of an attention call, as a differentiable output of their own.

    ``forward`` returns the A that :class:`ScaledDotProductAttention` already computed
    (no work is repeated); ``backward`` is the second half of that node's backward:
        dS = A * (dA - sum(dA * A, last axis)),  dQ = dS K * scale,  dK = dS^T Q * scale.
    """

    def forward(self, q: Any, k: Any, plan: _AttentionPlan) -> Any:
        self.plan = plan
        return plan.weights

    def backward(self, grad: Any) -> tuple[Any, Any]:
        q, k = self.args
        # A: the saved array in a plain backward; under create_graph, recomputed from Q and
        # K with engine ops, so that second derivatives reach Q and K through A.
        weights = _composed_weights(q, k, self.plan) if is_grad_enabled() else self.plan.weights
        return _softmax_scores_backward(weights, grad, q, k, self.plan.scale,
                                        *self.needs_input_grad)


def _softmax_scores_backward(
    weights: Any, d_weights: Any, q: Any, k: Any, scale: float, need_q: bool, need_k: bool
) -> tuple[Any, Any]:
    """From dA to dQ and dK, through A = softmax(S) and S = Q K^T * scale (arrays or tensors)."""
    row_dot = (d_weights * weights).sum(axis=-1, keepdims=True)  # (..., L, 1)
    d_scores = weights * (d_weights - row_dot)  # (..., L, S)
    dq = dk = None
    if need_q:
        dq = (d_scores @ k) * scale  # (..., L, S) @ (..., S, E) -> (..., L, E)
        dq = unbroadcast(dq, q.shape)
    if need_k:
        dk = (d_scores.swapaxes(-1, -2) @ q) * scale  # (..., S, L) @ (..., L, E) -> (..., S, E)
        dk = unbroadcast(dk, k.shape)
    return dq, dk


def _composed_weights(q: Tensor, k: Tensor, plan: _AttentionPlan) -> Tensor:
    """A = softmax(Q K^T * scale + mask) from primitive engine ops (matmul, where, softmax)."""
    S = q @ k.swapaxes(-1, -2)  # (..., L, E) @ (..., E, S) -> (..., L, S)
    scores = S * plan.scale  # (..., L, S)
    S.name, scores.name = "S", "S_hat"  # the article's symbols, for graphs and traces
    if plan.bias is not None:
        scores = scores + _constant(plan.bias, q.device)
    if plan.blocked is not None:
        scores = scores.masked_fill(plan.blocked, -math.inf)
    if plan.dead is None:
        weights = ops.softmax(scores, axis=-1)
    else:
        # A fully masked row would be softmax(-inf, ..., -inf) = 0/0. Give it finite scores
        # (so nothing is NaN, not even in the backward), then zero its weights.
        scores = scores.masked_fill(plan.dead, 0.0)
        alive = _constant((~plan.dead).astype(scores.dtype), q.device)  # (..., L, 1)
        weights = ops.softmax(scores, axis=-1) * alive
    weights.name = "A"
    return weights


def _attention_plan(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Any,
    is_causal: bool,
    scale: float | None,
) -> _AttentionPlan:
    """Check the shapes and turn the mask arguments into arrays the nodes use."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if t.ndim < 2:
            raise ShapeError(f"attention {name} must be (..., length, dim), got shape {t.shape}")
        if t.dtype.kind != "f" or t.dtype != query.dtype:
            raise DtypeError(
                f"attention needs query, key and value of one floating dtype, got "
                f"{query.dtype}, {key.dtype}, {value.dtype}"
            )
    if query.shape[-1] != key.shape[-1]:
        raise ShapeError(
            f"attention query of shape {query.shape} and key of shape {key.shape} must have "
            f"the same embedding size (last axis): {query.shape[-1]} != {key.shape[-1]}"
        )
    if key.shape[-2] != value.shape[-2]:
        raise ShapeError(
            f"attention key of shape {key.shape} and value of shape {value.shape} must have "
            f"the same length (axis -2): {key.shape[-2]} != {value.shape[-2]}"
        )
    try:
        batch = np.broadcast_shapes(query.shape[:-2], key.shape[:-2])
        np.broadcast_shapes(batch, value.shape[:-2])
    except ValueError:
        raise ShapeError(
            f"attention leading (batch) axes do not broadcast: query {query.shape}, "
            f"key {key.shape}, value {value.shape}"
        ) from None
    length, source_length = query.shape[-2], key.shape[-2]
    scores_shape = (*batch, length, source_length)
    xp = _xp(query.data)
    plan = _AttentionPlan(scale=1 / math.sqrt(query.shape[-1]) if scale is None else scale)

    if attn_mask is not None:
        mask = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
        mask = backend.to_device(mask if backend.is_array(mask) else np.asarray(mask),
                                 query.device)
        try:
            fits = np.broadcast_shapes(mask.shape, scores_shape) == scores_shape
        except ValueError:
            fits = False
        if not fits:
            raise ShapeError(
                f"attention mask of shape {mask.shape} does not broadcast to the scores' "
                f"shape {scores_shape} (..., query length, key length)"
            )
        if mask.dtype == bool:
            plan.blocked = ~mask  # the mask says where attention is allowed
        elif mask.dtype.kind == "f":
            plan.bias = mask.astype(query.dtype, copy=False)
        else:
            raise DtypeError(f"attention mask must be bool or floating, got dtype {mask.dtype}")
    if is_causal:
        # query i may look at keys 0..i: the lower triangle of an (L, S) matrix is allowed
        future = xp.triu(xp.ones((length, source_length), dtype=bool), k=1)  # (L, S)
        plan.blocked = future if plan.blocked is None else plan.blocked | future

    masked = plan.blocked
    if plan.bias is not None:
        minus_inf = xp.isneginf(plan.bias)
        masked = minus_inf if masked is None else masked | minus_inf
    if masked is not None:
        dead = masked.all(axis=-1, keepdims=True)  # (..., L, 1)
        plan.dead = dead if dead.any() else None
    return plan


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Any = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    generator: np.random.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """softmax(Q K^T * scale + mask) V, returning ``(output, weights)``.

    Shapes: query (..., L, E), key (..., S, E), value (..., S, Ev) -> output (..., L, Ev),
    weights (..., L, S); leading axes broadcast, typically (B, H) for batch and heads.
    ``scale`` defaults to 1 / sqrt(E), which keeps the scores' variance near 1.

    Masks (PyTorch's conventions), broadcast to (..., L, S):
      * a boolean ``attn_mask`` is True where attention is ALLOWED;
      * a floating ``attn_mask`` is ADDED to the scores (use -inf to forbid). It is a
        constant: no gradient flows to it;
      * ``is_causal=True`` lets query i see keys 0..i only (``tril`` of an (L, S) matrix of
        ones); it can be combined with ``attn_mask``, and then both must allow a key.

    A query whose every key is masked has no distribution to attend with. Here its
    weights are DEFINED as all zeros, so its output row is zeros and its gradients are
    zero, with no NaN anywhere (PyTorch gives NaN for such a row).

    Dropout with probability ``dropout_p`` is applied to the weights before they multiply
    V whenever ``dropout_p > 0`` (pass 0 in evaluation); it needs an explicit
    ``generator`` (``numpy.random.Generator``) so runs can be reproduced. The returned
    ``weights`` are the ones BEFORE dropout (each row sums to 1), for inspection; they are
    differentiable, so a loss may also use them (see :class:`AttentionWeights`).

    The computation is one fused node (:class:`ScaledDotProductAttention`);
    :func:`attention_reference` is the same maths from primitive ops.
    """
    if not 0 <= dropout_p < 1:
        raise ValueError(f"attention dropout_p must be in [0, 1), got {dropout_p}")
    if dropout_p > 0 and generator is None:
        raise ValueError(
            "attention dropout needs an explicit random generator: "
            "pass generator=numpy.random.default_rng(seed)"
        )
    plan = _attention_plan(query, key, value, attn_mask, is_causal, scale)
    plan.dropout_p, plan.generator = dropout_p, generator
    output = ScaledDotProductAttention.apply(query, key, value, plan=plan)
    weights = AttentionWeights.apply(query, key, plan=plan)
    return output, weights


def attention_reference(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Any = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """The same as :func:`scaled_dot_product_attention` (without dropout), composed only
    of primitive engine ops (matmul, masked_fill, softmax), so autograd derives its
    backward. Slower; it exists to check the fused node and to read as plain maths."""
    plan = _attention_plan(query, key, value, attn_mask, is_causal, scale)
    weights = _composed_weights(query, key, plan)  # (..., L, S)
    output = weights @ value  # (..., L, S) @ (..., S, Ev) -> (..., L, Ev)
    output.name = "Z"
    return output, weights
