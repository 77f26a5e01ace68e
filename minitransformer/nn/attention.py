"""Attention: one head written out equation by equation, then the batched multi-head form.

Boolean masks mean what they mean in each layer's PyTorch twin, so that a ported mask
attends where it did there: ``MultiHeadAttention`` (like ``torch.nn.MultiheadAttention``,
and the Transformer layers built on it) takes True as "may NOT attend"; ``Attention``, like
:func:`minitransformer.functional.scaled_dot_product_attention` (and PyTorch's), takes
True as "MAY attend". A float mask is added to the scores everywhere (``-inf`` forbids).
"""

from __future__ import annotations

import math
from typing import Any

from minitransformer import backend
from minitransformer import functional as F
from minitransformer.errors import DtypeError, ShapeError
from minitransformer.nn.layers import Linear, new_generator
from minitransformer.nn.module import Module
from minitransformer.ops import sdpa
from minitransformer.tensor import Tensor, bool_


def as_mask(mask: Any, like: Tensor) -> Tensor:
    """``mask`` as a tensor on ``like``'s device; a float mask also takes ``like``'s dtype."""
    if not isinstance(mask, Tensor):
        mask = Tensor(mask, device=like.device)
    if mask.dtype.kind == "f" and mask.dtype != like.dtype:
        mask = mask.to(like.dtype)
    if mask.dtype != bool_ and mask.dtype.kind != "f":
        raise DtypeError(f"an attention mask must be boolean or floating, got {mask.dtype}")
    return mask


class Attention(Module):
    """Single-head self-attention, one line per equation:

        Q = X W_Q,   K = X W_K,   V = X W_V        (learned projections)
        S = Q K^T                                   (S[i, j]: how well query i matches key j)
        S_hat = S / sqrt(d_k)                       (keeps the scores' scale independent of d_k)
        A = softmax(S_hat)                          (row-wise: each query's weights sum to 1)
        Z = A V                                     (each output: a weighted mean of values)

    ``forward(x, attn_mask=None)`` takes X of shape (B, T, E) (or (T, E)) and returns
    ``(Z, A)``. ``attn_mask`` (T, T) or (B, T, T): boolean True where query i may attend to
    key j, or float values added to S_hat. A query that the mask allows no key at all
    gets zero weights and Z = 0, as in ``F.scaled_dot_product_attention`` (the rule of
    :func:`minitransformer.ops.activations.softmax_in_place`). Set ``store_attention =
    True`` to keep a detached copy of A, with a head axis of size 1, as ``last_attention``
    ((B, 1, T, T), or (1, T, T) for a (T, E) input).
    """

    def __init__(self, embed_dim: int, bias: bool = True, dtype: Any = None,
                 device: Any = None) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.q_proj = Linear(embed_dim, embed_dim, bias, dtype=dtype, device=device)  # W_Q
        self.k_proj = Linear(embed_dim, embed_dim, bias, dtype=dtype, device=device)  # W_K
        self.v_proj = Linear(embed_dim, embed_dim, bias, dtype=dtype, device=device)  # W_V
        self.store_attention = False
        self.last_attention: Tensor | None = None

    def forward(self, x: Tensor, attn_mask: Any = None) -> tuple[Tensor, Tensor]:
        _check_features(x, self.embed_dim, "x")
        d_k = self.embed_dim
        Q = self.q_proj(x)  # (B, T, d_k)   Q = X W_Q
        K = self.k_proj(x)  # (B, T, d_k)   K = X W_K
        V = self.v_proj(x)  # (B, T, d_v)   V = X W_V
        S = Q @ K.swapaxes(-1, -2)  # (B, T, d_k) @ (B, d_k, T) -> (B, T, T)   S = Q K^T
        S_hat = S / math.sqrt(d_k)  # (B, T, T)   S_hat = S / sqrt(d_k)
        if attn_mask is None:
            A = F.softmax(S_hat, axis=-1)  # (B, T, T)   A = softmax(S_hat), rows sum to 1
        else:
            mask = as_mask(attn_mask, S_hat)
            if mask.dtype != bool_:  # a float mask is added to the scores (-inf forbids)
                S_hat, mask = S_hat + mask, None
            A = F.masked_softmax(S_hat, mask, axis=-1)  # (B, T, T), masked: 0; no key: row 0
        Z = A @ V  # (B, T, T) @ (B, T, d_v) -> (B, T, d_v)   Z = A V
        # Z's backward reads A: the caller gets A read-only, and a stored copy.
        backend.make_read_only(A.data)
        _name(x=x, Q=Q, K=K, V=V, S=S, S_hat=S_hat, A=A, Z=Z)
        if self.store_attention:
            self.last_attention = _copy(A).expand_dims(-3)  # (B, 1, T, T): one head
        return Z, A

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}"


def _copy(t: Tensor) -> Tensor:
    """A detached copy: stored attention weights share no memory with the graph."""
    return Tensor._from_array(t.data.copy(), t.device)


