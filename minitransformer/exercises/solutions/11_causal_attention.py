# ruff: noqa: F821  (runs in the exercise file's namespace: np)
def backward(dZ, Q, K, V):
    dQ, dK, dV = np.zeros_like(Q), np.zeros_like(K), np.zeros_like(V)
    scale = 1 / np.sqrt(Q.shape[-1])
    for i in range(Q.shape[-2]):  # query i, against keys 0..i, as in the forward
        q, k, v = Q[..., i : i + 1, :], K[..., : i + 1, :], V[..., : i + 1, :]
        s = q @ k.swapaxes(-1, -2) * scale  # (..., 1, i + 1)
        a = np.exp(s - s.max(axis=-1, keepdims=True))
        a /= a.sum(axis=-1, keepdims=True)
        dz = dZ[..., i : i + 1, :]  # (..., 1, d_v)
        da = dz @ v.swapaxes(-1, -2)  # (..., 1, i + 1)
        ds = a * (da - (da * a).sum(axis=-1, keepdims=True)) * scale
        dQ[..., i : i + 1, :] = ds @ k
        dK[..., : i + 1, :] += ds.swapaxes(-1, -2) @ q  # keys 0..i: add, every query reads them
        dV[..., : i + 1, :] += a.swapaxes(-1, -2) @ dz
    return dQ, dK, dV
