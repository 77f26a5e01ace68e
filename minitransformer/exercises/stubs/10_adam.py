"""Exercise 10: one step of Adam.

With the gradient g of step t = 1, 2, ... (PyTorch's Adam, without weight decay):

    m = beta1 * m + (1 - beta1) * g            running mean of g
    v = beta2 * v + (1 - beta2) * g^2          running mean of g^2
    m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)
    param = param - lr * m_hat / (sqrt(v_hat) + eps)

Write adam_step(): return the new (param, m, v); m and v start at zeros. sgd_step() is a
worked example of the interface.

Check:   minitransformer exercise check adam
Hints:   minitransformer exercise hint 10   (the text of docs/exercises.md)
"""

import numpy as np


def sgd_step(param: np.ndarray, grad: np.ndarray, lr: float) -> np.ndarray:
    """Plain gradient descent: the new parameter, one step downhill."""
    return param - lr * grad


def adam_step(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, t: int,
              lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
              eps: float = 1e-8):
    """Return (param, m, v) after step t (t counts from 1), all of param's shape."""
    raise NotImplementedError(
        "return the new (param, m, v), each of param's shape, after Adam's step t "
        "(t = 1 on the first step) with the gradient grad"
    )
