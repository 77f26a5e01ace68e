"""minitransformer.functional against torch.nn.functional: values and gradients, float64."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
from tests.conftest import requires_torch, torch

pytestmark = requires_torch
TOL = {"rtol": 1e-10, "atol": 1e-10}


def _compare(ours, theirs, arrays, upstream_rng, nondiff=()):
    """Run ``ours`` on minitransformer tensors and ``theirs`` on torch tensors made from the
    same float64 ``arrays``; compare the outputs and the gradients of a random projection.
    ``nondiff`` lists positions of arrays passed as-is (indices, masks) to both."""
    mine = [a if i in nondiff else mt.tensor(a, requires_grad=True) for i, a in enumerate(arrays)]
    ref = [torch.as_tensor(a) if i in nondiff else torch.tensor(a, requires_grad=True)
           for i, a in enumerate(arrays)]
    out, expected = ours(*mine), theirs(*ref)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), **TOL)
    upstream = upstream_rng.standard_normal(out.shape)
    out.backward(upstream)
    expected.backward(torch.as_tensor(upstream))
    for i, (m, r) in enumerate(zip(mine, ref)):
        if i in nondiff:
            continue
        if r.grad is None:  # not used by the output (V for the attention weights)
            assert m.grad is None
        else:
            np.testing.assert_allclose(m.grad.data, r.grad.numpy(), **TOL)


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_and_log_softmax(rng, axis):
    x = rng.standard_normal((2, 3, 4)) * 5
    _compare(lambda x: F.softmax(x, axis=axis), lambda x: torch.softmax(x, dim=axis), [x], rng)
    _compare(lambda x: F.log_softmax(x, axis=axis), lambda x: torch.log_softmax(x, dim=axis),
             [x], rng)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [None, -100, 1])
def test_cross_entropy(rng, reduction, ignore_index):
    logits = rng.standard_normal((2, 4, 5)) * 3  # (N, C, d1): PyTorch's layout, here too
    target = rng.integers(0, 4, size=(2, 5))
    target[0, 0], target[1, 3] = 1, -100 if ignore_index == -100 else 2

    def theirs(z, t):
        return torch.nn.functional.cross_entropy(
            z, t, reduction=reduction, ignore_index=-100 if ignore_index is None else ignore_index)

    _compare(lambda z, t: F.cross_entropy(z, t, ignore_index=ignore_index, reduction=reduction),
             theirs, [logits, target], rng, nondiff=(1,))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(rng, reduction):
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    _compare(lambda x, y: F.mse_loss(x, y, reduction=reduction),
             lambda x, y: torch.nn.functional.mse_loss(x, y, reduction=reduction), [x, y], rng)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(rng, approximate):
    x = rng.standard_normal((4, 5)) * 3
    _compare(lambda x: F.gelu(x, approximate=approximate),
             lambda x: torch.nn.functional.gelu(x, approximate=approximate), [x], rng)


@pytest.mark.parametrize("normalized_shape", [(4,), (3, 4)])
def test_layer_norm(rng, normalized_shape):
    x = rng.standard_normal((2, 3, 4)) * 2 + 1
    w, b = rng.standard_normal(normalized_shape), rng.standard_normal(normalized_shape)
    _compare(lambda x, w, b: F.layer_norm(x, normalized_shape, w, b, eps=1e-5),
             lambda x, w, b: torch.nn.functional.layer_norm(x, normalized_shape, w, b, eps=1e-5),
             [x, w, b], rng)


def test_linear(rng):
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    _compare(F.linear, torch.nn.functional.linear, [x, w, b], rng)
    _compare(F.linear, torch.nn.functional.linear, [x, w], rng)


def test_embedding(rng):
    index = np.array([[0, 3, 3], [5, 0, 3]])
    weight = rng.standard_normal((6, 4))
    _compare(lambda i, w: F.embedding(i, w), lambda i, w: torch.nn.functional.embedding(i, w),
             [index, weight], rng, nondiff=(0,))


# ----- attention ----------------------------------------------------------------------------
B, H, L, S, E, EV = 2, 3, 4, 5, 6, 3


def _masks(kind, rng):
    """(our kwargs, torch kwargs, the additive mask torch's weights are computed with)."""
    allowed = rng.random((L, S)) > 0.4
    allowed[:, 0] = True
    causal = np.tril(np.ones((L, S), dtype=bool))
    if kind == "none":
        return {}, {}, np.zeros((L, S))
    if kind == "bool":
        return {"attn_mask": allowed}, {"attn_mask": torch.as_tensor(allowed)}, \
            np.where(allowed, 0, -np.inf)
    if kind == "bool_batch":
        batch = rng.random((B, 1, L, S)) > 0.4
        batch[..., 0] = True
        return {"attn_mask": mt.tensor(batch)}, {"attn_mask": torch.as_tensor(batch)}, \
            np.where(batch, 0, -np.inf)
    if kind == "float":
        additive = rng.standard_normal((B, 1, L, S))
        return {"attn_mask": additive}, {"attn_mask": torch.as_tensor(additive)}, additive
    if kind == "causal":
        return {"is_causal": True}, {"is_causal": True}, np.where(causal, 0, -np.inf)
    if kind == "causal_and_bool":  # is_causal excludes attn_mask: the combination is one mask
        both = causal & allowed
        return {"attn_mask": both}, {"attn_mask": torch.as_tensor(both)}, \
            np.where(both, 0, -np.inf)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["none", "bool", "bool_batch", "float", "causal",
                                  "causal_and_bool"])
