"""Reductions over axes. Backward spreads the gradient of each reduced value back over
the elements it came from (``_expand`` restores the reduced axes, then broadcasts)."""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from minitransformer import backend
from minitransformer.autograd import Function, Value
from minitransformer.errors import DtypeError, ShapeError
from minitransformer.ops.registry import register
from minitransformer.ops.shape import normalize_axes, normalize_axis
from minitransformer.tensor import Tensor

Axis = int | Sequence[int] | None


def _expand(fn: Function, grad: Any) -> Any:
    """Broadcast a reduced gradient back to the input's shape: (2, 4) -> (2, 1, 4) -> (2, 3, 4)."""
    shape = fn.inputs[0].shape
    if not fn.keepdims:
        grad = grad.reshape(tuple(1 if i in fn.axes else n for i, n in enumerate(shape)))
    return fn.xp.broadcast_to(grad, shape)


class Sum(Function):
    """y = sum_i x_i;  dy/dx_i = 1."""

    uses_input_values = False

    def forward(self, x: Any, axes: tuple[int, ...], keepdims: bool) -> Any:
        self.axes, self.keepdims = axes, keepdims
        return x.sum(axis=axes, keepdims=keepdims)

    def backward(self, grad: Value) -> tuple[Value]:
        return (_expand(self, grad),)


class Mean(Function):
    """y = (1/n) sum_i x_i;  dy/dx_i = 1/n."""

    uses_input_values = False

    def forward(self, x: Any, axes: tuple[int, ...], keepdims: bool) -> Any:
        self.axes, self.keepdims = axes, keepdims
        self.count = _count(x.shape, axes)
        return x.mean(axis=axes, keepdims=keepdims)

    def backward(self, grad: Value) -> tuple[Value]:
        return (_expand(self, grad) / self.count,)


class Var(Function):
    """y = sum_i (x_i - mean)^2 / (n - ddof);  dy/dx_i = 2 (x_i - mean) / (n - ddof).

    (The mean's own dependence on x_i drops out: sum_i (x_i - mean) = 0.) With no degrees
    of freedom left (n <= ddof, one element unbiased), y is NaN (or inf) with a warning,
    and so is the gradient, as in PyTorch."""

    def forward(self, x: Any, axes: tuple[int, ...], keepdims: bool, ddof: float) -> Any:
        self.axes, self.keepdims = axes, keepdims
        self.denominator = builtins.max(_count(x.shape, axes) - ddof, 0)
        return x.var(axis=axes, keepdims=keepdims, ddof=ddof)

    def backward(self, grad: Value) -> tuple[Value]:
        (x,) = self.args
        centered = x - x.mean(axis=self.axes, keepdims=True)
        factor = 2 / self.denominator if self.denominator else math.inf  # 0 * inf: NaN
        return (_expand(self, grad) * centered * factor,)


class MaxAlong(Function):
    """values = max_i x[..., i, ...] along one axis, with the index i* it was found at
    (the FIRST maximal index on ties, as PyTorch on CPU);  dy/dx_i = 1 at i = i*, else 0.

    ``torch.max(x, dim)`` sends the whole gradient to the index it returned, not split
    between ties as the all-axes :class:`Max` does; so does this. ``largest=False`` is min.
    """

    uses_input_values = False

    def forward(self, x: Any, axis: int, keepdims: bool, largest: bool) -> Any:
        xp = backend.array_module_of(x)
        if x.shape[axis] == 0:
            raise ShapeError(f"max/min over axis {axis} of a tensor of shape {x.shape}: that "
                             "axis is empty, so there is no maximum")
        self.axes, self.keepdims = (axis,), keepdims
        where = xp.expand_dims(x.argmax(axis=axis) if largest else x.argmin(axis=axis), axis)
        positions = xp.arange(x.shape[axis]).reshape(
            [-1 if i == axis else 1 for i in range(x.ndim)])
        self.picked = (positions == where).astype(x.dtype)  # one-hot along axis: a constant
        values = xp.take_along_axis(x, where, axis=axis)
        return values if keepdims else values.squeeze(axis)

    def backward(self, grad: Value) -> tuple[Value]:
        return (_expand(self, grad) * self.picked,)


class Max(Function):
    """y = max_i x_i;  dy/dx_i = 1 where x_i is the max (split evenly between ties)."""

    def forward(self, x: Any, axes: tuple[int, ...], keepdims: bool) -> Any:
        self.axes, self.keepdims = axes, keepdims
        empty = [a for a in axes if x.shape[a] == 0]
        if empty:  # PyTorch refuses too: the max of nothing has no value
            raise ShapeError(f"max/min over axis {empty[0]} of a tensor of shape {x.shape}: "
                             "that axis is empty, so there is no maximum; reduce over another "
                             "axis or check the input's size")
        out = x.max(axis=axes, keepdims=True)
        winners = (x == out).astype(x.dtype)
        self.share = winners / winners.sum(axis=axes, keepdims=True)
        return out if keepdims else out.reshape([n for i, n in enumerate(x.shape) if i not in axes])

    def backward(self, grad: Value) -> tuple[Value]:
        return (_expand(self, grad) * self.share,)


