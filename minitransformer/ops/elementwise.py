"""Elementwise arithmetic and math. Each backward is the local derivative times the
incoming gradient; :func:`unbroadcast` then gives every operand a gradient of its own shape.

In every ``backward`` below, ``grad``, ``self.args`` and ``self.output()`` are arrays in a
plain backward and tensors under ``create_graph=True``; ``xp`` is NumPy/CuPy or the tensor
ops accordingly (see :class:`~minitransformer.autograd.Function`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minitransformer import backend
from minitransformer.autograd import Function, Value
from minitransformer.errors import ShapeError, is_torch_tensor, not_a_tensor
from minitransformer.ops.registry import register
from minitransformer.ops.shape import unbroadcast
from minitransformer.promotion import DEFAULT_FLOAT, floating, result_type
from minitransformer.tensor import Tensor


# ----- binary arithmetic ----------------------------------------------------------------------
class Add(Function):
    """z = x + y;  dz/dx = 1,  dz/dy = 1."""

    uses_input_values = False

    def forward(self, x: Any, y: Any) -> Any:
        return x + y

    def backward(self, grad: Value) -> tuple[Value, Value]:
        x, y = self.args
        need_x, need_y = self.needs_input_grad
        dx = unbroadcast(grad, x.shape) if need_x else None
        dy = unbroadcast(grad, y.shape) if need_y else None
        return dx, dy


class Sub(Function):
    """z = x - y;  dz/dx = 1,  dz/dy = -1."""

    uses_input_values = False

    def forward(self, x: Any, y: Any) -> Any:
        return x - y

    def backward(self, grad: Value) -> tuple[Value, Value]:
        x, y = self.args
        need_x, need_y = self.needs_input_grad
        dx = unbroadcast(grad, x.shape) if need_x else None
        dy = unbroadcast(-grad, y.shape) if need_y else None
        return dx, dy


class Mul(Function):
    """z = x * y;  dz/dx = y,  dz/dy = x."""

    def forward(self, x: Any, y: Any) -> Any:
        return x * y

    def backward(self, grad: Value) -> tuple[Value, Value]:
        x, y = self.args
        need_x, need_y = self.needs_input_grad
        dx = unbroadcast(grad * y, x.shape) if need_x else None
        dy = unbroadcast(grad * x, y.shape) if need_y else None
        return dx, dy


class Div(Function):
    """z = x / y;  dz/dx = 1 / y,  dz/dy = -x / y^2."""

    def forward(self, x: Any, y: Any) -> Any:
        return x / y

    def backward(self, grad: Value) -> tuple[Value, Value]:
        x, y = self.args
        need_x, need_y = self.needs_input_grad
        dx = unbroadcast(grad / y, x.shape) if need_x else None
        dy = unbroadcast(-grad * x / (y * y), y.shape) if need_y else None
        return dx, dy


class Pow(Function):
    """z = x ** p;  dz/dx = p x^(p-1),  dz/dp = x^p ln x."""

    def forward(self, x: Any, p: Any) -> Any:
        return x**p

    def backward(self, grad: Value) -> tuple[Value, Value]:
        # As PyTorch: dz/dx = 0 where p = 0 (even at x = 0, where x^(p-1) is infinite), and
        # dz/dp = 0 where x = 0 and p >= 0 (x^p ln x -> 0 there, though ln 0 = -inf).
        x, p = self.args
        need_x, need_p = self.needs_input_grad
        xp = self.xp
        dx = dp = None
        if need_x:
            p_safe = xp.where(p == 0, 1.0, p)  # p = 0: the factor p makes it 0 anyway
            dx = unbroadcast(grad * p * x ** (p_safe - 1), x.shape)
        if need_p:
            x_safe = xp.where((x == 0) & (p >= 0), 1.0, x)  # ln 1 = 0: the limit's value
            dp = unbroadcast(grad * x**p * xp.log(x_safe), p.shape)
        return dx, dp


class _Select(Function):
    """Base of Maximum and Minimum: z picks x or y elementwise, so dz/dx = share (1 where
    x was picked, 1/2 on ties, 0 elsewhere) and dz/dy = 1 - share. ``forward`` sets share."""

    x_share: Any

    def backward(self, grad: Value) -> tuple[Value, Value]:
        x, y = self.args
        need_x, need_y = self.needs_input_grad
        dx = unbroadcast(grad * self.x_share, x.shape) if need_x else None
        dy = unbroadcast(grad * (1 - self.x_share), y.shape) if need_y else None
        return dx, dy


class Maximum(_Select):
    """z = max(x, y); the gradient goes to the larger operand, split evenly on ties."""

    def forward(self, x: Any, y: Any) -> Any:
        self.x_share = ((x > y) + 0.5 * (x == y)).astype(x.dtype)
        return backend.array_module_of(x).maximum(x, y)


class Minimum(_Select):
    """z = min(x, y); the gradient goes to the smaller operand, split evenly on ties."""

    def forward(self, x: Any, y: Any) -> Any:
        self.x_share = ((x < y) + 0.5 * (x == y)).astype(x.dtype)
        return backend.array_module_of(x).minimum(x, y)


# ----- unary math -------------------------------------------------------------------------------
class Neg(Function):
    """y = -x;  dy/dx = -1."""

    uses_input_values = False

    def forward(self, x: Any) -> Any:
        return -x

    def backward(self, grad: Value) -> tuple[Value]:
        return (-grad,)


class Exp(Function):
    """y = e^x;  dy/dx = e^x = y."""

    uses_output = True

    def forward(self, x: Any) -> Any:
        return backend.array_module_of(x).exp(x)

    def backward(self, grad: Value) -> tuple[Value]:
        return (grad * self.output(),)


class Log(Function):
    """y = ln x;  dy/dx = 1 / x."""

    def forward(self, x: Any) -> Any:
        return backend.array_module_of(x).log(x)

    def backward(self, grad: Value) -> tuple[Value]:
        (x,) = self.args
        return (grad / x,)


class Sqrt(Function):
    """y = sqrt(x);  dy/dx = 1 / (2 sqrt(x)) = 1 / (2y)."""

    uses_output = True

    def forward(self, x: Any) -> Any:
        return backend.array_module_of(x).sqrt(x)

    def backward(self, grad: Value) -> tuple[Value]:
        return (grad / (2 * self.output()),)


class Abs(Function):
    """y = |x|;  dy/dx = sign(x) (0 at x = 0, as in PyTorch)."""

    def forward(self, x: Any) -> Any:
        self.sign = backend.array_module_of(x).sign(x)
        return backend.array_module_of(x).abs(x)

    def backward(self, grad: Value) -> tuple[Value]:
        return (grad * self.sign,)


class Sin(Function):
    """y = sin x;  dy/dx = cos x."""

    def forward(self, x: Any) -> Any:
        return backend.array_module_of(x).sin(x)

    def backward(self, grad: Value) -> tuple[Value]:
        (x,) = self.args
        return (grad * self.xp.cos(x),)


class Cos(Function):
    """y = cos x;  dy/dx = -sin x."""

    def forward(self, x: Any) -> Any:
        return backend.array_module_of(x).cos(x)

    def backward(self, grad: Value) -> tuple[Value]:
        (x,) = self.args
        return (-grad * self.xp.sin(x),)


class Erf(Function):
    """y = erf x;  dy/dx = 2 / sqrt(pi) * e^(-x^2)."""

    def forward(self, x: Any) -> Any:
        return backend.erf(x)

    def backward(self, grad: Value) -> tuple[Value]:
        (x,) = self.args
        return (grad * (2 / math.sqrt(math.pi)) * self.xp.exp(-x * x),)


class Clip(Function):
    """y = min(max(x, lo), hi);  dy/dx = 1 inside [lo, hi], 0 outside."""

    def forward(self, x: Any, low: float | None, high: float | None) -> Any:
        inside = backend.array_module_of(x).ones(x.shape, dtype=bool)
        if low is not None:
            inside &= x >= low
        if high is not None:
            inside &= x <= high
        self.inside = inside.astype(x.dtype)
        return backend.array_module_of(x).clip(x, low, high)

    def backward(self, grad: Value) -> tuple[Value]:
        return (grad * self.inside,)


class Where(Function):
    """z = x where cond else y;  dz/dx = cond,  dz/dy = not cond."""

    def forward(self, x: Any, y: Any, condition: Any) -> Any:
        self.condition = condition
        return backend.array_module_of(x).where(condition, x, y)

    def backward(self, grad: Value) -> tuple[Value, Value]:
        x, y = self.args
        need_x, need_y = self.needs_input_grad
        where = self.xp.where
        dx = unbroadcast(where(self.condition, grad, 0.0), x.shape) if need_x else None
        dy = unbroadcast(where(self.condition, 0.0, grad), y.shape) if need_y else None
        return dx, dy


class To(Function):
    """y = x on another device or with another dtype;  dx = dy moved back."""

    uses_input_values = False

    changes_device = True

    def forward(self, x: Any, dtype: Any, device: str) -> Any:
        moved = backend.to_device(x, device)
        return moved.astype(dtype) if dtype is not None else moved.copy()

    def backward(self, grad: Value) -> tuple[Value]:
        (x,) = self.inputs
        if self.create_graph:
            return (grad.to(dtype=x.dtype, device=x.device),)
        return (backend.to_device(grad, x.device).astype(x.dtype),)


class FloorDiv(Function):
    """z = floor(x / y) (``x // y``); integers stay integers. Piecewise constant: PyTorch
    has no derivative for it, and neither does this (backward refuses)."""

    uses_input_values = False

    def forward(self, x: Any, y: Any) -> Any:
        if x.dtype == bool:
            raise TypeError('"div_floor_cpu" not implemented for \'Bool\': floor division of '
                            "bool tensors; convert first: x.long() // y.long()")
        xp = backend.array_module_of(x)
        if x.dtype.kind in "iu" and bool(xp.any(y == 0)):  # NumPy would give 0
            raise ZeroDivisionError("integer floor division by zero (x // 0), an error in "
                                    "PyTorch too; x.float() // 0 gives inf")
        return xp.floor_divide(x, y)

    def backward(self, grad: Value) -> tuple[Value, Value]:
        raise NotImplementedError("derivative for floor_divide (x // y) is not implemented, "
                                  "as in PyTorch: it is piecewise constant; detach() it")


# ----- functional forms ----------------------------------------------------------------------
def promote(x: Any, y: Any, true_divide: bool = False) -> tuple[Tensor, Tensor]:
    """Both operands as tensors of PyTorch's result dtype (:func:`~minitransformer.promotion.
    result_type`); ``true_divide``: integers become the default float, as ``/`` does.

    A tensor that needs grad is cast by a :class:`To` node, so its gradient comes back cast
    to its own dtype: a leaf's ``.grad`` always has the leaf's dtype."""
    x_is_tensor = isinstance(x, Tensor)
    if x_is_tensor and isinstance(y, Tensor):
        dtype = x._data.dtype
        if dtype == y._data.dtype and (not true_divide or dtype.kind in "fc"):
            return x, y  # the common case: nothing to decide
    elif x_is_tensor and y.__class__ in (int, float) and x.device == "cpu" and (
            x._data.dtype.kind == "f"):
        # x * 0.5, the next most common: a number never widens a float tensor
        return x, Tensor._from_array(backend.constant(y, x._data), "cpu")
    like = x if x_is_tensor else y
    other = y if like is x else x
    if other.__class__ not in (int, float, bool) and is_torch_tensor(other):
        # x + torch_tensor would otherwise convert it silently
        raise not_a_tensor(other, "an operand")
    if like.dtype.kind == "f" and other.__class__ in (int, float, bool):
        dtype = like.dtype  # x * 0.5, the next most common: a number never widens a float
    else:
        dtype = result_type(x, y)
    if true_divide and dtype.kind in "biu":
        dtype = DEFAULT_FLOAT
    return _operand(x, dtype, like), _operand(y, dtype, like)


def _operand(value: Any, dtype: Any, like: Tensor) -> Tensor:
    """``value`` (a tensor, a Python number, an array, a list) as a tensor of ``dtype``."""
    if isinstance(value, Tensor):
        if value.dtype == dtype:
            return value
        if value.requires_grad:  # in the graph: the gradient is cast back in To's backward
            return To.apply(value, dtype=dtype, device=value.device)
        return Tensor._from_array(value.data.astype(dtype), value.device)
    if isinstance(value, bool | int | float | np.generic):
        if like.device == "cpu":
            if dtype == like.dtype and dtype.kind == "f":  # x * 0.5: see backend.constant
                return Tensor._from_array(backend.constant(value, like._data), "cpu")
            return Tensor._from_array(np.asarray(value, dtype=dtype), "cpu")
        # A NumPy scalar of the dtype: CuPy arrays combine with it (not with NumPy arrays).
        return Tensor._from_array(dtype.type(value), like.device)
    return Tensor(value, dtype=dtype, device=like.device)


def _is_bool(value: Any) -> bool:
    if isinstance(value, Tensor) or backend.is_array(value):
        return value.dtype == bool
    return isinstance(value, bool | np.bool_)


def apply_binary(op: type[Function], x: Any, y: Any, **params: Any) -> Tensor:
    """``op`` on two operands promoted to PyTorch's result dtype (:func:`promote`), with a
    ShapeError naming the shapes if they don't broadcast.

    A Python number or array next to a tensor is lifted to a tensor; ``x * 0.5`` stays
    float32, ``int64 * 0.5`` is float32, ``int / int`` is float32 (see
    :mod:`minitransformer.promotion`)."""
    # The two common cases have nothing to check or promote; decided here, before the
    # general path, they cost 0.15-0.2 us less (8x8: x * y 1.2 -> 1.0 us, x * 0.5 1.6 -> 1.4).
    if isinstance(x, Tensor) and not params and x._data.dtype.kind == "f":
        if isinstance(y, Tensor) and x._data.dtype is y._data.dtype:  # x * y, one float dtype
            try:
                return op.apply_pair(x, y)
            except ValueError:
                _refuse_shapes(op, x, y, params)
                raise
        if (y.__class__ is float or y.__class__ is int) and x._data.__class__ is np.ndarray:
            # x * 0.5: a number never widens a float tensor (see promote)
            return op.apply_pair(x, Tensor._from_array(backend.constant(y, x._data), "cpu"))
    if op is Sub and (_is_bool(x) or _is_bool(y)):
        raise TypeError("Subtraction, the `-` operator, with a bool tensor is not supported "
                        "(as in PyTorch). If you are trying to invert a mask, use the `~` "
                        "operator instead; to count, convert first: x.long() - y")
    x, y = promote(x, y, true_divide=op is Div)
    try:
        if not params:
            return op.apply_pair(x, y)
        return op.apply(x, y, **params)
    except ValueError:
        _refuse_shapes(op, x, y, params)
        raise


def _refuse_shapes(op: type[Function], x: Tensor, y: Tensor, params: dict) -> None:
    """After a ValueError from ``op``: a ShapeError naming the shapes if they don't
    broadcast together (else the caller re-raises the ValueError as it was)."""
    shapes = {"x": x.shape, "y": y.shape}
    if "condition" in params:
        shapes["condition"] = np.shape(params["condition"])
    try:
        np.broadcast_shapes(*shapes.values())
    except ValueError:
        named = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ShapeError(
            f"{op.__name__.lower()}: shapes do not broadcast together: {named}"
        ) from None


@register(method=True)
def add(x: Any, y: Any) -> Tensor:
    return apply_binary(Add, x, y)


@register(method=True)
def sub(x: Any, y: Any) -> Tensor:
    return apply_binary(Sub, x, y)


@register(method=True)
def mul(x: Any, y: Any) -> Tensor:
    return apply_binary(Mul, x, y)


@register(method=True)
def div(x: Any, y: Any) -> Tensor:
    return apply_binary(Div, x, y)


@register(method=True)
def pow(x: Any, p: Any) -> Tensor:  # noqa: A001
    return apply_binary(Pow, x, p)


@register(method=True)
def maximum(x: Any, y: Any) -> Tensor:
    return apply_binary(Maximum, x, y)


@register(method=True)
def minimum(x: Any, y: Any) -> Tensor:
    return apply_binary(Minimum, x, y)


@register(method=True)
def neg(x: Tensor) -> Tensor:
    return Neg.apply(x)


@register(method=True)
def exp(x: Tensor) -> Tensor:
    return Exp.apply(floating(x))


@register(method=True)
def log(x: Tensor) -> Tensor:
    return Log.apply(floating(x))


@register(method=True)
def sqrt(x: Tensor) -> Tensor:
    return Sqrt.apply(floating(x))


@register(method=True)
def abs(x: Tensor) -> Tensor:  # noqa: A001
    return Abs.apply(x)


@register(method=True)
def sin(x: Tensor) -> Tensor:
    return Sin.apply(floating(x))


@register(method=True)
def cos(x: Tensor) -> Tensor:
    return Cos.apply(floating(x))


@register(method=True)
def erf(x: Tensor) -> Tensor:
    return Erf.apply(floating(x))


@register(method=True, aliases=("clamp",))
def clip(x: Tensor, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    if min is None and max is None:
        raise ValueError("clip needs at least one of min and max")
    dtype = result_type(x, *(b for b in (min, max) if b is not None))
    if dtype != x.dtype:  # as torch.clamp: an integer tensor with a float bound gives float32
        x = x.to(dtype)
    return Clip.apply(x, low=min, high=max)




@register()
def where(condition: Any, x: Any, y: Any) -> Tensor:
    """``x`` where ``condition`` holds, else ``y`` (broadcast together)."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):  # where(mask, 1.0, 0.0)
        x = Tensor(x, device=backend.device_of(cond) if backend.is_array(cond) else None)
    device = x.device if isinstance(x, Tensor) else y.device
    if backend.is_array(cond):
        cond = backend.to_device(cond, device)  # a NumPy mask may select on the GPU
    return apply_binary(Where, x, y, condition=cond)


def check_bool_mask(mask: Any) -> None:
    """PyTorch's masked_fill takes a bool tensor only (NumPy would read 1 as True)."""
    if isinstance(mask, Tensor) and mask.dtype != bool:
        from minitransformer.errors import DtypeError, cpp_dtype_name

        raise DtypeError(f"masked_fill_ only supports boolean masks, but got mask with dtype "
                         f"{cpp_dtype_name(mask.dtype)}; make it one: mask.bool() or mask == 1")


@register(method=True)
def masked_fill(x: Tensor, mask: Any, value: float) -> Tensor:
    """``x`` with ``value`` wherever ``mask`` is True (a bool tensor, as PyTorch requires)."""
    check_bool_mask(mask)
    fill = value if isinstance(value, Tensor) else Tensor._from_array(  # keeps x's dtype
        backend.array_module(x.device).asarray(value, dtype=x.dtype), x.device)
    return where(mask, fill, x)


@register(method=True, top_level=False)
def to(x: Tensor, dtype: Any = None, device: Any = None) -> Tensor:
    device = backend.normalize_device(device) if device is not None else x.device
    if (dtype is None or dtype == x.dtype) and device == x.device:
        return x
    return To.apply(x, dtype=dtype, device=device)
