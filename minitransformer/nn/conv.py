"""One-dimensional convolution, written as im2col (unfold) followed by one matrix product.

    y[b, o, t] = bias[o] + sum_{c, k} weight[o, c, k] * x_pad[b, c, t + k * dilation]

Every output position only reads a window of ``(kernel_size - 1) * dilation + 1`` inputs,
and all positions are computed at once, so a convolution layer is one parallel step whose
view of the sequence is local: a stack of L layers of kernel k (dilation 1) sees
``L * (k - 1) + 1`` tokens, so spanning T tokens takes ``ceil((T - 1) / (k - 1))`` layers
(:meth:`Conv1d.layers_to_span`).

The layout is PyTorch's, channels before time: x (B, C_in, T) -> y (B, C_out, T_out), and
the parameters are ``weight`` (C_out, C_in, k) and ``bias`` (C_out,), initialised as in
``torch.nn.Conv1d``: uniform in [-1/sqrt(C_in * k), 1/sqrt(C_in * k)]. A sequence model
that works in (B, T, E) transposes before and after.
"""

from __future__ import annotations

import math
from typing import Any

from minitransformer.errors import ShapeError
from minitransformer.nn.layers import new_parameter
from minitransformer.nn.module import Module
from minitransformer.ops.conv import fold1d, unfold1d
from minitransformer.tensor import Tensor, default_generator

__all__ = ["Conv1d", "fold1d", "unfold1d"]


# ----- the layer -------------------------------------------------------------------------------
class Conv1d(Module):
    """A 1-D convolution over time, PyTorch layout: (B, C_in, T) -> (B, C_out, T_out).

        cols = unfold(x)                        (B, C_in, K, T_out)   every window
        y = W (C_out, C_in*K) @ cols (B, C_in*K, T_out) + b            one matmul

    ``padding``: ``"same"`` (T_out = T; with an odd total the extra zero goes after, as in
    PyTorch), ``"valid"`` (none) or an int put on both sides. The matrix product and its
    gradients are the engine's; only the unfold has a hand-written backward (col2im).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 padding: str | int = 0, dilation: int = 1, bias: bool = True,
                 dtype: Any = None, device: Any = None) -> None:
        super().__init__()
        if min(in_channels, out_channels, kernel_size, dilation) < 1:
            raise ValueError(f"in_channels, out_channels, kernel_size and dilation must be "
                             f">= 1, got {in_channels}, {out_channels}, {kernel_size}, "
                             f"{dilation}")
        if not (padding in ("same", "valid") or (isinstance(padding, int) and padding >= 0)):
            raise ValueError(f"padding must be 'same', 'valid' or an int >= 0, got {padding!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.padding = padding
        self.dilation = dilation
        bound = 1 / math.sqrt(in_channels * kernel_size)
        rng = default_generator()
        self.weight = new_parameter(
            rng.uniform(-bound, bound, (out_channels, in_channels, kernel_size)), dtype, device)
        if bias:
            self.bias = new_parameter(rng.uniform(-bound, bound, (out_channels,)), dtype, device)
        else:
            self.register_parameter("bias", None)

    def padding_sides(self) -> tuple[int, int]:
        """Zeros added (before, after) the sequence."""
        if self.padding == "valid":
            return 0, 0
        if self.padding == "same":
            total = (self.kernel_size - 1) * self.dilation
            return total // 2, total - total // 2
        return self.padding, self.padding

    @property
    def receptive_field(self) -> int:
        """How many consecutive inputs one output depends on."""
        return (self.kernel_size - 1) * self.dilation + 1

    def layers_to_span(self, length: int) -> int:
        """How many such layers, stacked, let one output see ``length`` consecutive tokens."""
        return max(1, math.ceil((length - 1) / (self.receptive_field - 1)))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ShapeError(f"Conv1d expects input of shape (B, C_in, T) with C_in = "
                             f"{self.in_channels} (channels before time, as in PyTorch), "
                             f"got {x.shape}")
        padding = self.padding_sides()
        if x.shape[-1] + sum(padding) < self.receptive_field:
            raise ShapeError(f"input of length {x.shape[-1]} (+{sum(padding)} padding) is "
                             f"shorter than the kernel's span {self.receptive_field}")
        B = x.shape[0]
        cols = unfold1d(x, self.kernel_size, self.dilation, padding)  # (B, C_in, K, T_out)
        length_out = cols.shape[-1]
        # (B, C_in, K, T_out) -> (B, C_in*K, T_out): one column of C_in*K values per position
        cols = cols.reshape(B, self.in_channels * self.kernel_size, length_out)
        kernel = self.weight.reshape(self.out_channels, -1)  # (C_out, C_in*K)
        y = kernel @ cols  # (C_out, C_in*K) @ (B, C_in*K, T_out) -> (B, C_out, T_out)
        if self.bias is not None:
            y = y + self.bias.reshape(self.out_channels, 1)  # (C_out, 1) over every position
        return y

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"padding={self.padding!r}, dilation={self.dilation}, "
                f"bias={self.bias is not None}")
