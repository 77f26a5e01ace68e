"""Type promotion: the dtype of ``a op b``, with PyTorch's rules (``torch.result_type``).

Every operand falls in one of three groups, by priority, and every dtype in one of three
categories, bool < integer < floating:

    1. tensors with at least one axis (and arrays),
    2. 0-d tensors,
    3. Python numbers (int, float, bool; NumPy scalars count as these).

The result takes the highest CATEGORY among all operands; its dtype comes from the
highest-priority group that has an operand of that category, the larger dtype within that
group (a Python float counts as the default float, float32). So a 0-d float64 tensor or
a Python float never widens a float32 tensor (``x * 0.5`` stays float32), but an int64
tensor times 0.5 becomes float32, and int32 + int64 (both tensors) is int64. Division
``/`` of integers gives the default float; ``//`` keeps integers; comparisons give bool.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minitransformer import backend
from minitransformer.errors import is_torch_tensor, not_a_tensor

DEFAULT_FLOAT = np.dtype("float32")
_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def category(dtype: np.dtype) -> int:
    """0 bool, 1 integer, 2 floating, 3 complex."""
    return _CATEGORY[dtype.kind]


def promote_types(a: np.dtype, b: np.dtype) -> np.dtype:
    """``torch.promote_types``: the smallest dtype holding both. Unlike NumPy, an integer
    meets a float in that float (int64 with float16 is float16, not float64)."""
    ca, cb = category(a), category(b)
    if ca != cb:
        return a if ca > cb else b
    return np.promote_types(a, b)


def _group_and_dtype(value: Any) -> tuple[int, np.dtype]:
    """(priority group: 0 dimensioned, 1 zero-dim, 2 Python number; the dtype it brings)."""
    from minitransformer.tensor import Tensor

    if isinstance(value, Tensor):
        return (0 if value.ndim else 1), value.dtype
    if isinstance(value, bool | np.bool_):
        return 2, np.dtype(bool)
    if isinstance(value, int | np.integer):
        return 2, np.dtype("int64")
    if isinstance(value, float | np.floating):
        return 2, DEFAULT_FLOAT  # a Python float counts as the default float
    if backend.is_array(value):
        return (0 if value.ndim else 1), value.dtype
    array = Tensor(value).data  # a list: as the tensor it would become (a str: refused)
    return (0 if array.ndim else 1), array.dtype


def result_type(*operands: Any) -> np.dtype:
    """The dtype PyTorch gives an elementwise op on ``operands`` (tensors, arrays, Python
    numbers), as ``torch.result_type``; see the module docstring for the rule."""
    best: list[np.dtype | None] = [None, None, None]  # the promoted dtype of each group
    for value in operands:
        group, dtype = _group_and_dtype(value)
        best[group] = dtype if best[group] is None else promote_types(best[group], dtype)
    result: np.dtype | None = None
    for dtype in reversed(best):  # Python numbers first, then 0-d, then dimensioned tensors
        result = dtype if result is None else (
            result if dtype is None else _combine(higher=dtype, lower=result))
    assert result is not None, "result_type needs at least one operand"
    return result


def _combine(higher: np.dtype, lower: np.dtype) -> np.dtype:
    """A higher-priority group's dtype meets a lower one's: the higher group wins unless the
    lower one is of a higher category (then the two promote)."""
    if category(lower) > category(higher):
        return promote_types(higher, lower)
    return higher


def floating(x: Any) -> Any:
    """``x`` as floats for a float-valued op (exp, log, sqrt, tanh, ...): an integer or bool
    tensor becomes the default float, float32, as PyTorch's unary ops do (NumPy would give
    float64). A floating tensor is returned as it is."""
    try:
        if x._data.dtype.kind in "fc":
            return x  # the hot path, a floating Tensor: 0.2 us less than through x.dtype
    except AttributeError:  # not a Tensor
        pass
    if isinstance(x.dtype, np.dtype) and x.dtype.kind in "fc":
        return x  # (a torch tensor's dtype is a torch.dtype)
    if is_torch_tensor(x):  # mt.exp(torch_tensor): one line saying how to convert it
        raise not_a_tensor(x, "an input")
    from minitransformer.tensor import Tensor

    return Tensor._from_array(x.data.astype(DEFAULT_FLOAT), x.device)  # no grad on ints
