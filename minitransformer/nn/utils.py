"""``torch.nn.utils``'s path: ``minitransformer.nn.utils.clip_grad_norm_``."""

from __future__ import annotations

import math
from collections.abc import Iterable

from minitransformer.optim import clip_grad
from minitransformer.tensor import Tensor, float32

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: bool | None = None) -> Tensor:
    r"""Scale all gradients together so that their joint ``norm_type``-norm is at most
    ``max_norm``, and return that norm (before clipping) as a 0-d tensor, as PyTorch.

    :math:`\|g\| = (\sum_i \|g_i\|_p^p)^{1/p}`; when it exceeds ``max_norm`` every
    gradient is multiplied by ``max_norm / (\|g\| + 1e-6)``. See
    :func:`minitransformer.optim.clip_grad_norm_` (which returns a Python float).
    ``error_if_nonfinite=True`` raises when that norm is NaN or infinite (before any
    gradient is scaled by it); ``foreach`` is accepted for PyTorch code and ignored (there
    is one implementation).
    """
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if error_if_nonfinite:  # measure first (max_norm=inf scales nothing), then decide
        total = clip_grad.clip_grad_norm_(params, math.inf, norm_type)
        if not math.isfinite(total):
            raise RuntimeError(f"the total norm of order {norm_type} of the gradients is "
                               f"non-finite ({total}), so it cannot be clipped")
    total = clip_grad.clip_grad_norm_(params, max_norm, norm_type)
    dtype = grads[0].dtype if grads else float32
    device = grads[0].device if grads else None
    return Tensor(total, dtype=dtype, device=device)
