"""The decoder without PyTorch: gradchecks in float64 and the causal guarantee."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.nn as nn
from minitransformer.errors import ShapeError
from tests.conftest import randn
from tests.test_nn import gradcheck_module


@pytest.mark.parametrize("norm_first", [False, True])
def test_gradcheck_decoder_layer(rng, norm_first):
    mt.manual_seed(0)
    layer = nn.TransformerDecoderLayer(4, 2, batch_first=True,
                                       dim_feedforward=3, norm_first=norm_first,
                                       activation="gelu", dropout=0.0)
    padding = np.array([[False, True]])
    gradcheck_module(layer, randn(rng, 1, 3, 4), randn(rng, 1, 2, 4), tgt_is_causal=True,
                     memory_key_padding_mask=padding)


def test_gradgradcheck_decoder_layer(rng):
    mt.manual_seed(1)
    layer = nn.TransformerDecoderLayer(4, 2, batch_first=True, dim_feedforward=6,
                                       dropout=0.0).to(mt.float64)
    assert mt.gradgradcheck(lambda t, m: layer(t, m, tgt_is_causal=True),
                            [randn(rng, 1, 3, 4), randn(rng, 1, 2, 4)])


def test_gradcheck_transformer(rng):
    mt.manual_seed(2)
    model = nn.Transformer(4, 2, 1, 1, batch_first=True, dim_feedforward=6,
                           dropout=0.0).to(mt.float64)
    # every parameter is checked in the layers' gradchecks; here the inputs, end to end
    assert mt.gradcheck(lambda s, t: model(s, t, tgt_is_causal=True),
                        [randn(rng, 1, 2, 4), randn(rng, 1, 3, 4)])


def test_decoder_output_at_t_ignores_later_targets(rng):
    """With tgt_is_causal, changing target position 2 changes outputs 2.. only."""
    mt.manual_seed(3)
    model = nn.Transformer(8, 2, 1, 2, batch_first=True, dim_feedforward=16,
                           dropout=0.0).to(mt.float64)
    src, tgt = randn(rng, 1, 4, 8), randn(rng, 1, 5, 8)
    changed = tgt.detach().numpy().copy()
    changed[0, 2] += 1.0
    with mt.no_grad():
        before = model(src, tgt, tgt_is_causal=True).numpy()
        after = model(src, mt.tensor(changed), tgt_is_causal=True).numpy()
    np.testing.assert_array_equal(before[0, :2], after[0, :2])
    assert np.abs(before[0, 2:] - after[0, 2:]).min() > 0


def test_decoder_shape_errors():
    layer = nn.TransformerDecoderLayer(4, 2, batch_first=True, dim_feedforward=6, dropout=0.0)
    with pytest.raises(ShapeError, match=r"memory must have shape \(B, length, 4\)"):
        layer(mt.zeros((1, 3, 4)), mt.zeros((1, 3, 5)))
    with pytest.raises(ShapeError, match="same batch size"):
        layer(mt.zeros((2, 3, 4)), mt.zeros((1, 3, 4)))
    with pytest.raises(ShapeError, match="d_model=4"):
        nn.Transformer(4, 2, 1, 1, 6, batch_first=True,
                       dropout=0.0)(mt.zeros((1, 3, 5)), mt.zeros((1, 3, 4)))


def causal_jacobian_blocks(fn, x: mt.Tensor) -> np.ndarray:
    """|d out[t] / d x[t']| summed over features: a (T, T) matrix, one backward per t."""
    T = x.shape[1]
    blocks = np.zeros((T, T))
    for t in range(T):
        x.grad = None
        out = fn(x)  # (1, T, E)
        upstream = np.zeros(out.shape)
        upstream[0, t] = np.random.default_rng(t).standard_normal(out.shape[-1])
        (out * mt.tensor(upstream)).sum().backward()
        blocks[t] = np.abs(x.grad.numpy()[0]).sum(axis=-1)
    return blocks


@pytest.mark.parametrize("where", ["sdpa", "mha", "encoder_layer"])
def test_causal_gradient_is_exactly_zero_from_the_future(rng, where):
    """d out_t / d in_t' is exactly 0 for every t' > t, and non-zero for t' <= t, through
    the fused attention backward (and the layers built on it)."""
    mt.manual_seed(4)
    if where == "sdpa":
        def fn(x):
            return mt.functional.scaled_dot_product_attention(x, x * 0.5, x, is_causal=True)
    elif where == "mha":
        mha = nn.MultiHeadAttention(6, 2).to(mt.float64)

        def fn(x):
            return mha(x, is_causal=True)[0]
    else:
        layer = nn.TransformerEncoderLayer(6, 2, batch_first=True, dim_feedforward=8,
                                           dropout=0.0).to(mt.float64)

        def fn(x):
            return layer(x, is_causal=True)
    blocks = causal_jacobian_blocks(fn, randn(rng, 1, 5, 6))
    future = np.triu(np.ones((5, 5), dtype=bool), k=1)
    assert np.all(blocks[future] == 0.0)  # exactly: not small, zero
    assert np.all(blocks[~future] > 0)
