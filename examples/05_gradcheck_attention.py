"""Gradient checking an attention layer, and why it must be done in float64.

``mt.gradcheck`` compares the engine's backward with central finite differences,

    df/dx_i  ~  ( f(x + eps e_i) - f(x - eps e_i) ) / (2 eps),

for every element of every input. Two errors compete in that estimate:

    truncation: the Taylor terms the formula drops,  ~ eps^2 |f'''| / 6   (smaller eps: better)
    rounding:   f is only known to ~u |f| (u = machine epsilon), and dividing the difference
                by 2 eps magnifies that,              ~ u |f| / eps          (smaller eps: worse)

In float64 (u ~ 1.1e-16) with eps = 1e-6 both are tiny (~1e-12 and ~1e-10). In float32
(u ~ 6e-8) the rounding term alone is ~6e-8 / 1e-6 ~ 0.06: the "numerical gradient" is
mostly noise. Its best eps, around u^(1/3) ~ 4e-3, leaves both errors near 1e-5: right at
a typical tolerance, so the check would pass or fail by luck of the function's scale and
curvature. So checks run in float64; the float32 run below fails.

Run:  python examples/05_gradcheck_attention.py
"""

import warnings

import numpy as np

import minitransformer as mt
from minitransformer import nn

B, T, E = 1, 3, 4  # tiny: gradcheck runs two forward passes per input element

mt.manual_seed(0)
attention = nn.Attention(E)  # single head: Q, K, V projections, softmax(QK^T/sqrt(E)) V
params = dict(attention.named_parameters())
x_values = np.random.default_rng(0).standard_normal((B, T, E))  # float64


def attention_output(x: mt.Tensor, *weights: mt.Tensor) -> mt.Tensor:
    """Z for input x. The weights are passed too, so that gradcheck checks their
    gradients as well: it perturbs each of them IN PLACE, and the layer reads them."""
    z, _ = attention(x)  # (B, T, E)
    return z


def check(dtype: np.dtype) -> bool:
    attention.to(dtype)  # in place: the same parameter tensors, now in this dtype
    x = mt.tensor(x_values, dtype=dtype, requires_grad=True)  # (B, T, E)
    x.name = "x"
    for name, p in params.items():
        p.name = name  # named in the error message, should it fail
    inputs = (x, *params.values())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return mt.gradcheck(attention_output, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)
        finally:
            for warning in caught[:1]:  # it warns once per non-float64 input; show one
                print(f"  gradcheck warned: {warning.message}")


count = B * T * E + sum(p.data.size for p in params.values())
print(f"nn.Attention(embed_dim={E}) on x of shape {(B, T, E)}: "
      f"checking dZ/dx and dZ/d(every weight), {count} elements")
print(f"parameters: {', '.join(f'{n} {p.shape}' for n, p in params.items())}")

# ----- 1. float64: passes ---------------------------------------------------------------
print("\n1. float64, eps=1e-6, atol=1e-5, rtol=1e-3")
check(np.dtype("float64"))
print("  float64 gradcheck passed")

# ----- 2. float32: the same check fails -------------------------------------------------
print("\n2. float32, same settings")
try:
    check(np.dtype("float32"))
except mt.GradcheckError as error:
    print(f"  GradcheckError: {error}")
    print("  float32 gradcheck failed, as expected: the backward is right, the finite "
          "differences are not")
else:
    raise SystemExit("the float32 gradcheck was expected to fail")

# ----- 3. the error of one finite difference, as eps shrinks ---------------------------
# f(x) = sum(Z * v) for a fixed random v; its derivative with respect to x[0, 0, 0].
v = np.random.default_rng(1).standard_normal((B, T, E))


def f(x_array: np.ndarray, dtype: np.dtype) -> float:
    with mt.no_grad():
        return float((attention_output(mt.tensor(x_array, dtype=dtype)).numpy() * v).sum())


attention.double()  # the weights were float32 values: now the same values in float64
x = mt.tensor(x_values, requires_grad=True)
(attention_output(x) * mt.tensor(v)).sum().backward()
exact = x.grad.numpy()[0, 0, 0]  # the engine's derivative, in float64

print(f"\n3. |finite difference - backward| for df/dx[0,0,0] = {exact:.10f}")
print(f"{'eps':>8} {'float32':>12} {'float64':>12}")
one = np.zeros((B, T, E))
one[0, 0, 0] = 1.0  # the direction e_i
steps = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
errors = {"float32": [], "float64": []}
for eps in steps:
    for name in errors:
        dtype = np.dtype(name)
        attention.to(dtype)
        # Round the perturbed points to the dtype first, like gradcheck's in-place update.
        plus = (x_values + eps * one).astype(dtype)
        minus = (x_values - eps * one).astype(dtype)
        estimate = (f(plus, dtype) - f(minus, dtype)) / (2 * eps)
        errors[name].append(abs(estimate - exact))
    print(f"{eps:8.0e} {errors['float32'][-1]:12.2e} {errors['float64'][-1]:12.2e}")

for name, errs in errors.items():
    best = int(np.argmin(errs))
    at_default = errs[steps.index(1e-6)]
    print(f"{name}: smallest error {errs[best]:.1e} at eps={steps[best]:.0e}; at gradcheck's "
          f"eps=1e-6 it is {at_default:.1e} (relative: {at_default / abs(exact):.0e})")
print("Large eps: truncation (~eps^2) dominates; small eps: rounding (~u/eps) dominates.")
print("Only float64 makes both small at once, so gradchecks run in float64.")
