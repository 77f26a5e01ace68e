"""nn: module mechanics (registration, modes, devices, state dicts) and gradchecks of
every layer, in float64, with respect to the inputs and to every parameter."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
import minitransformer.nn as nn
from minitransformer.autograd import Function
from minitransformer.errors import ShapeError
from tests.conftest import randn


def small_encoder(norm_first: bool = False, num_layers: int = 2) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(4, 2, batch_first=True,
                                       dim_feedforward=8, norm_first=norm_first, dropout=0.0)
    return nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(4))


class Toy(nn.Module):
    """Registers a parameter, a sub-module, a buffer and a plain attribute, in that order."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(np.ones(3, np.float32))
        self.inner = nn.Linear(3, 2)
        self.register_buffer("counts", mt.zeros(3, dtype=mt.int64))
        self.offset = nn.Parameter(np.zeros(2, np.float32))
        self.note = mt.zeros(2)  # a plain tensor attribute: not registered

    def forward(self, x: mt.Tensor) -> mt.Tensor:
        return self.inner(x * self.scale) + self.offset


# ----- registration and traversal ------------------------------------------------------------
def test_registration_order_and_dotted_names():
    toy = Toy()
    assert [n for n, _ in toy.named_parameters()] == [
        "scale", "offset", "inner.weight", "inner.bias"
    ]
    assert [n for n, _ in toy.named_buffers()] == ["counts"]
    assert [n for n, _ in toy.named_children()] == ["inner"]
    assert [n for n, _ in toy.named_modules()] == ["", "inner"]
    assert list(toy.children()) == [toy.inner]
    assert not any(p is toy.note for p in toy.parameters())

    encoder = small_encoder()
    names = [n for n, _ in encoder.named_parameters()]
    assert names[:2] == ["layers.0.self_attn.q_proj.weight", "layers.0.self_attn.q_proj.bias"]
    assert "layers.1.norm2.bias" in names and names[-2:] == ["norm.weight", "norm.bias"]
    assert len(names) == len(set(names)) == 2 * 16 + 2
    modules = [n for n, _ in encoder.named_modules()]
    assert modules[:4] == ["", "layers", "layers.0", "layers.0.self_attn"]


def test_reassignment_keeps_order_and_guards_parameter_slots():
    toy = Toy()
    toy.scale = nn.Parameter(np.full(3, 2.0))  # same slot, new value: order unchanged
    assert [n for n, _ in toy.named_parameters()][:2] == ["scale", "offset"]
    assert toy.scale.data[0] == 2.0
    with pytest.raises(TypeError, match="scale"):
        toy.scale = mt.ones(3)  # a plain tensor cannot silently replace a parameter
    toy.offset = None
    assert [n for n, _ in toy.named_parameters()] == ["scale", "inner.weight", "inner.bias"]
    del toy.inner
    assert [n for n, _ in toy.named_parameters()] == ["scale"]
    with pytest.raises(AttributeError, match="inner"):
        _ = toy.inner


def test_missing_super_init_is_a_clear_error():
    class Broken(nn.Module):
        def __init__(self) -> None:
            self.w = nn.Parameter(np.ones(2))

    with pytest.raises(AttributeError, match=r"super\(\).__init__"):
        Broken()


def test_shared_parameter_counted_once():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, nn.Linear(3, 3), lin)
    assert len(list(model.parameters())) == 4
    assert model.num_parameters() == 2 * (9 + 3)
    lin.bias.requires_grad_(False)
    assert model.num_parameters(trainable_only=True) == 2 * 9 + 3


def test_parameter_is_a_tensor_with_its_own_repr():
    p = nn.Parameter(np.array([1.0, 2.0]))
    assert isinstance(p, mt.Tensor) and p.requires_grad and p.is_leaf
    assert repr(p).startswith("Parameter containing:")
    assert not nn.Parameter(np.ones(2), requires_grad=False).requires_grad
    y = p * 2  # results of ops are plain tensors
    assert type(y) is mt.Tensor and type(p.detach()) is mt.Tensor


