"""Gradient clipping by the global norm of all gradients (``torch.nn.utils.clip_grad_norm_``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from minitransformer import backend
from minitransformer.tensor import Tensor


def clip_grad_norm_(params: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0) -> float:
    r"""Scale all gradients together so that their joint norm is at most ``max_norm``.

    The total norm treats the gradients as one long vector:

    .. math::
        \|g\|_p = \Big(\sum_i \|g_i\|_p^p\Big)^{1/p}, \qquad
        \|g\|_\infty = \max_i \|g_i\|_\infty

    and when it exceeds ``max_norm`` every gradient is multiplied by
    :math:`c = \text{max\_norm} / (\|g\|_p + 10^{-6})` (the 1e-6 as in PyTorch). The
    direction of the update is kept; only its length is capped.

    Parameters whose ``.grad`` is None are ignored. Returns the total norm *before*
    clipping as a Python float (PyTorch returns a 0-d tensor); ``0.0`` when no parameter
    has a gradient. The norms are summed in float64 whatever the gradients' dtype.

    The scaled gradient replaces ``p.grad`` with a new Tensor rather than writing into the
    old array: several parameters may hold the very same gradient tensor (a user may share
    one; ``backward(create_graph=True)`` hands both inputs of ``a + b`` the same one, maybe
    a read-only broadcast view), and scaling in place would scale it twice or fail.
    """
    if isinstance(params, Tensor):
        params = [params]
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return 0.0
    p = float(norm_type)
    if not p > 0:
        raise ValueError(f"norm_type must be > 0 (or math.inf), got {norm_type}")
    norms = [_vector_norm(param.grad.data, p) for param in with_grad]
    if p == math.inf:
        total = max(norms)
    else:
        total = sum(n**p for n in norms) ** (1.0 / p)
    clip_coef = max_norm / (total + 1e-6)
    if clip_coef < 1.0:
        for param in with_grad:
            grad = param.grad
            scaled = (grad.data * clip_coef).astype(grad.dtype, copy=False)
            param.grad = Tensor._from_array(scaled, grad.device)
    return total


def _vector_norm(array: Any, p: float) -> float:
    """The p-norm of an array's entries, as a float (computed on its own device)."""
    xp = backend.array_module(backend.device_of(array))
    if p == 2.0:  # the usual case: one float64 copy and a BLAS dot product, no abs pass
        flat = array.astype(xp.float64).reshape(-1)
        return float(xp.sqrt(flat @ flat))
    magnitudes = xp.abs(array.astype(xp.float64))
    if p == math.inf:
        return float(magnitudes.max()) if magnitudes.size else 0.0
    return float((magnitudes**p).sum() ** (1.0 / p))
