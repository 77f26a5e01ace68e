def unbroadcast(grad, shape):
    """Sum grad over the axes that broadcasting added or stretched, back to shape."""
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))  # added leading axes
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True)  # axes of size 1 in the input


def backward(dout, x, w):
    return unbroadcast(dout * w, x.shape), unbroadcast(dout * x, w.shape)
