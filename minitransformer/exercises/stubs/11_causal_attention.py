"""Exercise 11: causal attention, one query at a time (a decoder's self-attention).

A decoder predicts token i + 1 from tokens 0..i only, so query i may look at keys 0..i:

    S = Q K^T / sqrt(d_k),   S[..., i, j] = -inf for j > i,   A = softmax(S),   Z = A V

for Q, K (..., T, d_k) and V (..., T, d_v). The forward below computes it the way a
decoder generating text does, one query at a time against the keys so far. Write
backward(): from dZ = dL/dZ, return (dQ, dK, dV). Key j is read by every query i >= j.

Check:   minitransformer exercise check causal_attention
Hints:   minitransformer exercise hint 11   (the text of docs/exercises.md)
"""

import numpy as np


def forward(Q: np.ndarray, K: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Causal attention: query i against keys 0..i. Q, K (..., T, d_k), V (..., T, d_v)."""
    T = Q.shape[-2]
    rows = []
    for i in range(T):
        s = Q[..., i : i + 1, :] @ K[..., : i + 1, :].swapaxes(-1, -2)  # (..., 1, i + 1)
        s = s / np.sqrt(Q.shape[-1])
        a = np.exp(s - s.max(axis=-1, keepdims=True))
        a = a / a.sum(axis=-1, keepdims=True)  # softmax over keys 0..i
        rows.append(a @ V[..., : i + 1, :])  # (..., 1, i + 1) @ (..., i + 1, d_v)
    return np.concatenate(rows, axis=-2)  # (..., T, d_v)


def backward(dZ: np.ndarray, Q: np.ndarray, K: np.ndarray, V: np.ndarray):
    """Return (dQ, dK, dV), of the shapes of Q, K and V."""
    raise NotImplementedError(
        "return (dQ, dK, dV) of Q's, K's (..., T, d_k) and V's (..., T, d_v) shapes from dZ "
        "(..., T, d_v); query i reads keys and values 0..i"
    )
