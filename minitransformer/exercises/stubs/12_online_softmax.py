"""Exercise 12: the online softmax, FlashAttention's forward.

    O = softmax(Q K^T / sqrt(d_k)) V     Q (..., L, d_k), K (..., S, d_k), V (..., S, d_v)

Write forward() in ONE pass over the keys, one tile of `block` keys at a time
(K[..., j : j + block, :] and V[..., j : j + block, :]), never holding the (L, S) matrix
of scores: a tile's scores are all you may compute at once. (The checker hands you K and
V as objects that give out such tiles, each key once, and .shape, but refuse to be
read whole.)
Return (O, L): the output O
(..., L, d_v) and each query's log-sum-exp L = log sum_s exp(score_s) (..., L, 1), which
the tiled backward (exercise 13) saves.

Check:   minitransformer exercise check online_softmax
Hints:   minitransformer exercise hint 12   (the text of docs/exercises.md)
"""

import numpy as np


def forward(Q: np.ndarray, K: np.ndarray, V: np.ndarray, block: int):
    """Return (O, L): O (..., L, d_v) and the rows' log-sum-exp L (..., L, 1)."""
    raise NotImplementedError(
        "return (O, L), O (..., L, d_v) and L (..., L, 1), visiting the keys one tile of "
        "`block` at a time, in one pass, with no (L, S) array"
    )
