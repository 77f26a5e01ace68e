"""A tiny GPT: a decoder-only Transformer that predicts the next token, with a KV cache.

    ids (B, T) -> token embedding + position embedding -> N causal blocks -> LayerNorm
               -> logits (B, T, V)        logits[:, t] scores the token at t + 1

A GPT block is the encoder layer in its pre-norm form with one change: the self-attention
is causal, so position t reads positions 0..t only. That is all that makes it a
*decoder*: there is no cross-attention (nothing to cross to) and no encoder.

Because position t never sees t + 1, one forward pass over a whole story trains all T
next-token predictions at once (teacher forcing), and at generation time the keys and
values of the tokens already written never change: the KV cache keeps them, so each new
token costs one position's worth of work instead of the whole prefix's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from minitransformer import backend, nn
from minitransformer import functional as F
from minitransformer.autograd import no_grad
from minitransformer.errors import ShapeError
from minitransformer.nn.decoder import causal_mask
from minitransformer.ops.shape import concat
from minitransformer.runs import config_from_dict
from minitransformer.tensor import Tensor, default_generator

__all__ = ["GPT", "GPTBlock", "GPTConfig", "CausalSelfAttention", "Generation", "KVCache",
           "sample_next"]


@dataclass(frozen=True)
class GPTConfig:
    """The model's shape. ``block_size``: the most positions it can read at once."""

    vocab_size: int
    block_size: int = 64
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    dim_feedforward: int = 128
    dropout: float = 0.0
    tie_weights: bool = True
    activation: str = "relu"  # GPT-2 uses GELU; ReLU is cheaper here and learns as well

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> GPTConfig:
        return config_from_dict(cls, state, "GPT settings")


class KVCache:
    """The keys and values every layer has computed so far, (B, nh, T_past, hs) each.

    ``layers[i]`` is ``(k, v)`` of block i, or None before the first call. They are
    detached copies: a cache is for generation, where nothing is differentiated.
    """

    def __init__(self, n_layer: int) -> None:
        self.layers: list[tuple[Tensor, Tensor] | None] = [None] * n_layer

    @property
    def length(self) -> int:
        """How many positions are cached."""
        first = self.layers[0]
        return 0 if first is None else first[0].shape[2]


class CausalSelfAttention(nn.MultiHeadAttention):
    """Multi-head self-attention in which position t attends to positions 0..t only.

    The projections are those of :class:`~minitransformer.nn.MultiHeadAttention`;
    ``forward(x, cache=None, layer=0) -> (B, T, E)``. With a :class:`KVCache`, ``x`` holds
    only the NEW positions: their keys and values are appended to the cache, and their
    queries attend to every cached position plus the new ones up to themselves:

        new query i (absolute position P + i) may see keys 0 .. P + i      (P = cached)
    """

    def forward(self, x: Tensor, cache: KVCache | None = None,  # type: ignore[override]
                layer: int = 0) -> Tensor:
        B, L, E = x.shape
        q = self._split_heads(self.q_proj(x), "Q")  # (B, L, E) -> (B, nh, L, hs)
        k = self._split_heads(self.k_proj(x), "K")  # (B, nh, L, hs)
        v = self._split_heads(self.v_proj(x), "V")  # (B, nh, L, hs)
        dropout_p = self.dropout if self.training else 0.0
        # the weights only when asked for (store_attention: the attend command, heatmaps);
        # without them, long contexts run the tiled path, O(T) memory
        attend = (F.scaled_dot_product_attention_with_weights if self.store_attention
                  else F.scaled_dot_product_attention)
        if cache is None:
            result = attend(q, k, v, is_causal=True, dropout_p=dropout_p,
                            generator=self.generator)
        else:
            past = cache.layers[layer]
            P = 0 if past is None else past[0].shape[2]
            if past is not None:
                k = concat([past[0], k], axis=2)  # (B, nh, P + L, hs)
                v = concat([past[1], v], axis=2)  # (B, nh, P + L, hs)
            cache.layers[layer] = (k.detach(), v.detach())
            # the causal mask's last L rows: new query i sees keys 0..P+i (one row: all keys)
            mask = None if L == 1 else causal_mask(P + L, device=x.device)[P:]  # (L, P + L)
            result = attend(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                            generator=self.generator)
        if self.store_attention:
            out, weights = result
            self.last_attention = weights.detach()  # (B, nh, L, P + L)
        else:
            out = result  # (B, nh, L, hs)
        out = out.transpose(0, 2, 1, 3)  # (B, nh, L, hs) -> (B, L, nh, hs)
        return self.out_proj(out.reshape(B, L, E))  # (B, L, nh, hs) -> (B, L, E) -> (B, L, E)


class GPTBlock(nn.TransformerEncoderLayer):
    """A pre-norm encoder layer whose self-attention is causal:

        x = x + dropout1(causal_self_attn(norm1(x)))
        x = x + dropout2(feed_forward(norm2(x)))
    """

    def __init__(self, config: GPTConfig, dtype: Any = None, device: Any = None) -> None:
        super().__init__(config.n_embd, config.n_head, config.dim_feedforward, config.dropout,
                         config.activation, batch_first=True, norm_first=True, dtype=dtype,
                         device=device)
        self.self_attn = CausalSelfAttention(config.n_embd, config.n_head,
                                             dropout=config.dropout, dtype=dtype, device=device)

    def forward(self, x: Tensor, cache: KVCache | None = None,  # type: ignore[override]
                layer: int = 0) -> Tensor:
        x = x + self.dropout1(self.self_attn(self.norm1(x), cache, layer))  # (B, T, E)
        return x + self._feed_forward(self.norm2(x))  # (B, T, E)