def _name(x: Tensor | None = None, **tensors: Tensor) -> None:
    """Give intermediates the article's symbols, for graphs and traces (a few attribute
    writes per call). The input is called X only if its owner has not named it."""
    if x is not None and x.name is None:
        x.name = "X"
    for symbol, t in tensors.items():
        if t is not None:  # the weights, when need_weights=False
            t.name = symbol


def _check_features(x: Tensor, embed_dim: int, name: str) -> None:
    if x.ndim not in (2, 3) or x.shape[-1] != embed_dim:
        raise ShapeError(
            f"{name} must have shape (B, T, {embed_dim}) or (T, {embed_dim}) "
            f"(embed_dim={embed_dim}), got {x.shape}"
        )


def check_batch_first(owner: str, size_name: str, size: int, **tensors: Tensor) -> None:
    """Each tensor (B, length, size), batch first, all with one B; else a ShapeError that
    names the owner, the tensor and the shapes (shared by the attention and decoder layers)."""
    for name, x in tensors.items():
        if x.ndim != 3 or x.shape[-1] != size:
            raise ShapeError(
                f"{owner} {name} must have shape (B, length, {size}) (batch first, "
                f"{size_name}={size}), got {x.shape}"
            )
    if len({x.shape[0] for x in tensors.values()}) > 1:
        *names, last = tensors
        shapes = ", ".join(str(x.shape) for x in tensors.values())
        raise ShapeError(f"{', '.join(names)} and {last} must have the same batch size, got "
                         f"shapes {shapes}")


