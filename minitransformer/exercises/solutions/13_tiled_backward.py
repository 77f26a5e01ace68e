# ruff: noqa: F821  (runs in the exercise file's namespace: np, forward_with_stats)
def backward(dO, Q, K, V, block):
    O, L = forward_with_stats(Q, K, V, block)  # what the forward saved
    scale = 1 / np.sqrt(Q.shape[-1])
    D = (dO * O).sum(axis=-1, keepdims=True)  # = rowsum(dP * P) over ALL keys, (..., L, 1)
    dQ, dK, dV = np.zeros_like(Q), np.zeros_like(K), np.zeros_like(V)
    for j in range(0, K.shape[-2], block):
        k, v = K[..., j : j + block, :], V[..., j : j + block, :]
        P = np.exp(Q @ k.swapaxes(-1, -2) * scale - L)  # this tile's weights, (..., L, block)
        dV[..., j : j + block, :] = P.swapaxes(-1, -2) @ dO
        dS = P * (dO @ v.swapaxes(-1, -2) - D)  # softmax's backward, tile by tile
        dQ += dS @ k * scale
        dK[..., j : j + block, :] = dS.swapaxes(-1, -2) @ Q * scale
    return dQ, dK, dV
