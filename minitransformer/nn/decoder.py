"""The Transformer decoder and the whole encoder-decoder model (Vaswani et al., 2017).

    model = nn.Transformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2)
    out = model(src, tgt, tgt_mask=nn.Transformer.generate_square_subsequent_mask(T))

A decoder layer is an encoder layer with one more sub-block in the middle: after masked
self-attention over the target, *cross-attention* lets every target position look at the
encoder's output (the "memory"). Queries come from the target, keys and values from the
memory, so nothing about the memory is causal: each target position may read all of it.

Names and arguments follow ``torch.nn.TransformerDecoderLayer``, ``TransformerDecoder`` and
``Transformer`` (``self_attn``, ``multihead_attn``, ``norm3``, ``tgt_mask``, ``memory_mask``,
``tgt_is_causal`` ...), so weights map one to one from a PyTorch model, and masks mean what
they mean there. The layout is PyTorch's too: ``batch_first=False`` (the default) takes and
returns sequence-first tensors (T, B, d_model); ``batch_first=True`` takes (B, T, d_model).
``dropout`` defaults to 0.1, as there (pass ``dropout=0.0`` for none). One difference, on
purpose: ``tgt_is_causal=True`` *applies* the causal mask (alone, or together with
``tgt_mask``); in PyTorch it is only a hint that ``tgt_mask`` already is causal, and
``tgt_mask`` is required.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from minitransformer import backend
from minitransformer.errors import ShapeError
from minitransformer.nn.attention import MultiHeadAttention, check_batch_first
from minitransformer.nn.layers import Dropout, LayerNorm, add_feed_forward, feed_forward
from minitransformer.nn.module import Module
from minitransformer.nn.transformer import (
    TransformerEncoder,
    TransformerEncoderLayer,
    clone_layers,
)
from minitransformer.tensor import Tensor, as_dtype, default_generator, float32

__all__ = [
    "Transformer", "TransformerDecoder", "TransformerDecoderLayer", "causal_mask",
]


def causal_mask(length: int, source_length: int | None = None, device: Any = None) -> Tensor:
    """The boolean causal mask (length, source_length): True where query i MAY attend to
    key j, i.e. j <= i (the lower triangle, ``tril``), in the convention of
    :func:`~minitransformer.functional.scaled_dot_product_attention`.

        causal_mask(3)  ->  [[T, F, F],
                             [T, T, F],
                             [T, T, T]]

    For ``nn.MultiHeadAttention`` and the Transformer layers use
    :meth:`Transformer.generate_square_subsequent_mask` (a float mask, the same in every
    convention) or pass ``is_causal=True``.
    """
    source_length = length if source_length is None else source_length
    if length < 0 or source_length < 0:
        raise ValueError(f"causal_mask needs lengths >= 0, got {length} and {source_length}")
    allowed = np.tril(np.ones((length, source_length), dtype=bool))  # (L, S)
    return Tensor._from_array(backend.to_device(allowed, backend.normalize_device(device)),
                              backend.normalize_device(device))


class TransformerDecoderLayer(Module):
    """Masked self-attention, cross-attention over the memory, feed-forward; each wrapped
    in a residual connection.

    Post-norm (``norm_first=False``, the original paper):
        x = norm1(x + dropout1(self_attn(x, x, x)))                 target looks at itself
        x = norm2(x + dropout2(multihead_attn(x, memory, memory)))  then at the source
        x = norm3(x + dropout3(feed_forward(x)))
    Pre-norm (``norm_first=True``):
        x = x + dropout1(self_attn(norm1(x)))
        x = x + dropout2(multihead_attn(norm2(x), memory, memory))
        x = x + dropout3(feed_forward(norm3(x)))
    with feed_forward(x) = linear2(dropout(activation(linear1(x)))), :class:`FeedForward`'s block
    on parts of the layer's own (PyTorch's names).

    ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False)`` with
    ``tgt`` (T, B, d_model) and ``memory`` (S, B, d_model), sequence first as in PyTorch, or
    (B, T, d_model) and (B, S, d_model) with ``batch_first=True`` (inside, the layer runs
    batch first; a sequence-first input is transposed in and out). ``tgt_mask`` (T, T) and
    ``memory_mask`` (T, S) mean what ``attn_mask`` means for
    :class:`~minitransformer.nn.MultiHeadAttention`, as in PyTorch: boolean True = may NOT
    attend, a float mask is added to the scores; the key-padding masks are True at padding.
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
        bias: bool = True,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.batch_first = batch_first
        self.self_attn = MultiHeadAttention(d_model, nhead, bias=bias, dropout=dropout, **kw)
        self.multihead_attn = MultiHeadAttention(d_model, nhead, bias=bias, dropout=dropout,
                                                 **kw)
        add_feed_forward(self, d_model, dim_feedforward, dropout, activation, bias, **kw)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, **kw)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, **kw)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Any = None,
        memory_mask: Any = None,
        tgt_key_padding_mask: Any = None,
        memory_key_padding_mask: Any = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> Tensor:
        batch_first = getattr(self, "batch_first", True)  # a layer pickled before the flag
        _check_pair(tgt, memory, self.self_attn.embed_dim, batch_first)
        if not batch_first:  # (T, B, d_model), (S, B, d_model) in and out
            out = self._forward(tgt.swapaxes(0, 1),  # (T, B, d_model) -> (B, T, d_model)
                                memory.swapaxes(0, 1),  # (S, B, d_model) -> (B, S, d_model)
                                tgt_mask, memory_mask, tgt_key_padding_mask,
                                memory_key_padding_mask, tgt_is_causal, memory_is_causal)
            return out.swapaxes(0, 1)  # (B, T, d_model) -> (T, B, d_model)
        return self._forward(tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
                             memory_key_padding_mask, tgt_is_causal, memory_is_causal)

    def _forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Any, memory_mask: Any,
                 tgt_key_padding_mask: Any, memory_key_padding_mask: Any,
                 tgt_is_causal: bool, memory_is_causal: bool) -> Tensor:
        x = tgt  # (B, T, d_model)
        self_args = (tgt_mask, tgt_key_padding_mask, tgt_is_causal)
        cross_args = (memory, memory_mask, memory_key_padding_mask, memory_is_causal)
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), *self_args)
            x = x + self._cross_attention(self.norm2(x), *cross_args)
            x = x + self._feed_forward(self.norm3(x))
        else:
            x = self.norm1(x + self._self_attention(x, *self_args))
            x = self.norm2(x + self._cross_attention(x, *cross_args))
            x = self.norm3(x + self._feed_forward(x))
        return x  # (B, T, d_model)

    def _self_attention(self, x: Tensor, mask: Any, key_padding_mask: Any,
                        is_causal: bool) -> Tensor:
        attended, _ = self.self_attn(x, x, x, attn_mask=mask, key_padding_mask=key_padding_mask,
                                     need_weights=False, is_causal=is_causal)  # (B, T, d_model)
        return self.dropout1(attended)

    def _cross_attention(self, x: Tensor, memory: Tensor, mask: Any, key_padding_mask: Any,
                         is_causal: bool) -> Tensor:
        # queries from the target (B, T, d_model); keys and values from the memory (B, S, ...)
        attended, _ = self.multihead_attn(x, memory, memory, attn_mask=mask,
                                          key_padding_mask=key_padding_mask, need_weights=False,
                                          is_causal=is_causal)  # (B, T, d_model)
        return self.dropout2(attended)

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.dropout3(feed_forward(self, x))  # (B, T, d_model)

    def extra_repr(self) -> str:
        return (f"norm_first={self.norm_first}, activation={self.activation_name}"
                + (", batch_first=True" if getattr(self, "batch_first", True) else ""))


