"""Layer normalisation as one fused node, with its backward derived by hand.

The public wrapper, with the shape checks, is :func:`minitransformer.functional.layer_norm`;
:func:`minitransformer.functional.layer_norm_reference` is the same maths from primitive ops.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minitransformer import backend
from minitransformer.autograd import Function, Value, recorded_gradients
from minitransformer.ops.shape import unbroadcast


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

    Under ``create_graph=True`` the backward is instead the gradient of
    :func:`minitransformer.functional.layer_norm_reference` (the same maths from primitive
    ops), recorded, so that second derivatives come from the composition one can read.
    """

    def forward(self, x: Any, weight: Any, bias: Any, axes: tuple[int, ...], eps: float) -> Any:
        self.axes, self.eps = axes, eps
        xp = backend.array_module_of(x)
        # float16: the statistics in float32, since x^2 overflows float16 above |x| ~ 256
        # (the variance became inf and every output 0); the output in the input's dtype.
        stats_x = x.astype(xp.float32) if x.dtype == xp.float16 else x
        self.x_hat, self.inv_std = _normalize_arrays(stats_x, axes, eps)  # saved for backward
        y = self.x_hat * weight  # (..., n), a new array
        y += bias  # in place (see _normalize_arrays)
        return y.astype(x.dtype, copy=False)

    def backward(self, grad: Value) -> tuple[Value, Value, Value]:
        if self.create_graph:  # differentiate the readable composition, recorded
            return self._backward_recorded(grad)
        x, weight, _ = self.args
        need_x, need_weight, need_bias = self.needs_input_grad
        return _layer_norm_backward_arrays(grad, x, weight, self.x_hat, self.inv_std,
                                           self.axes, need_x, need_weight, need_bias)

    def _backward_recorded(self, grad: Value) -> tuple[Value, Value, Value]:
        """Under create_graph: the gradients of
        :func:`~minitransformer.functional.layer_norm_reference` (mean, var, sqrt, ...), as a
        recorded graph. One formula to read and trust for second derivatives; the hand-derived
        lines above run on arrays, and the contract test holds the two equal."""
        from minitransformer.functional import layer_norm_reference  # functional imports ops

        x, weight, bias = self.inputs
        y = layer_norm_reference(x, x.shape[self.axes[0]:], weight, bias, self.eps)
        return recorded_gradients(y, (x, weight, bias), grad)


# ----- the same on arrays, in place ------------------------------------------------------------
# Layer norm runs twice per Transformer layer on (batch, seq, d_model) arrays. Written with
# fresh arrays, the forward makes five of them and the backward seven; each is memory the
# allocator must find (and, with glibc's defaults, pages the kernel must zero). The two
# helpers below compute the very same lines on arrays in place, with two and three, and are
# what a plain backward runs; create_graph differentiates layer_norm_reference instead.
def _mean_over(x: Any, axes: tuple[int, ...]) -> Any:
    """``x.mean(axis=axes, keepdims=True)``; over the usual one last axis, as a BLAS
    product (see backend.sum_along)."""
    if axes == (x.ndim - 1,):
        return backend.sum_along(x) / x.shape[-1]
    return x.mean(axis=axes, keepdims=True)


def _sum_to(x: Any, shape: tuple[int, ...]) -> Any:
    """``unbroadcast(x, shape)``: the sum over every leading axis, as a BLAS product when
    ``shape`` is the last axis alone (see backend.sum_rows)."""
    if len(shape) == 1:
        return backend.sum_rows(x.reshape(-1, shape[0]))  # (..., n) -> (N, n) -> (n,)
    return unbroadcast(x, shape)


def _normalize_arrays(x: Any, axes: tuple[int, ...], eps: float) -> tuple[Any, Any]:
    """x_hat = (x - mean) / sqrt(var + eps) and 1 / sqrt(var + eps), over ``axes``, with
    x_hat built in the array that holds x - mean."""
    xp = backend.array_module_of(x)
    x_hat = x - _mean_over(x, axes)  # centred, (..., n)
    with np.errstate(over="ignore"):  # overflow is caught below, where it matters
        squares = x_hat * x_hat
        var = _mean_over(squares, axes)
    if not xp.isfinite(var).all():  # (x - mean)^2 overflowed: float32 |x - mean| > ~1e19
        inv_std = _scaled_inv_std(x_hat, axes, eps, xp)
    else:
        inv_std = 1 / xp.sqrt(var + eps)
    x_hat *= inv_std  # (x - mean) / sigma
    return x_hat, inv_std


def _scaled_inv_std(centered: Any, axes: tuple[int, ...], eps: float, xp: Any) -> Any:
    """1 / sqrt(mean(c^2) + eps) without squaring anything large: with s = max |c| per group,
        sqrt(mean(c^2) + eps) = s * sqrt(mean((c / s)^2) + eps / s^2),
    where every (c / s)^2 is at most 1. The usual path squares directly (no extra pass);
    this one runs only where that overflowed. Groups of inf or NaN stay NaN, as before."""
    scale = xp.abs(centered).max(axis=axes, keepdims=True)  # (..., 1)
    scale = xp.where(scale > 0, scale, 1)  # a constant group: c = 0, any scale will do
    ratio = centered / scale
    with np.errstate(over="ignore"):  # s^2 may overflow to inf: eps / inf = 0, as it should
        return 1 / (scale * xp.sqrt(_mean_over(ratio * ratio, axes) + eps / (scale * scale)))


def _layer_norm_backward_arrays(grad: Any, x: Any, weight: Any, x_hat: Any, inv_std: Any,
                                axes: tuple[int, ...], need_x: bool, need_weight: bool,
                                need_bias: bool) -> tuple[Any, Any, Any]:
    """:meth:`LayerNorm.backward` on arrays:
    dx = (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat)) / sigma, in place."""
    dx = d_weight = d_bias = None
    if need_x:
        g_hat = (grad * weight).astype(x_hat.dtype, copy=False)  # dL/dx_hat, (..., n)
        product = g_hat * x_hat
        mean_g_x_hat = _mean_over(product, axes)  # (..., 1)
        g_hat -= _mean_over(g_hat, axes)
        backend.array_module_of(x_hat).multiply(x_hat, mean_g_x_hat, out=product)  # reused
        g_hat -= product
        g_hat *= inv_std
        dx = g_hat.astype(x.dtype, copy=False)  # float16 in: float32 statistics, cast back
    if need_weight:
        d_weight = _sum_to(grad * x_hat, weight.shape).astype(weight.dtype, copy=False)
    if need_bias:
        d_bias = _sum_to(grad, weight.shape)  # (..., n) -> (n,)
    return dx, d_weight, d_bias
