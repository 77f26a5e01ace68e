"""Exercise 6: the backward of layer norm.

    mu = mean(x),  var = mean((x - mu)^2),  x_hat = (x - mu) / sqrt(var + eps)
    y = x_hat * gamma + beta

with the mean and the variance taken over the last axis, one row at a time. Write
backward(): from dy = dL/dy, return (dx, dgamma, dbeta).

Check:   minitransformer exercise check layer_norm
Hints:   minitransformer exercise hint 6   (the text of docs/exercises.md)
"""

import numpy as np

EPS = 1e-5


def forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Layer norm over the last axis: x (..., n), gamma (n,), beta (n,) -> y (..., n)."""
    mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)  # (..., 1), divided by n
    x_hat = (x - mu) / np.sqrt(var + EPS)  # (..., n)
    return x_hat * gamma + beta


def backward(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray):
    """Return (dx, dgamma, dbeta): dx (..., n), dgamma (n,), dbeta (n,)."""
    raise NotImplementedError(
        "return (dx, dgamma, dbeta): dx (..., n) and dgamma, dbeta (n,) from dy (..., n); "
        "mu and var depend on every x of the row"
    )
