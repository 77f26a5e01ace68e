"""Exercise 2: summing a gradient back to a broadcast shape.

    out = x * w        (NumPy broadcasting: x and w need not have the same shape)

x may be (B, T, n) and w (n,): then each w[j] multiplies B * T elements of x. Write
backward(): from dout = dL/dout (the broadcast shape), return (dx, dw) with the shapes
of x and w.

Check:   minitransformer exercise check broadcast
Hints:   minitransformer exercise hint 2   (the text of docs/exercises.md)
"""

import numpy as np


def forward(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """out = x * w with broadcasting: out has the shape np.broadcast_shapes(x.shape, w.shape)."""
    return x * w


def backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray):
    """Return (dx, dw): dx of x's shape, dw of w's shape."""
    raise NotImplementedError(
        "return (dx, dw) with x's and w's shapes: multiply dout (the broadcast shape) by the "
        "other factor, then sum over every axis that broadcasting added or stretched"
    )
