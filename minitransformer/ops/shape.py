"""Ops that move values around without changing them: reshape, transpose, broadcast,
indexing, concatenation. Their backward rules move the gradient back the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minitransformer import backend
from minitransformer.autograd import Function, Value
from minitransformer.errors import AxisError, ShapeError
from minitransformer.ops.registry import register
from minitransformer.tensor import Tensor


def normalize_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise AxisError(f"axis {axis} is out of range for a tensor with {ndim} dimensions")
    return axis % max(ndim, 1)


def normalize_axes(axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """``None`` -> every axis; an int or a sequence -> sorted non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    axes = tuple(sorted(normalize_axis(a, ndim) for a in axis))
    if len(set(axes)) != len(axes):
        raise AxisError(f"axis={tuple(axis)} names the same axis twice (for {ndim} dimensions)")
    return axes


def _shape_arg(shape: tuple) -> tuple:
    """Accept both ``f(2, 3)`` and ``f((2, 3))``."""
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        return tuple(shape[0])
    return shape


def unbroadcast(grad: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``grad`` over the axes that broadcasting stretched, giving it back ``shape``.

    If ``x`` of shape (3, 1) was broadcast to (2, 3, 4), each of its values was used 2*4
    times, so its gradient is the sum over the leading axis and over the size-1 axis.
    """
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    stretched = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1
    )
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


class Reshape(Function):
    """y = x viewed with another shape; dx = dy viewed with x's shape."""

    uses_input_values = False

    def forward(self, x: Any, shape: tuple) -> Any:
        try:
            return x.reshape(shape)
        except ValueError:
            raise ShapeError(
                f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) "
                f"into shape {shape}"
            ) from None

    def backward(self, grad: Value) -> tuple[Value]:
        return (grad.reshape(self.inputs[0].shape),)


class Permute(Function):
    """y = x with its axes reordered; dx = dy with the inverse reordering."""

    uses_input_values = False

    def forward(self, x: Any, axes: tuple[int, ...]) -> Any:
        self.axes = axes
        return x.transpose(axes)

    def backward(self, grad: Value) -> tuple[Value]:
        inverse = tuple(np.argsort(self.axes).tolist())
        return (grad.transpose(inverse),)


class BroadcastTo(Function):
    """y = x stretched to ``shape``; dx = dy summed over the stretched axes."""

    uses_input_values = False

    def forward(self, x: Any, shape: tuple) -> Any:
        xp = backend.array_module(backend.device_of(x))
        try:
            return xp.broadcast_to(x, shape)
        except ValueError:
            raise ShapeError(f"cannot broadcast shape {x.shape} to shape {shape}") from None

    def backward(self, grad: Value) -> tuple[Value]:
        return (unbroadcast(grad, self.inputs[0].shape),)


def _array_index(index: Any, device: str) -> Any:
    """Tensors inside an index become arrays, lists become integer/boolean arrays, and
    arrays move to ``device`` (CuPy cannot index with NumPy arrays, nor the reverse)."""
    if isinstance(index, tuple):
        return tuple(_array_index(i, device) for i in index)
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, list):
        index = np.asarray(index)
    if backend.is_array(index):
        return backend.to_device(index, device)
    return index