class MultiHeadAttention(Module):
    """Multi-head attention, batch first: every head attends in its own subspace.

    With E = embed_dim split into nh = num_heads heads of size hs = E / nh:

        Q = query W_Q^T,  K = key W_K^T,  V = value W_V^T          (B, L|S|S, E)
        head_h = softmax(Q_h K_h^T / sqrt(hs) + mask) V_h          (B, L, hs) for each h
        output = concat(head_1, ..., head_nh) W_O^T                (B, L, E)

    All heads run at once as one batched matmul on (B, nh, L, hs) tensors.
    ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj`` are Linear layers; PyTorch's packed
    ``in_proj_weight`` is ``concat([q_proj.weight, k_proj.weight, v_proj.weight])``.

    ``forward(query, key=None, value=None, attn_mask=None, key_padding_mask=None,
    need_weights=True, average_attn_weights=True) -> (output, weights)``:

    - ``key``/``value`` default to ``query`` (self-attention); for cross-attention the
      query has L positions and key/value S positions.
    - ``attn_mask`` (L, S), (B, L, S) or (B, nh, L, S): boolean True = may NOT attend (as
      in torch.nn.MultiheadAttention; the opposite of ``F.scaled_dot_product_attention``),
      or float values added to the scores. A 3-D mask here is per batch element (PyTorch's
      is per (batch, head), shaped (B * nh, L, S)).
    - ``key_padding_mask`` (B, S) boolean: True at PADDING keys to ignore (as in PyTorch).
    - ``is_causal=True``: query i sees keys 0..i only, together with any other mask. (In
      PyTorch it is only a hint that ``attn_mask`` is causal and needs ``attn_mask``.)
    - ``weights``: (B, L, S) averaged over heads, (B, nh, L, S) with
      ``average_attn_weights=False``, None with ``need_weights=False``.

    With ``store_attention = True``, ``last_attention`` holds a detached copy of the
    per-head weights (B, nh, L, S) after every forward; otherwise nothing is kept.
    """

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, dropout: float = 0.0,
                 dtype: Any = None, device: Any = None) -> None:
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MultiHeadAttention: {name} must be a positive integer, "
                                 f"got {value!r}")
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {dropout}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = Linear(embed_dim, embed_dim, bias, dtype=dtype, device=device)
        self.k_proj = Linear(embed_dim, embed_dim, bias, dtype=dtype, device=device)
        self.v_proj = Linear(embed_dim, embed_dim, bias, dtype=dtype, device=device)
        self.out_proj = Linear(embed_dim, embed_dim, bias, dtype=dtype, device=device)
        self.generator = new_generator()  # for dropout on the attention weights
        self.store_attention = False
        self.last_attention: Tensor | None = None

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        attn_mask: Any = None,
        key_padding_mask: Any = None,
        need_weights: bool = True,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        key = query if key is None else key
        value = key if value is None else value
        self._check_shapes(query, key, value)
        B, L, E = query.shape

        q = self._split_heads(self.q_proj(query), "Q")  # (B, L, E) -> (B, nh, L, hs)
        k = self._split_heads(self.k_proj(key), "K")  # (B, S, E) -> (B, nh, S, hs)
        v = self._split_heads(self.v_proj(value), "V")  # (B, S, E) -> (B, nh, S, hs)

        mask = self._merge_masks(attn_mask, key_padding_mask, q, k)  # broadcasts to (B, nh, L, S)
        # the engine behind F.scaled_dot_product_attention(_with_weights), which also takes
        # is_causal with a mask; without weights, large calls run tiled (O(n) memory)
        heads, weights = sdpa.attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0, generator=self.generator,
            need_weights=need_weights or self.store_attention,
        )  # heads (B, nh, L, hs), weights (B, nh, L, S) or None
        _name(Q_heads=q, K_heads=k, V_heads=v, Z_heads=heads, A=weights)
        heads = heads.transpose(0, 2, 1, 3)  # (B, nh, L, hs) -> (B, L, nh, hs)
        heads = heads.reshape(B, L, E)  # (B, L, nh, hs) -> (B, L, E): heads side by side
        output = self.out_proj(heads)  # (B, L, E)
        _name(query if key is query else None, Z_concat=heads, output=output)

        if self.store_attention:
            self.last_attention = _copy(weights)  # (B, nh, L, S)
        if not need_weights:
            return output, None
        if average_attn_weights:
            weights = weights.mean(axis=1)  # (B, nh, L, S) -> (B, L, S)
        backend.make_read_only(weights.data)  # a backward may read it: no writes by callers
        return output, weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"

    def _split_heads(self, x: Tensor, symbol: str) -> Tensor:
        """(B, T, E) -> (B, nh, T, hs): each head's slice of E, heads as a batch axis."""
        x.name = symbol  # the projection before the split: Q, K or V
        B, T, _ = x.shape
        x = x.reshape(B, T, self.num_heads, self.head_dim)  # (B, T, E) -> (B, T, nh, hs)
        return x.transpose(0, 2, 1, 3)  # (B, T, nh, hs) -> (B, nh, T, hs)

    def _check_shapes(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        check_batch_first("MultiHeadAttention", "embed_dim", self.embed_dim,
                          query=query, key=key, value=value)
        if key.shape[1] != value.shape[1]:
            raise ShapeError(
                f"key and value must have the same length S, got shapes {key.shape} and "
                f"{value.shape}"
            )

    def _merge_masks(self, attn_mask: Any, key_padding_mask: Any, q: Tensor,
                     k: Tensor) -> Tensor | None:
        """``attn_mask`` and ``key_padding_mask`` as one mask in the sdpa convention
        (boolean True = allowed, float added), broadcastable to (B, nh, L, S)."""
        B, nh, L, _ = q.shape
        S = k.shape[2]
        mask = None
        if attn_mask is not None:
            mask = as_mask(attn_mask, q)
            if mask.dtype == bool_:
                mask = ~mask  # PyTorch's True = "may not attend" -> sdpa's True = "may attend"
            if mask.shape not in ((L, S), (B, L, S), (B, nh, L, S)):
                raise ShapeError(
                    f"attn_mask must have shape (L, S), (B, L, S) or (B, nh, L, S) with "
                    f"B={B}, nh={nh}, L={L}, S={S}, got {mask.shape}"
                )
            if mask.ndim == 3:
                mask = mask.reshape(B, 1, L, S)  # (B, L, S) -> (B, 1, L, S): same for all heads
        if key_padding_mask is None:
            return mask
        padding = as_mask(key_padding_mask, q)
        if padding.dtype != bool_ or padding.shape != (B, S):
            raise ShapeError(
                f"key_padding_mask must be boolean of shape (B, S) = ({B}, {S}), True at "
                f"padding; got {padding.dtype} of shape {padding.shape}"
            )
        keep = ~padding.reshape(B, 1, 1, S)  # (B, S) -> (B, 1, 1, S)
        if mask is None:
            return keep
        if mask.dtype == bool_:
            return mask & keep  # (B, 1 or nh, L, S)
        return mask.masked_fill(~keep, -math.inf)  # float mask: padding scores -> -inf


class MultiheadAttention(MultiHeadAttention):
    """``torch.nn.MultiheadAttention``'s spelling and argument order: ``(embed_dim,
    num_heads, dropout=0.0, bias=True, batch_first=False)``.

    As in PyTorch, ``batch_first=False`` (the default) takes and returns sequence-first
    tensors (L, B, E); ``batch_first=True`` takes (B, L, E) like
    :class:`MultiHeadAttention`. The weights come back (B, L, S) either way, and masks mean
    what they mean in PyTorch. Not supported: ``add_bias_kv``, ``add_zero_attn``,
    ``kdim``/``vdim``.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False, dtype: Any = None, device: Any = None) -> None:
        super().__init__(embed_dim, num_heads, bias=bias, dropout=dropout, dtype=dtype,
                         device=device)
        self.batch_first = batch_first

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor | None]:
        if self.batch_first or query.ndim != 3:
            return super().forward(query, key, value, *args, **kwargs)
        # (L, B, E) -> (B, L, E) in, and back out; the weights are (B, L, S) in PyTorch too
        query, key, value = (None if t is None else t.swapaxes(0, 1) for t in (query, key, value))
        out, weights = super().forward(query, key, value, *args, **kwargs)
        return out.swapaxes(0, 1), weights

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, batch_first={self.batch_first}"
