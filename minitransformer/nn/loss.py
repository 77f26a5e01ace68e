"""Losses as modules, PyTorch's names: ``loss = nn.CrossEntropyLoss()(logits, target)``."""

from __future__ import annotations

from typing import Any

from minitransformer import functional as F
from minitransformer.nn.module import Module
from minitransformer.tensor import Tensor


class CrossEntropyLoss(Module):
    """``F.cross_entropy``: logits (N, C) against integer classes (N,), as
    ``torch.nn.CrossEntropyLoss``; ``ignore_index`` (default -100, as in PyTorch) marks rows
    to leave out. One difference: for more than 2 axes the classes are the LAST axis here,
    (..., C), where PyTorch puts them at axis 1, (N, C, ...)."""

    def __init__(self, ignore_index: int | None = -100, reduction: str = "mean") -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return F.cross_entropy(input, target, ignore_index=self.ignore_index,
                               reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"


class MSELoss(Module):
    """``F.mse_loss``: (input - target)^2, averaged ("mean"), added ("sum") or kept ("none")."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return F.mse_loss(input, target, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
