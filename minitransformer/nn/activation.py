"""Activations as modules, PyTorch's names: for ``nn.Sequential(nn.Linear(4, 8), nn.ReLU())``.

Each one calls its op (``minitransformer.ops.activations``), where forward and backward live.
"""

from __future__ import annotations

from minitransformer import functional as F
from minitransformer.nn.module import Module
from minitransformer.tensor import Tensor


def _refuse_inplace(name: str, inplace: bool) -> None:
    """PyTorch's ``inplace=`` argument: True would change the input itself; refused."""
    if inplace:
        raise NotImplementedError(f"nn.{name}(inplace=True) is not supported here; write "
                                  f"nn.{name}() (the same output, the input unchanged)")


class ReLU(Module):
    """max(0, x)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        _refuse_inplace("ReLU", inplace)
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class GELU(Module):
    """x * Phi(x) (``approximate="tanh"``: the tanh approximation), as ``torch.nn.GELU``."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    """tanh(x)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class Sigmoid(Module):
    """1 / (1 + e^-x)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class SiLU(Module):
    """x * sigmoid(x), as ``torch.nn.SiLU``."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        _refuse_inplace("SiLU", inplace)
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)
