"""Elementwise arithmetic and math. Each backward is the derivative times the incoming
gradient, then :func:`unbroadcast` gives every operand a gradient of its own shape."""

from __future__ import annotations

import math
from typing import Any

from minitransformer import backend
from minitransformer.autograd import Function
from minitransformer.ops.shape import unbroadcast
from minitransformer.tensor import Tensor, as_tensor


def _constant(array: Any, like: Tensor) -> Tensor:
    """A tensor outside the graph (a mask, a sign): its derivative is zero almost everywhere."""
    return Tensor._from_array(array, like.device)


def _pair(x: Any, y: Any) -> tuple[Tensor, Tensor]:
    if isinstance(x, Tensor):
        return x, as_tensor(y, x)
    return as_tensor(x, y), y


# ----- binary arithmetic ----------------------------------------------------------------------
class Add(Function):
    """z = x + y;  dz/dx = 1,  dz/dy = 1."""

    def forward(self, x: Any, y: Any) -> Any:
        return x + y

    def backward(self, grad: Tensor) -> tuple[Tensor, Tensor]:
        x, y = self.inputs
        return unbroadcast(grad, x.shape), unbroadcast(grad, y.shape)


class Sub(Function):
    """z = x - y;  dz/dx = 1,  dz/dy = -1."""

    def forward(self, x: Any, y: Any) -> Any:
        return x - y

    def backward(self, grad: Tensor) -> tuple[Tensor, Tensor]:
        x, y = self.inputs
        return unbroadcast(grad, x.shape), unbroadcast(-grad, y.shape)


