# ruff: noqa: F821  (runs in the exercise file's namespace: np, weights)
def unbroadcast(grad, shape):
    """Sum grad over the axes that broadcasting added or stretched, back to shape."""
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True)


def backward(dZ, Q, K, V, mask):
    A = weights(Q, K, mask)  # (..., L, S), 0 at masked positions
    scale = 1 / np.sqrt(Q.shape[-1])
    dV = A.swapaxes(-1, -2) @ dZ  # (..., S, L) @ (..., L, Ev) -> (..., S, Ev)
    dA = dZ @ V.swapaxes(-1, -2)  # (..., L, Ev) @ (..., Ev, S) -> (..., L, S)
    dS = A * (dA - (dA * A).sum(axis=-1, keepdims=True))  # softmax backward; 0 where masked
    dQ = dS @ K * scale  # (..., L, S) @ (..., S, d_k) -> (..., L, d_k)
    dK = dS.swapaxes(-1, -2) @ Q * scale  # (..., S, L) @ (..., L, d_k) -> (..., S, d_k)
    return unbroadcast(dQ, Q.shape), unbroadcast(dK, K.shape), unbroadcast(dV, V.shape)
