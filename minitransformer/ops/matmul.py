"""Matrix product with NumPy's rules: batched, broadcast leading axes, 1-D operands."""

from __future__ import annotations

from typing import Any

from minitransformer import backend
from minitransformer.autograd import Function, Value
from minitransformer.errors import DtypeMismatchError, ShapeError, cpp_dtype_name
from minitransformer.ops.registry import register
from minitransformer.ops.shape import unbroadcast
from minitransformer.tensor import Tensor, as_tensor


class MatMul(Function):
    """Y = M @ N, (..., n, k) @ (..., k, m) -> (..., n, m).

    dM = dY @ N^T  (..., n, m) @ (..., m, k) -> (..., n, k)
    dN = M^T @ dY  (..., k, n) @ (..., n, m) -> (..., k, m)
    then summed over any broadcast leading axes. A 1-D M is a row (1, k) and a 1-D N a
    column (k, 1), whose extra axis the product drops, so the backward puts it back.
    (Letters M, N, Y, not A, B, Z: in attention A and Z are the weights and the output.)

    The common case of a layer, (..., n, k) @ (k, m), is done as ONE 2-D product over all
    the rows, (N, k) @ (k, m): BLAS is much faster on one tall matrix than on a stack of
    small ones, and dN = M^T dY then sums over the rows inside the product itself.
    """

    fresh_input_gradients = True  # new arrays from every plain backward (see Function)

    def forward(self, a: Any, b: Any) -> Any:
        inner_a = a.shape[-1] if a.ndim else None
        inner_b = (b.shape[-2] if b.ndim > 1 else b.shape[0]) if b.ndim else None
        if a.ndim == 0 or b.ndim == 0 or inner_a != inner_b:
            raise ShapeError(
                f"matmul of incompatible shapes {a.shape} and {b.shape}: "
                f"inner dimensions {inner_a} and {inner_b} differ"
                if a.ndim and b.ndim
                else f"matmul needs at least 1-D operands, got shapes {a.shape} and {b.shape}"
            )
        if a.dtype != b.dtype:  # after the shapes, as PyTorch; it never promotes in a matmul
            raise _dtype_mismatch(a.dtype, b.dtype)
        a, b = _blas_ready(a), _blas_ready(b)
        if a.ndim > 2 and b.ndim == 2:
            rows = a.reshape(-1, a.shape[-1])  # (..., n, k) -> (N, k)
            return (rows @ b).reshape(*a.shape[:-1], b.shape[-1])  # -> (..., n, m)
        try:
            return a @ b
        except ValueError:
            raise ShapeError(
                f"matmul of shapes {a.shape} and {b.shape}: leading (batch) dimensions "
                f"{a.shape[:-2]} and {b.shape[:-2]} do not broadcast"
            ) from None

    def backward(self, grad: Value) -> tuple[Value, Value]:
        a, b = self.args
        need_a, need_b = self.needs_input_grad
        if not self.create_graph:
            grad = _blas_ready(grad)
        if a.ndim > 2 and b.ndim == 2:
            return self._backward_rows(a, b, grad)
        a2 = a.reshape(1, -1) if a.ndim == 1 else a  # (k,) -> (1, k)
        b2 = b.reshape(-1, 1) if b.ndim == 1 else b  # (k,) -> (k, 1)
        if b.ndim == 1:
            grad = self.xp.expand_dims(grad, -1)  # (..., n) -> (..., n, 1)
        if a.ndim == 1:
            grad = self.xp.expand_dims(grad, -2)  # (..., m) -> (..., 1, m)
        da = db = None
        if need_a:
            da = unbroadcast(grad @ b2.swapaxes(-1, -2), a2.shape).reshape(a.shape)
        if need_b:
            db = unbroadcast(a2.swapaxes(-1, -2) @ grad, b2.shape).reshape(b.shape)
        return da, db

    def _backward_rows(self, a: Value, b: Value, grad: Value) -> tuple[Value, Value]:
        """(..., n, k) @ (k, m) with the leading axes folded into rows: N = prod(...) * n."""
        need_a, need_b = self.needs_input_grad
        grad_rows = grad.reshape(-1, grad.shape[-1])  # (N, m)
        da = db = None
        if need_a:
            da = (grad_rows @ b.swapaxes(-1, -2)).reshape(a.shape)  # (N, m) @ (m, k) -> (..., n, k)
        if need_b:
            rows = a.reshape(-1, a.shape[-1])  # (N, k)
            db = rows.swapaxes(-1, -2) @ grad_rows  # (k, N) @ (N, m) -> (k, m)
        return da, db


