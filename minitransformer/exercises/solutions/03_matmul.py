def unbroadcast(grad, shape):
    """Sum grad over the axes that broadcasting added or stretched, back to shape."""
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True)


def backward(dC, A, B):
    dA = dC @ B.swapaxes(-1, -2)  # (..., n, m) @ (..., m, k) -> (..., n, k)
    dB = A.swapaxes(-1, -2) @ dC  # (..., k, n) @ (..., n, m) -> (..., k, m)
    return unbroadcast(dA, A.shape), unbroadcast(dB, B.shape)
