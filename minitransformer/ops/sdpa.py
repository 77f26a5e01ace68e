"""Which implementation runs a scaled dot-product attention call: the engine behind
:func:`minitransformer.functional.scaled_dot_product_attention` and its ``_with_weights``
twin, next to the implementations it chooses among.

Three implementations compute softmax(Q K^T * scale + mask) V (they agree to 1e-10 in
float64):

  * ``"fused"``: one node (:class:`~minitransformer.ops.attention.ScaledDotProductAttention`)
    with a hand-derived backward; it holds about two (..., L, S) arrays at its peak, and
    it is the only one with dropout. Its weights are a differentiable output of their own
    (:class:`~minitransformer.ops.attention.AttentionWeights`). Under ``create_graph=True``
    both differentiate the composed path (with the forward's masks and dropout mask),
    recorded: one formula for second derivatives;
  * ``"tiled"``: FlashAttention's online softmax
    (:class:`~minitransformer.ops.tiled_attention.TiledAttention`), which never forms the
    (..., L, S) weights, so it cannot return them and has no dropout. It saves only the
    output and one log-sum-exp per query, unless a backward can come and one (..., L, S)
    array takes at most ``TILED_KEEP_MAX_BYTES``: then it keeps the weights for the
    backward, which saves recomputing them. Its tiles run on two threads. Under
    ``create_graph=True`` its backward falls back to the composed path's, recorded (which
    forms the weights), so that second derivatives exist;
  * ``"composed"``: :func:`~minitransformer.ops.attention.attention_reference`, primitive
    ops that autograd differentiates; slow, for reading and checking.

``"auto"`` (the default) picks, in this order: composed inside :func:`composed_attention`
(without dropout); fused when the weights are wanted, with dropout, or when each (L, S)
matrix of scores has fewer than ``TILED_MIN_SCORES`` entries (there the tiles' overhead
costs more than they save); tiled otherwise.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import numpy as np

from minitransformer.autograd import is_grad_enabled
from minitransformer.errors import ShapeError
from minitransformer.ops.attention import (
    AttentionWeights,
    ScaledDotProductAttention,
    attention_plan,
    attention_reference,
    mask_array,
)
from minitransformer.ops.tiled_attention import tiled_attention
from minitransformer.tensor import Tensor, default_generator

IMPLEMENTATIONS = ("auto", "fused", "tiled", "composed")
# The auto choice turns tiled when each (L, S) matrix of scores has this many entries
# (n = 256 for L = S): with smaller matrices, cut into tiles of a few rows, the calls per
# tile cost more than the two threads save, whatever the batch (measured: see the
# attention section of docs/benchmarks.md).
TILED_MIN_SCORES = 2**16
# Up to this size of one (..., L, S) array, the tiled path keeps its weights for the
# backward instead of recomputing them: a product and an exponential fewer per tile, for
# n^2 memory (at n = 1,024 with 8 heads in float32, 32 MiB).
TILED_KEEP_MAX_BYTES = 2**26

# Whether "auto" means "composed" in the calling thread: per thread (and per asyncio
# task), as grad mode is, so that one thread's explain run changes no other's attention.
_composed: ContextVar[bool] = ContextVar("minitransformer_composed_attention", default=False)


@contextlib.contextmanager
def composed_attention() -> Iterator[None]:
    """Inside the block, attention called with the default ``implementation="auto"`` (and
    no dropout) runs the composed path in the calling thread: every step (S, S_hat, A, Z)
    is a node of its own, to be drawn, traced and stepped through (``minitransformer
    explain``), even in layers that do not expose the argument. Other threads are not
    affected."""
    token = _composed.set(True)
    try:
        yield
    finally:
        _composed.reset(token)


def attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    generator: np.random.Generator | None = None,
    need_weights: bool = False,
    implementation: str = "auto",
) -> tuple[Tensor, Tensor | None]:
    """``(output, weights)``, weights None unless ``need_weights``; the arguments are
    :func:`~minitransformer.functional.scaled_dot_product_attention`'s, except that here
    ``attn_mask`` and ``is_causal`` may be combined (both must allow a key), which the
    layers use: the tiled path skips whole causal tiles instead of reading a mask."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, "
                         f"got {implementation!r}")
    if not 0 <= dropout_p < 1:
        raise ValueError(f"attention dropout_p must be in [0, 1), got {dropout_p}")
    if enable_gqa:
        return _grouped_query_attention(
            query, key, value, attn_mask, dropout_p=dropout_p, is_causal=is_causal,
            scale=scale, generator=generator, need_weights=need_weights,
            implementation=implementation)
    if implementation == "auto":
        implementation = choose_implementation(query, key, value, need_weights, dropout_p)
    if implementation == "tiled":
        if need_weights or dropout_p > 0:
            raise ValueError(
                "tiled attention never forms the weights and has no dropout: call "
                "F.scaled_dot_product_attention (no weights) with dropout_p=0, or pass "
                "implementation='fused'"
            )
        # the causal triangle stays out of the plan: the tiled path skips whole tiles instead
        plan = attention_plan(query, key, value, attn_mask, False, scale)
        # keep the weights for a backward, if one can come and they fit the budget
        keep = (is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
                and _scores_bytes(query, key, value) <= TILED_KEEP_MAX_BYTES)
        output = tiled_attention(query, key, value, blocked=plan.blocked, bias=plan.bias,
                                 causal=is_causal, scale=plan.scale, keep_weights=keep)
        return output, None
    if implementation == "composed":
        if dropout_p > 0:
            raise ValueError("the composed attention has no dropout: pass dropout_p=0 or "
                             "implementation='fused'")
        output, weights = attention_reference(query, key, value, attn_mask, is_causal, scale)
        return output, weights if need_weights else None
    plan = attention_plan(query, key, value, attn_mask, is_causal, scale)
    # PyTorch draws dropout from its global generator; here the thread's default one
    plan.dropout_p = dropout_p
    plan.generator = generator if generator is not None or dropout_p == 0 else default_generator()
    output = ScaledDotProductAttention.apply(query, key, value, plan=plan)
    if not need_weights:
        return output, None
    return output, AttentionWeights.apply(query, key, plan=plan)


