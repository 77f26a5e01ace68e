"""Exercise 8: splitting into heads and merging them back.

Multi-head attention cuts the E features of each token into nh heads of hs = E / nh:

    split_heads:  x (B, T, E)  -> reshape (B, T, nh, hs) -> transpose (B, nh, T, hs)
    merge_heads:  z (B, nh, T, hs) -> transpose (B, T, nh, hs) -> reshape (B, T, E)

Neither computes anything: they move numbers. Write both backwards: from the gradient of
the output, return the gradient of the input.

Check:   minitransformer exercise check heads
Hints:   minitransformer exercise hint 8   (the text of docs/exercises.md)
"""

import numpy as np


def split_heads(x: np.ndarray, num_heads: int) -> np.ndarray:
    """(B, T, E) -> (B, nh, T, hs), head h holding features h*hs .. (h+1)*hs - 1."""
    B, T, E = x.shape
    return x.reshape(B, T, num_heads, E // num_heads).transpose(0, 2, 1, 3)


def merge_heads(z: np.ndarray) -> np.ndarray:
    """(B, nh, T, hs) -> (B, T, nh * hs): the inverse of split_heads."""
    B, nh, T, hs = z.shape
    return z.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)


def split_heads_backward(dout: np.ndarray, x: np.ndarray, num_heads: int) -> np.ndarray:
    """Return dx (B, T, E) from dout (B, nh, T, hs)."""
    raise NotImplementedError(
        "return dx (B, T, E) from dout (B, nh, T, hs): put every number back where "
        "split_heads took it from"
    )


def merge_heads_backward(dout: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Return dz (B, nh, T, hs) from dout (B, T, E)."""
    raise NotImplementedError(
        "return dz (B, nh, T, hs) from dout (B, T, E): put every number back where "
        "merge_heads took it from"
    )
