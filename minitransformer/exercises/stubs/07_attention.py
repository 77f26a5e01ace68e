"""Exercise 7: the backward of scaled dot-product attention, with a boolean mask.

    S = Q K^T / sqrt(d_k)        (..., L, S)    d_k = Q.shape[-1]
    S[~mask] = -inf              mask is True where attention is ALLOWED (PyTorch's rule)
    A = softmax(S)               (..., L, S)    along the keys; a row masked throughout is 0
    Z = A V                      (..., L, Ev)

for Q (..., L, d_k), K (..., S, d_k), V (..., S, Ev), mask (L, S) or None. Write backward():
from dZ = dL/dZ, return (dQ, dK, dV).

Check:   minitransformer exercise check attention
Hints:   minitransformer exercise hint 7   (the text of docs/exercises.md)
"""

import numpy as np


def weights(Q: np.ndarray, K: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """A = softmax(Q K^T / sqrt(d_k)) with the masked scores at -inf: (..., L, S)."""
    scores = Q @ K.swapaxes(-1, -2) / np.sqrt(Q.shape[-1])  # (..., L, d_k) @ (..., d_k, S)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)  # (..., L, 1)
    row_max = np.where(np.isneginf(row_max), 0.0, row_max)  # a fully masked row stays -inf
    e = np.exp(scores - row_max)  # exp(-inf) = 0: masked keys get weight 0
    total = e.sum(axis=-1, keepdims=True)
    return e / np.where(total == 0, 1.0, total)  # a fully masked row: all weights 0


def forward(Q: np.ndarray, K: np.ndarray, V: np.ndarray, mask: np.ndarray | None):
    """Z = softmax(Q K^T / sqrt(d_k), masked) V: (..., L, Ev)."""
    return weights(Q, K, mask) @ V  # (..., L, S) @ (..., S, Ev)


def backward(dZ: np.ndarray, Q: np.ndarray, K: np.ndarray, V: np.ndarray,
             mask: np.ndarray | None):
    """Return (dQ, dK, dV), of the shapes of Q, K and V. The mask gets no gradient."""
    raise NotImplementedError(
        "return (dQ, dK, dV) of Q's (..., L, d_k), K's (..., S, d_k) and V's (..., S, Ev) "
        "shapes from dZ (..., L, Ev), through Z = A V, softmax and S = Q K^T / sqrt(d_k)"
    )