def _is_advanced(index: Any) -> bool:
    """Whether the index holds integer arrays, which may repeat positions."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(hasattr(p, "dtype") and p.dtype.kind in "iu" for p in parts)


class GetItem(Function):
    """y = x[index]; dx = zeros with dy added at ``index`` (repeats accumulate)."""

    uses_input_values = False
    adds_into_input_gradient = True  # the walk calls add_gradient_into (see autograd.Function)

    def forward(self, x: Any, index: Any) -> Any:
        self.index = index
        try:
            return x[index]
        except IndexError as exc:
            raise IndexError(f"index {index!r} into a tensor of shape {x.shape}: {exc}") from None

    def backward(self, grad: Value) -> tuple[Value]:
        shape = self.inputs[0].shape
        if self.create_graph:  # record the scatter as an op of its own
            return (IndexAdd.apply(grad, index=self.index, shape=shape),)
        return (_index_add(grad, self.index, shape),)

    def add_gradient_into(self, buffer: Any, grad: Any) -> None:
        """``backward`` without its zeros: ``grad`` added at ``index`` into ``buffer``."""
        _add_at(buffer, self.index, grad)


class IndexAdd(Function):
    """y = zeros(shape) with x added at ``index``: the adjoint of GetItem.

    Its backward is a GetItem again, so gradients of gradients flow through indexing.
    """

    def forward(self, x: Any, index: Any, shape: tuple) -> Any:
        self.index = index
        return _index_add(x, index, shape)

    def backward(self, grad: Value) -> tuple[Value]:
        return (grad[self.index],)


def _index_add(values: Any, index: Any, shape: tuple) -> Any:
    """zeros(shape) with ``values`` added at ``index``."""
    out = backend.array_module(backend.device_of(values)).zeros(shape, dtype=values.dtype)
    _add_at(out, index, values)
    return out


def _add_at(target: Any, index: Any, values: Any) -> None:
    """``target[index] += values``, with repeated positions of an integer index added up."""
    if _is_advanced(index):
        backend.scatter_add(target, index, values)  # repeated indices must add up
    else:
        target[index] += values  # basic indexing never repeats a position


class Concat(Function):
    """y = [x1, x2, ...] joined along ``axis``; each dx_i is its slice of dy."""

    uses_input_values = False

    def forward(self, *xs: Any, axis: int) -> Any:
        self.axis = axis
        xp = backend.array_module(backend.device_of(xs[0]))
        try:
            return xp.concatenate(xs, axis=axis)
        except ValueError:
            shapes = ", ".join(str(x.shape) for x in xs)
            raise ShapeError(f"cannot concatenate shapes {shapes} along axis {axis}") from None

    def backward(self, grad: Value) -> tuple[Value, ...]:
        grads, start = [], 0
        for x in self.inputs:
            index = [slice(None)] * grad.ndim
            index[self.axis] = slice(start, start + x.shape[self.axis])
            grads.append(grad[tuple(index)])
            start += x.shape[self.axis]
        return tuple(grads)


# ----- functional forms ----------------------------------------------------------------------
def _to_shape(op: type[Function], x: Tensor, shape: tuple[Any, ...]) -> Tensor:
    """``op`` taking ``x`` to ``shape`` (ints, or one tuple); ``x`` itself where it has it."""
    shape = _shape_arg(shape)
    return x if shape == x.shape else op.apply(x, shape=shape)


@register(method=True)
def reshape(x: Tensor, *shape: Any) -> Tensor:
    return _to_shape(Reshape, x, shape)


@register(method=True)
def permute(x: Tensor, *axes: Any) -> Tensor:
    axes = _shape_arg(axes)
    if len(axes) != x.ndim:
        raise AxisError(f"permute needs {x.ndim} axes for shape {x.shape}, got {axes}")
    axes = tuple(normalize_axis(a, x.ndim) for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise AxisError(f"permute axes {axes} are not a permutation of range({x.ndim})")
    return Permute.apply(x, axes=axes)


@register(method=True)
def transpose(x: Tensor, *axes: Any) -> Tensor:
    """``x.transpose(0, 1)`` swaps those two axes, as in PyTorch (``swapaxes``);
    ``x.transpose()`` reverses all axes and ``x.transpose((2, 0, 1))`` (a tuple, or one
    axis per dimension of a tensor of 3 or more) reorders them, as ``numpy.transpose``."""
    if len(axes) == 2 and all(isinstance(a, int | np.integer) for a in axes):
        return swapaxes(x, *axes)  # PyTorch's meaning wins for two ints, even on 2-D
    axes = _shape_arg(axes)
    if not axes:
        axes = tuple(reversed(range(x.ndim)))
    return permute(x, *axes)


@register(method=True)
def swapaxes(x: Tensor, axis1: int, axis2: int) -> Tensor:
    axes = list(range(x.ndim))
    a, b = normalize_axis(axis1, x.ndim), normalize_axis(axis2, x.ndim)
    axes[a], axes[b] = axes[b], axes[a]
    return Permute.apply(x, axes=tuple(axes))


@register(method=True, aliases=("unsqueeze",))
def expand_dims(x: Tensor, axis: int) -> Tensor:
    if not -x.ndim - 1 <= axis <= x.ndim:  # the new axis may also go after the last one
        raise AxisError(
            f"expand_dims axis {axis} is out of range for a tensor with {x.ndim} dimensions "
            f"(shape {x.shape}); expected {-x.ndim - 1} <= axis <= {x.ndim}"
        )
    axis = normalize_axis(axis, x.ndim + 1)
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])




@register(method=True)
def squeeze(x: Tensor, axis: int | Sequence[int] | None = None) -> Tensor:
    if axis is None:
        axes = tuple(i for i, n in enumerate(x.shape) if n == 1)
    else:
        axes = normalize_axes(axis, x.ndim)
        for a in axes:
            if x.shape[a] != 1:
                raise ShapeError(f"cannot squeeze axis {a} of size {x.shape[a]} (shape {x.shape})")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


@register(method=True)
def broadcast_to(x: Tensor, *shape: Any) -> Tensor:
    return _to_shape(BroadcastTo, x, shape)


@register(method=True)
def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Axes ``start_dim`` to ``end_dim`` (both included) merged into one, as
    ``torch.flatten`` (PyTorch's argument names); a 0-d tensor becomes shape (1,)."""
    if x.ndim == 0:
        return reshape(x, (1,))
    start, end = normalize_axis(start_dim, x.ndim), normalize_axis(end_dim, x.ndim)
    if start > end:  # torch's refusal (the merge below would insert a new axis)
        raise ShapeError("flatten() has invalid args: start_dim cannot come after end_dim")
    merged = int(np.prod(x.shape[start : end + 1]))
    return reshape(x, x.shape[:start] + (merged,) + x.shape[end + 1 :])