def test_sequential_and_module_list():
    a, b, c = nn.Linear(2, 3), nn.Softmax(axis=-1), nn.Linear(3, 1)
    seq = nn.Sequential(a, b)
    seq.append(c)
    assert len(seq) == 3 and seq[0] is a and seq[-1] is c and list(seq) == [a, b, c]
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    assert list(seq[1:]) == [b, c]
    x = mt.randn(4, 2)
    np.testing.assert_array_equal(seq(x).data, c(b(a(x))).data)

    ml = nn.ModuleList([a])
    ml.append(b).extend([c])
    assert len(ml) == 3 and ml[1] is b and ml[-1] is c and list(ml) == [a, b, c]
    ml[0] = nn.Linear(2, 2)
    assert [n for n, _ in ml.named_children()] == ["0", "1", "2"]  # replaced in place
    assert [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(IndexError, match="length 3"):
        ml[3]


def test_repr_is_nested_with_settings():
    text = repr(small_encoder(num_layers=1))
    assert text.startswith("TransformerEncoder(\n  (layers): ModuleList(\n")
    assert ("    (0): TransformerEncoderLayer(\n      norm_first=False, activation=relu, "
            "batch_first=True\n") in text
    assert "(q_proj): Linear(in_features=4, out_features=4, bias=True)" in text
    assert "(self_attn): MultiHeadAttention(\n        embed_dim=4, num_heads=2" in text
    assert "(norm1): LayerNorm((4,), eps=1e-05" in text
    assert text.endswith("(norm): LayerNorm((4,), eps=1e-05, elementwise_affine=True)\n)")
    assert repr(nn.Embedding(10, 3, padding_idx=0)) == "Embedding(10, 3, padding_idx=0)"
    assert repr(nn.Dropout(0.25)) == "Dropout(p=0.25)"


def test_call_tags_recorded_nodes_with_the_innermost_module():
    mha = nn.MultiHeadAttention(4, 2)
    x = mt.randn(1, 3, 4, requires_grad=True)
    out, weights = mha(x)
    assert out._ctx.module is mha.out_proj  # the bias add inside out_proj
    assert weights._ctx.module is mha  # the head averaging, in MultiHeadAttention itself
    seen, stack = set(), [out]
    while stack:
        t = stack.pop()
        if t._ctx is not None and id(t) not in seen:
            seen.add(id(t))
            stack.extend(t._ctx.inputs)
            if isinstance(t._ctx, F.ScaledDotProductAttention):
                assert t._ctx.module is mha
    assert mt.tensor([1.0], requires_grad=True).__mul__(2.0)._ctx.module is None


# ----- modes, gradients, devices ---------------------------------------------------------------
def test_train_eval_propagates_and_switches_dropout():
    layer = nn.TransformerEncoderLayer(4, 2, batch_first=True, dim_feedforward=8, dropout=0.5)
    assert all(m.training for m in layer.modules())
    assert layer.eval() is layer
    assert not any(m.training for m in layer.modules())
    x = mt.randn(2, 3, 4)
    np.testing.assert_array_equal(layer(x).data, layer(x).data)  # eval: deterministic
    layer.train()
    assert all(m.training for m in layer.modules())
    assert not np.array_equal(layer(x).data, layer(x).data)  # fresh masks every call
    drop = nn.Dropout(0.5).eval()
    assert drop(x) is x


def test_dropout_generators_are_seeded_and_independent():
    x = mt.ones(50)
    a, b = nn.Dropout(0.5, seed=3), nn.Dropout(0.5, seed=3)
    np.testing.assert_array_equal(a(x).data, b(x).data)
    mt.manual_seed(1)
    first = nn.Dropout(0.5)(x).data
    mt.manual_seed(1)
    np.testing.assert_array_equal(nn.Dropout(0.5)(x).data, first)

    # Deep copies in an encoder draw their own masks (and own their parameters).
    layer = nn.TransformerEncoderLayer(4, 2, batch_first=True, dim_feedforward=8, dropout=0.5)
    encoder = nn.TransformerEncoder(layer, 2)
    d0, d1 = encoder.layers[0].dropout1, encoder.layers[1].dropout1
    assert not np.array_equal(d0(x).data, d1(x).data)
    w0, w1 = encoder.layers[0].linear1.weight, encoder.layers[1].linear1.weight
    assert w0 is not w1 and w0 is not layer.linear1.weight
    np.testing.assert_array_equal(w0.data, w1.data)  # the copies start equal, as in PyTorch


def test_zero_grad_sets_none():
    toy = Toy()
    toy(mt.randn(2, 3)).sum().backward()
    assert all(p.grad is not None for p in toy.parameters())
    toy.zero_grad()
    assert all(p.grad is None for p in toy.parameters())


def test_to_float64_in_place_keeps_identity():
    model = nn.Sequential(nn.Linear(3, 2), nn.PositionalEncoding(2, max_len=4))
    toy = Toy()
    params = list(model.parameters())
    model(mt.randn(1, 4, 3)).sum().backward()
    assert model.to(mt.float64) is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(p.dtype == mt.float64 and p.grad.dtype == mt.float64 for p in params)
    assert model[1].pe.dtype == mt.float64
    assert all(p.requires_grad for p in params)
    toy.double()
    assert toy.counts.dtype == mt.int64  # integer buffers are not cast
    model.float()
    assert all(p.dtype == mt.float32 for p in params)


def test_seeded_construction_is_reproducible():
    mt.manual_seed(7)
    a = small_encoder()
    mt.manual_seed(7)
    b = small_encoder()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def test_initialisation_follows_pytorch():
    mt.manual_seed(0)
    lin = nn.Linear(16, 300)
    bound = 1 / math.sqrt(16)
    for p in (lin.weight, lin.bias):
        assert p.dtype == mt.float32 and np.abs(p.data).max() <= bound
        assert np.abs(p.data).max() > 0.9 * bound
    assert lin.weight.shape == (300, 16) and nn.Linear(2, 2, bias=False).bias is None
    assert nn.Linear(2, 3, dtype=mt.float64).weight.dtype == mt.float64
    emb = nn.Embedding(400, 50, padding_idx=-1)
    assert emb.padding_idx == 399 and not emb.weight.data[399].any()
    assert abs(emb.weight.data[:399].std() - 1) < 0.05
    norm = nn.LayerNorm(5)
    assert (norm.weight.data == 1).all() and (norm.bias.data == 0).all()
    assert nn.LayerNorm(5, elementwise_affine=False).num_parameters() == 0


def test_embedding_padding_row_gets_no_gradient():
    emb = nn.Embedding(5, 3, padding_idx=1)
    emb(np.array([[1, 2, 1], [4, 1, 0]])).sum().backward()
    assert not emb.weight.grad.data[1].any()
    np.testing.assert_array_equal(emb.weight.grad.data[[0, 2, 3, 4]], [[1] * 3, [1] * 3,
                                                                       [0] * 3, [1] * 3])


# ----- state dicts ---------------------------------------------------------------------------
def test_state_dict_is_ordered_detached_and_includes_buffers():
    model = nn.Sequential(nn.Linear(3, 4), nn.PositionalEncoding(4, max_len=6))
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "1.pe"]
    assert all(type(t) is mt.Tensor and not t.requires_grad and t._ctx is None
               for t in state.values())
    # As in PyTorch, the entries share the parameters' memory (detached views, not copies):
    # they move as training goes on, and copy_ into one writes into the model.
    with mt.no_grad():
        model[0].weight += 1
    np.testing.assert_array_equal(state["0.weight"].data, model[0].weight.data)
    state["0.bias"].copy_(mt.ones(4))
    np.testing.assert_array_equal(model[0].bias.data, np.ones(4))


