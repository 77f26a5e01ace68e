# ruff: noqa: F821  (runs in the exercise file's namespace: np)
def backward(dout, a, b, c):
    f = np.tanh(a * b + c)
    dd = dout * a * (1 - f**2)  # out = f * a: df = dout * a; tanh' = 1 - tanh^2
    da = dout * f + dd * b  # a is used twice: in out = f * a, and in e = a * b
    db = dd * a
    dc = dd
    return da, db, dc
