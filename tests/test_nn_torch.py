"""nn against PyTorch: the same weights give the same outputs and the same gradients.

Everything runs in float64. Weights are copied from the torch module into ours by name
(:func:`load_from_torch`), which also checks that the names map one to one.
Mask conventions: our boolean ``attn_mask`` is True where attention is ALLOWED,
torch.nn.MultiheadAttention's is True where it is FORBIDDEN, so torch gets ``~mask``.
"""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.nn as nn
from tests.conftest import requires_torch, torch

pytestmark = requires_torch

ATOL = 1e-10


def ours_from_torch_names(named: dict) -> dict[str, np.ndarray]:
    """Torch names -> our names, as NumPy arrays. The one renaming: torch packs the three
    input projections of attention into ``in_proj_weight`` (3E, E) / ``in_proj_bias``."""
    result = {}
    for name, value in named.items():
        array = value.detach().numpy()
        prefix, _, leaf = name.rpartition(".")
        prefix = prefix + "." if prefix else ""
        if leaf in ("in_proj_weight", "in_proj_bias"):
            kind = leaf.rsplit("_", 1)[1]  # weight or bias
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), np.split(array, 3)):
                result[f"{prefix}{proj}.{kind}"] = part
        else:
            result[name] = array
    return result


def load_from_torch(ours: nn.Module, theirs: torch.nn.Module) -> None:
    ours.to(mt.float64)
    ours.load_state_dict(ours_from_torch_names(theirs.state_dict()))  # strict: 1:1 names


def assert_same_gradients(ours: nn.Module, theirs: torch.nn.Module) -> None:
    expected = ours_from_torch_names({n: p.grad for n, p in theirs.named_parameters()})
    got = dict(ours.named_parameters())
    assert set(expected) == set(got)
    for name, grad in expected.items():
        np.testing.assert_allclose(got[name].grad.data, grad, rtol=0, atol=ATOL, err_msg=name)


def pair(shape: tuple[int, ...], seed: int) -> tuple[mt.Tensor, torch.Tensor]:
    """The same random float64 leaf, in both libraries."""
    values = np.random.default_rng(seed).standard_normal(shape)
    return mt.tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)


def backward_both(ours_out: mt.Tensor, theirs_out: torch.Tensor, seed: int = 99) -> None:
    """Backpropagate the same random upstream gradient through both outputs."""
    upstream = np.random.default_rng(seed).standard_normal(ours_out.shape)
    (ours_out * mt.tensor(upstream)).sum().backward()
    (theirs_out * torch.tensor(upstream)).sum().backward()


def assert_close(ours: mt.Tensor, theirs: torch.Tensor) -> None:
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=0, atol=ATOL)


def assert_same_results(ours: nn.Module, theirs: torch.nn.Module, out: mt.Tensor,
                        tout: torch.Tensor, *inputs: tuple[mt.Tensor, torch.Tensor]) -> None:
    """The same outputs; then, after the same upstream gradient, the same gradients of
    every ``(ours, theirs)`` input pair and of every parameter."""
    assert_close(out, tout)
    backward_both(out, tout)
    for x, tx in inputs:
        assert_close(x.grad, tx.grad)
    assert_same_gradients(ours, theirs)


def test_linear():
    theirs = torch.nn.Linear(5, 3, dtype=torch.float64)
    ours = nn.Linear(5, 3)
    load_from_torch(ours, theirs)
    x, tx = pair((2, 4, 5), 0)
    out, tout = ours(x), theirs(tx)
    assert_same_results(ours, theirs, out, tout, (x, tx))


def test_embedding_with_padding():
    theirs = torch.nn.Embedding(6, 3, padding_idx=2, dtype=torch.float64)
    ours = nn.Embedding(6, 3, padding_idx=2)
    load_from_torch(ours, theirs)
    ids = np.array([[0, 2, 5, 2], [1, 1, 3, 2]])
    out, tout = ours(ids), theirs(torch.tensor(ids))
    assert_same_results(ours, theirs, out, tout)


def test_layer_norm():
    theirs = torch.nn.LayerNorm(6, eps=1e-5, dtype=torch.float64)
    with torch.no_grad():
        theirs.weight.normal_()
        theirs.bias.normal_()
    ours = nn.LayerNorm(6)
    load_from_torch(ours, theirs)
    x, tx = pair((2, 3, 6), 1)
    out, tout = ours(x), theirs(tx)
    assert_same_results(ours, theirs, out, tout, (x, tx))