class Mul(Function):
    """z = x * y;  dz/dx = y,  dz/dy = x."""

    def forward(self, x: Any, y: Any) -> Any:
        return x * y

    def backward(self, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, y = self.inputs
        dx = unbroadcast(grad * y, x.shape) if x.requires_grad else None
        dy = unbroadcast(grad * x, y.shape) if y.requires_grad else None
        return dx, dy


class Div(Function):
    """z = x / y;  dz/dx = 1 / y,  dz/dy = -x / y^2."""

    def forward(self, x: Any, y: Any) -> Any:
        return x / y

    def backward(self, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, y = self.inputs
        dx = unbroadcast(grad / y, x.shape) if x.requires_grad else None
        dy = unbroadcast(-grad * x / (y * y), y.shape) if y.requires_grad else None
        return dx, dy


class Pow(Function):
    """z = x ** p;  dz/dx = p * x^(p-1),  dz/dp = z * log(x)."""

    def forward(self, x: Any, p: Any) -> Any:
        return x**p

    def backward(self, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, p = self.inputs
        dx = unbroadcast(grad * p * x ** (p - 1), x.shape) if x.requires_grad else None
        dp = unbroadcast(grad * x**p * x.log(), p.shape) if p.requires_grad else None
        return dx, dp


class Maximum(Function):
    """z = max(x, y); the gradient goes to the larger operand, split evenly on ties."""

    def forward(self, x: Any, y: Any) -> Any:
        xp = backend.array_module(backend.device_of(x))
        self.x_share = (x > y) + 0.5 * (x == y)
        return xp.maximum(x, y)

    def backward(self, grad: Tensor) -> tuple[Tensor, Tensor]:
        x, y = self.inputs
        share = _constant(self.x_share.astype(grad.dtype), grad)
        return unbroadcast(grad * share, x.shape), unbroadcast(grad * (1 - share), y.shape)


class Minimum(Function):
    """z = min(x, y); the gradient goes to the smaller operand, split evenly on ties."""

    def forward(self, x: Any, y: Any) -> Any:
        xp = backend.array_module(backend.device_of(x))
        self.x_share = (x < y) + 0.5 * (x == y)
        return xp.minimum(x, y)

    def backward(self, grad: Tensor) -> tuple[Tensor, Tensor]:
        x, y = self.inputs
        share = _constant(self.x_share.astype(grad.dtype), grad)
        return unbroadcast(grad * share, x.shape), unbroadcast(grad * (1 - share), y.shape)


# ----- unary math -------------------------------------------------------------------------------
class Neg(Function):
    """y = -x;  dy/dx = -1."""

    def forward(self, x: Any) -> Any:
        return -x

    def backward(self, grad: Tensor) -> tuple[Tensor]:
        return (-grad,)


class Exp(Function):
    """y = e^x;  dy/dx = e^x = y."""

    uses_output = True

    def forward(self, x: Any) -> Any:
        return backend.array_module(backend.device_of(x)).exp(x)

    def backward(self, grad: Tensor) -> tuple[Tensor]:
        return (grad * self.output(),)


class Log(Function):
    """y = ln x;  dy/dx = 1 / x."""

    def forward(self, x: Any) -> Any:
        return backend.array_module(backend.device_of(x)).log(x)

    def backward(self, grad: Tensor) -> tuple[Tensor]:
        return (grad / self.inputs[0],)


class Sqrt(Function):
    """y = sqrt(x);  dy/dx = 1 / (2 sqrt(x)) = 1 / (2y)."""

    uses_output = True

    def forward(self, x: Any) -> Any:
        return backend.array_module(backend.device_of(x)).sqrt(x)

    def backward(self, grad: Tensor) -> tuple[Tensor]:
        return (grad / (2 * self.output()),)


class Abs(Function):
    """y = |x|;  dy/dx = sign(x) (0 at x = 0, as in PyTorch)."""

    def forward(self, x: Any) -> Any:
        xp = backend.array_module(backend.device_of(x))
        self.sign = xp.sign(x)
        return xp.abs(x)

    def backward(self, grad: Tensor) -> tuple[Tensor]:
        return (grad * _constant(self.sign, grad),)


class Sin(Function):
    """y = sin x;  dy/dx = cos x."""

    def forward(self, x: Any) -> Any:
        return backend.array_module(backend.device_of(x)).sin(x)

    def backward(self, grad: Tensor) -> tuple[Tensor]:
        return (grad * self.inputs[0].cos(),)


class Cos(Function):
    """y = cos x;  dy/dx = -sin x."""

    def forward(self, x: Any) -> Any:
        return backend.array_module(backend.device_of(x)).cos(x)

    def backward(self, grad: Tensor) -> tuple[Tensor]:
        return (-grad * self.inputs[0].sin(),)


class Erf(Function):
    """y = erf x;  dy/dx = 2 / sqrt(pi) * exp(-x^2)."""

    def forward(self, x: Any) -> Any:
        return backend.erf(x)

    def backward(self, grad: Tensor) -> tuple[Tensor]:
        x = self.inputs[0]
        return (grad * (2 / math.sqrt(math.pi)) * (-x * x).exp(),)


class Clip(Function):
    """y = min(max(x, lo), hi);  dy/dx = 1 inside [lo, hi], 0 outside."""

    def forward(self, x: Any, low: float | None, high: float | None) -> Any:
        xp = backend.array_module(backend.device_of(x))
        inside = xp.ones(x.shape, dtype=bool)
        if low is not None:
            inside &= x >= low
        if high is not None:
            inside &= x <= high
        self.inside = inside
        return xp.clip(x, low, high)

    def backward(self, grad: Tensor) -> tuple[Tensor]:
        return (grad * _constant(self.inside.astype(grad.dtype), grad),)


class Where(Function):
    """z = x where cond else y;  dz/dx = cond,  dz/dy = not cond."""

    def forward(self, x: Any, y: Any, condition: Any) -> Any:
        self.condition = condition
        return backend.array_module(backend.device_of(x)).where(condition, x, y)

    def backward(self, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, y = self.inputs
        zero = as_tensor(0.0, grad)
        dx = unbroadcast(where(self.condition, grad, zero), x.shape) if x.requires_grad else None
        dy = unbroadcast(where(self.condition, zero, grad), y.shape) if y.requires_grad else None
        return dx, dy


class To(Function):
    """y = x on another device or with another dtype;  dx = dy moved back."""

    changes_device = True

    def forward(self, x: Any, dtype: Any, device: str) -> Any:
        moved = backend.to_device(x, device)
        return moved.astype(dtype) if dtype is not None else moved.copy()

    def backward(self, grad: Tensor) -> tuple[Tensor]:
        x = self.inputs[0]
        return (grad.to(dtype=x.dtype, device=x.device),)


# ----- functional forms ----------------------------------------------------------------------
def add(x: Any, y: Any) -> Tensor:
    return Add.apply(*_pair(x, y))


def sub(x: Any, y: Any) -> Tensor:
    return Sub.apply(*_pair(x, y))


def mul(x: Any, y: Any) -> Tensor:
    return Mul.apply(*_pair(x, y))


def div(x: Any, y: Any) -> Tensor:
    return Div.apply(*_pair(x, y))


def pow(x: Any, p: Any) -> Tensor:  # noqa: A001
    return Pow.apply(*_pair(x, p))


def maximum(x: Any, y: Any) -> Tensor:
    return Maximum.apply(*_pair(x, y))


def minimum(x: Any, y: Any) -> Tensor:
    return Minimum.apply(*_pair(x, y))


def neg(x: Tensor) -> Tensor:
    return Neg.apply(x)


def exp(x: Tensor) -> Tensor:
    return Exp.apply(x)


def log(x: Tensor) -> Tensor:
    return Log.apply(x)


def sqrt(x: Tensor) -> Tensor:
    return Sqrt.apply(x)


def abs(x: Tensor) -> Tensor:  # noqa: A001
    return Abs.apply(x)


def sin(x: Tensor) -> Tensor:
    return Sin.apply(x)


def cos(x: Tensor) -> Tensor:
    return Cos.apply(x)


def erf(x: Tensor) -> Tensor:
    return Erf.apply(x)


def clip(x: Tensor, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    if min is None and max is None:
        raise ValueError("clip needs at least one of min and max")
    return Clip.apply(x, low=min, high=max)


clamp = clip


def where(condition: Any, x: Any, y: Any) -> Tensor:
    """``x`` where ``condition`` holds, else ``y`` (broadcast together)."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    x, y = _pair(x, y)
    return Where.apply(x, y, condition=cond)


def masked_fill(x: Tensor, mask: Any, value: float) -> Tensor:
    """``x`` with ``value`` wherever ``mask`` is True."""
    return where(mask, as_tensor(value, x), x)


def to(x: Tensor, dtype: Any = None, device: Any = None) -> Tensor:
    device = backend.normalize_device(device) if device is not None else x.device
    if (dtype is None or dtype == x.dtype) and device == x.device:
        return x
    return To.apply(x, dtype=dtype, device=device)