@register(top_level=False)
def getitem(x: Tensor, index: Any) -> Tensor:
    return GetItem.apply(x, index=_array_index(index, x.device))


@register(aliases=("cat",))
def concat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    if not tensors:
        raise ValueError("concat needs at least one tensor")
    dtypes = {t.dtype for t in tensors if isinstance(t, Tensor)}
    if len(dtypes) > 1:  # torch.cat promotes (int64 with float32 is float32, not float64)
        from minitransformer.promotion import promote_types

        dtype = next(iter(dtypes))
        for other in dtypes:
            dtype = promote_types(dtype, other)
        tensors = [t.to(dtype) if isinstance(t, Tensor) else t for t in tensors]
    return Concat.apply(*tensors, axis=normalize_axis(axis, tensors[0].ndim))




@register()
def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ShapeError(f"stack needs tensors of one shape, got {sorted(shapes)}")
    axis = normalize_axis(axis, tensors[0].ndim + 1)
    return concat([expand_dims(t, axis) for t in tensors], axis=axis)


@register(method=True)
def split(x: Tensor, split_size_or_sections: int | Sequence[int], axis: int = 0
          ) -> tuple[Tensor, ...]:
    """Pieces of ``x`` along ``axis``: of size ``n`` each (an int), or of the given sizes; a
    tuple, as ``torch.split``."""
    axis = normalize_axis(axis, x.ndim)
    length = x.shape[axis]
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        if size < 1:
            raise ValueError(f"split size must be at least 1, got {size}")
        sizes = [min(size, length - start) for start in range(0, length, size)]
    else:
        sizes = list(split_size_or_sections)
        if any(n < 0 for n in sizes) or sum(sizes) != length:
            raise ShapeError(f"split sizes {sizes} do not add up to {length} (shape {x.shape})")
    pieces, start = [], 0
    for n in sizes:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + n)
        pieces.append(x[tuple(index)])
        start += n
    return tuple(pieces)


@register(method=True)
def chunk(x: Tensor, chunks: int, axis: int = 0) -> tuple[Tensor, ...]:
    """``x`` cut along ``axis`` into pieces of ceil(size / chunks) each (the last smaller),
    as ``torch.chunk``: so possibly FEWER than ``chunks`` pieces (6 in 4 chunks: 2, 2, 2).
    The pieces are ``split``'s, so autograd needs nothing new."""
    if not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    if x.ndim == 0:
        raise ShapeError("chunk expects at least a 1-dimensional tensor")
    axis = normalize_axis(axis, x.ndim)
    length = x.shape[axis]
    if length == 0:  # torch: `chunks` empty pieces (a split of size 0 is not one)
        return split(x, [0] * chunks, axis)
    return split(x, -(-length // chunks), axis)  # -(-a // b): ceil(a / b) in integers


@register(method=True)
def unbind(x: Tensor, axis: int = 0) -> tuple[Tensor, ...]:
    """The slices ``x[..., i, ...]`` along ``axis``, that axis removed, as ``torch.unbind``:
    a tuple of ``x.shape[axis]`` tensors (empty for a size-0 axis)."""
    if x.ndim == 0:
        raise AxisError(f"Dimension specified as {axis} but tensor has no dimensions")
    axis = normalize_axis(axis, x.ndim)
    index = [slice(None)] * x.ndim
    pieces = []
    for i in range(x.shape[axis]):
        index[axis] = i  # an integer index drops the axis; its backward scatters into place
        pieces.append(x[tuple(index)])
    return tuple(pieces)


@register(method=True)
def flip(x: Tensor, *args: int | Sequence[int], dims: int | Sequence[int] | None = None
         ) -> Tensor:
    """``x`` reversed along ``dims``, as ``torch.flip(x, dims)``, ``x.flip(0)`` or
    ``x.flip(0, 1)``: PyTorch's way to write ``x[::-1]`` (which PyTorch refuses)."""
    dims = args if dims is None else (dims,)
    if len(dims) == 1 and isinstance(dims[0], Sequence):
        dims = tuple(dims[0])
    index = [slice(None)] * x.ndim
    for axis in normalize_axes(dims, x.ndim):
        index[axis] = slice(None, None, -1)
    return x[tuple(index)]