def _mha_case(name: str):
    """(L, S, attn_mask in PyTorch's convention or None, key_padding_mask or None)."""
    rng = np.random.default_rng(5)
    causal = np.triu(np.ones((4, 4), dtype=bool), k=1)  # True = may NOT attend: the future
    cases = {
        "self": (4, 4, None, None),
        "cross": (3, 5, None, None),
        "bool_mask": (4, 4, causal, None),
        "float_mask": (4, 4, rng.standard_normal((4, 4)), None),
        "key_padding": (3, 5, None, np.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)),
        "both": (4, 4, causal, np.array([[0, 0, 1, 1], [0, 0, 0, 1]], dtype=bool)),
    }
    return cases[name]


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("case", ["self", "cross", "bool_mask", "float_mask", "key_padding",
                                  "both"])
def test_multi_head_attention(case, average):
    L, S, attn_mask, padding = _mha_case(case)
    theirs = torch.nn.MultiheadAttention(6, 3, batch_first=True, dtype=torch.float64)
    ours = nn.MultiHeadAttention(6, 3)
    load_from_torch(ours, theirs)
    q, tq = pair((2, L, 6), 2)
    if case in ("self", "bool_mask", "float_mask", "both"):
        k, tk = q, tq  # one tensor as query, key and value
    else:
        k, tk = pair((2, S, 6), 3)

    # The same mask to both: a boolean True means "may NOT attend" in both layers.
    torch_mask = None if attn_mask is None else torch.tensor(attn_mask)
    out, weights = ours(q, k, k, attn_mask=attn_mask, key_padding_mask=padding,
                        average_attn_weights=average)
    tout, tweights = theirs(tq, tk, tk, attn_mask=torch_mask,
                            key_padding_mask=None if padding is None else torch.tensor(padding),
                            average_attn_weights=average)
    assert weights.shape == tuple(tweights.shape)
    assert_close(out, tout)
    assert_close(weights, tweights)

    # One backward through both outputs: the weights are differentiable too.
    rng = np.random.default_rng(7)
    u_out, u_weights = rng.standard_normal(out.shape), rng.standard_normal(weights.shape)
    ((out * mt.tensor(u_out)).sum() + (weights * mt.tensor(u_weights)).sum()).backward()
    ((tout * torch.tensor(u_out)).sum() + (tweights * torch.tensor(u_weights)).sum()).backward()
    assert_close(q.grad, tq.grad)
    if k is not q:
        assert_close(k.grad, tk.grad)
    assert_same_gradients(ours, theirs)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layer(norm_first, activation):
    kwargs = {"dim_feedforward": 12, "dropout": 0.0, "activation": activation,
              "norm_first": norm_first}
    theirs = torch.nn.TransformerEncoderLayer(8, 2, batch_first=True, dtype=torch.float64,
                                              **kwargs)
    with torch.no_grad():  # non-trivial norms, so their gradients are tested too
        for norm in (theirs.norm1, theirs.norm2):
            norm.weight.normal_()
            norm.bias.normal_()
    ours = nn.TransformerEncoderLayer(8, 2, batch_first=True, **kwargs)
    load_from_torch(ours, theirs)
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()
                                                     if n != "activation"]
    x, tx = pair((2, 5, 8), 11)
    padding = np.array([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=bool)
    out = ours(x, src_key_padding_mask=padding)
    tout = theirs(tx, src_key_padding_mask=torch.tensor(padding))
    assert_same_results(ours, theirs, out, tout, (x, tx))


def test_transformer_encoder_stack_with_causal_mask():
    torch.manual_seed(0)
    torch_layer = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0,
                                                   batch_first=True, dtype=torch.float64)
    theirs = torch.nn.TransformerEncoder(
        torch_layer, 2, norm=torch.nn.LayerNorm(8, dtype=torch.float64),
        enable_nested_tensor=False,
    )
    with torch.no_grad():  # the two layers start as copies; make them differ
        theirs.layers[1].linear1.weight.normal_()
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, dim_feedforward=12,
                                                          batch_first=True, dropout=0.0), 2,
                                 norm=nn.LayerNorm(8))
    load_from_torch(ours, theirs)
    future = np.triu(np.ones((5, 5), dtype=bool), k=1)  # True = may NOT attend, in both
    x, tx = pair((2, 5, 8), 12)
    out, tout = ours(x, mask=future), theirs(tx, mask=torch.tensor(future))
    assert_same_results(ours, theirs, out, tout, (x, tx))
