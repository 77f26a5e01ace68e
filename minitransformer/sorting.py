"""Sorting and selecting, as PyTorch: ``mt.topk``, ``mt.sort``, ``x.unique()``.

``topk`` and ``sort`` return ``(values, indices)`` named tuples. The values are
``x`` gathered at the indices (an indexing op), so they are differentiable: the gradient
of each value goes back to the position it came from. The indices are int64 and carry
no gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from minitransformer import backend
from minitransformer.ops.shape import normalize_axis
from minitransformer.tensor import Tensor


class TopK(NamedTuple):
    """``torch.return_types.topk``: ``values, indices = mt.topk(x, k)``."""

    values: Tensor
    indices: Tensor


class Sort(NamedTuple):
    """``torch.return_types.sort``."""

    values: Tensor
    indices: Tensor


def _gather(x: Tensor, order: Any, axis: int) -> Tensor:
    """``x`` picked at ``order`` (integer positions along ``axis``; same shape as ``x``
    elsewhere), as an advanced index so that autograd sends gradients back."""
    xp = backend.array_module(x.device)
    grid = list(xp.ogrid[tuple(slice(n) for n in order.shape)])
    grid[axis] = order
    return x[tuple(grid)]


def _order(x: Tensor, axis: int, descending: bool) -> Any:
    xp = backend.array_module(x.device)
    key = x.data
    if descending:  # a stable sort of -x: largest first, equal values in their order
        key = -key.astype("int64") if key.dtype.kind in "bu" else -key
    order = xp.argsort(key, axis=axis, kind="stable")
    if descending and key.dtype.kind == "f":  # NaN counts as the largest, as in PyTorch:
        nan_last = xp.take_along_axis(~xp.isnan(key), order, axis=axis)  # first, not last
        order = xp.take_along_axis(order, xp.argsort(nan_last, axis=axis, kind="stable"), axis)
    return order.astype("int64", copy=False)


def sort(input: Tensor, dim: int = -1, descending: bool = False,  # noqa: A002
         stable: bool = False) -> Sort:
    """``(values, indices)`` with ``values = x`` sorted along ``dim`` and
    ``x.gather(dim, indices) == values``. Always stable here (ties keep their order)."""
    axis = normalize_axis(dim, input.ndim)
    order = _order(input, axis, descending)
    return Sort(_gather(input, order, axis), Tensor._from_array(order, input.device))


def topk(input: Tensor, k: int, dim: int = -1, largest: bool = True,  # noqa: A002
         sorted: bool = True) -> TopK:  # noqa: A002
    """The ``k`` largest (or smallest) entries along ``dim``, as ``(values, indices)``,
    largest first. ``k`` must be at most the length of ``dim``."""
    axis = normalize_axis(dim, input.ndim)
    if not 0 <= k <= input.shape[axis]:
        raise RuntimeError(f"topk: k={k} is out of range for dimension {dim} of length "
                           f"{input.shape[axis]}")
    xp = backend.array_module(input.device)
    order = xp.take(_order(input, axis, largest), xp.arange(k), axis=axis)
    return TopK(_gather(input, order, axis), Tensor._from_array(order, input.device))


def unique(input: Tensor, sorted: bool = True, return_inverse: bool = False,  # noqa: A002
           return_counts: bool = False, dim: int | None = None) -> Any:
    """The distinct values of ``x`` (flattened), sorted; with ``return_inverse`` also
    where each entry of ``x`` went, with ``return_counts`` how often each value occurs.
    Not differentiable (as in PyTorch)."""
    if dim is not None:
        raise NotImplementedError("unique(dim=...) is not supported; use dim=None")
    xp = backend.array_module(input.device)
    values, inverse, counts = xp.unique(input.data, return_inverse=True, return_counts=True)
    out = [Tensor._from_array(values, input.device)]
    if return_inverse:
        out.append(Tensor._from_array(inverse.reshape(input.shape).astype("int64"),
                                      input.device))
    if return_counts:
        out.append(Tensor._from_array(counts.astype("int64"), input.device))
    return out[0] if len(out) == 1 else tuple(out)
