# ruff: noqa: F821  (runs in the exercise file's namespace: np, log_softmax)
def backward(dloss, z, t):
    p = np.exp(log_softmax(z))  # softmax(z), (..., C)
    onehot = np.zeros_like(z)
    np.put_along_axis(onehot, t[..., None], 1.0, axis=-1)
    rows = t.size  # the loss is a mean over the rows
    return (p - onehot) * dloss / rows
