"""Exercise 13: the tiled backward of attention (FlashAttention's backward).

The tiled forward (exercise 12) never holds the (L, S) matrix of scores, and saves only
the output O and each row's log-sum-exp L = log sum_s exp(score_s). forward_with_stats
below gives the same two numbers in one piece, to keep this file short.

Write backward() one key tile at a time, without the (L, S) matrices: from dO = dL/dO,
return (dQ, dK, dV) for O = softmax(Q K^T / sqrt(d_k)) V.

Check:   minitransformer exercise check tiled_backward
Hints:   minitransformer exercise hint 13   (the text of docs/exercises.md)
"""

import numpy as np


def forward_with_stats(Q: np.ndarray, K: np.ndarray, V: np.ndarray, block: int):
    """O (..., L, d_v) and the rows' log-sum-exp L (..., L, 1): what the tiled forward
    saves (computed here over all keys at once; exercise 12 computes them tile by tile)."""
    scores = Q @ K.swapaxes(-1, -2) / np.sqrt(Q.shape[-1])  # (..., L, S)
    top = scores.max(axis=-1, keepdims=True)
    L = top + np.log(np.exp(scores - top).sum(axis=-1, keepdims=True))  # (..., L, 1)
    return np.exp(scores - L) @ V, L


def forward(Q: np.ndarray, K: np.ndarray, V: np.ndarray, block: int) -> np.ndarray:
    """O = softmax(Q K^T / sqrt(d_k)) V: (..., L, d_v)."""
    return forward_with_stats(Q, K, V, block)[0]


def backward(dO: np.ndarray, Q: np.ndarray, K: np.ndarray, V: np.ndarray, block: int):
    """Return (dQ, dK, dV), of the shapes of Q, K and V."""
    raise NotImplementedError(
        "return (dQ, dK, dV) from dO (..., L, d_v), one tile of `block` keys at a time: "
        "recompute each tile's weights from the saved log-sum-exp (forward_with_stats)"
    )
