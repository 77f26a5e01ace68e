"""minitransformer.functional: gradchecks (float64), fused vs composed attention, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
from minitransformer.errors import DtypeError, ShapeError
from tests.conftest import randn


# ----- softmax family, activations ---------------------------------------------------------------
@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_family_gradcheck(rng, fn, axis):
    x = randn(rng, 3, 4)
    assert mt.gradcheck(lambda x: fn(x, axis=axis), [x])


@pytest.mark.parametrize("dtype", [mt.float32, mt.float64])
def test_softmax_family_is_stable_for_huge_logits(dtype):
    x = mt.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype, requires_grad=True)
    probs = F.softmax(x, dim=-1)
    log_probs = F.log_softmax(x, dim=-1)
    assert np.isfinite(probs.data).all() and np.isfinite(log_probs.data).all()
    np.testing.assert_allclose(probs.data[0], [1, 0, 0])
    np.testing.assert_allclose(probs.data[1], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(log_probs.data[0], [0, -2e4, -1e4], rtol=1e-6)
    (probs.sum() + log_probs[:, 0].sum()).backward()
    assert np.isfinite(x.grad.data).all()
    assert probs.dtype == dtype and log_probs.dtype == dtype


def test_logsumexp_is_stable():
    x = mt.tensor([1e4, 1e4], dtype=mt.float64)
    np.testing.assert_allclose(F.logsumexp(x, axis=-1).item(), 1e4 + math.log(2))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_gradcheck(rng, approximate):
    x = randn(rng, 2, 5)
    assert mt.gradcheck(lambda x: F.gelu(x, approximate=approximate), [x])


def test_activation_reexports_are_the_engine_ops(rng):
    x = randn(rng, 6, requires_grad=False)
    np.testing.assert_allclose(F.relu(x).data, np.maximum(x.data, 0))
    np.testing.assert_allclose(F.tanh(x).data, np.tanh(x.data))
    np.testing.assert_allclose(F.sigmoid(x).data, 1 / (1 + np.exp(-x.data)))


# ----- dropout --------------------------------------------------------------------------------
def test_dropout_delegates_to_the_engine(rng):
    x = randn(rng, 50, 40)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    a = F.dropout(x, 0.25, seed=3)
    b = F.dropout(x, 0.25, generator=np.random.default_rng(3))
    np.testing.assert_array_equal(a.data, b.data)
    kept = a.data != 0
    np.testing.assert_allclose(a.data[kept], x.data[kept] / 0.75)
    assert 0.6 < kept.mean() < 0.9
    # no generator: the default one, which mt.manual_seed reseeds (PyTorch's F.dropout(x, p))
    mt.manual_seed(5)
    c = F.dropout(x, 0.5)
    mt.manual_seed(5)
    np.testing.assert_array_equal(F.dropout(x, 0.5).data, c.data)


# ----- linear, embedding, layer_norm ------------------------------------------------------------
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_gradcheck(rng, with_bias):
    x, w = randn(rng, 2, 3, 4), randn(rng, 5, 4)
    b = randn(rng, 5) if with_bias else None
    y = F.linear(x, w, b)
    assert y.shape == (2, 3, 5)
    expected = x.data @ w.data.T + (b.data if with_bias else 0)
    np.testing.assert_allclose(y.data, expected, rtol=1e-12)
    inputs = [x, w, b] if with_bias else [x, w]
    assert mt.gradcheck(lambda *t: F.linear(*t), inputs)


def test_linear_errors_name_the_shapes(rng):
    x, w = randn(rng, 2, 3), randn(rng, 5, 4)
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(5, 4\)"):
        F.linear(x, w)
    with pytest.raises(ShapeError, match=r"bias of shape \(4,\)"):
        F.linear(randn(rng, 2, 4), w, randn(rng, 4))


@pytest.mark.parametrize("as_tensor", [True, False])
def test_embedding_rows_and_accumulating_gradient(rng, as_tensor):
    weight = randn(rng, 5, 3)
    index = np.array([[1, 4, 1], [0, 1, 2]])
    out = F.embedding(mt.tensor(index) if as_tensor else index, weight)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out.data, weight.data[index])
    upstream = rng.standard_normal(out.shape)
    out.backward(upstream)
    expected = np.zeros((5, 3))
    np.add.at(expected, index, upstream)  # row 1 is used three times
    np.testing.assert_allclose(weight.grad.data, expected, rtol=1e-12)
    assert mt.gradcheck(lambda w: F.embedding(index, w), [randn(rng, 5, 3)])


def test_embedding_errors(rng):
    weight = randn(rng, 5, 3)
    with pytest.raises(IndexError, match=r"index 7 .*5 embeddings"):
        F.embedding(np.array([0, 7, 2]), weight)
    with pytest.raises(IndexError, match=r"index -1"):
        F.embedding(np.array([0, -1]), weight)
    with pytest.raises(DtypeError, match="float64"):
        F.embedding(np.array([0.0, 1.0]), weight)


@pytest.mark.parametrize("x_shape", [(4,), (3, 4), (2, 3, 4)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_fused_linear_matches_composed(rng, x_shape, with_bias):
    """The fused node (bias added into the product's output) against ``x @ W.T + b``:
    same values and gradients, for 1-D, 2-D and batched inputs, with and without bias,
    and second derivatives that pass gradgradcheck."""
    x, weight = randn(rng, *x_shape), randn(rng, 5, 4)
    bias = randn(rng, 5) if with_bias else None
    inputs = [x, weight, bias] if with_bias else [x, weight]
    upstream = mt.tensor(rng.standard_normal((*x_shape[:-1], 5)))
    y_fused, y_ref = F.linear(x, weight, bias), F.linear_reference(x, weight, bias)
    assert isinstance(y_fused._ctx, F.Linear)
    np.testing.assert_allclose(y_fused.data, y_ref.data, rtol=1e-12)
    for fused, ref in zip(mt.grad(y_fused, inputs, upstream), mt.grad(y_ref, inputs, upstream)):
        np.testing.assert_allclose(fused.data, ref.data, rtol=1e-10, atol=1e-12)
    assert mt.gradgradcheck(lambda *args: F.linear(*args), inputs)


def test_fused_linear_takes_a_transposed_input_and_keeps_float32(rng):
    """A non-contiguous input (a transposed view) and float32 give what the composed does."""
    x = mt.tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    weight = mt.tensor(rng.standard_normal((5, 4)).astype(np.float32), requires_grad=True)
    bias = mt.tensor(rng.standard_normal(5).astype(np.float32), requires_grad=True)
    y = F.linear(x.T, weight, bias)  # (3, 4) view with strides of a (4, 3) array
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, x.data.T @ weight.data.T + bias.data, rtol=1e-5)
    y.sum().backward()
    np.testing.assert_allclose(bias.grad.data, np.full(5, 3.0), rtol=1e-6)
    np.testing.assert_allclose(x.grad.data, np.tile(weight.data.sum(0), (3, 1)).T, rtol=1e-5)


@pytest.mark.parametrize("normalized_shape", [4, (3, 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_gradcheck(rng, normalized_shape, affine):
    x = randn(rng, 2, 3, 4)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    weight, bias = (randn(rng, *shape), randn(rng, *shape)) if affine else (None, None)
    y = F.layer_norm(x, normalized_shape, weight, bias)
    axes = tuple(range(3 - len(shape), 3))
    normalised = (x.data - x.data.mean(axes, keepdims=True)) / np.sqrt(
        x.data.var(axes, keepdims=True) + 1e-5
    )
    expected = normalised * weight.data + bias.data if affine else normalised
    np.testing.assert_allclose(y.data, expected, rtol=1e-10)
    inputs = [x, weight, bias] if affine else [x]
    assert mt.gradcheck(lambda x, *wb: F.layer_norm(x, normalized_shape, *wb), inputs)


@pytest.mark.parametrize("normalized_shape", [4, (3, 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_fused_layer_norm_matches_composed(rng, normalized_shape, affine):
    """The fused node and the composed reference: same values, same gradients for a random
    upstream gradient, and second derivatives that pass gradgradcheck."""
    x = randn(rng, 2, 3, 4)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    weight, bias = (randn(rng, *shape), randn(rng, *shape)) if affine else (None, None)
    inputs = [x, weight, bias] if affine else [x]
    upstream = rng.standard_normal((2, 3, 4))
    results = []
    for fn in (F.layer_norm, F.layer_norm_reference):
        y = fn(x, normalized_shape, weight, bias)
        results.append((y.data, mt.grad(y, inputs, grad_outputs=mt.tensor(upstream))))
    (y_fused, grads_fused), (y_ref, grads_ref) = results
    assert isinstance(F.layer_norm(x, normalized_shape, weight, bias)._ctx, F.LayerNorm)
    np.testing.assert_allclose(y_fused, y_ref, rtol=1e-12, atol=1e-12)
    for fused, ref in zip(grads_fused, grads_ref):
        np.testing.assert_allclose(fused.data, ref.data, rtol=1e-10, atol=1e-12)
    assert mt.gradgradcheck(lambda x, *wb: F.layer_norm(x, normalized_shape, *wb), inputs)


def test_layer_norm_errors(rng):
    x = randn(rng, 2, 3, 4)
    with pytest.raises(ShapeError, match=r"\(3,\).*\(2, 3, 4\)"):
        F.layer_norm(x, 3)
    with pytest.raises(ShapeError, match=r"weight has shape \(3,\)"):
        F.layer_norm(x, 4, weight=randn(rng, 3))


# ----- losses ---------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_gradcheck(rng, reduction):
    x, y = randn(rng, 3, 4), randn(rng, 3, 4)
    loss = F.mse_loss(x, y, reduction=reduction)
    squared = (x.data - y.data) ** 2
    expected = {"mean": squared.mean(), "sum": squared.sum(), "none": squared}[reduction]
    np.testing.assert_allclose(loss.data, expected, rtol=1e-12)
    assert mt.gradcheck(lambda x, y: F.mse_loss(x, y, reduction=reduction), [x, y])


def test_mse_loss_errors(rng):
    with pytest.raises(ShapeError, match=r"\(3, 4\).*\(4,\)"):
        F.mse_loss(randn(rng, 3, 4), randn(rng, 4))
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(randn(rng, 3), randn(rng, 3), reduction="avg")


def _cross_entropy_numpy(logits, target, ignore_index, reduction):
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    keep = target != ignore_index
    safe = np.where(keep, target, 0)
    losses = -np.take_along_axis(log_probs, safe[..., None], -1)[..., 0] * keep
    if reduction == "none":
        return losses
    return losses.sum() / max(keep.sum(), 1) if reduction == "mean" else losses.sum()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [None, -100, 2])
def test_cross_entropy_values_and_gradcheck(rng, reduction, ignore_index):
    logits = randn(rng, 2, 4, 3)  # (N, C, d1): the classes on axis 1, as PyTorch
    target = rng.integers(0, 4, size=(2, 3))
    target[0, 1] = 2
    if ignore_index == -100:
        target[1, 0] = -100
    loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction=reduction)
    expected = _cross_entropy_numpy(np.moveaxis(logits.data, 1, -1), target, ignore_index,
                                    reduction)
    np.testing.assert_allclose(loss.data, expected, rtol=1e-12)
    assert mt.gradcheck(
        lambda z: F.cross_entropy(z, target, ignore_index=ignore_index, reduction=reduction),
        [logits],
    )


def test_cross_entropy_gradient_is_softmax_minus_onehot(rng):
    logits = randn(rng, 4, 3)
    target = mt.tensor([0, 2, -1, 1])
    F.cross_entropy(logits, target, ignore_index=-1).backward()
    probs = np.exp(logits.data) / np.exp(logits.data).sum(-1, keepdims=True)
    onehot = np.eye(3)[[0, 2, 0, 1]]
    expected = (probs - onehot) / 3
    expected[2] = 0  # the ignored row gets no gradient
    np.testing.assert_allclose(logits.grad.data, expected, rtol=1e-12)


def test_cross_entropy_all_ignored_is_nan_with_zero_gradients_as_torch(rng):
    """PyTorch: the mean over no row is NaN (0 / 0), its gradients 0; the sum is 0."""
    logits = randn(rng, 2, 3)
    loss = F.cross_entropy(logits, np.array([-100, -100]), ignore_index=-100)
    loss.backward()
    assert np.isnan(loss.item())
    np.testing.assert_array_equal(logits.grad.data, 0)
    total = F.cross_entropy(logits, np.array([-100, -100]), reduction="sum")
    assert total.item() == 0


def test_cross_entropy_gradgradcheck(rng):
    logits = randn(rng, 3, 4)
    target = np.array([1, 3, 0])
    for reduction in ("mean", "none"):
        assert mt.gradgradcheck(
            lambda z, r=reduction: F.cross_entropy(z, target, ignore_index=3, reduction=r),
            [logits],
        )


def test_cross_entropy_huge_logits_and_float32():
    logits = mt.tensor([[1e4, -1e4, 0.0], [0.0, 1e4, -1e4]], requires_grad=True)
    loss = F.cross_entropy(logits, np.array([1, 1]))
    loss.backward()
    assert loss.dtype == mt.float32 and logits.grad.dtype == mt.float32
    np.testing.assert_allclose(loss.item(), 1e4, rtol=1e-6)  # (2e4 + 0) / 2
    assert np.isfinite(logits.grad.data).all()


def test_cross_entropy_errors(rng):
    logits = randn(rng, 2, 4, 3)  # (N, C, d1)
    with pytest.raises(ShapeError, match=r"target of shape \(3, 2\).*input of shape \(2, 4, 3\)"):
        F.cross_entropy(logits, np.zeros((3, 2), dtype=int))
    with pytest.raises(IndexError, match=r"target value 4 .*4 classes"):
        F.cross_entropy(logits, np.array([[0, 1, 4], [0, 0, 0]]))
    with pytest.raises(IndexError, match=r"target value -1 .*4 classes"):
        F.cross_entropy(logits, np.array([[0, 1, -1], [0, 0, 0]]), ignore_index=-100)
    with pytest.raises(ShapeError, match=r"probabilities\) of shape \(2, 3\).*\(2, 4, 3\)"):
        F.cross_entropy(logits, np.zeros((2, 3)))
    with pytest.raises(DtypeError, match="bool"):
        F.cross_entropy(logits, np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(logits, np.zeros((2, 3), dtype=int), reduction="max")


# ----- attention ----------------------------------------------------------------------------
B, H, L, S, E = 2, 2, 3, 4, 3
with_weights = F.scaled_dot_product_attention_with_weights  # (output, weights)


def _mask_kwargs(kind: str, rng: np.random.Generator, length: int = L, source: int = S) -> dict:
    """Every mask kind scaled_dot_product_attention accepts (None: no mask)."""
    allowed = rng.random((length, source)) > 0.4
    allowed[:, 0] = True  # no fully masked row, except where asked for
    float_mask = rng.standard_normal((length, source))
    float_mask[0, 1] = -np.inf
    if kind == "none":
        return {}
    if kind == "bool":
        return {"attn_mask": allowed}
    if kind == "float":
        return {"attn_mask": float_mask}
    if kind == "causal":
        return {"is_causal": True}
    if kind == "bool_batch":  # (B, 1, L, S): one mask per batch entry, shared by the heads
        batch = rng.random((B, 1, length, source)) > 0.4
        batch[..., 0] = True
        return {"attn_mask": mt.tensor(batch)}
    if kind == "float_batch":
        return {"attn_mask": mt.tensor(rng.standard_normal((B, 1, length, source)))}
    if kind == "causal_and_bool":  # PyTorch's way: one mask (is_causal excludes attn_mask)
        return {"attn_mask": allowed & np.tril(np.ones((length, source), dtype=bool))}
    if kind == "dead_row_bool":
        allowed[1] = False
        return {"attn_mask": allowed}
    if kind == "dead_row_float":
        float_mask[2] = -np.inf
        return {"attn_mask": float_mask}
    raise AssertionError(kind)


MASK_KINDS = ["none", "bool", "float", "causal", "bool_batch", "float_batch", "causal_and_bool",
              "dead_row_bool", "dead_row_float"]


def _qkv(rng, length=L, source=S, batch=(B, H)):
    return (randn(rng, *batch, length, E), randn(rng, *batch, source, E),
            randn(rng, *batch, source, 2))


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_attention_gradcheck(rng, kind):
    kwargs = _mask_kwargs(kind, rng)
    q, k, v = _qkv(rng, batch=(B, 1) if kind.endswith("batch") else (1, H))
    assert mt.gradcheck(lambda q, k, v: with_weights(q, k, v, **kwargs),
                        [q, k, v])


def test_attention_gradcheck_one_tensor_as_query_key_and_value(rng):
    x = randn(rng, 2, 3, 4)
    assert mt.gradcheck(lambda x: with_weights(x, x, x, is_causal=True), [x])


def test_attention_gradcheck_broadcast_leading_axes_and_scale(rng):
    q = randn(rng, 2, 1, L, E)  # (B, 1, L, E)
    k = randn(rng, 1, 2, S, E)  # (1, H, S, E)
    v = randn(rng, S, 2)  # (S, Ev), shared by every batch entry and head
    out, weights = with_weights(q, k, v, scale=0.3)
    assert out.shape == (2, 2, L, 2) and weights.shape == (2, 2, L, S)
    assert mt.gradcheck(lambda q, k, v: with_weights(q, k, v, scale=0.3),
                        [q, k, v])


def test_attention_gradcheck_with_dropout(rng):
    q, k, v = _qkv(rng, batch=(1,))

    def attend(q, k, v):  # a fresh generator per call: the same dropout mask every time
        gen = np.random.default_rng(5)
        return with_weights(q, k, v, dropout_p=0.3, generator=gen)

    out, weights = attend(q, k, v)
    plain, _ = with_weights(q, k, v)
    assert not np.allclose(out.data, plain.data)
    np.testing.assert_allclose(weights.data.sum(-1), 1, rtol=1e-12)  # weights before dropout
    assert mt.gradcheck(attend, [q, k, v])


@pytest.mark.parametrize("kind", ["bool", "causal", "dead_row_float"])
def test_attention_gradgradcheck(rng, kind):
    kwargs = _mask_kwargs(kind, rng)
    q, k, v = _qkv(rng, batch=(1,))
    assert mt.gradgradcheck(lambda q, k, v: with_weights(q, k, v, **kwargs),
                            [q, k, v])


def _outputs_and_grads(attend, inputs, upstream, create_graph=False):
    out, weights = attend(*inputs)
    total = (out * mt.tensor(upstream[0])).sum() + (weights * mt.tensor(upstream[1])).sum()
    grads = mt.grad(total, inputs, create_graph=create_graph)
    return [out.data, weights.data] + [g.data for g in grads]


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_fused_attention_matches_the_composed_reference(rng, kind, create_graph):
    kwargs = _mask_kwargs(kind, rng)
    q, k, v = _qkv(rng)
    upstream = [rng.standard_normal((B, H, L, 2)), rng.standard_normal((B, H, L, S))]
    fused = _outputs_and_grads(lambda *t: with_weights(*t, **kwargs),
                               [q, k, v], upstream, create_graph)
    composed = _outputs_and_grads(lambda *t: F.attention_reference(*t, **kwargs),
                                  [q, k, v], upstream, create_graph)
    for a, b in zip(fused, composed):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def _first_derivatives(attend, inputs, upstream, create_graph):
    """dL/d(Q, K, V) of L = sum(Z * dZ) + sum(A * dA), plain or under create_graph."""
    out, weights = attend(*inputs)
    total = (out * mt.tensor(upstream[0])).sum() + (weights * mt.tensor(upstream[1])).sum()
    return [g.data for g in mt.grad(total, inputs, create_graph=create_graph)]


@pytest.mark.parametrize("case", ["dead_row_bool", "dead_row_float", "causal", "scale",
                                  "dropout", "dropout_causal", "gqa", "float_and_causal"])
def test_fused_create_graph_first_derivative_equals_the_plain_one(rng, case):
    """The create_graph backward (the reference composition, differentiated) gives the fast
    backward's gradients: masks, fully masked rows (zeros, no NaN), scale, the forward's
    own dropout mask, grouped-query heads, and a float mask with is_causal (the layers')."""
    from minitransformer.ops.sdpa import attention

    q, k, v = _qkv(rng)
    kwargs = {"implementation": "fused", "need_weights": True}
    if case.startswith("dead_row") or case == "causal":
        kwargs.update(_mask_kwargs(case, rng))
    if case == "scale":
        kwargs.update(scale=0.37, attn_mask=_mask_kwargs("bool", rng)["attn_mask"])
    if case.startswith("dropout"):
        kwargs.update(dropout_p=0.4, is_causal=case == "dropout_causal")
    if case == "gqa":  # 4 query heads on 2 key/value heads
        q = randn(rng, B, 2 * H, L, E)
        kwargs.update(enable_gqa=True, attn_mask=_mask_kwargs("dead_row_bool", rng)["attn_mask"])
    if case == "float_and_causal":
        kwargs.update(is_causal=True, attn_mask=_mask_kwargs("float", rng)["attn_mask"])

    def attend(*t):  # a fresh generator per call: the same dropout mask every time
        return attention(*t, generator=np.random.default_rng(3), **kwargs)

    out, weights = attend(q, k, v)
    upstream = [rng.standard_normal(out.shape), rng.standard_normal(weights.shape)]
    plain = _first_derivatives(attend, [q, k, v], upstream, create_graph=False)
    graph = _first_derivatives(attend, [q, k, v], upstream, create_graph=True)
    for a, b in zip(plain, graph):
        assert np.isfinite(a).all() and np.isfinite(b).all()
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    if case.startswith("dead_row"):  # a fully masked row: zero weights, zero dQ
        row = 1 if case == "dead_row_bool" else 2  # where _mask_kwargs masks every key
        assert not weights.data[..., row, :].any()
        assert not graph[0][..., row, :].any()


def test_attention_gradgradcheck_with_dropout(rng):
    q, k, v = _qkv(rng, batch=(1,))

    def attend(q, k, v):  # a fresh generator per call: the same dropout mask every time
        return with_weights(q, k, v, dropout_p=0.3, generator=np.random.default_rng(5))

    assert mt.gradgradcheck(attend, [q, k, v])


@pytest.mark.parametrize("kind", ["dead_row_bool", "dead_row_float"])
def test_fully_masked_row_is_zero_without_nan(rng, kind):
    kwargs = _mask_kwargs(kind, rng)
    dead = 1 if kind == "dead_row_bool" else 2
    q, k, v = _qkv(rng)
    out, weights = with_weights(q, k, v, **kwargs)
    (out.sum() + (weights * weights).sum()).backward()
    for t in (out, weights, q.grad, k.grad, v.grad):
        assert np.isfinite(t.data).all()
    np.testing.assert_array_equal(weights.data[..., dead, :], 0)
    np.testing.assert_array_equal(out.data[..., dead, :], 0)
    np.testing.assert_array_equal(q.grad.data[..., dead, :], 0)
    alive = [i for i in range(L) if i != dead]
    np.testing.assert_allclose(weights.data[..., alive, :].sum(-1), 1, rtol=1e-12)


def test_attention_masks_forbid_what_they_say(rng):
    q, k, v = _qkv(rng, length=3, source=3)
    _, causal = with_weights(q, k, v, is_causal=True)
    np.testing.assert_array_equal(causal.data[..., np.triu_indices(3, 1)[0],
                                              np.triu_indices(3, 1)[1]], 0)
    allowed = np.array([[True, False, True]])  # (1, S): nobody may look at key 1
    _, weights = with_weights(q, k, v, attn_mask=allowed)
    np.testing.assert_array_equal(weights.data[..., 1], 0)
    assert (weights.data[..., [0, 2]] > 0).all()


def test_attention_cross_attention_shapes(rng):
    q, k, v = randn(rng, 2, 5, 4), randn(rng, 2, 3, 4), randn(rng, 2, 3, 6)
    out, weights = with_weights(q, k, v, is_causal=True)
    assert out.shape == (2, 5, 6) and weights.shape == (2, 5, 3)
    expected = np.tril(np.ones((5, 3), dtype=bool))  # torch's causal mask for L != S
    np.testing.assert_array_equal(weights.data > 0, np.broadcast_to(expected, (2, 5, 3)))


def test_attention_float32_stays_float32(rng):
    q, k, v = (mt.tensor(rng.standard_normal((2, 3, 4)), dtype=mt.float32, requires_grad=True)
               for _ in range(3))
    out, weights = with_weights(q, k, v, attn_mask=rng.standard_normal((3, 3)), dropout_p=0.1,
                                generator=rng)
    out.sum().backward()
    for t in (out, weights, q.grad, k.grad, v.grad):
        assert t.dtype == mt.float32


def test_attention_without_grad_records_nothing(rng):
    q, k, v = _qkv(rng)
    with mt.no_grad():
        out, weights = with_weights(q, k, v)
    assert out._ctx is None and weights._ctx is None and not out.requires_grad


def test_attention_errors(rng):
    q, k, v = randn(rng, 2, 3, 4), randn(rng, 2, 5, 4), randn(rng, 2, 5, 6)
    with pytest.raises(ShapeError, match=r"query of shape \(2, 3, 4\).*key of shape \(2, 5, 3\)"):
        with_weights(q, randn(rng, 2, 5, 3), v)
    with pytest.raises(ShapeError, match=r"key of shape \(2, 5, 4\).*value of shape \(2, 4, 6\)"):
        with_weights(q, k, randn(rng, 2, 4, 6))
    with pytest.raises(ShapeError, match=r"mask of shape \(3, 4\).*\(2, 3, 5\)"):
        with_weights(q, k, v, attn_mask=np.ones((3, 4), dtype=bool))
    with pytest.raises(ShapeError, match=r"mask of shape \(4, 3, 5\).*\(2, 3, 5\)"):
        with_weights(q, k, v, attn_mask=np.ones((4, 3, 5)))
    with pytest.raises(ShapeError, match="do not broadcast"):
        with_weights(q, randn(rng, 3, 5, 4), v)
    with pytest.raises(DtypeError, match="int64"):
        with_weights(q, k, v, attn_mask=np.ones((3, 5), dtype=int))
    with pytest.raises(DtypeError, match="float32"):
        with_weights(q, k.float(), v)
    with pytest.raises(ValueError, match="dropout_p"):
        with_weights(q, k, v, dropout_p=1.0, generator=rng)


def test_attention_returns_one_tensor_as_pytorch(rng):
    """nanoGPT's two lines: the call, then the output's transpose (a tuple failed here)."""
    q, k, v = _qkv(rng, length=4, source=4)  # (B, nh, T, hs)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert isinstance(y, mt.Tensor) and y.shape == (B, H, 4, 2)
    y = y.transpose(1, 2)  # (B, nh, T, hs) -> (B, T, nh, hs)
    out, weights = with_weights(q, k, v, is_causal=True)
    np.testing.assert_array_equal(y.data, out.data.transpose(0, 2, 1, 3))
    assert weights.shape == (B, H, 4, 4)


def test_attention_takes_pytorchs_argument_order(rng):
    """(query, key, value, attn_mask, dropout_p, is_causal), then scale and enable_gqa by
    keyword only, as torch.nn.functional.scaled_dot_product_attention."""
    q, k, v = _qkv(rng, length=4, source=4)
    causal = F.scaled_dot_product_attention(q, k, v, None, 0.0, True)
    np.testing.assert_array_equal(causal.data,
                                  F.scaled_dot_product_attention(q, k, v, is_causal=True).data)
    with pytest.raises(TypeError):
        F.scaled_dot_product_attention(q, k, v, None, 0.0, False, 0.5)  # scale: keyword only


def test_attention_is_causal_with_a_mask_is_one_clear_error(rng):
    q, k, v = _qkv(rng)
    allowed = _mask_kwargs("bool", rng)["attn_mask"]
    for attend in (F.scaled_dot_product_attention, with_weights):
        with pytest.raises(ValueError, match=r"not both.*attn_mask=nn.causal_mask\(L, S\) & mask"):
            attend(q, k, v, attn_mask=allowed, is_causal=True)
    # what the message says to write: one mask, the same as both (the layers' engine)
    from minitransformer.ops import sdpa

    one_mask = F.scaled_dot_product_attention(q, k, v, attn_mask=mt.nn.causal_mask(L, S) & allowed)
    both, _ = sdpa.attention(q, k, v, attn_mask=allowed, is_causal=True)
    np.testing.assert_allclose(one_mask.data, both.data, rtol=0, atol=1e-12)


def test_attention_dropout_draws_from_the_default_generator(rng):
    """No generator: the thread's default one, which manual_seed reseeds (PyTorch's way)."""
    q, k, v = _qkv(rng)
    draws = []
    for _ in range(2):
        mt.manual_seed(3)
        draws.append(F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).data)
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.allclose(draws[0], F.scaled_dot_product_attention(q, k, v).data)


def test_attention_weights_function_refuses_the_tiled_path(rng):
    q, k, v = _qkv(rng)
    with pytest.raises(ValueError, match=r"never forms the weights: call F.scaled_dot_product_att"):
        with_weights(q, k, v, implementation="tiled")


@pytest.mark.parametrize("need_weights", [True, False])
def test_sdpa_need_weights_names_the_function_that_returns_them(need_weights, rng):
    q = randn(rng, 1, 3, 4)
    with pytest.raises(TypeError, match="need_weights") as caught:
        F.scaled_dot_product_attention(q, q, q, need_weights=need_weights)
    if need_weights:
        assert "F.scaled_dot_product_attention_with_weights(" in str(caught.value)
    else:
        assert "drop need_weights=False" in str(caught.value)
    assert "unexpected keyword" not in str(caught.value)