def test_scaled_dot_product_attention(rng, kind):
    ours_kw, torch_kw, additive = _masks(kind, rng)
    arrays = [rng.standard_normal((B, H, L, E)), rng.standard_normal((B, H, S, E)),
              rng.standard_normal((B, H, S, EV))]
    _compare(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **ours_kw),
             lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, **torch_kw),
             arrays, rng)

    def torch_weights(q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2) / np.sqrt(E) + torch.as_tensor(additive), -1)

    _compare(lambda q, k, v: F.scaled_dot_product_attention_with_weights(q, k, v, **ours_kw)[1],
             torch_weights, arrays, rng)


def test_attention_with_scale_and_broadcast_key_value(rng):
    arrays = [rng.standard_normal((B, H, L, E)), rng.standard_normal((S, E)),
              rng.standard_normal((S, EV))]

    def theirs(q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(
            q, k.expand(B, H, S, E), v.expand(B, H, S, EV), scale=0.7
        )

    _compare(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.7), theirs,
             arrays, rng)


def test_attention_fully_masked_row_matches_torch_on_the_other_rows(rng):
    """PyTorch gives NaN for a query that may see no key; we give zeros. Every other
    query, and the gradients of K and V, must match PyTorch run on those queries only."""
    allowed = rng.random((L, S)) > 0.4
    allowed[:, 0] = True
    allowed[2] = False  # query 2 may look at nothing
    alive = [0, 1, 3]
    q, k, v = (rng.standard_normal((B, H, n, d)) for n, d in ((L, E), (S, E), (S, EV)))
    upstream = rng.standard_normal((B, H, L, EV))

    mine = [mt.tensor(a, requires_grad=True) for a in (q, k, v)]
    out = F.scaled_dot_product_attention(*mine, attn_mask=allowed)
    out.backward(upstream)

    ref = [torch.tensor(a, requires_grad=True) for a in (q[..., alive, :], k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(
        *ref, attn_mask=torch.as_tensor(allowed[alive])
    )
    expected.backward(torch.as_tensor(upstream[..., alive, :]))

    np.testing.assert_allclose(out.data[..., alive, :], expected.detach().numpy(), **TOL)
    np.testing.assert_array_equal(out.data[..., 2, :], 0)
    np.testing.assert_allclose(mine[0].grad.data[..., alive, :], ref[0].grad.numpy(), **TOL)
    np.testing.assert_array_equal(mine[0].grad.data[..., 2, :], 0)
    np.testing.assert_allclose(mine[1].grad.data, ref[1].grad.numpy(), **TOL)
    np.testing.assert_allclose(mine[2].grad.data, ref[2].grad.numpy(), **TOL)


def test_attention_second_derivatives_match_torch(rng):
    q, k, v = (rng.standard_normal((1, 3, 2)) for _ in range(3))
    allowed = np.array([[True, False, True], [True, True, False], [True, True, True]])
    direction = rng.standard_normal((1, 3, 2))

    mine = [mt.tensor(a, requires_grad=True) for a in (q, k, v)]
    out = F.scaled_dot_product_attention(*mine, attn_mask=allowed)
    grads = mt.grad((out * out).sum(), mine, create_graph=True)
    second = mt.grad(sum((g * mt.tensor(direction)).sum() for g in grads), mine)

    ref = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(
        *ref, attn_mask=torch.as_tensor(allowed)
    )
    tgrads = torch.autograd.grad((expected * expected).sum(), ref, create_graph=True)
    tsecond = torch.autograd.grad(sum((g * torch.as_tensor(direction)).sum() for g in tgrads), ref)
    for a, b in zip(grads + second, tgrads + tsecond):
        np.testing.assert_allclose(a.data, b.detach().numpy(), **TOL)


@pytest.mark.parametrize("n", [5, 300])  # 300: (L, S) large enough for the tiled path
@pytest.mark.parametrize("masked", [False, True])
def test_grouped_query_attention_matches_torch(rng, n, masked):
    """enable_gqa=True: 4 query heads share 2 key/value heads, with an (H, L, S) mask too."""
    arrays = [rng.standard_normal((1, 4, n, E)), rng.standard_normal((1, 2, n, E)),
              rng.standard_normal((1, 2, n, EV))]
    allowed = rng.random((4, n, n)) > 0.3
    allowed[..., 0] = True
    ours_kw = {"attn_mask": allowed} if masked else {"is_causal": True}
    torch_kw = {"attn_mask": torch.as_tensor(allowed)} if masked else {"is_causal": True}
    _compare(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **ours_kw, enable_gqa=True),
             lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
                 q, k, v, **torch_kw, enable_gqa=True),
             arrays, rng)
    q, k, v = (mt.tensor(a) for a in arrays)
    out, weights = F.scaled_dot_product_attention_with_weights(q, k, v, **ours_kw,
                                                               enable_gqa=True)
    assert out.shape == (1, 4, n, EV) and weights.shape == (1, 4, n, n)
