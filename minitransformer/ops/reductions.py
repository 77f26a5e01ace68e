"""Reductions over axes. Backward spreads the gradient of each reduced value back over
the elements it came from (``_expand`` restores the reduced axes, then broadcasts)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from minitransformer import backend
from minitransformer.autograd import Function, Value
from minitransformer.errors import ShapeError
from minitransformer.ops.registry import register
from minitransformer.ops.shape import normalize_axes
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
    """y = sum_i (x_i - mean)^2 / (n - ddof);  dy/dx_i = 2 (x_i - mean) / (n - ddof)."""

    def forward(self, x: Any, axes: tuple[int, ...], keepdims: bool, ddof: int) -> Any:
        self.axes, self.keepdims = axes, keepdims
        self.denominator = _count(x.shape, axes) - ddof
        return x.var(axis=axes, keepdims=keepdims, ddof=ddof)

    def backward(self, grad: Value) -> tuple[Value]:
        (x,) = self.args
        centered = x - x.mean(axis=self.axes, keepdims=True)
        return (_expand(self, grad) * centered * (2 / self.denominator),)


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


def _count(shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    count = 1
    for a in axes:
        count *= shape[a]
    return count


def _reduce(fn: type[Function], x: Tensor, axis: Axis, keepdims: bool, **params: Any) -> Tensor:
    return fn.apply(x, axes=normalize_axes(axis, x.ndim), keepdims=keepdims, **params)


@register(method=True)
def sum(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return _reduce(Sum, x, axis, keepdims)


@register(method=True)
def mean(x: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    return _reduce(Mean, x, axis, keepdims)


@register(method=True)
def var(x: Tensor, axis: Axis = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Variance with NumPy's convention: ``ddof=0`` (biased) unless asked otherwise."""
    return _reduce(Var, x, axis, keepdims, ddof=ddof)


class MaxMin(NamedTuple):
    """What ``max``/``min`` return when called with PyTorch's ``dim=``, as torch does."""

    values: Tensor
    indices: Tensor


def _values_and_indices(x: Tensor, dim: int, keepdim: bool | None, largest: bool) -> MaxMin:
    """torch.max(x, dim=...) / torch.min(x, dim=...): the values and where they are."""
    keep = bool(keepdim)
    values = _reduce(Max, x, dim, keep) if largest else -_reduce(Max, -x, dim, keep)
    where = x.data.argmax(axis=dim) if largest else x.data.argmin(axis=dim)  # (..., no dim)
    if keep:
        where = backend.array_module(x.device).expand_dims(where, dim)  # dim kept with size 1
    return MaxMin(values, Tensor._from_array(where, x.device))


@register(method=True)
def max(x: Tensor, axis: Axis = None, keepdims: bool = False, *,  # noqa: A001
        dim: int | None = None, keepdim: bool | None = None) -> Tensor | MaxMin:
    """The largest values along ``axis`` (all axes by default). With PyTorch's ``dim=``
    it returns ``(values, indices)``, as ``torch.max(x, dim=...)`` does."""
    if dim is not None:
        return _values_and_indices(x, dim, keepdim, largest=True)
    return _reduce(Max, x, axis, keepdims)


@register(method=True)
def min(x: Tensor, axis: Axis = None, keepdims: bool = False, *,  # noqa: A001
        dim: int | None = None, keepdim: bool | None = None) -> Tensor | MaxMin:
    """The smallest values; with ``dim=``, ``(values, indices)`` as ``torch.min``."""
    if dim is not None:
        return _values_and_indices(x, dim, keepdim, largest=False)
    return -_reduce(Max, -x, axis, keepdims)
