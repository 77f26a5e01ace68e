"""Exceptions raised for bad input. Each subclasses the built-in a user would expect."""


class ShapeError(ValueError):
    """Shapes that do not fit together (matmul, broadcasting, reshape, gradients)."""


class AxisError(ShapeError, IndexError):
    """An axis outside ``[-ndim, ndim)``."""


class DeviceError(RuntimeError):
    """An unknown device, a missing GPU backend, or tensors on different devices."""


class DtypeError(TypeError):
    """A dtype that cannot do what was asked (e.g. ``requires_grad`` on integers)."""


class GraphError(RuntimeError):
    """Misuse of the autograd graph (backward twice, backward on a non-scalar, ...)."""


class GradcheckError(RuntimeError):
    """Analytic and numerical gradients disagree."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, foreign or unsafe to load."""