def test_state_dict_round_trip_is_bit_identical():
    mt.manual_seed(0)
    source = small_encoder(norm_first=True)
    mt.manual_seed(1)
    target = small_encoder(norm_first=True)
    x = mt.randn(2, 3, 4)
    assert not np.array_equal(source(x).data, target(x).data)
    result = target.load_state_dict(source.state_dict())
    assert result == ([], []) and result.missing_keys == []
    for (name, p), q in zip(source.named_parameters(), target.parameters()):
        assert p.data.tobytes() == q.data.tobytes(), name
    np.testing.assert_array_equal(source(x).data, target(x).data)


def test_load_state_dict_accepts_arrays_and_casts_in_place():
    lin = nn.Linear(2, 3)
    weight = lin.weight
    lin.load_state_dict({"weight": np.arange(6.0).reshape(3, 2), "bias": [1.0, 2.0, 3.0]})
    assert lin.weight is weight and weight.dtype == mt.float32
    np.testing.assert_array_equal(weight.data, np.arange(6.0).reshape(3, 2))
    np.testing.assert_array_equal(lin.bias.data, [1, 2, 3])


def test_load_state_dict_strict_lists_every_problem_and_loads_nothing():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    before = {k: v.data.copy() for k, v in model.state_dict().items()}
    bad = {k: v.data + 1 for k, v in model.state_dict().items()}
    del bad["1.bias"]
    bad["0.weight"] = np.ones((4, 5))
    bad["2.weight"] = np.ones(3)
    with pytest.raises(nn.StateDictError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    assert "missing keys: 1.bias" in message
    assert "unexpected keys: 2.weight" in message
    assert "0.weight: checkpoint (4, 5), model (4, 3)" in message
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, KeyError)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value.data, before[key], err_msg=key)  # untouched


