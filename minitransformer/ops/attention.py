"""Scaled dot-product attention as fused nodes, with the backward derived by hand.

:func:`attention_plan` checks the arguments and turns the masks into arrays;
:class:`ScaledDotProductAttention` computes the output and :class:`AttentionWeights` exposes
the weights as a differentiable output of their own; :func:`attention_reference` is the
same maths from primitive ops. :mod:`minitransformer.ops.sdpa` chooses among these and the
tiled path (:mod:`minitransformer.ops.tiled_attention`); the public API is
:func:`minitransformer.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from minitransformer import backend
from minitransformer.autograd import Function, Value, recorded_gradients
from minitransformer.errors import DtypeError, ShapeError
from minitransformer.ops.activations import MaskedSoftmax, softmax_in_place
from minitransformer.ops.shape import unbroadcast
from minitransformer.tensor import Tensor


@dataclass
class AttentionPlan:
    """What one attention call needs besides Q, K, V; shared by its graph nodes.

    ``blocked`` (bool, True where a query may NOT look at a key) and ``bias`` (added to the
    scores) broadcast to the scores' shape (..., L, S); each is None when absent.
    ``forward`` adds the weights and the dropout multipliers it computed.
    """

    scale: float
    blocked: Any = None
    bias: Any = None
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

    These lines run on the saved arrays, in place. Under ``create_graph=True`` the backward
    is instead the gradient of :func:`attention_reference`'s composition (matmul, masked
    softmax, matmul: :func:`planned_attention_reference`, with this call's masks, scale and
    dropout multipliers), recorded, so that second derivatives come from the maths one can
    read: one formula, and the contract test holds the fast lines above equal to it.
    """

    fresh_input_gradients = True  # new arrays from every plain backward (see Function)

    def forward(self, q: Any, k: Any, v: Any, plan: AttentionPlan) -> Any:
        xp = backend.array_module_of(q)
        self.plan = plan
        scaled_q = q * plan.scale  # (..., L, E): scaling Q is cheaper than scaling the scores
        scores = scaled_q @ k.swapaxes(-1, -2)  # (..., L, E) @ (..., E, S) -> (..., L, S)
        if plan.bias is not None:
            scores += plan.bias
        if plan.blocked is not None:
            xp.copyto(scores, -xp.inf, where=plan.blocked)
        weights = softmax_in_place(scores, axis=-1)  # (..., L, S), a fully masked row: 0
        plan.weights = weights
        if plan.dropout_p > 0:
            kept = plan.generator.random(weights.shape) >= plan.dropout_p
            plan.keep = backend.to_device(
                kept.astype(weights.dtype) / (1 - plan.dropout_p), backend.device_of(q)
            )
            weights = weights * plan.keep
        self.z = weights @ v  # (..., L, S) @ (..., S, Ev) -> (..., L, Ev), kept for backward
        return self.z

    def backward(self, grad: Value) -> tuple[Value, ...]:
        if self.create_graph:  # the backward must itself be recorded
            return self._backward_recorded(grad)
        return self._backward_fast(grad)

    def _backward_fast(self, d_out: Value) -> tuple[Value, ...]:
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
            row_dot = backend.sum_along(d_out * self.z)  # = sum(dA * A), (..., L, 1)
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
        """Under create_graph: the gradients of the composed reference, with the forward's
        masks, scale and dropout multipliers (the same ``keep``, not a new draw), as a
        recorded graph (A is recomputed from Q and K, so second derivatives reach them)."""
        q, k, v = self.inputs
        output, _ = planned_attention_reference(q, k, v, self.plan)
        return recorded_gradients(output, (q, k, v), grad)


class AttentionWeights(Function):
    """The weights A of an attention call, as a differentiable output of their own.

    ``forward`` returns the A that :class:`ScaledDotProductAttention` already computed
    (no work is repeated); ``backward`` is the second half of that node's backward:
        dS = A * (dA - sum(dA * A, last axis)),  dQ = dS K * scale,  dK = dS^T Q * scale,
    on the saved arrays. Under ``create_graph=True`` it is instead the gradient of the
    reference's weights (:func:`composed_weights`, A recomputed from Q and K), recorded:
    one formula for second derivatives.
    """

    def forward(self, q: Any, k: Any, plan: AttentionPlan) -> Any:
        self.plan = plan
        return plan.weights

    def backward(self, grad: Value) -> tuple[Value, Value]:
        if self.create_graph:  # differentiate the readable composition, recorded
            q, k = self.inputs
            return recorded_gradients(composed_weights(q, k, self.plan), (q, k), grad)
        q, k = self.args
        return _softmax_scores_backward(self.plan.weights, grad, q, k, self.plan.scale,
                                        *self.needs_input_grad)