def choose_implementation(query: Tensor, key: Tensor, value: Tensor, need_weights: bool,
                          dropout_p: float) -> str:
    """What ``implementation="auto"`` runs (see the module docstring)."""
    if _composed.get() and dropout_p == 0:
        return "composed"  # inside composed_attention(): every step a node
    if need_weights or dropout_p > 0 or min(query.ndim, key.ndim, value.ndim) < 2:
        return "fused"
    return "tiled" if query.shape[-2] * key.shape[-2] >= TILED_MIN_SCORES else "fused"


def _scores_bytes(query: Tensor, key: Tensor, value: Tensor) -> int:
    """The bytes of one (..., L, S) array of scores (the inputs' shapes are checked)."""
    batch = np.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    return math.prod(batch) * query.shape[-2] * key.shape[-2] * query.dtype.itemsize


def _grouped_query_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Any,
                             **options: Any) -> tuple[Tensor, Tensor | None]:
    """Grouped-query attention (PyTorch's ``enable_gqa=True``): query (..., Hq, L, E) with
    key and value (..., Hkv, S, E), Hq = g * Hkv; query head h reads key/value head h // g
    (PyTorch's ``repeat_interleave`` of K and V). Rather than copying K and V g times,
    the query heads are grouped, (..., Hkv, g, L, E), against K, V (..., Hkv, 1, S, E):
    broadcasting does the repeat."""
    if min(query.ndim, key.ndim, value.ndim) < 3:
        raise ShapeError(f"enable_gqa needs (..., heads, length, dim) query, key and value, "
                         f"got {query.shape}, {key.shape}, {value.shape}")
    Hq, Hkv = query.shape[-3], key.shape[-3]
    if value.shape[-3] != Hkv or Hq % Hkv != 0:
        raise ShapeError(f"enable_gqa: the heads of key ({Hkv}) and value ({value.shape[-3]}) "
                         f"must be equal and divide the query's ({Hq})")
    g = Hq // Hkv
    *lead, L, E = query.shape
    q = query.reshape(*lead[:-1], Hkv, g, L, E)  # (..., Hq, L, E) -> (..., Hkv, g, L, E)
    k = key.reshape(*key.shape[:-2], 1, *key.shape[-2:])  # (..., Hkv, 1, S, E)
    v = value.reshape(*value.shape[:-2], 1, *value.shape[-2:])  # (..., Hkv, 1, S, Ev)
    mask = None
    if attn_mask is not None:
        mask = mask_array(attn_mask, query)
        if mask.ndim >= 3:  # (..., Hq or 1, L, S) -> (..., Hkv or 1, g or 1, L, S)
            heads = (Hkv, g) if mask.shape[-3] == Hq else (1, 1)
            mask = mask.reshape(*mask.shape[:-3], *heads, *mask.shape[-2:])
    output, weights = attention(q, k, v, mask, **options)
    output = output.reshape(*output.shape[:-4], Hq, *output.shape[-2:])  # (..., Hq, L, Ev)
    if weights is not None:
        weights = weights.reshape(*weights.shape[:-4], Hq, *weights.shape[-2:])  # (..., Hq, L, S)
    return output, weights
