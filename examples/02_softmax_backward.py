"""Softmax backward by hand: the full Jacobian, the shortcut, and the engine.

Attention turns scores into weights with a softmax, so every gradient that reaches the
queries and keys passes through the softmax's backward. For s = softmax(z):

    s_i = exp(z_i) / sum_k exp(z_k)
    ds_i/dz_j = s_i (delta_ij - s_j)        i.e.  J = diag(s) - s s^T   (n, n)

Given the upstream gradient g = dL/ds, backward returns dL/dz = J^T g. J is symmetric,
and multiplying it out gives a shortcut that never builds the n x n matrix:

    dL/dz = (diag(s) - s s^T) g = s * g - s (s . g) = s * (g - sum(g * s))

That is O(n) instead of O(n^2), which matters: attention has one softmax row per query.

Run:  python examples/02_softmax_backward.py
"""

import numpy as np

import minitransformer as mt

rng = np.random.default_rng(0)
n = 5
z_values = rng.standard_normal(n)  # float64: we compare to ~1e-16, not float32's ~1e-7
g = rng.standard_normal(n)  # the upstream gradient dL/ds, as if from the rest of a network

# ----- forward -------------------------------------------------------------------------
z = mt.tensor(z_values, requires_grad=True)  # (n,)
s = mt.softmax(z, axis=-1)  # (n,)
s_np = s.detach().numpy()
np.set_printoptions(precision=6, suppress=True, linewidth=100)
print(f"z              = {z_values}")
print(f"s = softmax(z) = {s_np}   (sums to {s_np.sum():.15f})")
print(f"g = dL/ds      = {g}")

# ----- 1. the full Jacobian ------------------------------------------------------------
J = np.diag(s_np) - np.outer(s_np, s_np)  # (n, n): J[i, j] = ds_i / dz_j
grad_jacobian = J.T @ g  # (n, n) @ (n,) -> (n,)
print(f"\nJacobian J = diag(s) - s s^T, shape {J.shape}:")
print(J)
print("each row sums to 0: adding a constant to every z leaves s unchanged "
      f"(max |row sum| = {np.abs(J.sum(axis=1)).max():.1e})")

# ----- 2. the shortcut -----------------------------------------------------------------
grad_shortcut = s_np * (g - np.sum(g * s_np))  # (n,)

# ----- 3. the engine -------------------------------------------------------------------
# Backward from s with gradient g: the same as backward from L = sum(g * s).
s.backward(mt.tensor(g))
grad_engine = z.grad.numpy()

print("\ndL/dz three ways:")
print(f"  J^T g                  = {grad_jacobian}")
print(f"  s * (g - sum(g * s))   = {grad_shortcut}")
print(f"  engine (z.grad)        = {grad_engine}")
difference = max(
    np.abs(grad_engine - grad_jacobian).max(),
    np.abs(grad_engine - grad_shortcut).max(),
)
print(f"max difference between the three: {difference:.2e}")
assert difference < 1e-12, difference

# The gradient sums to zero for the same reason the Jacobian's rows do: softmax cannot
# see a shift of all scores, so no gradient pushes all of them together.
print(f"sum of dL/dz = {grad_engine.sum():.1e}  (zero up to rounding)")
