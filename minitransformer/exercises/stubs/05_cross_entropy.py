"""Exercise 5: log-softmax with cross-entropy.

    loss = mean over the rows r of  -log softmax(z_r)[t_r]

for logits z (..., C) and integer targets t (...). Write backward(): from the scalar
dloss = dL/dloss, return dz = dL/dz. (The targets are integers: they get no gradient.)

Check:   minitransformer exercise check cross_entropy
Hints:   minitransformer exercise hint 5   (the text of docs/exercises.md)
"""

import numpy as np


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax(z) along the last axis, computed stably: z - logsumexp(z)."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def forward(z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The mean cross-entropy of logits z (..., C) against targets t (...): a 0-d array."""
    picked = np.take_along_axis(log_softmax(z), t[..., None], axis=-1)  # (..., 1)
    return -picked.mean()


def backward(dloss: np.ndarray, z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Return dz, of z's shape (..., C). dloss is a 0-d array."""
    raise NotImplementedError(
        "return dz (..., C) from the scalar dloss: the gradient of the mean of "
        "-log softmax(z)[t] over the rows"
    )
