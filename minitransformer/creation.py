"""PyTorch's creation and triangle functions: ``mt.from_numpy``, ``mt.eye``,
``mt.linspace``, ``mt.empty``, ``mt.full_like``, ``mt.tril``, ``mt.triu``.

``tril``/``triu`` keep one triangle of the last two axes and zero the rest. They are
``where(mask, x, 0)`` with a constant mask, so autograd differentiates them with no new
code: the gradient is the upstream gradient with the same triangle kept.
"""

from __future__ import annotations

import numpy as np

from minitransformer import backend, ops
from minitransformer.tensor import Tensor, _filled, as_dtype, float32, zeros


def from_numpy(array: np.ndarray) -> Tensor:
    """A CPU tensor that SHARES memory with ``array`` (as ``torch.from_numpy``): writing to
    one shows in the other. Use ``mt.tensor(array)`` for a copy."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    if array.dtype.kind not in "biufc":
        raise TypeError(f"from_numpy: can't convert an array of dtype {array.dtype}; "
                        "tensors hold bool, int, float or complex numbers")
    return Tensor._from_array(array, "cpu")


def eye(n: int, m: int | None = None, *, dtype: object = None, device: object = None,
        requires_grad: bool = False) -> Tensor:
    """The (n, m) identity matrix (m = n by default): ones on the diagonal, as ``torch.eye``."""
    for name, size in (("n", n), ("m", m)):
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ValueError(f"eye: {name} must be a non-negative int, got {size!r}")
    return _filled(lambda xp, s, d: xp.eye(n, m, dtype=d), (), dtype, device, requires_grad)


def linspace(start: float, end: float, steps: int, *, dtype: object = None,
             device: object = None, requires_grad: bool = False) -> Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end``, both included, as
    ``torch.linspace``: value i = start + i (end - start) / (steps - 1). The default dtype is
    float32 whatever the bounds' type (unlike ``arange``)."""
    if not isinstance(steps, int) or isinstance(steps, bool):
        raise TypeError(f"linspace: steps must be an int, got {type(steps).__name__}")
    if steps < 0:
        raise ValueError("number of steps must be non-negative")
    start, end = (b.item() if isinstance(b, Tensor) else b for b in (start, end))
    step = (end - start) / (steps - 1) if steps > 1 else 0.0
    i = np.arange(steps, dtype=np.float64)
    # torch's form: the first half counted up from start, the second down from end, so that
    # both bounds come out exactly
    values = np.where(i < steps // 2, start + i * step, end - (steps - 1 - i) * step)
    if steps == 1:
        values = np.array([start], dtype=np.float64)  # torch: the one value is start
    dtype = as_dtype(dtype) or float32
    if dtype.kind in "iub":
        values = np.trunc(values)  # as torch: an integer linspace rounds toward zero
    array = backend.to_device(values.astype(dtype), backend.normalize_device(device))
    return Tensor._from_array(array, backend.normalize_device(device)).requires_grad_(
        requires_grad)


def empty(*size: object, dtype: object = None, device: object = None,
          requires_grad: bool = False) -> Tensor:
    """A tensor of shape ``size``, as ``torch.empty``: PyTorch leaves its contents
    uninitialised; here they are zeros (the same cost with NumPy, and no garbage to debug)."""
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def full_like(input: Tensor, fill_value: object, *, dtype: object = None,  # noqa: A002
              device: object = None, requires_grad: bool = False) -> Tensor:
    """A tensor of ``input``'s shape filled with ``fill_value``, as ``torch.full_like``: of
    ``input``'s dtype and device unless given (so 2.7 in an int64 tensor is 2)."""
    dtype = as_dtype(dtype) or input.dtype
    device = input.device if device is None else device
    return _filled(lambda xp, s, d: xp.full(s, fill_value, d), (input.shape,), dtype, device,
                   requires_grad)


def _triangle(x: Tensor, diagonal: int, lower: bool, name: str) -> Tensor:
    if x.ndim < 2:
        raise ValueError(f"{name}: input must have at least 2 dimensions, got shape {x.shape}")
    xp = backend.array_module(x.device)
    rows, cols = x.shape[-2:]
    # entry (i, j) is kept when j - i <= diagonal (tril) or j - i >= diagonal (triu)
    keep = (xp.tril if lower else xp.triu)(xp.ones((rows, cols), dtype=bool), k=diagonal)
    zero = Tensor._from_array(xp.zeros((), dtype=x.dtype), x.device)
    return ops.where(keep, x, zero)


def tril(input: Tensor, diagonal: int = 0) -> Tensor:  # noqa: A002  (PyTorch's name)
    """The lower triangle of the last two axes: ``out[..., i, j] = x[..., i, j]`` if
    ``j - i <= diagonal``, else 0 (``diagonal=0``: the main diagonal and below)."""
    return _triangle(input, diagonal, True, "tril")


def triu(input: Tensor, diagonal: int = 0) -> Tensor:  # noqa: A002
    """The upper triangle of the last two axes: ``out[..., i, j] = x[..., i, j]`` if
    ``j - i >= diagonal``, else 0."""
    return _triangle(input, diagonal, False, "triu")


