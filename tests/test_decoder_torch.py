"""The decoder side against PyTorch in float64: TransformerDecoderLayer, TransformerDecoder
and Transformer give the same outputs and the same gradients (inputs and every parameter)
to 1e-10, with every kind of mask."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.nn as nn
from tests.conftest import requires_torch, torch
from tests.test_nn_torch import (
    assert_close,
    assert_same_gradients,
    backward_both,
    load_from_torch,
    pair,
)

pytestmark = [
    requires_torch,
    # torch warns about mixing a float attn_mask with a boolean key_padding_mask, which is
    # exactly one of the cases compared here, and about nested tensors it does not use
    pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask"),
    pytest.mark.filterwarnings("ignore:enable_nested_tensor is True"),
]

T, S, E = 5, 4, 8


def _masks(case: str) -> dict:
    """Keyword arguments for ours and for torch, per mask case. Float masks are added to
    the scores in both libraries; key-padding masks are True at padding in both."""
    rng = np.random.default_rng(3)
    causal = nn.Transformer.generate_square_subsequent_mask(T, dtype=mt.float64).numpy()
    tgt_padding = np.array([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=bool)
    memory_padding = np.array([[0, 0, 1, 1], [0, 0, 0, 0]], dtype=bool)
    memory_float = rng.standard_normal((T, S))
    memory_float[1, 2] = -np.inf
    if case == "none":
        return {}, {}
    if case == "tgt_mask":  # float, causal plus noise
        m = causal + rng.standard_normal((T, T))
        return {"tgt_mask": m}, {"tgt_mask": torch.tensor(m)}
    if case == "tgt_is_causal":  # ours needs no mask; torch's flag is a hint with the mask
        return ({"tgt_is_causal": True},
                {"tgt_mask": torch.tensor(causal), "tgt_is_causal": True})
    if case == "memory_mask":
        return {"memory_mask": memory_float}, {"memory_mask": torch.tensor(memory_float)}
    if case == "key_padding":
        ours = {"tgt_key_padding_mask": tgt_padding, "memory_key_padding_mask": memory_padding}
        return ours, {k: torch.tensor(v) for k, v in ours.items()}
    if case == "bool_masks":  # PyTorch's boolean convention, in both: True = may NOT attend
        future = np.triu(np.ones((T, T), dtype=bool), k=1)
        blocked = np.zeros((T, S), dtype=bool)
        blocked[[0, 2, 4], [1, 3, 0]] = True
        ours = {"tgt_mask": future, "memory_mask": blocked}
        return ours, {k: torch.tensor(v) for k, v in ours.items()}
    if case == "all":
        ours = {"tgt_mask": causal, "memory_mask": memory_float,
                "tgt_key_padding_mask": tgt_padding, "memory_key_padding_mask": memory_padding}
        theirs = {k: torch.tensor(v) for k, v in ours.items()}
        return {**ours, "tgt_is_causal": True}, {**theirs, "tgt_is_causal": True}
    raise ValueError(case)


MASK_CASES = ["none", "tgt_mask", "tgt_is_causal", "memory_mask", "key_padding", "bool_masks",
              "all"]


def _randomize_norms(module: torch.nn.Module) -> None:
    """Non-trivial norms, so that their gradients are tested too."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, torch.nn.LayerNorm):
                sub.weight.normal_()
                sub.bias.normal_()


