"""Exercise 12: the online softmax, and the tiled backward of attention (FlashAttention).

The forward below never holds the (L, S) matrix of scores: it walks the keys one tile of
``block`` keys at a time, keeping for each query the largest score so far m, the sum of
exponentials l and the unnormalised output o, rescaled whenever m grows. It saves only
the output O and each row's log-sum-exp L = m + log(l).

Write backward() the same way, one key tile at a time: from dO = dL/dO, return
(dQ, dK, dV) for O = softmax(Q K^T / sqrt(d_k)) V.

Check:   minitransformer exercise check online_softmax
Hints:   minitransformer exercise hint 12   (the text of docs/exercises.md)
"""

import numpy as np


def forward_with_stats(Q: np.ndarray, K: np.ndarray, V: np.ndarray, block: int):
    """O (..., L, d_v) and the rows' log-sum-exp L (..., L, 1), key tile by key tile."""
    scale = 1 / np.sqrt(Q.shape[-1])
    m = np.full((*Q.shape[:-1], 1), -np.inf)  # (..., L, 1) the largest score so far
    l = np.zeros((*Q.shape[:-1], 1))  # (..., L, 1) sum of exp(score - m)
    o = np.zeros((*Q.shape[:-1], V.shape[-1]))  # (..., L, d_v) sum of exp(score - m) v
    for j in range(0, K.shape[-2], block):
        S = Q @ K[..., j : j + block, :].swapaxes(-1, -2) * scale  # (..., L, block)
        m_new = np.maximum(m, S.max(axis=-1, keepdims=True))
        P = np.exp(S - m_new)  # every entry <= 1: no overflow
        alpha = np.exp(m - m_new)  # rescales what was summed against the old maximum
        l = l * alpha + P.sum(axis=-1, keepdims=True)
        o = o * alpha + P @ V[..., j : j + block, :]
        m = m_new
    return o / l, m + np.log(l)


def forward(Q: np.ndarray, K: np.ndarray, V: np.ndarray, block: int) -> np.ndarray:
    """O = softmax(Q K^T / sqrt(d_k)) V, computed tile by tile: (..., L, d_v)."""
    return forward_with_stats(Q, K, V, block)[0]


def backward(dO: np.ndarray, Q: np.ndarray, K: np.ndarray, V: np.ndarray, block: int):
    """Return (dQ, dK, dV), of the shapes of Q, K and V."""
    raise NotImplementedError(
        "return (dQ, dK, dV) from dO (..., L, d_v), one tile of `block` keys at a time: "
        "recompute each tile's weights from the saved log-sum-exp (forward_with_stats)"
    )