class CumSum(Function):
    """y_i = sum_{j <= i} x_j along ``axis``;  dL/dx_j = sum_{i >= j} g_i: the upstream
    gradient's cumsum taken from the far end (reverse, cumsum, reverse back)."""

    uses_input_values = False

    def forward(self, x: Any, axis: int) -> Any:
        self.axis = axis
        return backend.array_module_of(x).cumsum(x, axis=axis)

    def backward(self, grad: Value) -> tuple[Value]:
        reverse = [slice(None)] * grad.ndim
        reverse[self.axis] = slice(None, None, -1)  # a view; under create_graph, a flip op
        reverse = tuple(reverse)
        return (self.xp.cumsum(grad[reverse], axis=self.axis)[reverse],)

def _count(shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    count = 1
    for a in axes:
        count *= shape[a]
    return count


def _reduce(fn: type[Function], x: Tensor, axis: Axis, keepdims: bool, **params: Any) -> Tensor:
    if axis is not None and not isinstance(axis, int) and len(axis) == 0:
        axis = None  # as PyTorch: x.sum(()) and x.sum(dim=[]) reduce over every axis
    return fn.apply(x, axes=normalize_axes(axis, x.ndim), keepdims=keepdims, **params)


@register(method=True)
def sum(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """sum over ``axis`` (an int, a tuple of ints, or None for all): ``x.sum(1)`` is
    ``x.sum(dim=1)``, as in PyTorch."""
    return _reduce(Sum, x, axis, keepdims)


@register(method=True)
def prod(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """prod over ``axis`` (an int, a tuple, or None for all), as ``torch.prod``:

        y = prod_i x_i,   dy/dx_i = prod_{j != i} x_j

    (right at zeros too, where y / x_i is not). Composed of products of pairs, log2(n)
    rounds of them, so autograd derives the gradient and the second derivative exactly.
    Integers and bools give int64, as in PyTorch."""
    if x.dtype.kind in "biu":
        x = x.long()
    axes = normalize_axes(axis, x.ndim)
    rest = [i for i in range(x.ndim) if i not in axes]
    kept = tuple(x.shape[i] for i in rest)
    count = _count(x.shape, axes)
    if count == 0:  # the empty product is 1; no gradient to send anywhere
        xp = backend.array_module(x.device)
        out = Tensor._from_array(xp.ones(kept, dtype=x.dtype), x.device)
    else:
        rows = (x.permute(*rest, *axes) if x.ndim else x).reshape(*kept, count)  # (..., n)
        while rows.shape[-1] > 1:  # multiply neighbours: n -> ceil(n / 2)
            n = rows.shape[-1]
            pairs = rows[..., 0 : n - 1 : 2] * rows[..., 1:n:2]  # (..., n // 2)
            rows = ops.concat([pairs, rows[..., n - 1 :]], axis=-1) if n % 2 else pairs
        out = rows[..., 0]
    if keepdims:
        out = out.reshape(*[1 if i in axes else n for i, n in enumerate(x.shape)])
    return out


@register(method=True)
def cumsum(x: Tensor, axis: int, *, dtype: Any = None) -> Tensor:
    """y_i = x_0 + ... + x_i along ``axis``, as ``torch.cumsum(x, dim)``: the dim is
    required, integers and bools give int64, ``dtype=`` casts the input first."""
    if dtype is not None:
        x = x.to(dtype)
    elif x.dtype.kind in "biu":  # torch's rule, and no int32 overflow
        x = x.long()
    if x.ndim == 0:  # torch: a 0-d input is its own cumsum (dim 0 or -1)
        return cumsum(x.reshape(1), normalize_axis(axis, 0)).reshape(())
    return CumSum.apply(x, axis=normalize_axis(axis, x.ndim))

def _require_float(x: Tensor, name: str) -> None:
    """PyTorch refuses to average integers (it will not guess the float type)."""
    if x.dtype.kind not in "fc":
        raise DtypeError(
            f"{name}(): could not infer output dtype. Input dtype must be either a floating "
            f"point or complex dtype. Got: {_torch_dtype_name(x.dtype)} (convert first: "
            f"x.float().{name}())"
        )


def _torch_dtype_name(dtype: Any) -> str:
    """PyTorch's scalar-type name for a dtype, as its error messages spell it."""
    names = {"bool": "Bool", "int8": "Char", "uint8": "Byte", "int16": "Short", "int32": "Int",
             "int64": "Long", "float16": "Half", "float32": "Float", "float64": "Double"}
    return names.get(str(dtype), str(dtype))


@register(method=True)
def mean(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """(1/n) sum over ``axis`` (int, tuple or None); floating-point tensors only, as torch."""
    _require_float(x, "mean")
    return _reduce(Mean, x, axis, keepdims)


def _correction(name: str, unbiased: bool | None, correction: float | None,
                ddof: float | None) -> float:
    """The one divisor offset out of PyTorch's ``unbiased=``/``correction=`` (and NumPy's
    ``ddof=``): n - correction, with correction 1 (unbiased) unless told otherwise."""
    given = [v for v in (unbiased, correction, ddof) if v is not None]
    if len(given) > 1:
        raise TypeError(f"{name}() got more than one of unbiased=, correction= and ddof=; "
                        "they set the same thing, pass one")
    if unbiased is not None:
        return 1 if unbiased else 0
    return 1 if not given else given[0]


@register(method=True)
def var(x: Tensor, axis: Axis = None, unbiased: bool | None = None, keepdims: bool = False, *,
        correction: float | None = None, ddof: float | None = None) -> Tensor:
    """Variance over ``axis``, PyTorch's default: unbiased,

        var = sum_i (x_i - mean)^2 / (n - correction),   correction = 1,

    ``correction=0`` (or ``unbiased=False``, or NumPy's ``ddof=0``) for the biased one that
    layer norm uses. ``x.var(True)`` is ``x.var(unbiased=True)``, as in torch."""
    if isinstance(axis, bool):  # torch's overload var(unbiased): x.var(False)
        axis, unbiased = None, axis if unbiased is None else unbiased
    if x.dtype.kind not in "fc":
        raise DtypeError("std and var only support floating point and complex dtypes "
                         f"(got {x.dtype}; convert first: x.float().var())")
    return _reduce(Var, x, axis, keepdims, ddof=_correction("var", unbiased, correction, ddof))


@register(method=True)
def std(x: Tensor, axis: Axis = None, unbiased: bool | None = None, keepdims: bool = False, *,
        correction: float | None = None, ddof: float | None = None) -> Tensor:
    """sqrt(var): the standard deviation, unbiased by default as in PyTorch (see :func:`var`
    for ``correction=``/``unbiased=``). Its gradient is var's through sqrt."""
    return var(x, axis, unbiased, keepdims, correction=correction, ddof=ddof).sqrt()


@register(method=True)
def amax(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """The largest values over ``axis`` (int, tuple or None), as ``torch.amax``: values only;
    the gradient is split evenly between ties."""
    return _reduce(Max, x, axis, keepdims)


@register(method=True)
def amin(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """The smallest values over ``axis``, as ``torch.amin`` (ties share the gradient)."""
    return -_reduce(Max, -x, axis, keepdims)


class MaxMin(NamedTuple):
    """What ``max``/``min`` along a dim return, as ``torch.return_types.max``:
    ``values, indices = x.max(1)`` or ``x.max(1).values``."""

    values: Tensor
    indices: Tensor


def _max_or_min(x: Tensor, axis: Any, keepdims: bool | None, largest: bool) -> Any:
    """PyTorch's three overloads of ``max``/``min``: no dim (the global value, one tensor),
    an int dim (``(values, indices)``), another tensor (elementwise maximum/minimum)."""
    name = "max" if largest else "min"
    if isinstance(axis, Tensor):  # torch.max(x, other)
        if keepdims is not None:
            raise TypeError(f"{name}(other) takes no keepdim")
        return ops.maximum(x, axis) if largest else ops.minimum(x, axis)
    if axis is None:
        if keepdims is not None:
            raise TypeError(f"{name}() over all axes takes no keepdim; pass a dim, "
                            f"x.{name}(dim, keepdim=True), or use x.a{name}(keepdim=True)")
        return amax(x) if largest else amin(x)
    if not isinstance(axis, int):
        raise TypeError(f"{name}() takes one int dim (got {axis!r}), as in PyTorch; over "
                        f"several axes write x.a{name}(dim={tuple(axis)!r})")
    axis = normalize_axes(axis, x.ndim)[0]
    values = MaxAlong.apply(x, axis=axis, keepdims=bool(keepdims), largest=largest)
    return MaxMin(values, Tensor._from_array(_indices(x, axis, bool(keepdims), largest),
                                             x.device))


def _indices(x: Tensor, axis: int, keepdims: bool, largest: bool) -> Any:
    """The argmax/argmin along ``axis``: NumPy's, the first on ties, as PyTorch's on CPU."""
    where = x.data.argmax(axis=axis) if largest else x.data.argmin(axis=axis)
    return backend.array_module(x.device).expand_dims(where, axis) if keepdims else where


@register(method=True)
def max(x: Tensor, axis: Any = None, keepdims: bool | None = None) -> Tensor | MaxMin:  # noqa: A001
    """PyTorch's ``max``: ``x.max()`` the largest element (ties share the gradient);
    ``x.max(1)`` / ``x.max(dim=1, keepdim=True)`` the named tuple ``(values, indices)``
    along that dim, with the FIRST maximal index on ties (as torch on CPU) and the whole
    gradient sent to it; ``x.max(other)`` the elementwise maximum. Over several axes, values
    only: :func:`amax`."""
    return _max_or_min(x, axis, keepdims, largest=True)


@register(method=True)
def min(x: Tensor, axis: Any = None, keepdims: bool | None = None) -> Tensor | MaxMin:  # noqa: A001
    """PyTorch's ``min``: as :func:`max`, for the smallest (``(values, indices)`` along a
    dim, first minimal index on ties; ``x.min(other)`` elementwise)."""
    return _max_or_min(x, axis, keepdims, largest=False)


from minitransformer import ops  # noqa: E402  (maximum/minimum are defined after this module)
