"""Exercise 3: the backward of a batched matrix product.

    C = A @ B      A (..., n, k),  B (..., k, m)  ->  C (..., n, m)

The leading (batch) axes broadcast, as in NumPy: B may be a single (k, m) matrix shared by
every item of the batch. Write backward(): from dC = dL/dC, return (dA, dB) with the
shapes of A and B.

Check:   minitransformer exercise check matmul
Hints:   minitransformer exercise hint 3   (the text of docs/exercises.md)
"""

import numpy as np


def forward(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """C = A @ B: (..., n, k) @ (..., k, m) -> (..., n, m), batch axes broadcast."""
    return A @ B


def backward(dC: np.ndarray, A: np.ndarray, B: np.ndarray):
    """Return (dA, dB): dA (..., n, k) of A's shape, dB (..., k, m) of B's shape."""
    raise NotImplementedError(
        "return (dA, dB): dA (..., n, k) and dB (..., k, m) from dC (..., n, m), each "
        "summed back to its input's shape where the batch axes broadcast"
    )
