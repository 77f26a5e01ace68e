"""Nonlinearities and the softmax family, with hand-derived backward rules."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minitransformer import backend
from minitransformer.autograd import Function, Value
from minitransformer.errors import DtypeError, ShapeError
from minitransformer.ops.registry import register
from minitransformer.ops.shape import normalize_axes, normalize_axis
from minitransformer.promotion import floating
from minitransformer.tensor import Tensor, default_generator


class Tanh(Function):
    """y = tanh x;  dy/dx = 1 - y^2."""

    uses_output = True

    def forward(self, x: Any) -> Any:
        return backend.array_module_of(x).tanh(x)

    def backward(self, grad: Value) -> tuple[Value]:
        y = self.output()
        return (grad * (backend.constant(1, y) - y * y),)  # see backend.constant


class Sigmoid(Function):
    """y = 1 / (1 + e^-x);  dy/dx = y (1 - y)."""

    uses_output = True

    def forward(self, x: Any) -> Any:
        # The same function as 1 / (1 + e^-x), written as (1 + tanh(x / 2)) / 2 so that no
        # e^-x can overflow for very negative x; updated in place to save two temporaries,
        # with constants of x's dtype (faster than Python numbers: see backend.constant).
        half, one = backend.constant(0.5, x), backend.constant(1, x)
        y = backend.array_module_of(x).tanh(x * half)
        y += one
        y *= half
        return y

    def backward(self, grad: Value) -> tuple[Value]:
        y = self.output()
        return (grad * y * (backend.constant(1, y) - y),)


class Relu(Function):
    """y = max(x, 0);  dy/dx = 1 where x > 0, else 0."""

    def forward(self, x: Any) -> Any:
        self.positive = x > 0
        return backend.array_module_of(x).maximum(x, 0)  # (x * positive would turn -inf into nan)

    def backward(self, grad: Value) -> tuple[Value]:
        return (grad * self.positive,)


class Gelu(Function):
    """GELU(x) = x * Phi(x), Phi the standard normal CDF.

    ``approximate="none"``: Phi(x) = (1 + erf(x / sqrt 2)) / 2, and
        dGELU/dx = Phi(x) + x * phi(x), with phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
    ``approximate="tanh"``: Phi(x) ~ (1 + tanh(u)) / 2 with u = sqrt(2/pi) (x + 0.044715 x^3),
        dGELU/dx = (1 + tanh u) / 2 + x (1 - tanh^2 u) / 2 * du/dx.
    Both match ``torch.nn.functional.gelu(x, approximate=...)``.
    """

    fresh_input_gradients = True  # new arrays from every plain backward (see Function)

    def forward(self, x: Any, approximate: str) -> Any:
        self.approximate = approximate
        if approximate == "tanh":
            u = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)  # x * x * x: no pow()
            return 0.5 * x * (1 + backend.array_module_of(x).tanh(u))
        xp = backend.array_module_of(x)
        self.cdf, y = xp.empty(x.shape, x.dtype), xp.empty(x.shape, x.dtype)  # C order; Phi(x)
        backend.by_cache_blocks(_gelu_kernel, (x,), (self.cdf, y))  # is kept: erf is costly
        return y

    def backward(self, grad: Value) -> tuple[Value]:
        (x,) = self.args
        xp = self.xp
        if self.approximate == "tanh":
            c = math.sqrt(2 / math.pi)
            t = xp.tanh(c * (x + 0.044715 * x * x * x))
            du_dx = c * (1 + 3 * 0.044715 * x * x)
            return (grad * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du_dx),)
        if self.create_graph:  # Phi as a function of x, to be differentiated again
            cdf = 0.5 * (1 + xp.erf(x / math.sqrt(2)))
            pdf = xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
            return (grad * (cdf + x * pdf),)
        dx = backend.array_module_of(x).empty(x.shape, x.dtype)  # C order (by_cache_blocks)
        backend.by_cache_blocks(_gelu_backward_kernel, (x, self.cdf, grad), (dx,))
        return (dx,)


def _gelu_kernel(x: Any, cdf: Any, y: Any) -> None:
    """cdf = Phi(x) = (1 + erf(x / sqrt 2)) / 2 and y = x Phi(x), into the given arrays."""
    if x.__class__ is np.ndarray and x.dtype == np.float32:
        backend.normal_cdf_float32(x, out=cdf)  # the same, with the constants folded in
    else:
        cdf[...] = backend.erf(x * (1 / math.sqrt(2)))
        cdf += 1
        cdf *= 0.5
    backend.array_module_of(x).multiply(x, cdf, out=y)


def _gelu_backward_kernel(x: Any, cdf: Any, grad: Any, dx: Any) -> None:
    """dx = grad (Phi(x) + x phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi), step by step in dx."""
    xp = backend.array_module_of(x)
    xp.multiply(x, x, out=dx)
    dx *= -0.5
    xp.exp(dx, out=dx)
    dx *= x
    dx *= 1 / math.sqrt(2 * math.pi)  # x phi(x)
    dx += cdf
    dx *= grad


class Softmax(Function):
    """s_i = e^{x_i} / sum_j e^{x_j} along ``axis``.

    Jacobian ds_i/dx_j = s_i (delta_ij - s_j), so for an incoming gradient g:
        dx_j = sum_i g_i s_i (delta_ij - s_j) = s_j (g_j - sum_i g_i s_i).
    """

    uses_output = True

    def forward(self, x: Any, axis: int) -> Any:
        self.axis = axis
        xp = backend.array_module_of(x)
        if x.size == 0:  # as PyTorch: the softmax of an empty tensor is empty
            return x.copy()
        e = xp.exp(x - x.max(axis=axis, keepdims=True))  # shifting by the max avoids overflow
        if e.ndim == 0:  # NumPy made a scalar: nothing to divide in place
            return e / e.sum()
        e /= backend.sum_along(e, axis)  # e is a fresh array: divided in place
        return e

    def backward(self, grad: Value) -> tuple[Value]:
        s = self.output()
        return (s * (grad - (grad * s).sum(axis=self.axis, keepdims=True)),)


def softmax_in_place(scores: Any, axis: int = -1) -> Any:
    """softmax of the array ``scores`` along ``axis``, computed in place, where an entry of
    -inf means "masked out": its weight is exactly 0.

    The one place for the fully-masked-row rule, shared by every masked softmax (the fused
    attention, the composed one, ``nn.Attention``, the pointer head): a row whose entries
    are all -inf has no distribution, and its weights are DEFINED as all zeros, so no NaN
    appears, not even in the backward (PyTorch's softmax gives NaN for such a row).
    ``scores`` must be a fresh array (it is overwritten and returned).
    """
    xp = backend.array_module_of(scores)
    if scores.size == 0:  # an empty axis (no keys) or an empty batch: nothing to weigh
        return scores
    row_max = scores.max(axis=axis, keepdims=True)  # shift by the max: exp cannot overflow
    row_max[xp.isneginf(row_max)] = 0  # a fully masked row stays -inf: exp -> 0
    scores -= row_max
    weights = xp.exp(scores, out=scores)
    total = backend.sum_along(weights, axis)  # (..., 1, ...), a BLAS product along the last
    total[total == 0] = 1  # only a fully masked row sums to 0: its weights stay 0
    weights /= total
    return weights


class MaskedSoftmax(Softmax):
    """softmax along ``axis`` over the entries not ``blocked`` (and not -inf); the others,
    and every entry of a row with nothing allowed, get weight 0 (:func:`softmax_in_place`).

    The backward is softmax's: a masked entry has s = 0, so it passes no gradient, and a
    fully masked row (s = 0 throughout) passes none at all.
    """

    def forward(self, x: Any, axis: int, blocked: Any) -> Any:
        self.axis = axis
        xp = backend.array_module_of(x)
        scores = x.copy() if blocked is None else xp.where(blocked, -xp.inf, x)
        return softmax_in_place(scores, axis)


class LogSoftmax(Function):
    """y_i = x_i - log sum_j e^{x_j};  dx_j = g_j - softmax(x)_j * sum_i g_i."""

    uses_output = True

    def forward(self, x: Any, axis: int) -> Any:
        self.axis = axis
        xp = backend.array_module_of(x)
        if x.size == 0:  # as PyTorch: empty in, empty out
            return x.copy()
        shifted = x - x.max(axis=axis, keepdims=True)
        return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))

    def backward(self, grad: Value) -> tuple[Value]:
        softmax = self.xp.exp(self.output())
        return (grad - softmax * grad.sum(axis=self.axis, keepdims=True),)


class LogSumExp(Function):
    """y = log sum_i e^{x_i};  dy/dx_i = e^{x_i - y} = softmax(x)_i."""

    uses_output = True

    def forward(self, x: Any, axes: tuple[int, ...], keepdims: bool) -> Any:
        self.axes, self.keepdims = axes, keepdims
        xp = backend.array_module_of(x)
        if x.size == 0:  # as PyTorch: the log of an empty sum is log 0 = -inf
            shape = [1 if i in axes else n for i, n in enumerate(x.shape)]
            out = xp.full(shape, -np.inf, dtype=x.dtype)
            return out if keepdims else out.reshape(
                [n for i, n in enumerate(x.shape) if i not in axes])
        peak = x.max(axis=axes, keepdims=True)
        peak = xp.where(xp.isfinite(peak), peak, 0)  # all -inf: log 0 = -inf, not nan
        out = xp.log(xp.exp(x - peak).sum(axis=axes, keepdims=True)) + peak
        return out if keepdims else out.reshape([n for i, n in enumerate(x.shape) if i not in axes])

    def backward(self, grad: Value) -> tuple[Value]:
        (x,), y = self.args, self.output()
        if not self.keepdims:
            kept = tuple(1 if i in self.axes else n for i, n in enumerate(x.shape))
            grad, y = grad.reshape(kept), y.reshape(kept)
        return (grad * self.xp.exp(x - y),)


class Dropout(Function):
    """y = x * m / (1 - p), m ~ Bernoulli(1 - p);  dy/dx = m / (1 - p)."""

    def forward(self, x: Any, p: float, generator: np.random.Generator) -> Any:
        keep = generator.random(x.shape) >= p
        self.scale = backend.to_device(keep.astype(x.dtype) / (1 - p), backend.device_of(x))
        return x * self.scale

    def backward(self, grad: Value) -> tuple[Value]:
        return (grad * self.scale,)


# ----- functional forms ----------------------------------------------------------------------
@register(method=True)
def tanh(x: Tensor) -> Tensor:
    return Tanh.apply(floating(x))


@register(method=True)
def sigmoid(x: Tensor) -> Tensor:
    return Sigmoid.apply(floating(x))


@register(method=True)
def relu(x: Tensor) -> Tensor:
    return Relu.apply(x)


@register(method=True)
def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU(x) = x * Phi(x), Phi the standard normal CDF.

    ``approximate="none"``: Phi(x) = (1 + erf(x / sqrt 2)) / 2 (exact).
    ``approximate="tanh"``: Phi(x) ~ (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2 (GPT-2's).
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    return Gelu.apply(floating(x), approximate=approximate)


def _require_float(x: Tensor, name: str) -> None:
    """PyTorch has no integer softmax: it refuses rather than pick a float type."""
    if x.dtype.kind not in "fc":
        kind = {"b": "Bool", "i": "Long" if x.dtype.itemsize == 8 else "Int"}.get(x.dtype.kind,
                                                                                  str(x.dtype))
        raise DtypeError(f'"{name}_lastdim_kernel_impl" not implemented for \'{kind}\': '
                         f"{name} needs a floating-point tensor (convert first: "
                         f"x.float().{name}(dim))")


@register(method=True)
def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """s_i = e^{x_i} / sum_j e^{x_j} along ``axis`` (``x.softmax(1)`` is dim 1)."""
    _require_float(x, "softmax")
    return Softmax.apply(x, axis=normalize_axis(axis, x.ndim))


@register()
def masked_softmax(x: Tensor, mask: Any = None, axis: int = -1) -> Tensor:
    """softmax along ``axis`` over the entries where the boolean ``mask`` is True (the
    attention convention: True = may attend); masked entries, and entries that are -inf
    (a float mask's way to forbid), get weight exactly 0. A row with no allowed entry gets
    all-zero weights rather than NaN. ``mask`` broadcasts to ``x``'s shape."""
    blocked = None
    if mask is not None:
        allowed = mask.data if isinstance(mask, Tensor) else mask
        allowed = backend.to_device(allowed if backend.is_array(allowed) else np.asarray(allowed),
                                    x.device)
        if allowed.dtype != bool:
            raise DtypeError(f"masked_softmax needs a boolean mask (True = allowed), got dtype "
                             f"{allowed.dtype}; add a float mask to the scores instead")
        try:
            fits = np.broadcast_shapes(allowed.shape, x.shape) == x.shape
        except ValueError:
            fits = False
        if not fits:
            raise ShapeError(f"masked_softmax: mask of shape {allowed.shape} does not "
                             f"broadcast to the scores' shape {x.shape}")
        blocked = ~allowed
    return MaskedSoftmax.apply(x, axis=normalize_axis(axis, x.ndim), blocked=blocked)


@register(method=True)
def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """x_i - logsumexp(x) along ``axis``."""
    _require_float(x, "log_softmax")
    return LogSoftmax.apply(x, axis=normalize_axis(axis, x.ndim))


@register(method=True)
def logsumexp(
    x: Tensor, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
) -> Tensor:
    return LogSumExp.apply(floating(x), axes=normalize_axes(axis, x.ndim), keepdims=keepdims)


@register()
def dropout(
    x: Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    generator: np.random.Generator | None = None,
    seed: int | None = None,
) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p).

    The identity when ``training`` is False or ``p`` is 0. The mask is drawn from
    ``generator`` (a ``numpy.random.Generator``), else from a ``seed``, else from the
    default generator that ``mt.manual_seed`` reseeds (PyTorch's ``F.dropout(x, p)``).
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if inplace:  # PyTorch's fourth argument (it was taken for a generator here)
        raise NotImplementedError("dropout(inplace=True) is not supported here; write "
                                  "x = F.dropout(x, p) (or nn.Dropout(p))")
    if not training or p == 0:
        return x
    if p == 1:  # as PyTorch: every element dropped
        return x * 0
    if generator is None:
        generator = default_generator() if seed is None else np.random.default_rng(seed)
    return Dropout.apply(x, p=p, generator=generator)
