"""Exceptions raised for bad input. Each subclasses the built-in a user would expect."""

from __future__ import annotations

from typing import Any


class ShapeError(ValueError):
    """Shapes that do not fit together (matmul, broadcasting, reshape, gradients)."""


class AxisError(ShapeError, IndexError):
    """An axis outside ``[-ndim, ndim)``."""


class DeviceError(RuntimeError):
    """An unknown device, a missing GPU backend, or tensors on different devices."""


class DtypeError(TypeError):
    """A dtype that cannot do what was asked (e.g. ``requires_grad`` on integers)."""


class DtypeMismatchError(DtypeError, RuntimeError):
    """Operands of different dtypes where PyTorch refuses to promote (matmul): a
    RuntimeError, as PyTorch's, and a :class:`DtypeError`."""


# PyTorch's names for dtypes, as its errors spell them: the cast error's ("Float") and the
# matmul error's, which are C++ type names ("float").
_TORCH_NAMES = {
    "bool": "Bool", "uint8": "Byte", "int8": "Char", "int16": "Short", "int32": "Int",
    "int64": "Long", "float16": "Half", "float32": "Float", "float64": "Double",
    "complex64": "ComplexFloat", "complex128": "ComplexDouble",
}
_CPP_NAMES = {"float16": "c10::Half", "float32": "float", "float64": "double",
              "int64": "long int", "int32": "int", "int16": "short int", "int8": "signed char",
              "uint8": "unsigned char", "bool": "bool"}


def torch_dtype_name(dtype: Any) -> str:
    """``Float`` for float32, as PyTorch's cast errors name it."""
    return _TORCH_NAMES.get(str(dtype), str(dtype))


def cpp_dtype_name(dtype: Any) -> str:
    """``float`` for float32, as PyTorch's matmul errors name it."""
    return _CPP_NAMES.get(str(dtype), str(dtype))


class GraphError(RuntimeError):
    """Misuse of the autograd graph (backward twice, backward on a non-scalar, ...)."""


class GradcheckError(RuntimeError):
    """Analytic and numerical gradients disagree."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, foreign or unsafe to load."""


def is_torch_tensor(value: object) -> bool:
    """True for a ``torch.Tensor`` (or ``nn.Parameter``), without importing torch."""
    return any(cls.__name__ == "Tensor" and cls.__module__ == "torch"
               for cls in type(value).__mro__)


def not_a_tensor(value: object, where: str) -> TypeError:
    """The one-line error for a non-Tensor given where a minitransformer Tensor is expected;
    a torch tensor (the usual slip when porting PyTorch code) is named as such."""
    if is_torch_tensor(value):
        return TypeError(f"{where} must be a minitransformer Tensor, got a torch.Tensor; "
                         "convert it with mt.tensor(t.detach().numpy())")
    return TypeError(f"{where} must be a Tensor, got a {type(value).__name__}; "
                     "wrap it with mt.tensor(...)")
