"""Coreference models without self-attention in the encoder: a BiLSTM and a stack of convolutions.

They exist to test the comparison of self-attention with RNNs and CNNs on the same task.
Each replaces the Transformer encoder of :class:`~minitransformer.coref.models.coref.CorefModel`
and keeps everything else: the same token embedding, the same
:class:`~minitransformer.coref.models.coref.PointerHead` and so the same loss, and the same call
``forward(ids, pronoun, padding_mask) -> (scores, weights)``, so the training loop of
:mod:`minitransformer.coref.training` (``batch_loss``, ``evaluate``) runs them unchanged.

    ids -> Embedding -> BiLSTM                                        -> h (B, T, 2H) -> PointerHead
    ids -> Embedding -> [x + relu(Conv1d(LayerNorm(x)))] * num_layers -> h (B, T, E)  -> PointerHead

Note what the shared head implies: the pointer head is itself one attention step (the
pronoun's query against every position's key), so it reaches any distance in one step
whatever the encoder is. The encoders differ in what each position's vector knows about
its context before that step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from minitransformer import nn
from minitransformer.coref.models.coref import PointerHead, on_device
from minitransformer.nn.conv import Conv1d
from minitransformer.nn.rnn import LSTM
from minitransformer.tensor import Tensor

__all__ = [
    "ConvCorefModel", "EncoderConfig", "LSTMCorefModel", "ResidualConvBlock", "count_parameters",
]


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes of a baseline. ``hidden_size``: per LSTM direction; ``num_layers``: LSTM or
    convolution layers; ``kernel_size`` for the convolutions only."""

    vocab_size: int
    d_model: int = 32
    hidden_size: int = 28
    num_layers: int = 1
    kernel_size: int = 3


class LSTMCorefModel(nn.Module):
    """Embedding + bidirectional LSTM + :class:`PointerHead` over the 2H-wide states.

    Padding is handled with the LSTM's ``lengths``: padded steps do not touch the state,
    so the backward direction starts at each sentence's own last word.
    """

    def __init__(self, config: EncoderConfig, device: Any = None) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=0,
                                      device=device)
        self.encoder = LSTM(config.d_model, config.hidden_size, num_layers=config.num_layers,
                            bidirectional=True, batch_first=True, device=device)
        self.pointer = PointerHead(2 * config.hidden_size, device=device)

    def forward(self, ids: Any, pronoun: Any, padding_mask: Any) -> tuple[Tensor, Tensor]:
        device = self.embedding.weight.device
        padding_mask = on_device(padding_mask, device)
        lengths = (~padding_mask.numpy()).sum(axis=1)  # (B,) real tokens per sentence
        x = self.embedding(on_device(ids, device))  # (B, T, E)
        h, _ = self.encoder(x, lengths=lengths)  # (B, T, 2H), zeros at padding
        return self.pointer(h, pronoun, padding_mask)  # (B, T), (B, T)


class ResidualConvBlock(nn.Module):
    """x + relu(conv(norm(x))) on (B, T, E), with padding positions kept at zero.

    Zeroing the padding after each block means a sentence is convolved exactly as if it
    stood alone, zero-padded ("same"), whatever the length of the batch's longest one.
    """

    def __init__(self, d_model: int, kernel_size: int, device: Any = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model, device=device)
        self.conv = Conv1d(d_model, d_model, kernel_size, padding="same", device=device)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        y = self.norm(x).swapaxes(1, 2)  # (B, T, E) -> (B, E, T): channels before time
        y = self.conv(y).relu().swapaxes(1, 2)  # (B, E, T) -> (B, T, E)
        return (x + y) * keep  # keep (B, T, 1): 1 at real tokens, 0 at padding


class ConvCorefModel(nn.Module):
    """Embedding + ``num_layers`` residual convolution blocks + :class:`PointerHead`.

    No positional encoding: a convolution knows relative positions inside its window. One
    position's vector depends on ``num_layers * (kernel_size - 1) + 1`` tokens around it.
    """

    def __init__(self, config: EncoderConfig, device: Any = None) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=0,
                                      device=device)
        self.blocks = nn.ModuleList(ResidualConvBlock(config.d_model, config.kernel_size,
                                                      device=device)
                                    for _ in range(config.num_layers))
        self.pointer = PointerHead(config.d_model, device=device)

    @property
    def receptive_field(self) -> int:
        return self.config.num_layers * (self.config.kernel_size - 1) + 1

    def forward(self, ids: Any, pronoun: Any, padding_mask: Any) -> tuple[Tensor, Tensor]:
        device = self.embedding.weight.device
        padding_mask = on_device(padding_mask, device)
        x = self.embedding(on_device(ids, device))  # (B, T, E)
        keep = Tensor(~padding_mask.numpy()[:, :, None], device=device).to(x.dtype)  # (B, T, 1)
        for block in self.blocks:
            x = block(x, keep)  # (B, T, E)
        return self.pointer(x, pronoun, padding_mask)  # (B, T), (B, T)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters in total and without the token embedding (whose size is the vocabulary's)."""
    total = model.num_parameters()
    embedding = int(np.prod(model.embedding.weight.shape))
    return {"total": total, "without_embedding": total - embedding}
