"""Exercise 1: the chain rule by hand.

    e = a * b,   d = e + c,   f = tanh(d),   out = f * a

Write backward(): from dout = dL/dout, return (da, db, dc). Every operation works element
by element, so the same formulas serve scalars and arrays of any shape.

Check:   minitransformer exercise check chain_rule
Hints:   minitransformer exercise hint 1   (the text of docs/exercises.md)
"""

import numpy as np


def forward(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """out = tanh(a * b + c) * a, element by element; a, b, c and out share one shape."""
    e = a * b
    d = e + c
    f = np.tanh(d)
    return f * a


def backward(dout: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """Return (da, db, dc), each of a's shape."""
    raise NotImplementedError(
        "return (da, db, dc), each of a's shape: follow out = tanh(a*b + c) * a back "
        "to a, b and c (a is used twice)"
    )
