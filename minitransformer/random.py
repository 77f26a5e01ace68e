"""PyTorch's sampling functions: ``mt.randint`` and ``mt.multinomial``.

Both draw on the host from ``generator`` (a ``numpy.random.Generator``) or, when none is
given, from the default generator that ``mt.manual_seed`` reseeds, so a seeded run draws
the same numbers every time (not PyTorch's numbers: the generators differ).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minitransformer import backend
from minitransformer.tensor import Tensor, as_dtype, default_generator, int64


def randint(*args: Any, size: Any = None, generator: np.random.Generator | None = None,
            dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """Integers uniform in ``[low, high)``: ``randint(high, size)`` or
    ``randint(low, high, size)``, as ``torch.randint``; int64 unless ``dtype`` says."""
    if size is not None:
        args = (*args, size)
    if len(args) == 2:
        low, (high, size) = 0, args
    elif len(args) == 3:
        low, high, size = args
    else:
        raise TypeError("randint(high, size) or randint(low, high, size), e.g. "
                        "mt.randint(0, 10, (2, 3))")
    rng = generator if generator is not None else default_generator()
    values = rng.integers(low, high, size=tuple(size)).astype(as_dtype(dtype) or int64)
    device = backend.normalize_device(device)
    return Tensor._from_array(backend.to_device(values, device), device).requires_grad_(
        requires_grad)


def multinomial(input: Tensor, num_samples: int, replacement: bool = False,  # noqa: A002
                *, generator: np.random.Generator | None = None) -> Tensor:
    """Sample category indices from each row of non-negative weights ``input`` ((C,) or
    (N, C); a row need not sum to 1: it is divided by its sum). Without ``replacement``
    a row gives ``num_samples`` distinct categories. Returns int64 of shape
    (num_samples,) or (N, num_samples)."""
    if input.ndim not in (1, 2):
        raise ValueError(f"multinomial: input must be 1-D or 2-D, got shape {input.shape}")
    weights = backend.to_numpy(input.data).astype(np.float64)
    rows = weights.reshape(-1, weights.shape[-1])
    if (rows < 0).any() or not np.isfinite(rows).all():
        raise RuntimeError("multinomial: probabilities must be finite and non-negative")
    totals = rows.sum(axis=-1, keepdims=True)
    if (totals <= 0).any():
        raise RuntimeError("multinomial: each row of probabilities must have a positive sum")
    if not replacement and num_samples > int((rows > 0).sum(axis=-1).min()):
        raise RuntimeError("multinomial: cannot sample more categories than have non-zero "
                           "probability without replacement (pass replacement=True)")
    rng = generator if generator is not None else default_generator()
    samples = np.stack([rng.choice(row.size, size=num_samples, replace=replacement,
                                   p=row / row.sum()) for row in rows]).astype(int64)
    samples = samples.reshape(*input.shape[:-1], num_samples)
    return Tensor._from_array(backend.to_device(samples, input.device), input.device)
