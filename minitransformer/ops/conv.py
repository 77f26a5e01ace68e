"""im2col (unfold) and its adjoint col2im (fold), the two ops a 1-D convolution needs.

:class:`minitransformer.nn.Conv1d` is one unfold followed by one matrix product.
"""

from __future__ import annotations

from typing import Any

from minitransformer import backend
from minitransformer.autograd import Function, Value
from minitransformer.ops.registry import register
from minitransformer.tensor import Tensor

__all__ = ["Fold1d", "Unfold1d", "fold1d", "unfold1d"]


def _window_starts(kernel_size: int, dilation: int) -> list[int]:
    """Offset of the k-th kernel tap inside the (padded) input: k * dilation."""
    return [k * dilation for k in range(kernel_size)]


class Unfold1d(Function):
    """im2col: cols[b, c, k, t] = x_pad[b, c, t + k * dilation], (B, C, T) -> (B, C, K, T_out).

    x_pad is x with ``padding[0]`` zeros before and ``padding[1]`` after, and
    T_out = T + padding[0] + padding[1] - (K - 1) * dilation. Each input value is copied
    into up to K windows, so its gradient is the sum of the gradients of its copies: the
    backward is :class:`Fold1d` (col2im), and Fold1d's backward is Unfold1d again.
    """

    def forward(self, x: Any, kernel_size: int, dilation: int, padding: tuple[int, int]) -> Any:
        self.params = {"kernel_size": kernel_size, "dilation": dilation, "padding": padding}
        xp = backend.array_module_of(x)
        x_pad = xp.pad(x, ((0, 0), (0, 0), padding))  # (B, C, T + pad_left + pad_right)
        length_out = x_pad.shape[-1] - (kernel_size - 1) * dilation
        windows = [x_pad[:, :, s : s + length_out] for s in _window_starts(kernel_size, dilation)]
        return xp.stack(windows, axis=2)  # K views (B, C, T_out) -> (B, C, K, T_out)

    def backward(self, grad: Value) -> tuple[Value]:
        length = self.inputs[0].shape[-1]
        if self.create_graph:  # record col2im as an op of its own
            return (Fold1d.apply(grad, length=length, **self.params),)
        return (_col2im(grad, length, **self.params),)


class Fold1d(Function):
    """col2im, the adjoint of :class:`Unfold1d`: (B, C, K, T_out) -> (B, C, T).

    x[b, c, s] = sum over the (k, t) with t + k * dilation = s + padding[0] of cols[b, c, k, t]
    """

    def forward(self, cols: Any, length: int, kernel_size: int, dilation: int,
                padding: tuple[int, int]) -> Any:
        self.params = {"kernel_size": kernel_size, "dilation": dilation, "padding": padding}
        return _col2im(cols, length, kernel_size, dilation, padding)

    def backward(self, grad: Value) -> tuple[Value]:
        if self.create_graph:
            return (Unfold1d.apply(grad, **self.params),)
        return (Unfold1d().forward(grad, **self.params),)


def _col2im(cols: Any, length: int, kernel_size: int, dilation: int,
            padding: tuple[int, int]) -> Any:
    """Add every window of ``cols`` (B, C, K, T_out) back where it was copied from."""
    xp = backend.array_module_of(cols)
    B, C, _, length_out = cols.shape
    x_pad = xp.zeros((B, C, length + padding[0] + padding[1]), dtype=cols.dtype)
    for k, s in enumerate(_window_starts(kernel_size, dilation)):
        x_pad[:, :, s : s + length_out] += cols[:, :, k]  # (B, C, T_out)
    return x_pad[:, :, padding[0] : padding[0] + length]  # drop the padding: (B, C, T)


@register(top_level=False)
def unfold1d(x: Tensor, kernel_size: int, dilation: int = 1,
             padding: tuple[int, int] = (0, 0)) -> Tensor:
    """The windows of ``x`` (B, C, T) that a kernel visits: (B, C, K, T_out)."""
    return Unfold1d.apply(x, kernel_size=kernel_size, dilation=dilation, padding=tuple(padding))


@register(top_level=False)
def fold1d(cols: Tensor, length: int, kernel_size: int, dilation: int = 1,
           padding: tuple[int, int] = (0, 0)) -> Tensor:
    """Sum windows (B, C, K, T_out) back into a sequence (B, C, length): unfold's adjoint."""
    return Fold1d.apply(cols, length=length, kernel_size=kernel_size, dilation=dilation,
                        padding=tuple(padding))
