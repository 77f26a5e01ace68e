# ruff: noqa: F821  (runs in the exercise file's namespace: np)
def backward(dout, idx, W):
    dW = np.zeros_like(W)
    # np.add.at adds once per occurrence; dW[idx] += dout would keep only one of them
    np.add.at(dW, idx, dout)
    return dW