class Linear(Function):
    """y = x W^T + b, W of shape (out, in) as in PyTorch: one node for a layer's product and
    its bias (the composed ``x @ W.T + b`` is :func:`minitransformer.functional.linear_reference`).

    With the leading axes of x folded into rows, X (N, in), G = dL/dy (N, out):
        dX = G W        (N, out) @ (out, in) -> (N, in)
        dW = G^T X      (out, N) @ (N, in)   -> (out, in)
        db = sum of G over the rows           -> (out,)
    Fused because the bias is then added into the product's own output, in place: one pass
    over y and one array fewer than a separate Add node (measured in docs/benchmarks.md).
    """

    fresh_input_gradients = True  # new arrays from every plain backward (see Function)

    uses_input_values = (True, True, False)  # db needs only the bias' shape

    def forward(self, x: Any, weight: Any, bias: Any = None) -> Any:
        rows = _as_rows(_blas_ready(x))  # (..., in) -> (N, in)
        y = rows @ weight.T  # (N, in) @ (in, out) -> (N, out), a new array
        if bias is not None:
            y += bias  # into the product's output: no second (N, out) array
        return y if x.ndim == 2 else y.reshape(*x.shape[:-1], weight.shape[0])  # (..., out)

    def backward(self, grad: Value) -> tuple[Value | None, ...]:
        x, weight = self.args[:2]
        need_x, need_weight, *need_bias = self.needs_input_grad
        if not self.create_graph:
            grad = _blas_ready(grad)
        grad_rows = _as_rows(grad)  # (N, out)
        dx = dw = db = None
        if need_x:
            dx = grad_rows @ weight  # (N, out) @ (out, in) -> (N, in)
            dx = dx if x.ndim == 2 else dx.reshape(x.shape)  # -> (..., in)
        if need_weight:
            dw = grad_rows.swapaxes(-1, -2) @ _as_rows(x)  # (out, N) @ (N, in) -> (out, in)
        if not need_bias:  # called without a bias
            return dx, dw
        if need_bias[0]:
            # (N, out) -> (out,); on arrays as a product with ones (see backend.sum_rows)
            db = grad_rows.sum(axis=0) if self.create_graph else backend.sum_rows(grad_rows)
        return dx, dw, db


def _as_rows(x: Value) -> Value:
    """(..., k) -> (N, k), N the product of the leading axes; a 2-D x as it is (so that a
    graph recorded under create_graph has no reshape that changes nothing)."""
    return x if x.ndim == 2 else x.reshape(-1, x.shape[-1])


def _blas_ready(x: Any) -> Any:
    """A copy of an array that has a zero stride (a broadcast view, such as the gradient of
    a sum); NumPy's matmul cannot hand those to BLAS and falls back to a slow loop."""
    if 0 not in x.strides:
        return x
    return x.copy()


@register(method=True)
def matmul(a: Any, b: Any) -> Tensor:
    if not isinstance(a, Tensor):
        a = as_tensor(a, b)
    elif not isinstance(b, Tensor):
        b = as_tensor(b, a)
    return MatMul.apply(a, b)


# PyTorch's C++ names for dtypes, as its matmul error spells them.
def _dtype_mismatch(a_dtype: Any, b_dtype: Any) -> DtypeMismatchError:
    """PyTorch's error for a @ b of two dtypes (it never promotes in a matmul), with the fix."""
    names = [cpp_dtype_name(d) for d in (a_dtype, b_dtype)]
    return DtypeMismatchError(
        f"expected m1 and m2 to have the same dtype, but got: {names[0]} != {names[1]} "
        f"(a @ b of {a_dtype} and {b_dtype}: convert one, b.to(a.dtype), or both, "
        f"a.float() @ b.float())")