def test_load_state_dict_non_strict_loads_what_matches():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    state = {"0.bias": np.full(4, 7.0), "extra": np.zeros(2)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["0.weight", "1.weight", "1.bias"] and unexpected == ["extra"]
    np.testing.assert_array_equal(model[0].bias.data, np.full(4, 7.0))
    with pytest.raises(nn.StateDictError, match=r"0.bias: checkpoint \(5,\), model \(4,\)"):
        model.load_state_dict({"0.bias": np.zeros(5)}, strict=False)  # shapes always checked


# ----- layer behaviour -----------------------------------------------------------------------
def test_attention_is_the_article_formulas():
    rng = np.random.default_rng(0)
    att = nn.Attention(4).double()
    X = rng.standard_normal((2, 3, 4))
    Z, A = att(mt.tensor(X))
    Wq, Wk, Wv = (m.weight.data for m in (att.q_proj, att.k_proj, att.v_proj))
    bq, bk, bv = (m.bias.data for m in (att.q_proj, att.k_proj, att.v_proj))
    Q, K, V = X @ Wq.T + bq, X @ Wk.T + bk, X @ Wv.T + bv
    S = Q @ K.transpose(0, 2, 1) / 2.0
    expected = np.exp(S) / np.exp(S).sum(-1, keepdims=True)
    np.testing.assert_allclose(A.data, expected, rtol=1e-12)
    np.testing.assert_allclose(Z.data, expected @ V, rtol=1e-12)
    assert att.last_attention is None  # kept only when asked


def test_attention_masks_and_fully_masked_rows():
    att = nn.Attention(4).double()
    x = mt.randn(2, 3, 4, dtype=mt.float64)
    allowed = np.tril(np.ones((3, 3), dtype=bool))
    allowed[1] = False  # query 1 may look at nothing
    Z, A = att(x, attn_mask=allowed)
    assert not np.isnan(Z.data).any()
    np.testing.assert_array_equal(A.data[:, 1], 0)
    np.testing.assert_array_equal(Z.data[:, 1], 0)
    np.testing.assert_allclose(A.data[:, [0, 2]].sum(-1), 1)
    assert (A.data[:, 0, 1:] == 0).all() and (A.data[:, 2] > 0).all()
    float_mask = np.where(np.tril(np.ones((3, 3), dtype=bool)), 0.0, -np.inf)
    Zc, Ac = att(x, attn_mask=float_mask)
    Zb, Ab = att(x, attn_mask=np.tril(np.ones((3, 3), dtype=bool)))
    np.testing.assert_allclose(Ac.data, Ab.data, rtol=1e-12)
    att.store_attention = True
    att(x)
    assert att.last_attention.shape == (2, 1, 3, 3) and not att.last_attention.requires_grad


def test_single_head_mha_equals_attention_plus_out_proj():
    att = nn.Attention(4).double()
    mha = nn.MultiHeadAttention(4, 1).double()
    for name in ("q_proj", "k_proj", "v_proj"):
        getattr(mha, name).load_state_dict(getattr(att, name).state_dict())
    mha.out_proj.load_state_dict({"weight": np.eye(4), "bias": np.zeros(4)})
    x = mt.randn(2, 3, 4, dtype=mt.float64)
    mask = np.tril(np.ones((3, 3), dtype=bool))
    Z, A = att(x, attn_mask=mask)  # True = may attend (as sdpa)
    out, weights = mha(x, attn_mask=~mask)  # True = may NOT attend (as torch's MHA)
    np.testing.assert_allclose(out.data, Z.data, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(weights.data, A.data, rtol=1e-12, atol=1e-14)


def test_mha_weights_shapes_storage_and_padding():
    mha = nn.MultiHeadAttention(6, 3).double()
    query, memory = mt.randn(2, 4, 6, dtype=mt.float64), mt.randn(2, 5, 6, dtype=mt.float64)
    out, weights = mha(query, memory, memory)
    assert out.shape == (2, 4, 6) and weights.shape == (2, 4, 5)
    out2, per_head = mha(query, memory, memory, average_attn_weights=False)
    assert per_head.shape == (2, 3, 4, 5)
    np.testing.assert_allclose(per_head.data.mean(1), weights.data, rtol=1e-12)
    assert mha(query, need_weights=False)[1] is None
    assert mha.last_attention is None

    mha.store_attention = True
    padding = np.array([[False] * 5, [False, False, True, True, True]])
    _, weights = mha(query, memory, memory, key_padding_mask=padding, need_weights=False)
    stored = mha.last_attention
    assert weights is None and stored.shape == (2, 3, 4, 5) and not stored.requires_grad
    np.testing.assert_array_equal(stored.data[1, :, :, 2:], 0)
    np.testing.assert_allclose(stored.data.sum(-1), 1)

    # Self-attention by default: key and value are the query.
    a, _ = mha(query)
    b, _ = mha(query, query, query)
    np.testing.assert_array_equal(a.data, b.data)


def test_mha_fully_masked_query_outputs_the_bias():
    mha = nn.MultiHeadAttention(4, 2).double()
    x = mt.randn(1, 3, 4, dtype=mt.float64)
    blocked = np.zeros((3, 3), dtype=bool)  # True = may NOT attend, as in PyTorch
    blocked[2] = True
    out, weights = mha(x, attn_mask=blocked)
    np.testing.assert_array_equal(weights.data[0, 2], 0)
    np.testing.assert_allclose(out.data[0, 2], mha.out_proj.bias.data)


def test_bad_shapes_and_masks_are_clear_errors():
    with pytest.raises(ValueError, match=r"embed_dim \(6\) must be divisible by num_heads \(4\)"):
        nn.MultiHeadAttention(6, 4)
    mha = nn.MultiHeadAttention(4, 2)
    with pytest.raises(ShapeError, match=r"query must have shape \(B, length, 4\).*\(2, 3, 5\)"):
        mha(mt.randn(2, 3, 5))
    x = mt.randn(2, 3, 4)
    with pytest.raises(ShapeError, match=r"attn_mask must have shape.*\(3, 2\)"):
        mha(x, attn_mask=np.ones((3, 2), dtype=bool))
    with pytest.raises(ShapeError, match=r"key_padding_mask.*\(3, 3\)"):
        mha(x, key_padding_mask=np.ones((3, 3), dtype=bool))
    with pytest.raises(ShapeError, match=r"key and value must have the same length"):
        mha(x, mt.randn(2, 5, 4), mt.randn(2, 4, 4))
    with pytest.raises(ShapeError, match=r"x must have shape.*\(2, 3, 5\)"):
        nn.Attention(4)(mt.randn(2, 3, 5))
    with pytest.raises(ValueError, match="activation"):
        nn.FeedForward(4, 8, activation="swish")
    pe = nn.PositionalEncoding(4, max_len=8)
    with pytest.raises(ShapeError, match=r"sequence length 9 exceeds max_len=8 of Positional"):
        pe(mt.randn(1, 9, 4))
    with pytest.raises(ShapeError, match=r"max_len=5 of LearnedPositionalEncoding"):
        nn.LearnedPositionalEncoding(4, max_len=5)(mt.randn(6, 4))


def test_positional_encoding_is_sinusoidal():
    pe = nn.PositionalEncoding(5, max_len=10, dtype=mt.float64)  # odd d_model works
    table = pe.pe.data
    assert table.shape == (10, 5) and list(pe.parameters()) == []
    for pos in (0, 3, 9):
        for i in range(5):
            angle = pos / 10000 ** ((i - i % 2) / 5)
            expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
            assert table[pos, i] == pytest.approx(expected, abs=1e-12)
    x = mt.randn(2, 4, 5, dtype=mt.float64)
    np.testing.assert_array_equal(pe(x).data, x.data + table[:4])
    assert "pe" in pe.state_dict()


def test_feed_forward_and_softmax_modules():
    ff = nn.FeedForward(4, 8, activation="gelu").double()
    x = mt.randn(2, 3, 4, dtype=mt.float64)
    hidden = F.gelu(ff.linear1(x))
    np.testing.assert_array_equal(ff(x).data, ff.linear2(hidden).data)
    probs = nn.Softmax(axis=0)(x)
    np.testing.assert_allclose(probs.data.sum(0), 1)


@pytest.mark.parametrize("layer_class", [nn.TransformerEncoderLayer, nn.TransformerDecoderLayer])
def test_transformer_layers_run_the_feed_forward_block_on_pytorch_named_parts(layer_class):
    layer = layer_class(4, 2, dim_feedforward=8, activation="gelu", dropout=0.0,
                        dtype=mt.float64)
    keys = {k for k in layer.state_dict() if k.startswith(("linear1.", "linear2."))}
    assert keys == {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"}
    ff = nn.FeedForward(4, 8, activation="gelu", dtype=mt.float64)
    ff.load_state_dict({k: v for k, v in layer.state_dict().items() if k in keys})
    x = mt.randn(2, 3, 4, dtype=mt.float64)
    np.testing.assert_array_equal(layer._feed_forward(x).data, ff(x).data)  # dropout 0


# ----- gradchecks (float64) ------------------------------------------------------------------
def gradcheck_module(module: nn.Module, *inputs, **kwargs) -> None:
    """Gradcheck ``module`` with respect to every input that requires grad AND every
    parameter: the parameters are passed to gradcheck as extra inputs (it perturbs their
    arrays in place, which the module then reads)."""
    module.to(mt.float64)
    params = list(module.parameters())
    assert params or any(isinstance(x, mt.Tensor) and x.requires_grad for x in inputs)

    def fn(*args):
        out = module(*args[: len(inputs)], **kwargs)
        outs = out if isinstance(out, tuple) else (out,)
        return tuple(o for o in outs if o is not None)

    assert mt.gradcheck(fn, [*inputs, *params])


def test_gradcheck_linear(rng):
    gradcheck_module(nn.Linear(3, 2), randn(rng, 2, 4, 3))
    gradcheck_module(nn.Linear(3, 2, bias=False), randn(rng, 3))


def test_gradcheck_embedding_wrt_weight():
    gradcheck_module(nn.Embedding(5, 3), np.array([[0, 2, 2], [4, 1, 0]]))


def test_gradcheck_layer_norm(rng):
    gradcheck_module(nn.LayerNorm(4), randn(rng, 2, 3, 4))
    gradcheck_module(nn.LayerNorm((2, 3)), randn(rng, 2, 2, 3))


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_gradcheck_feed_forward(rng, activation):
    gradcheck_module(nn.FeedForward(3, 5, activation=activation), randn(rng, 2, 2, 3))


def test_gradcheck_attention(rng):
    gradcheck_module(nn.Attention(3), randn(rng, 2, 3, 3))
    causal_with_dead_row = np.tril(np.ones((3, 3), dtype=bool))
    causal_with_dead_row[1] = False
    gradcheck_module(nn.Attention(3), randn(rng, 2, 3, 3), attn_mask=causal_with_dead_row)


def _masks() -> dict:
    causal = np.tril(np.ones((3, 3), dtype=bool))
    dead_row = np.ones((3, 3), dtype=bool)
    dead_row[0] = False
    return {
        "none": {},
        "boolean": {"attn_mask": np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1]], dtype=bool)},
        "float": {"attn_mask": np.random.default_rng(1).standard_normal((3, 3))},
        "causal": {"attn_mask": causal},
        "per_batch": {"attn_mask": np.stack([causal, causal.T])},
        "key_padding": {"key_padding_mask": np.array([[0, 0, 1], [0, 0, 0]], dtype=bool)},
        "causal_and_padding": {"attn_mask": causal,
                               "key_padding_mask": np.array([[0, 0, 1], [0, 1, 1]], dtype=bool)},
        "float_and_padding": {"attn_mask": np.where(causal, 0.0, -np.inf),
                              "key_padding_mask": np.array([[0, 0, 1], [0, 1, 1]], dtype=bool)},
        "fully_masked_row": {"attn_mask": dead_row},
    }


