# ruff: noqa: F821  (runs in the exercise file's namespace: np)
def forward(Q, K, V, block):
    scale = 1 / np.sqrt(Q.shape[-1])
    m = np.full((*Q.shape[:-1], 1), -np.inf)  # (..., L, 1) the largest score so far
    l = np.zeros((*Q.shape[:-1], 1))  # (..., L, 1) sum of exp(score - m)
    o = np.zeros((*Q.shape[:-1], V.shape[-1]))  # (..., L, d_v) sum of exp(score - m) v
    for j in range(0, K.shape[-2], block):
        S = Q @ K[..., j : j + block, :].swapaxes(-1, -2) * scale  # (..., L, block)
        m_new = np.maximum(m, S.max(axis=-1, keepdims=True))
        P = np.exp(S - m_new)  # every entry <= 1: no overflow
        alpha = np.exp(m - m_new)  # what was summed against the old maximum, rescaled
        l = l * alpha + P.sum(axis=-1, keepdims=True)
        o = o * alpha + P @ V[..., j : j + block, :]
        m = m_new
    return o / l, m + np.log(l)  # divide once, at the end
