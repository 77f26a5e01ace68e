"""Exercise 9: the backward of an embedding lookup, with repeated indices.

    out = W[idx]      W (V, D) a table of V rows,  idx (...) integers  ->  out (..., D)

A sentence may use one word several times: then row W[i] is read several times. Write
backward(): from dout = dL/dout, return dW, of W's shape. (idx gets no gradient.)

Check:   minitransformer exercise check embedding
Hints:   minitransformer exercise hint 9   (the text of docs/exercises.md)
"""

import numpy as np


def forward(idx: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Rows of W: idx (...) -> out (..., D)."""
    return W[idx]


def backward(dout: np.ndarray, idx: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Return dW (V, D) from dout (..., D)."""
    raise NotImplementedError(
        "return dW (V, D) from dout (..., D): every row read by the lookup gets the "
        "gradients of all the places it was read to"
    )