@dataclass
class Generation:
    """What :meth:`GPT.generate` produced: the ids (prompt then new tokens) and, for every
    new token, the logits it was drawn from, (new, V)."""

    ids: np.ndarray
    logits: np.ndarray


class GPT(nn.Module):
    """Decoder-only Transformer language model.

    ``forward(ids, cache=None)``: ids (B, T) -> logits (B, T, V). With ``tie_weights`` the
    output projection is the token embedding itself (logits = h W_emb^T), which saves
    V x E parameters and ties "what a token means" on input to "how to score it" on output.
    """

    def __init__(self, config: GPTConfig, dtype: Any = None, device: Any = None) -> None:
        super().__init__()
        self.config = config
        E = config.n_embd
        self.token_embedding = nn.Embedding(config.vocab_size, E, dtype=dtype, device=device)
        # GPT-2's N(0, 0.02^2): small, so that tied output logits start near 0
        values = 0.02 * default_generator().standard_normal((config.vocab_size, E))
        self.token_embedding.weight.data[...] = backend.to_device(
            values.astype(self.token_embedding.weight.dtype), self.token_embedding.weight.device)
        self.position_embedding = nn.LearnedPositionalEncoding(E, config.block_size,
                                                               dtype=dtype, device=device)
        self.blocks = nn.ModuleList(GPTBlock(config, dtype, device)
                                    for _ in range(config.n_layer))
        self.norm = nn.LayerNorm(E, dtype=dtype, device=device)
        if config.tie_weights:
            self.add_module("lm_head", None)
        else:
            self.lm_head = nn.Linear(E, config.vocab_size, bias=False, dtype=dtype, device=device)

    def forward(self, ids: Any, cache: KVCache | None = None) -> Tensor:
        ids = ids.data if isinstance(ids, Tensor) else np.asarray(ids)
        if ids.ndim != 2:
            raise ShapeError(f"GPT expects token ids of shape (B, T), got {ids.shape}")
        start = 0 if cache is None else cache.length
        T = ids.shape[1]
        if start + T > self.config.block_size:
            raise ShapeError(f"{start + T} positions do not fit this GPT's block_size="
                             f"{self.config.block_size}")
        x = self.token_embedding(ids)  # (B, T, E)
        x = x + self.position_embedding.weight[start : start + T]  # (B, T, E) + (T, E)
        for index, block in enumerate(self.blocks):
            x = block(x, cache, index)  # (B, T, E)
        x = self.norm(x)
        if self.lm_head is None:
            return F.linear(x, self.token_embedding.weight)  # (B, T, E) @ (E, V) -> (B, T, V)
        return self.lm_head(x)  # (B, T, V)

    def attention_maps(self, ids: Any) -> list[np.ndarray]:
        """Every block's causal attention weights for ``ids`` (B, T): (B, nh, T, T) each."""
        attentions = [block.self_attn for block in self.blocks]
        was_training = self.training
        self.eval()
        for attention in attentions:
            attention.store_attention = True
        try:
            with no_grad():
                self(ids)
            return [backend.to_numpy(a.last_attention.data) for a in attentions]
        finally:
            for attention in attentions:
                attention.store_attention = False
                attention.last_attention = None
            self.train(was_training)

    def generate(self, prompt: Any, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None, use_cache: bool = True,
                 stop_id: int | None = None) -> Generation:
        """Continue ``prompt`` (a 1-D list or array of ids) by ``max_new_tokens`` tokens.

        Each token is drawn from softmax(logits / temperature) over the ``top_k`` highest
        logits (all when None); ``temperature=0`` takes the most likely token. ``seed``
        makes the draws reproducible. ``use_cache=False`` recomputes the whole prefix for
        every token, which gives the same tokens and logits, only slower. Stops early
        after ``stop_id``.
        """
        ids = [int(i) for i in np.asarray(prompt).reshape(-1)]
        if not ids:
            raise ValueError("generate needs a prompt of at least one token (e.g. <bos>)")
        if len(ids) + max_new_tokens > self.config.block_size:
            raise ShapeError(f"a prompt of {len(ids)} tokens plus {max_new_tokens} new ones "
                             f"exceed this GPT's block_size={self.config.block_size}")
        rng = np.random.default_rng(seed)
        was_training = self.training
        self.eval()
        cache = KVCache(self.config.n_layer) if use_cache else None
        all_logits = []
        try:
            with no_grad():
                feed = ids
                for _ in range(max_new_tokens):
                    logits = self(np.array([feed]), cache)  # (1, T_feed, V)
                    last = backend.to_numpy(logits.data[0, -1]).astype(np.float64)  # (V,)
                    all_logits.append(last)
                    ids.append(sample_next(last, temperature, top_k, rng))
                    if stop_id is not None and ids[-1] == stop_id:
                        break
                    feed = ids[-1:] if use_cache else ids
        finally:
            self.train(was_training)
        return Generation(np.array(ids), np.array(all_logits).reshape(-1, self.config.vocab_size))


def sample_next(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None,
                rng: np.random.Generator | None = None) -> int:
    """One token id from ``logits`` (V,): the argmax at ``temperature`` 0, else a draw from
    softmax(logits / temperature) restricted to the ``top_k`` largest logits."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if temperature == 0:
        return int(np.argmax(logits))
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    if top_k is not None and top_k < scaled.size:
        kth = np.sort(scaled)[-top_k]  # the k-th largest logit
        scaled = np.where(scaled >= kth, scaled, -np.inf)
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    rng = rng if rng is not None else np.random.default_rng()
    return int(rng.choice(probs.size, p=probs))