@pytest.mark.parametrize("case", MASK_CASES)
@pytest.mark.parametrize(("norm_first", "activation"), [(False, "relu"), (True, "gelu")])
def test_decoder_layer(case, norm_first, activation):
    torch.manual_seed(0)
    kwargs = {"dim_feedforward": 12, "dropout": 0.0, "activation": activation,
              "norm_first": norm_first}
    theirs = torch.nn.TransformerDecoderLayer(E, 2, batch_first=True, dtype=torch.float64,
                                              **kwargs)
    _randomize_norms(theirs)
    ours = nn.TransformerDecoderLayer(E, 2, batch_first=True, **kwargs)
    load_from_torch(ours, theirs)
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()
                                                     if n != "activation"]
    tgt, ttgt = pair((2, T, E), 1)
    memory, tmemory = pair((2, S, E), 2)
    our_masks, their_masks = _masks(case)
    out = ours(tgt, memory, **our_masks)
    tout = theirs(ttgt, tmemory, **their_masks)
    assert_close(out, tout)
    backward_both(out, tout)
    assert_close(tgt.grad, ttgt.grad)
    assert_close(memory.grad, tmemory.grad)
    assert_same_gradients(ours, theirs)


@pytest.mark.parametrize("case", ["tgt_is_causal", "bool_masks", "all"])
def test_decoder_stack(case):
    torch.manual_seed(1)
    layer = torch.nn.TransformerDecoderLayer(E, 2, dim_feedforward=12, dropout=0.0,
                                             batch_first=True, dtype=torch.float64)
    theirs = torch.nn.TransformerDecoder(layer, 2, norm=torch.nn.LayerNorm(E, dtype=torch.float64))
    with torch.no_grad():  # the layers start as copies; make them differ
        theirs.layers[1].linear1.weight.normal_()
        theirs.layers[1].multihead_attn.in_proj_weight.normal_()
    _randomize_norms(theirs)
    ours = nn.TransformerDecoder(nn.TransformerDecoderLayer(E, 2, dim_feedforward=12,
                                                          batch_first=True, dropout=0.0), 2,
                                 norm=nn.LayerNorm(E))
    load_from_torch(ours, theirs)
    tgt, ttgt = pair((2, T, E), 3)
    memory, tmemory = pair((2, S, E), 4)
    our_masks, their_masks = _masks(case)
    out, tout = ours(tgt, memory, **our_masks), theirs(ttgt, tmemory, **their_masks)
    assert_close(out, tout)
    backward_both(out, tout)
    assert_close(tgt.grad, ttgt.grad)
    assert_close(memory.grad, tmemory.grad)
    assert_same_gradients(ours, theirs)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer(norm_first):
    torch.manual_seed(2)
    theirs = torch.nn.Transformer(E, 2, 2, 2, dim_feedforward=12, dropout=0.0,
                                  batch_first=True, norm_first=norm_first, dtype=torch.float64)
    _randomize_norms(theirs)
    ours = nn.Transformer(E, 2, 2, 2, dim_feedforward=12, norm_first=norm_first,
                          batch_first=True, dropout=0.0)
    load_from_torch(ours, theirs)
    src, tsrc = pair((2, S, E), 5)
    tgt, ttgt = pair((2, T, E), 6)
    src_padding = np.array([[0, 0, 0, 1], [0, 0, 0, 0]], dtype=bool)
    causal = nn.Transformer.generate_square_subsequent_mask(T, dtype=mt.float64)
    out = ours(src, tgt, tgt_is_causal=True, src_key_padding_mask=src_padding,
               memory_key_padding_mask=src_padding)
    tout = theirs(tsrc, ttgt, tgt_mask=torch.tensor(causal.numpy()), tgt_is_causal=True,
                  src_key_padding_mask=torch.tensor(src_padding),
                  memory_key_padding_mask=torch.tensor(src_padding))
    assert_close(out, tout)
    backward_both(out, tout)
    assert_close(src.grad, tsrc.grad)
    assert_close(tgt.grad, ttgt.grad)
    assert_same_gradients(ours, theirs)


def test_causal_mask_helpers_agree_with_torch():
    expected = torch.nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
    got = nn.Transformer.generate_square_subsequent_mask(4, dtype=mt.float64)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
    # the boolean helper allows exactly where the float mask adds 0
    np.testing.assert_array_equal(nn.causal_mask(4).numpy(), expected.numpy() == 0)
    assert nn.causal_mask(2, 3).numpy().tolist() == [[True, False, False], [True, True, False]]
