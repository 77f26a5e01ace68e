"""Exercise 4: the backward of softmax.

    y = softmax(x) along the last axis:   y_i = exp(x_i) / sum_j exp(x_j)

Write backward(): from dy = dL/dy, return dx = dL/dx. Every output y_i depends on every
input x_j of its row, so each dx_j collects a contribution from every y_i.

Check:   minitransformer exercise check softmax
Hints:   minitransformer exercise hint 4   (the text of docs/exercises.md)
"""

import numpy as np


def forward(x: np.ndarray) -> np.ndarray:
    """softmax along the last axis: x (..., n) -> y (..., n), each row sums to 1."""
    shifted = x - x.max(axis=-1, keepdims=True)  # the largest exponent is 0: no overflow
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Return dx, of x's shape (..., n)."""
    raise NotImplementedError(
        "return dx (..., n) from dy (..., n): softmax's Jacobian applied to dy, one row at "
        "a time (forward(x) gives y)"
    )