@pytest.mark.parametrize("case", list(_masks()))
def test_gradcheck_mha_masks(rng, case):
    # weights per head are an output too, so their backward is checked as well
    gradcheck_module(nn.MultiHeadAttention(4, 2), randn(rng, 2, 3, 4),
                     average_attn_weights=False, **_masks()[case])


def test_gradcheck_mha_one_tensor_as_query_key_and_value(rng):
    x = randn(rng, 2, 3, 4)
    mha = nn.MultiHeadAttention(4, 2).double()
    params = list(mha.parameters())
    mt.gradcheck(lambda x, *_: mha(x, x, x)[0], [x, *params])


def test_gradcheck_mha_cross_attention(rng):
    query, memory = randn(rng, 2, 2, 4), randn(rng, 2, 3, 4)
    mha = nn.MultiHeadAttention(4, 2).double()
    padding = np.array([[0, 0, 1], [0, 0, 0]], dtype=bool)

    def fn(q, m, *_):
        return mha(q, m, m, key_padding_mask=padding)

    mt.gradcheck(fn, [query, memory, *mha.parameters()])


@pytest.mark.parametrize("norm_first", [False, True])
def test_gradcheck_encoder_layer(rng, norm_first):
    layer = nn.TransformerEncoderLayer(4, 2, batch_first=True, dim_feedforward=6,
                                       norm_first=norm_first,
                                       activation="gelu", dropout=0.0)
    padding = np.array([[0, 0, 1], [0, 0, 0]], dtype=bool)
    gradcheck_module(layer, randn(rng, 2, 3, 4), src_key_padding_mask=padding)