def _softmax_scores_backward(
    weights: Any, d_weights: Any, q: Any, k: Any, scale: float, need_q: bool, need_k: bool
) -> tuple[Any, Any]:
    """From dA to dQ and dK, through A = softmax(S) and S = Q K^T * scale, on arrays."""
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


def composed_weights(q: Tensor, k: Tensor, plan: AttentionPlan) -> Tensor:
    """A = masked softmax(Q K^T * scale + bias) from engine ops (matmul, add, masked softmax)."""
    S = q @ k.swapaxes(-1, -2)  # (..., L, E) @ (..., E, S) -> (..., L, S)
    scores = S * plan.scale  # (..., L, S)
    S.name, scores.name = "S", "S_hat"  # the article's symbols, for graphs and traces
    if plan.bias is not None:
        scores = scores + Tensor._from_array(plan.bias, q.device)
    # blocked keys, -inf scores and fully masked rows: the rule of softmax_in_place
    weights = MaskedSoftmax.apply(scores, axis=-1, blocked=plan.blocked)
    weights.name = "A"
    return weights


def attention_reference(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Any = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """The same as :func:`minitransformer.functional.scaled_dot_product_attention_with_weights`
    (without dropout), composed only of primitive engine ops (matmul, masked_fill,
    softmax), so autograd derives its backward; returns ``(output, weights)``. Slower; it
    exists to check the fused and tiled nodes, to read as plain maths, and to be what their
    backward under ``create_graph=True`` differentiates."""
    plan = attention_plan(query, key, value, attn_mask, is_causal, scale)
    return planned_attention_reference(query, key, value, plan)


def planned_attention_reference(query: Tensor, key: Tensor, value: Tensor,
                                plan: AttentionPlan) -> tuple[Tensor, Tensor]:
    """:func:`attention_reference` once its arguments are a plan: A = masked softmax(Q K^T *
    scale + bias), Z = A V, from engine ops. With the dropout multipliers of a fused
    forward (``plan.keep``, a constant), Z = (A * keep) V: the very mask that forward drew.
    The fused node's create_graph backward differentiates this; ``(output, weights)``,
    the weights before dropout."""
    weights = composed_weights(query, key, plan)  # (..., L, S)
    dropped = weights
    if plan.keep is not None:
        dropped = weights * Tensor._from_array(plan.keep, query.device)
    output = dropped @ value  # (..., L, S) @ (..., S, Ev) -> (..., L, Ev)
    output.name = "Z"
    return output, weights


def mask_array(mask: Any, like: Tensor) -> Any:
    """A mask (tensor, array or list) as an array on ``like``'s device; floats in its dtype."""
    mask = mask.data if isinstance(mask, Tensor) else mask
    mask = backend.to_device(mask if backend.is_array(mask) else np.asarray(mask), like.device)
    return mask.astype(like.dtype, copy=False) if mask.dtype.kind == "f" else mask


def attention_plan(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Any,
    is_causal: bool,
    scale: float | None,
) -> AttentionPlan:
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
    xp = backend.array_module_of(query.data)
    plan = AttentionPlan(scale=1 / math.sqrt(query.shape[-1]) if scale is None else scale)

    if attn_mask is not None:
        mask = mask_array(attn_mask, query)
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
            plan.bias = mask
        else:
            raise DtypeError(f"attention mask must be bool or floating, got dtype {mask.dtype}")
    if is_causal:
        # query i may look at keys 0..i: the lower triangle of an (L, S) matrix is allowed
        future = xp.triu(xp.ones((length, source_length), dtype=bool), k=1)  # (L, S)
        plan.blocked = future if plan.blocked is None else plan.blocked | future
    return plan
