"""Losses as modules, PyTorch's names: ``loss = nn.CrossEntropyLoss()(logits, target)``."""

from __future__ import annotations

from typing import Any

from minitransformer import functional as F
from minitransformer.nn.module import Module
from minitransformer.tensor import Tensor


class CrossEntropyLoss(Module):
    """``F.cross_entropy`` as a module, ``torch.nn.CrossEntropyLoss``'s arguments and layout:
    input (N, C) or (N, C, d1, ...) (classes on axis 1) or (C,); target class indices
    (N, d1, ...) or class probabilities of input's shape. ``ignore_index`` (default -100, as
    in PyTorch) marks examples to leave out; ``weight`` (C,) weighs the classes."""

    def __init__(self, weight: Any = None, ignore_index: int | None = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.weight = weight
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return (f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
                f"label_smoothing={self.label_smoothing}")


class MSELoss(Module):
    """``F.mse_loss``: (input - target)^2, averaged ("mean"), added ("sum") or kept ("none")."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return F.mse_loss(input, target, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
