"""Check analytic gradients against central finite differences.

For a random vector v over the outputs, backward gives the vector-Jacobian product
v^T J in one pass. Finite differences give the same thing one input element at a time:

    (v^T J)_i  ~  ( v . f(x + eps e_i)  -  v . f(x - eps e_i) ) / (2 eps)

with an error of order eps^2. In float32 the rounding error of the two evaluations,
about 1e-7 / eps, swamps that, which is why checks run in float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minitransformer import autograd, backend
from minitransformer.errors import GradcheckError
from minitransformer.tensor import Tensor, float64


def _as_tuple(values: Any) -> tuple[Tensor, ...]:
    """One tensor or a sequence of them, as a tuple."""
    return (values,) if isinstance(values, Tensor) else tuple(values)


def _projection(outputs: tuple[Tensor, ...], projections: list[Any]) -> float:
    """v . f(x), summed over every floating-point output."""
    total = 0.0
    for out, v in zip(outputs, projections):
        if v is not None:
            total += float((out.data * v).sum())
    return total


def _random_projections(outputs: tuple[Tensor, ...], rng: np.random.Generator) -> list[Any]:
    """A random direction v for each floating-point output (None for the others)."""
    return [backend.to_device(rng.standard_normal(o.shape).astype(o.dtype), o.device)
            if o.dtype.kind == "f" else None for o in outputs]


def _projected_sum(outputs: tuple[Tensor, ...], projections: list[Any]) -> Tensor | None:
    """v . f(x) as a recorded scalar, over the outputs that need a gradient (None if none)."""
    total = None
    for o, v in zip(outputs, projections):
        if v is not None and o.requires_grad:
            term = (o * Tensor._from_array(v, o.device)).sum()
            total = term if total is None else total + term
    return total


def gradcheck(
    fn: Callable[..., Any],
    inputs: Sequence[Tensor] | Tensor,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
) -> bool:
    """Compare ``fn``'s backward with central differences for every input element.

    ``fn`` takes the ``inputs`` and returns a tensor or a tuple of tensors. Every input
    with ``requires_grad`` is checked. Returns True, or raises :class:`GradcheckError`
    naming the input, the worst element, and both values.
    """
    inputs = _as_tuple(inputs)
    checked = [(i, x) for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    for i, x in checked:
        if x.dtype != float64:
            warnings.warn(
                f"gradcheck: input {i} is {x.dtype}, not float64; finite differences will be "
                "dominated by rounding error", stacklevel=2,
            )

    outputs = _as_tuple(fn(*inputs))
    projections = _random_projections(outputs, np.random.default_rng(seed))

    # Analytic: one backward pass of v . f(x).
    total = _projected_sum(outputs, projections)
    if total is not None:
        analytic = autograd.grad(total, [x for _, x in checked], allow_unused=True)
    else:
        analytic = (None,) * len(checked)

    # Numerical: perturb one element at a time.
    with autograd.no_grad():
        for (i, x), a_grad in zip(checked, analytic):
            a = np.zeros(x.shape) if a_grad is None else backend.to_numpy(a_grad.data)
            numeric = np.zeros(x.shape)
            flat = x.data.reshape(-1)  # a view: writing to it perturbs x
            for k in range(flat.size):
                original = flat[k].item()
                flat[k] = original + eps
                plus = _projection(_as_tuple(fn(*inputs)), projections)
                flat[k] = original - eps
                minus = _projection(_as_tuple(fn(*inputs)), projections)
                flat[k] = original
                numeric.reshape(-1)[k] = (plus - minus) / (2 * eps)
            error = np.abs(a - numeric) - (atol + rtol * np.abs(numeric))
            if error.size and error.max() > 0:
                worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(error)), x.shape))
                label = f"input {i}" + (f" ({x.name})" if x.name else "")
                raise GradcheckError(
                    f"gradcheck failed for {label} of shape {x.shape} at index {worst}: "
                    f"numerical {numeric[worst]:.10g}, analytical {a[worst]:.10g} "
                    f"(atol={atol}, rtol={rtol})"
                )
    return True


def gradgradcheck(
    fn: Callable[..., Any],
    inputs: Sequence[Tensor] | Tensor,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
) -> bool:
    """Check second derivatives: gradcheck the gradient of ``v . fn(x)`` (built with
    ``create_graph=True``) against finite differences of that gradient."""
    rng = np.random.default_rng(seed + 1)
    projections: list[Any] = []

    @autograd.enable_grad()  # also while gradcheck perturbs inputs under no_grad
    def first_derivatives(*xs: Tensor) -> tuple[Tensor, ...]:
        outputs = _as_tuple(fn(*xs))
        if not projections:
            projections.extend(_random_projections(outputs, rng))
        total = _projected_sum(outputs, projections)
        wrt = [x for x in xs if isinstance(x, Tensor) and x.requires_grad]
        grads = autograd.grad(total, wrt, create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)

    return gradcheck(first_derivatives, inputs, eps=eps, atol=atol, rtol=rtol, seed=seed)
