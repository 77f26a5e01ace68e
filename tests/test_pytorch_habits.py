"""PyTorch code for the same thing works here: dim=/keepdim=, transpose(0, 1), size(),
numel(), dim(), clone(), the activation and loss modules, Module.apply, zero_grad's
set_to_none, nn.MultiheadAttention with batch_first, and every attention API's boolean mask
meaning what it means in its PyTorch twin (compared with PyTorch where it is installed)."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import nn, optim
from tests.conftest import requires_torch, torch


def test_dim_and_keepdim_wherever_axis_and_keepdims_are() -> None:
    x = mt.tensor(np.arange(24.0).reshape(2, 3, 4))
    for name in ("sum", "mean", "var", "logsumexp"):
        ours = getattr(x, name)(dim=1, keepdim=True).numpy()
        np.testing.assert_array_equal(ours, getattr(x, name)(axis=1, keepdims=True).numpy())
    np.testing.assert_array_equal(mt.softmax(x, dim=0).numpy(), mt.softmax(x, axis=0).numpy())
    np.testing.assert_array_equal(x.log_softmax(dim=-1).numpy(), x.log_softmax(-1).numpy())
    assert mt.cat([x, x], dim=2).shape == (2, 3, 8) and mt.stack([x, x], dim=1).shape == (
        2, 2, 3, 4)
    assert x.unsqueeze(dim=0).shape == (1, 2, 3, 4)
    assert x.unsqueeze(dim=0).squeeze(dim=0).shape == (2, 3, 4)
    assert nn.Softmax(dim=1)(x).sum(dim=1).numpy() == pytest.approx(np.ones((2, 4)))
    assert x.argmax(dim=2).tolist() == [[3, 3, 3], [3, 3, 3]]
    with pytest.raises(TypeError, match=r"sum\(\) got both axis= and dim=; they are the same"):
        x.sum(axis=1, dim=1)


def test_max_and_min_with_dim_return_values_and_indices_as_torch() -> None:
    x = mt.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]], requires_grad=True)
    values, indices = x.max(dim=1)
    assert values.tolist() == [5.0, 7.0] and indices.tolist() == [1, 0]
    assert x.min(dim=0, keepdim=True).indices.tolist() == [[0, 1, 0]]
    assert x.amax(axis=1).tolist() == [5.0, 7.0]  # values alone: amax, as torch
    values.sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def test_transpose_numel_dim_size_clone() -> None:
    x = mt.randn(2, 3, 4, requires_grad=True)
    assert x.transpose(0, 1).shape == (3, 2, 4)  # swaps two axes, as torch
    np.testing.assert_array_equal(mt.randn(2, 3).transpose(0, 1).shape, (3, 2))
    assert x.transpose(2, 0, 1).shape == (4, 2, 3) and x.T.shape == (4, 3, 2)  # NumPy's
    assert x.numel() == 24 and x.dim() == 3 and x.size == 24  # NumPy's size is an int
    assert x.size() == (2, 3, 4) and x.size(1) == 3 and x.size(-1) == 4
    with pytest.raises(IndexError, match=r"size\(3\): dimension out of range for shape"):
        x.size(3)
    copy = x.clone()
    assert copy.data is not x.data and np.array_equal(copy.data, x.data)
    (copy * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3, 4), 2.0, dtype=np.float32))


def test_modules_by_their_pytorch_names_apply_and_zero_grad() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.GELU(),
                          nn.Linear(4, 2), nn.Tanh(), nn.Sigmoid())
    x = mt.randn(5, 3)
    by_hand = x
    for layer in model:
        by_hand = layer(by_hand)
    manual = mt.sigmoid(mt.tanh(model[4](F.gelu(model[2](mt.relu(model[0](x)))))))
    np.testing.assert_allclose(model(x).detach().numpy(), manual.detach().numpy(), rtol=1e-6)
    seen = []
    assert model.apply(lambda m: seen.append(type(m).__name__)) is model
    assert seen[-1] == "Sequential" and seen.count("Linear") == 3  # children first

    def zero_biases(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            m.bias.data[...] = 0

    model.apply(zero_biases)
    assert all(not layer.bias.data.any() for layer in model if isinstance(layer, nn.Linear))

    loss = nn.MSELoss()(model(x), np.zeros((5, 2), dtype=np.float32))
    loss.backward()
    model.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.data.any() for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    opt = optim.SGD(model.parameters(), lr=0.1)
    nn.CrossEntropyLoss()(model(x), [0, 1, 0, 1, 1]).backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.data.any() for p in model.parameters())
    assert "ReLU()" in repr(model) and "ModuleList" in repr(nn.ModuleList([nn.Tanh()]))


@requires_torch
def test_losses_and_activations_match_torch() -> None:
    rng = np.random.default_rng(0)
    logits, target = rng.standard_normal((6, 4)), np.array([0, 3, -100, 1, 2, 3])
    ours = nn.CrossEntropyLoss()(mt.tensor(logits), target)
    theirs = torch.nn.CrossEntropyLoss()(torch.tensor(logits), torch.tensor(target))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    for reduction in ("mean", "sum"):
        assert nn.MSELoss(reduction)(mt.tensor(a), b).item() == pytest.approx(
            torch.nn.MSELoss(reduction=reduction)(torch.tensor(a), torch.tensor(b)).item())
    for ours_cls, theirs_cls in ((nn.ReLU, torch.nn.ReLU), (nn.GELU, torch.nn.GELU),
                                 (nn.Tanh, torch.nn.Tanh), (nn.Sigmoid, torch.nn.Sigmoid)):
        np.testing.assert_allclose(ours_cls()(mt.tensor(a)).numpy(),
                                   theirs_cls()(torch.tensor(a)).numpy(), rtol=1e-12)


# ----- masks: each API takes a mask written for its PyTorch twin, as it is ---------------
def _pair(shape: tuple[int, ...], seed: int):
    values = np.random.default_rng(seed).standard_normal(shape)
    return mt.tensor(values), torch.tensor(values)


def _copy_weights(ours: nn.MultiHeadAttention, theirs) -> None:
    E = ours.embed_dim
    w, b = theirs.in_proj_weight.detach().numpy(), theirs.in_proj_bias.detach().numpy()
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        getattr(ours, name).load_state_dict({"weight": w[i * E:(i + 1) * E],
                                             "bias": b[i * E:(i + 1) * E]})
    ours.out_proj.load_state_dict({"weight": theirs.out_proj.weight.detach().numpy(),
                                   "bias": theirs.out_proj.bias.detach().numpy()})


FUTURE = np.triu(np.ones((4, 4), dtype=bool), k=1)  # True above the diagonal


@requires_torch
def test_sdpa_boolean_mask_true_means_may_attend_as_torch() -> None:
    (q, tq), (k, tk), (v, tv) = (_pair((2, 4, 3), seed) for seed in range(3))
    allowed = ~FUTURE
    ours = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    theirs = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv,
                                                              attn_mask=torch.tensor(allowed))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-12)


@requires_torch
@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_alias_and_its_masks_as_torch(batch_first: bool) -> None:
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(6, 2, batch_first=batch_first, dtype=torch.float64)
    ours = nn.MultiheadAttention(6, 2, batch_first=batch_first).double()
    _copy_weights(ours, theirs)
    x, tx = _pair((2, 4, 6) if batch_first else (4, 2, 6), 5)
    padding = np.array([[False, False, False, True], [False, False, False, False]])
    out, weights = ours(x, x, x, attn_mask=FUTURE, key_padding_mask=padding)
    tout, tweights = theirs(tx, tx, tx, attn_mask=torch.tensor(FUTURE),
                            key_padding_mask=torch.tensor(padding))
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(weights.detach().numpy(), tweights.detach().numpy(), atol=1e-12)
    assert weights.detach().numpy()[0, 0, 1:].max() == 0  # the first query sees only the first key


@requires_torch
def test_encoder_layer_src_mask_true_means_may_not_attend_as_torch() -> None:
    torch.manual_seed(0)
    theirs = torch.nn.TransformerEncoderLayer(6, 2, dim_feedforward=8, dropout=0.0,
                                              batch_first=True, dtype=torch.float64)
    ours = nn.TransformerEncoderLayer(6, 2, dim_feedforward=8, batch_first=True,
                                      dropout=0.0).double()
    _copy_weights(ours.self_attn, theirs.self_attn)
    for name in ("linear1", "linear2", "norm1", "norm2"):
        getattr(ours, name).load_state_dict(
            {k: v.detach().numpy() for k, v in getattr(theirs, name).state_dict().items()})
    x, tx = _pair((2, 4, 6), 7)
    out = ours(x, src_mask=FUTURE)
    theirs.eval()
    tout = theirs(tx, src_mask=torch.tensor(FUTURE))
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), atol=1e-10)
