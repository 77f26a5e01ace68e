"""The basic layers: Linear, Embedding, LayerNorm, Dropout, Softmax, FeedForward.

Each layer owns its parameters and calls one function of :mod:`minitransformer.functional`
(where the maths is). Initial values are drawn from ``mt.default_generator()``, so
``mt.manual_seed(0)`` before building a model makes it reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minitransformer import backend
from minitransformer import functional as F
from minitransformer.nn.module import Module, Parameter
from minitransformer.tensor import Tensor, as_dtype, default_generator, float32


def new_generator(seed: int | None = None) -> np.random.Generator:
    """A NumPy generator for a module's dropout: from ``seed``, or seeded from the default
    generator (so ``mt.manual_seed`` makes dropout masks reproducible too)."""
    if seed is None:
        seed = int(default_generator().integers(2**63))
    return np.random.default_rng(seed)


def new_parameter(values: np.ndarray, dtype: Any, device: Any) -> Parameter:
    """A Parameter holding ``values`` (drawn on the host) as ``dtype`` (default float32)."""
    dtype = as_dtype(dtype) or float32
    device = backend.normalize_device(device)
    return Parameter(backend.to_device(values.astype(dtype), device))


class Linear(Module):
    """y = x W^T + b, with W of shape (out_features, in_features) as in PyTorch.

    Both W and b start uniform in [-1/sqrt(in_features), 1/sqrt(in_features)] (PyTorch's
    default), which keeps the output's scale close to the input's.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: Any = None, device: Any = None) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Linear: {name} must be a positive integer, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        bound = 1 / math.sqrt(in_features)
        rng = default_generator()
        self.weight = new_parameter(rng.uniform(-bound, bound, (out_features, in_features)),
                                 dtype, device)
        if bias:
            self.bias = new_parameter(rng.uniform(-bound, bound, (out_features,)), dtype, device)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class _ZeroRowGrad:
    """Gradient hook that zeroes one row, so the padding embedding never changes.

    A small class rather than a closure so that models can still be copied and pickled.
    """

    def __init__(self, row: int) -> None:
        self.row = row

    def __call__(self, grad: Tensor) -> Tensor:
        xp = backend.array_module(grad.device)
        is_row = xp.zeros((grad.shape[0], 1), dtype=bool)  # (V, 1)
        is_row[self.row] = True
        return grad.masked_fill(Tensor._from_array(is_row, grad.device), 0.0)