def test_gradcheck_encoder_stack(rng):
    mt.manual_seed(0)
    gradcheck_module(small_encoder(num_layers=2), randn(rng, 1, 3, 4),
                     mask=np.triu(np.ones((3, 3), dtype=bool), k=1))  # True: the future


def test_gradcheck_positional_encodings(rng):
    gradcheck_module(nn.PositionalEncoding(4, max_len=6), randn(rng, 2, 3, 4))
    gradcheck_module(nn.LearnedPositionalEncoding(4, max_len=6), randn(rng, 2, 3, 4))


def test_gradcheck_catches_a_wrong_backward(rng):
    """The wrapper really checks parameters: break Linear's weight gradient and it fails."""

    class WrongGrad(Function):
        def forward(self, w):
            return w

        def backward(self, grad):
            return (grad * 1.5,)

    class Broken(nn.Linear):
        def forward(self, x):
            return F.linear(x, WrongGrad.apply(self.weight), self.bias)

    with pytest.raises(mt.GradcheckError, match="input 1"):
        gradcheck_module(Broken(3, 2), randn(rng, 2, 3))


def test_deepcopy_of_a_model_is_independent():
    model = small_encoder(num_layers=1)
    twin = copy.deepcopy(model)
    assert all(type(p) is nn.Parameter for p in twin.parameters())
    twin.layers[0].linear1.weight.data += 1
    assert not np.array_equal(twin.layers[0].linear1.weight.data,
                              model.layers[0].linear1.weight.data)


