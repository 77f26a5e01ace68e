"""The PyTorch-named layers take PyTorch's default ``batch_first=False``.

A (T, B, E) tensor has the same rank as a (B, T, E) one, so a different default would run
PyTorch code silently and give another answer. Each test builds the layer with PyTorch's
defaults on both sides (no ``batch_first`` argument), copies the weights from torch, and
feeds the same sequence-first input in float64: outputs and gradients must agree.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.nn as nn
from tests.conftest import requires_torch, torch
from tests.test_nn_torch import assert_close, assert_same_results, load_from_torch, pair

pytestmark = [requires_torch,  # torch warns that a sequence-first encoder cannot be nested
              pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")]

T, S, B, E = 5, 4, 3, 8  # target length, source length, batch, d_model


@pytest.mark.parametrize("name", ["TransformerEncoderLayer", "TransformerDecoderLayer",
                                  "Transformer", "MultiheadAttention", "RNN", "LSTM"])
def test_default_is_pytorchs(name):
    ours = inspect.signature(getattr(nn, name)).parameters["batch_first"].default
    if name in ("RNN", "LSTM"):  # torch's take *args, **kwargs: ask an instance
        theirs = getattr(torch.nn, name)(3, 4).batch_first
    else:
        theirs = inspect.signature(getattr(torch.nn, name)).parameters["batch_first"].default
    assert ours is theirs is False


def test_encoder_layer_sequence_first():
    torch.manual_seed(0)
    theirs = torch.nn.TransformerEncoderLayer(E, 2, 12, 0.0, dtype=torch.float64)
    ours = nn.TransformerEncoderLayer(E, 2, 12, 0.0)
    load_from_torch(ours, theirs)
    x, tx = pair((T, B, E), 1)  # (T, B, E)
    padding = np.zeros((B, T), dtype=bool)
    padding[1, 3:] = True  # (B, T) in both layouts
    out = ours(x, src_key_padding_mask=padding)
    tout = theirs(tx, src_key_padding_mask=torch.tensor(padding))
    assert out.shape == (T, B, E)
    assert_same_results(ours, theirs, out, tout, (x, tx))


def test_encoder_stack_follows_its_layer():
    torch.manual_seed(1)
    theirs = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(
        E, 2, 12, 0.0, dtype=torch.float64), 2, norm=torch.nn.LayerNorm(E, dtype=torch.float64))
    with torch.no_grad():  # the two layers start as copies; make them differ
        theirs.layers[1].linear1.weight.normal_()
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(E, 2, 12, 0.0), 2,
                                 norm=nn.LayerNorm(E))
    load_from_torch(ours, theirs)
    x, tx = pair((T, B, E), 2)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    out, tout = ours(x, mask=future), theirs(tx, mask=torch.tensor(future))
    assert_same_results(ours, theirs, out, tout, (x, tx))


def test_decoder_layer_sequence_first():
    torch.manual_seed(2)
    theirs = torch.nn.TransformerDecoderLayer(E, 2, 12, 0.0, dtype=torch.float64)
    ours = nn.TransformerDecoderLayer(E, 2, 12, 0.0)
    load_from_torch(ours, theirs)
    tgt, ttgt = pair((T, B, E), 3)  # (T, B, E)
    memory, tmemory = pair((S, B, E), 4)  # (S, B, E)
    padding = np.zeros((B, S), dtype=bool)
    padding[0, 2:] = True
    mask = torch.nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64)
    out = ours(tgt, memory, tgt_mask=mask.numpy(), memory_key_padding_mask=padding)
    tout = theirs(ttgt, tmemory, tgt_mask=mask, memory_key_padding_mask=torch.tensor(padding))
    assert out.shape == (T, B, E)
    assert_same_results(ours, theirs, out, tout, (tgt, ttgt), (memory, tmemory))


def test_decoder_stack_follows_its_layer():
    torch.manual_seed(3)
    theirs = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(
        E, 2, 12, 0.0, dtype=torch.float64), 2, norm=torch.nn.LayerNorm(E, dtype=torch.float64))
    with torch.no_grad():
        theirs.layers[1].multihead_attn.in_proj_weight.normal_()
    ours = nn.TransformerDecoder(nn.TransformerDecoderLayer(E, 2, 12, 0.0), 2,
                                 norm=nn.LayerNorm(E))
    load_from_torch(ours, theirs)
    tgt, ttgt = pair((T, B, E), 5)
    memory, tmemory = pair((S, B, E), 6)
    out, tout = ours(tgt, memory), theirs(ttgt, tmemory)
    assert_same_results(ours, theirs, out, tout, (tgt, ttgt), (memory, tmemory))


def test_transformer_sequence_first():
    torch.manual_seed(4)
    theirs = torch.nn.Transformer(E, 2, 1, 2, 12, 0.0, dtype=torch.float64)
    ours = nn.Transformer(E, 2, 1, 2, 12, 0.0)
    load_from_torch(ours, theirs)
    src, tsrc = pair((S, B, E), 7)  # (S, B, E)
    tgt, ttgt = pair((T, B, E), 8)  # (T, B, E)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64)
    out = ours(src, tgt, tgt_mask=mask.numpy())
    tout = theirs(tsrc, ttgt, tgt_mask=mask)
    assert out.shape == (T, B, E)
    assert_same_results(ours, theirs, out, tout, (src, tsrc), (tgt, ttgt))


def test_transformer_sequence_first_batch_sizes_must_agree():
    with pytest.raises(mt.errors.ShapeError, match=r"src \(S, B, d_model\).*batch_first=True"):
        nn.Transformer(E, 2, 1, 1, 12, dropout=0.0)(mt.zeros((S, B, E)), mt.zeros((T, B + 1, E)))


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_recurrent_sequence_first(kind):
    torch.manual_seed(5)
    theirs = getattr(torch.nn, kind)(3, 4, 2).double()
    ours = getattr(nn, kind)(3, 4, 2)
    load_from_torch(ours, theirs)
    x, tx = pair((T, B, 3), 9)  # (T, B, I)
    out, state = ours(x)
    tout, tstate = theirs(tx)
    assert out.shape == (T, B, 4)
    h_n, th_n = (state[0], tstate[0]) if kind == "LSTM" else (state, tstate)
    assert_close(h_n, th_n)
    assert_same_results(ours, theirs, out, tout, (x, tx))


def test_library_models_stay_batch_first():
    """GPT and the coreference models build their layers with batch_first=True, so their
    (B, T, E) code and their checkpoints behave as before."""
    from minitransformer.coref.models.baselines import EncoderConfig, LSTMCorefModel
    from minitransformer.coref.models.coref import CorefConfig, CorefModel
    from minitransformer.gpt.model import GPT, GPTConfig

    gpt = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=2, n_embd=4))
    assert all(block.batch_first for block in gpt.blocks)
    assert all(layer.batch_first for layer in CorefModel(CorefConfig(vocab_size=5)).encoder.layers)
    assert LSTMCorefModel(EncoderConfig(vocab_size=5)).encoder.batch_first


@pytest.mark.parametrize("name", ["TransformerEncoderLayer", "TransformerDecoderLayer",
                                  "Transformer", "MultiheadAttention"])
def test_dropout_default_is_pytorchs(name):
    ours = inspect.signature(getattr(nn, name)).parameters["dropout"].default
    theirs = inspect.signature(getattr(torch.nn, name)).parameters["dropout"].default
    assert ours == theirs


@pytest.mark.parametrize("name", ["TransformerEncoderLayer", "TransformerDecoderLayer"])
def test_layers_built_with_defaults_drop_as_pytorchs(name):
    ours, theirs = getattr(nn, name)(E, 2, 12), getattr(torch.nn, name)(E, 2, 12)
    for part in ("dropout", "dropout1", "dropout2"):
        assert getattr(ours, part).p == getattr(theirs, part).p == 0.1
    model = nn.Transformer(E, 2, 1, 1, 12)
    assert model.decoder.layers[0].dropout3.p == model.encoder.layers[0].dropout.p == 0.1