def _check_pair(tgt: Tensor, memory: Tensor, d_model: int, batch_first: bool) -> None:
    if batch_first:
        check_batch_first("the decoder's", "d_model", d_model, tgt=tgt, memory=memory)
        return
    for name, x in (("tgt", tgt), ("memory", memory)):
        if x.ndim != 3 or x.shape[-1] != d_model:
            raise ShapeError(
                f"the decoder's {name} must have shape (length, B, {d_model}) (sequence first, "
                f"batch_first=False, d_model={d_model}), got {x.shape}; build the layer with "
                f"batch_first=True for (B, length, {d_model})"
            )
    if tgt.shape[1] != memory.shape[1]:
        raise ShapeError(f"tgt and memory must have the same batch size (dimension 1, "
                         f"sequence first), got shapes {tgt.shape}, {memory.shape}")


class TransformerDecoder(Module):
    """A stack of ``num_layers`` deep copies of ``decoder_layer``, then an optional ``norm``.

    Every layer reads the same ``memory`` (the encoder's output); the layout is the layers'
    own, as in :class:`~minitransformer.nn.TransformerEncoder`. ``forward(tgt, memory,
    tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False)`` passes
    the masks to every layer.
    """

    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int,
                 norm: Module | None = None) -> None:
        super().__init__()
        self.layers = clone_layers(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.add_module("norm", norm)  # None when there is no final norm

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Any = None,
        memory_mask: Any = None,
        tgt_key_padding_mask: Any = None,
        memory_key_padding_mask: Any = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> Tensor:
        x = tgt  # (T, B, d_model), or (B, T, d_model) for batch-first layers
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        if self.norm is not None:
            x = self.norm(x)
        return x


class Transformer(Module):
    """The encoder-decoder model of "Attention Is All You Need".

        memory = encoder(src)                  (S, B, d_model): the source, read both ways
        output = decoder(tgt, memory)          (T, B, d_model): the target, causally, with
                                               cross-attention over the memory

    Sequence first, as in PyTorch (``batch_first=False``, the default); with
    ``batch_first=True`` src, tgt and the output are (B, S, d_model) and (B, T, d_model).

    Both stacks end with a LayerNorm (``encoder.norm``, ``decoder.norm``), and every weight
    matrix starts Xavier-uniform, as in ``torch.nn.Transformer``. Embeddings, positions and
    the output projection to a vocabulary are the caller's (see ``examples/``).

    ``forward(src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
    src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
    src_is_causal=False, tgt_is_causal=False, memory_is_causal=False)``.
    """

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable[[Tensor], Tensor] = "relu",
        custom_encoder: Module | None = None,
        custom_decoder: Module | None = None,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            encoder_layer = TransformerEncoderLayer(
                d_model, nhead, dim_feedforward, dropout, activation,
                layer_norm_eps=layer_norm_eps, batch_first=batch_first, norm_first=norm_first,
                **kw)
            self.encoder = TransformerEncoder(encoder_layer, num_encoder_layers,
                                              LayerNorm(d_model, eps=layer_norm_eps, **kw))
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            decoder_layer = TransformerDecoderLayer(
                d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                batch_first=batch_first, norm_first=norm_first, bias=bias, **kw)
            self.decoder = TransformerDecoder(decoder_layer, num_decoder_layers,
                                              LayerNorm(d_model, eps=layer_norm_eps, **kw))
        self.d_model = d_model
        self.nhead = nhead
        self.batch_first = batch_first
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Xavier-uniform on every matrix: U(-a, a), a = sqrt(6 / (fan_in + fan_out)),
        which keeps the variance of activations and gradients alike through a layer."""
        rng = default_generator()
        for p in self.parameters():
            if p.ndim > 1:
                fan_out, fan_in = p.shape[0], int(np.prod(p.shape[1:]))
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                values = rng.uniform(-bound, bound, p.shape).astype(p.dtype)
                p.data[...] = backend.to_device(values, p.device)

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_mask: Any = None,
        tgt_mask: Any = None,
        memory_mask: Any = None,
        src_key_padding_mask: Any = None,
        tgt_key_padding_mask: Any = None,
        memory_key_padding_mask: Any = None,
        src_is_causal: bool = False,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> Tensor:
        batch_first = getattr(self, "batch_first", True)  # a model pickled before the flag
        batch_axis = 0 if batch_first else 1
        if src.ndim != 3 or tgt.ndim != 3 or src.shape[batch_axis] != tgt.shape[batch_axis]:
            layout = ("src (B, S, d_model) and tgt (B, T, d_model) with the same batch size B "
                      "(batch_first=True)" if batch_first else
                      "src (S, B, d_model) and tgt (T, B, d_model) with the same batch size B "
                      "(sequence first, batch_first=False; build it with batch_first=True for "
                      "(B, S, d_model))")
            raise ShapeError(f"Transformer expects {layout}, got {src.shape} and {tgt.shape}")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ShapeError(
                f"the feature size of src and tgt must equal d_model={self.d_model}, got "
                f"{src.shape} and {tgt.shape}"
            )
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                              is_causal=src_is_causal)  # (S, B, d_model) or (B, S, d_model)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(size: int, dtype: Any = None,
                                        device: Any = None) -> Tensor:
        """The float causal mask (size, size): 0 on and below the diagonal, -inf above it
        (position i may not look at j > i). Added to the scores, so it means the same in
        every boolean convention; as ``torch.nn.Transformer.generate_square_subsequent_mask``.
        """
        dtype = as_dtype(dtype) or float32
        future = np.triu(np.full((size, size), -np.inf), k=1).astype(dtype)  # (T, T)
        device = backend.normalize_device(device)
        return Tensor._from_array(backend.to_device(future, device), device)

