"""The Transformer encoder (Vaswani et al., 2017) and positional encodings.

Submodule names match ``torch.nn.TransformerEncoderLayer`` (``self_attn``, ``linear1``,
``norm1``, ...), so weights map one to one from a PyTorch model (PyTorch packs the three
input projections into ``self_attn.in_proj_weight``; here they are ``q_proj``, ``k_proj``
and ``v_proj``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from minitransformer import backend
from minitransformer.errors import ShapeError
from minitransformer.nn.attention import MultiHeadAttention
from minitransformer.nn.layers import (
    Dropout,
    LayerNorm,
    add_feed_forward,
    feed_forward,
    new_generator,
    new_parameter,
)
from minitransformer.nn.module import Module, ModuleList
from minitransformer.tensor import Tensor, as_dtype, default_generator, float32


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward block, each wrapped in a residual connection.

    Post-norm (``norm_first=False``, the original paper):
        x = norm1(x + dropout1(self_attn(x)))
        x = norm2(x + dropout2(feed_forward(x)))
    Pre-norm (``norm_first=True``, easier to train deep):
        x = x + dropout1(self_attn(norm1(x)))
        x = x + dropout2(feed_forward(norm2(x)))
    with feed_forward(x) = linear2(dropout(activation(linear1(x)))) (:class:`FeedForward`'s
    block; its parts sit on the layer, named as in PyTorch).

    ``forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False)`` with ``src``
    (T, B, d_model), or (B, T, d_model) with ``batch_first=True``; ``is_causal=True`` lets
    position i attend to positions 0..i only; a boolean ``src_mask`` is True where a position
    may NOT attend (as in PyTorch; see :class:`~minitransformer.nn.MultiHeadAttention`),
    ``src_key_padding_mask`` (B, T) is True at padding.

    As in PyTorch, ``batch_first=False`` (the default) takes and returns sequence-first
    tensors (T, B, d_model); ``batch_first=True`` takes and returns (B, T, d_model). Inside,
    the layer runs batch first (a sequence-first input is transposed in and out).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable[[Tensor], Tensor] = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, **kw)
        # linear1, dropout, linear2, activation: the FeedForward block's parts, on the layer
        # itself under PyTorch's names
        add_feed_forward(self, d_model, dim_feedforward, dropout, activation, **kw)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, **kw)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.norm_first = norm_first
        self.batch_first = batch_first

    def forward(self, src: Tensor, src_mask: Any = None,
                src_key_padding_mask: Any = None, is_causal: bool = False) -> Tensor:
        if not self.batch_first and src.ndim == 3:  # (T, B, d_model) in and out
            out = self._forward(src.swapaxes(0, 1),  # (T, B, d_model) -> (B, T, d_model)
                                src_mask, src_key_padding_mask, is_causal)
            return out.swapaxes(0, 1)  # (B, T, d_model) -> (T, B, d_model)
        return self._forward(src, src_mask, src_key_padding_mask, is_causal)

    def _forward(self, src: Tensor, src_mask: Any, src_key_padding_mask: Any,
                 is_causal: bool) -> Tensor:
        x = src  # (B, T, d_model)
        masks = (src_mask, src_key_padding_mask, is_causal)
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), *masks)
            x = x + self._feed_forward(self.norm2(x))
        else:
            x = self.norm1(x + self._self_attention(x, *masks))
            x = self.norm2(x + self._feed_forward(x))
        return x  # (B, T, d_model)

    def _self_attention(self, x: Tensor, mask: Any, key_padding_mask: Any,
                        is_causal: bool = False) -> Tensor:
        attended, _ = self.self_attn(x, attn_mask=mask, key_padding_mask=key_padding_mask,
                                     need_weights=False, is_causal=is_causal)  # (B, T, d_model)
        return self.dropout1(attended)

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.dropout2(feed_forward(self, x))  # (B, T, d_model)

    def extra_repr(self) -> str:
        return (f"norm_first={self.norm_first}, activation={self.activation_name}"
                + (", batch_first=True" if self.batch_first else ""))


def reseed_dropout(module: Module) -> None:
    """Give every random generator inside ``module`` a fresh seed (from the default
    generator), e.g. after a deep copy, so that copies do not draw the same masks."""
    for m in module.modules():
        if isinstance(getattr(m, "generator", None), np.random.Generator):
            m.generator = new_generator()


def clone_layers(layer: Module, num_layers: int) -> ModuleList:
    """``num_layers`` deep copies of ``layer``: the same starting weights (as in PyTorch),
    each drawing dropout masks of its own."""
    layers = ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
    for copied in layers:
        reseed_dropout(copied)
    return layers


class TransformerEncoder(Module):
    """A stack of ``num_layers`` deep copies of ``encoder_layer``, then an optional ``norm``.

    The copies start with the same weights (as in PyTorch) but draw their own dropout masks.
    ``forward(src, mask=None, src_key_padding_mask=None, is_causal=False)`` passes the masks
    to every layer. The layout is the layers' own, as in PyTorch (which reads
    ``encoder_layer.self_attn.batch_first``): (T, B, d_model) for a layer built with the
    default ``batch_first=False``, (B, T, d_model) for one built with ``batch_first=True``.
    """

    def __init__(self, encoder_layer: Module, num_layers: int, norm: Module | None = None) -> None:
        super().__init__()
        self.layers = clone_layers(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.add_module("norm", norm)  # None when there is no final norm

    def forward(self, src: Tensor, mask: Any = None, src_key_padding_mask: Any = None,
                is_causal: bool = False) -> Tensor:
        x = src  # (T, B, d_model), or (B, T, d_model) for batch-first layers
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                      is_causal=is_causal)
        if self.norm is not None:
            x = self.norm(x)
        return x


def _check_positions(x: Tensor, d_model: int, max_len: int, owner: str) -> int:
    """The sequence length T of ``x`` (B, T, d_model) or (T, d_model), checked."""
    if x.ndim not in (2, 3) or x.shape[-1] != d_model:
        raise ShapeError(
            f"{owner} expects input of shape (B, T, {d_model}) or (T, {d_model}) "
            f"(d_model={d_model}), got {x.shape}"
        )
    length = x.shape[-2]
    if length > max_len:
        raise ShapeError(
            f"sequence length {length} exceeds max_len={max_len} of {owner}; "
            f"build it with max_len >= {length}"
        )
    return length


class PositionalEncoding(Module):
    """Adds the fixed sinusoidal position signal of Vaswani et al. (2017):

        PE[pos, 2i]     = sin(pos / 10000^(2i / d_model))
        PE[pos, 2i + 1] = cos(pos / 10000^(2i / d_model))

    Each pair of dimensions is a sine/cosine at its own wavelength (from 2 pi to
    10000 * 2 pi), so every position gets a distinct pattern and a fixed offset is a
    linear map. The table is a buffer ``pe`` (max_len, d_model): saved, moved with
    ``to()``, never trained. ``forward(x)``: x + PE[:T], then dropout.
    """

    def __init__(self, d_model: int, max_len: int = 512, dropout: float = 0.0,
                 dtype: Any = None, device: Any = None) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        position = np.arange(max_len)[:, None]  # (max_len, 1)
        inverse_wavelength = np.exp(-math.log(10000.0) * np.arange(0, d_model, 2) / d_model)
        angles = position * inverse_wavelength  # (max_len, ceil(d_model / 2))
        table = np.zeros((max_len, d_model))
        table[:, 0::2] = np.sin(angles)  # even dimensions
        table[:, 1::2] = np.cos(angles[:, : d_model // 2])  # odd dimensions
        device = backend.normalize_device(device)
        dtype = as_dtype(dtype) or float32
        self.register_buffer("pe", Tensor(table.astype(dtype), device=device))
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        length = _check_positions(x, self.d_model, self.max_len, "PositionalEncoding")
        pe = self.pe[:length]  # (T, d_model), broadcast over the batch
        if pe.dtype != x.dtype:
            pe = pe.to(x.dtype)
        return self.dropout(x + pe)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"


class LearnedPositionalEncoding(Module):
    """Adds a trained vector per position: x + weight[:T], weight (max_len, d_model).

    Initialised N(0, 0.02^2) (as in GPT-2): small next to the token embeddings at first.
    """

    def __init__(self, d_model: int, max_len: int = 512, dtype: Any = None,
                 device: Any = None) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        values = 0.02 * default_generator().standard_normal((max_len, d_model))
        self.weight = new_parameter(values, dtype, device)

    def forward(self, x: Tensor) -> Tensor:
        length = _check_positions(x, self.d_model, self.max_len, "LearnedPositionalEncoding")
        return x + self.weight[:length]  # (B, T, d_model) + (T, d_model)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"
