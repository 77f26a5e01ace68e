"""Autograd basics: tensors, ops, backward, .grad, accumulation and no_grad.

Every op on a tensor that requires grad is recorded as a node of a graph. ``backward()``
walks that graph from the output back to the leaves, applying the chain rule at each
node, and leaves d(output)/d(leaf) in every leaf's ``.grad``. This script builds a tiny
graph whose gradients we can work out by hand, and checks the engine against them.

Run:  python examples/01_autograd_basics.py
"""

import math

import numpy as np

import minitransformer as mt

# ----------------------------------------------------------------------------------------
# 1. Tensors. A Python float becomes float32; requires_grad=True marks a leaf we want
#    gradients for (a parameter, or an input we are curious about).
# ----------------------------------------------------------------------------------------
a = mt.tensor(2.0, requires_grad=True)
b = mt.tensor(-3.0, requires_grad=True)
print("1. leaves")
print(f"   a = {a}    a.is_leaf={a.is_leaf}, a.dtype={a.dtype}")
print(f"   b = {b}")

# ----------------------------------------------------------------------------------------
# 2. A tiny graph:  c = a * b,  d = c + b**2,  L = tanh(d)
#    Each intermediate remembers the op that made it (its grad_fn); leaves have none.
# ----------------------------------------------------------------------------------------
c = a * b  # -6
d = c + b**2  # -6 + 9 = 3
L = d.tanh()  # tanh(3) ~ 0.995
print("\n2. forward:  c = a*b,  d = c + b**2,  L = tanh(d)")
print(f"   c = {c.item():.4f}   (recorded by {c.grad_fn.name})")
print(f"   d = {d.item():.4f}   (recorded by {d.grad_fn.name})")
print(f"   L = {L.item():.6f}   (recorded by {L.grad_fn.name})")

# ----------------------------------------------------------------------------------------
# 3. Backward. The chain rule, by hand:
#    dL/dd = 1 - tanh(d)^2                       (derivative of tanh)
#    dL/da = dL/dd * dd/dc * dc/da = dL/dd * 1 * b
#    dL/db = dL/dd * (dc/db + d(b^2)/db) = dL/dd * (a + 2b)
#    b reaches d along two paths (through c and through b**2): its gradient is the SUM
#    of the two contributions. That sum is what the engine does at every shared node.
# ----------------------------------------------------------------------------------------
L.backward()
dL_dd = 1 - math.tanh(3.0) ** 2
by_hand_a = dL_dd * (-3.0)
by_hand_b = dL_dd * (2.0 + 2 * -3.0)
print("\n3. backward")
print(f"   a.grad = {a.grad.item(): .8f}   by hand: {by_hand_a: .8f}")
print(f"   b.grad = {b.grad.item(): .8f}   by hand: {by_hand_b: .8f}")
# float32 arithmetic: agreement to ~1e-7 relative, not exactly.
assert math.isclose(a.grad.item(), by_hand_a, rel_tol=1e-5)
assert math.isclose(b.grad.item(), by_hand_b, rel_tol=1e-5)
# Intermediate tensors do not keep a .grad (it would cost memory for every activation)
# unless asked with retain_grad().
print(f"   c.grad = {c.grad}   (not a leaf, so not kept)")

# ----------------------------------------------------------------------------------------
# 4. Accumulation. backward ADDS into .grad rather than overwriting it: that is how a
#    parameter used in several places (or over several mini-batches) sums its gradients.
#    Consequence: zero the gradients before each training step.
# ----------------------------------------------------------------------------------------
x = mt.tensor([1.0, 2.0, 3.0], requires_grad=True)  # (3,)
y = (x * x).sum()  # scalar; dy/dx = 2x
y.backward(retain_graph=True)  # keep the saved values: we backward through y again
print("\n4. accumulation: y = sum(x*x), dy/dx = 2x")
print(f"   after one backward:   x.grad = {x.grad.numpy()}")
y.backward()
print(f"   after two backwards:  x.grad = {x.grad.numpy()}   (2x + 2x: accumulated)")
assert np.allclose(x.grad.numpy(), 4 * x.detach().numpy())
x.zero_grad()  # an optimizer's zero_grad does this for every parameter
print(f"   after x.zero_grad():  x.grad = {x.grad}")

# Without retain_graph, backward frees the values the graph saved for it, so a second
# backward through the same graph is an error (a clear one, naming the op).
y = (x * x).sum()
y.backward()
try:
    y.backward()
except mt.GraphError as error:
    print(f"   backward twice on a fresh graph: GraphError: {str(error)[:56]}...")

# ----------------------------------------------------------------------------------------
# 5. no_grad: inside the block nothing is recorded. Use it for evaluation and for
#    updating parameters (an update must not itself become part of the graph).
# ----------------------------------------------------------------------------------------
with mt.no_grad():
    z = x * 2
print("\n5. no_grad")
print(f"   z = x * 2 under no_grad: z.requires_grad={z.requires_grad}, grad_fn={z.grad_fn}")
w = x * 2
print(f"   w = x * 2 outside:       w.requires_grad={w.requires_grad}, "
      f"grad_fn={w.grad_fn.name}")

# ----------------------------------------------------------------------------------------
# 6. A matrix example: L = sum(W @ v). Every output element is sum_j W[i, j] v[j], so
#    dL/dW[i, j] = v[j] for every row i, and dL/dv[j] = sum_i W[i, j].
# ----------------------------------------------------------------------------------------
W = mt.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)  # (2, 3)
v = mt.tensor([0.5, -1.0, 2.0], requires_grad=True)  # (3,)
out = W @ v  # (2, 3) @ (3,) -> (2,)
out.sum().backward()
print("\n6. L = sum(W @ v),  W (2, 3), v (3,)")
print(f"   W.grad rows: {W.grad.numpy()[0]}, {W.grad.numpy()[1]}   by hand: every row is v")
print(f"   v.grad = {v.grad.numpy()}   by hand: column sums of W = "
      f"{W.detach().numpy().sum(axis=0)}")
assert np.allclose(W.grad.numpy(), np.broadcast_to(v.detach().numpy(), (2, 3)))
assert np.allclose(v.grad.numpy(), W.detach().numpy().sum(axis=0))

print("\nall gradients match the hand-derived values")
