# ruff: noqa: F821  (runs in the exercise file's namespace: np, EPS)
def backward(dy, x, gamma, beta):
    mu = x.mean(axis=-1, keepdims=True)
    inv_std = 1 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + EPS)  # (..., 1)
    x_hat = (x - mu) * inv_std
    rows = tuple(range(x.ndim - 1))  # gamma and beta are shared by every row
    dgamma = (dy * x_hat).sum(axis=rows)
    dbeta = dy.sum(axis=rows)
    g = dy * gamma  # dL/dx_hat
    # remove g's mean (the mean was subtracted) and its part along x_hat (the scale)
    dx = (g - g.mean(axis=-1, keepdims=True)
          - x_hat * (g * x_hat).mean(axis=-1, keepdims=True)) * inv_std
    return dx, dgamma, dbeta