def test_non_persistent_buffer_moves_but_is_not_saved():
    toy = Toy()
    toy.register_buffer("scratch", mt.zeros(2), persistent=False)
    assert [n for n, _ in toy.named_buffers()] == ["counts", "scratch"]
    assert "scratch" not in toy.state_dict() and "counts" in toy.state_dict()
    toy.double()
    assert toy.scratch.dtype == mt.float64
    toy.register_buffer("scratch", mt.zeros(2))  # re-registered as persistent
    assert "scratch" in toy.state_dict()


def test_layers_on_device(device):
    layer = nn.TransformerEncoderLayer(4, 2, batch_first=True, dim_feedforward=8, device=device,
                                       dropout=0.0)
    pe = nn.PositionalEncoding(4, max_len=5, device=device)
    emb = nn.Embedding(7, 4, padding_idx=0, device=device)
    ids = np.array([[0, 3, 6], [2, 2, 1]])
    out = layer(pe(emb(ids)), src_mask=np.triu(np.ones((3, 3), dtype=bool), k=1),
                src_key_padding_mask=np.array([[0, 0, 1], [0, 0, 0]], dtype=bool))
    assert out.device == device
    out.sum().backward()
    assert all(p.grad is not None and p.grad.device == device for p in layer.parameters())
    assert not emb.weight.grad.numpy()[0].any()
    state = layer.state_dict()
    layer.to("cpu")
    assert all(p.device == "cpu" for p in layer.parameters())
    layer.load_state_dict(state)