class Embedding(Module):
    """A lookup table: token id i -> row i of a (num_embeddings, embedding_dim) weight.

    Rows start N(0, 1). With ``padding_idx``, that row starts at zero and gets no gradient,
    so padding tokens embed to zeros (as in PyTorch).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 dtype: Any = None, device: Any = None) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise IndexError(f"padding_idx {padding_idx} is out of range for "
                                 f"num_embeddings={num_embeddings}")
            padding_idx %= num_embeddings
        self.padding_idx = padding_idx
        values = default_generator().standard_normal((num_embeddings, embedding_dim))
        if padding_idx is not None:
            values[padding_idx] = 0.0
        self.weight = new_parameter(values, dtype, device)
        if padding_idx is not None:
            self.weight.register_hook(_ZeroRowGrad(padding_idx))

    def forward(self, indices: Any) -> Tensor:
        return F.embedding(indices, self.weight)

    def extra_repr(self) -> str:
        padding = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{padding}"


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last dims.

    ``weight`` starts at ones and ``bias`` at zeros, so the layer starts as a pure
    normalisation. ``bias=False`` (PyTorch >= 2.1) keeps the weight and drops the bias.
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, dtype: Any = None,
                 device: Any = None) -> None:
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = new_parameter(np.ones(self.normalized_shape), dtype, device)
            if bias:
                self.bias = new_parameter(np.zeros(self.normalized_shape), dtype, device)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class Dropout(Module):
    """Zero each value with probability ``p`` while training; the identity in eval mode.

    Each Dropout owns a NumPy generator (from ``seed``, or drawn from the default
    generator), so its masks are reproducible and independent of other layers'.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None
                 ) -> None:
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        if inplace:  # PyTorch's second argument (it was taken for a seed here)
            raise NotImplementedError("nn.Dropout(inplace=True) is not supported here; write "
                                      "nn.Dropout(p)")
        self.p, self.inplace = p, inplace
        self.generator = new_generator(seed)

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, training=self.training, generator=self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Softmax(Module):
    """softmax(x)_i = e^{x_i} / sum_j e^{x_j} along ``axis``."""

    def __init__(self, dim: int | None = None, *, axis: int | None = None) -> None:
        super().__init__()
        # dim: PyTorch's name, and its default: None is PyTorch's implicit choice (dim 0 for
        # a 3-D input), with its warning; pass dim=-1 for the last axis
        self.axis = dim if axis is None else axis

    @property
    def dim(self) -> int | None:
        return self.axis

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class Identity(Module):
    """y = x, as ``torch.nn.Identity``: a placeholder layer (say, where a norm is switched
    off). Any arguments are accepted and ignored, as PyTorch's are."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002  (PyTorch's name)
        return input


class Flatten(Module):
    """Axes ``start_dim`` to ``end_dim`` merged into one, as ``torch.nn.Flatten``: its
    default ``start_dim=1`` keeps the batch axis (``torch.flatten``'s default is 0)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


def get_activation(activation: str | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``"relu"``, ``"gelu"`` (exact), ``"gelu_tanh"`` or a callable, as a function."""
    if callable(activation):
        return activation
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return lambda x: F.gelu(x, "none")
    if activation == "gelu_tanh":
        return lambda x: F.gelu(x, "tanh")
    raise ValueError(
        f"activation must be 'relu', 'gelu', 'gelu_tanh' or a callable, got {activation!r}"
    )


def add_feed_forward(
    module: Module,
    d_model: int,
    dim_feedforward: int,
    dropout: float = 0.0,
    activation: str | Callable[[Tensor], Tensor] = "relu",
    bias: bool = True,
    dtype: Any = None,
    device: Any = None,
) -> None:
    """Give ``module`` the parts of a feed-forward block, under PyTorch's names:
    ``linear1`` (d_model -> dim_feedforward), ``dropout``, ``linear2`` (back to d_model)
    and ``activation``; :func:`feed_forward` runs them.

    :class:`FeedForward` is these parts alone. The Transformer layers put them on
    themselves rather than in a FeedForward child, because PyTorch's layers do: the
    state_dict keys stay ``layers.0.linear1.weight``, so weights map one to one.
    """
    module.linear1 = Linear(d_model, dim_feedforward, bias, dtype=dtype, device=device)
    module.dropout = Dropout(dropout)
    module.linear2 = Linear(dim_feedforward, d_model, bias, dtype=dtype, device=device)
    module.activation_name = activation if isinstance(activation, str) else repr(activation)
    module.activation = get_activation(activation)


def feed_forward(module: Module, x: Tensor) -> Tensor:
    """linear2(dropout(activation(linear1(x)))) with the parts :func:`add_feed_forward`
    gave ``module``: (B, T, d_model) -> (B, T, dim_feedforward) -> (B, T, d_model)."""
    hidden = module.activation(module.linear1(x))  # (B, T, dim_feedforward)
    return module.linear2(module.dropout(hidden))  # (B, T, d_model)


class FeedForward(Module):
    """The position-wise feed-forward block: linear2(dropout(activation(linear1(x)))).

    Applied to every position separately: (B, T, d_model) -> (B, T, dim_feedforward)
    -> (B, T, d_model). The Transformer layers run the same block on parts of their own
    (see :func:`add_feed_forward`).
    """

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float = 0.0,
                 activation: str | Callable[[Tensor], Tensor] = "relu", bias: bool = True,
                 dtype: Any = None, device: Any = None) -> None:
        super().__init__()
        add_feed_forward(self, d_model, dim_feedforward, dropout, activation, bias,
                         dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        return feed_forward(self, x)

    def extra_repr(self) -> str:
        return f"activation={self.activation_name}"
