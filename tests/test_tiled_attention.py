"""Tiled attention (online softmax, recompute backward) against the fused and composed paths."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import backend
from minitransformer.ops import sdpa
from minitransformer.ops import tiled_attention as tiled_module
from minitransformer.ops.tiled_attention import TiledAttention, block_sizes, tiled_attention
from tests.conftest import randn, requires_torch, torch

L, S, E, EV = 7, 6, 3, 2

MASK_KINDS = ["none", "bool", "float", "float_neg_inf", "causal", "causal_and_bool",
              "causal_and_float", "dead_row_bool", "dead_row_float", "bool_batch"]


def _mask(kind: str, rng: np.random.Generator, length: int = L, source: int = S) -> dict:
    """PyTorch-style mask arguments (attn_mask True = may attend; is_causal) for ``kind``."""
    allowed = rng.random((length, source)) > 0.4
    allowed[:, 0] = True  # no fully masked row, except where asked for
    bias = rng.standard_normal((length, source))
    if kind == "none":
        return {}
    if kind == "bool":
        return {"attn_mask": allowed}
    if kind == "float":
        return {"attn_mask": bias}
    if kind == "float_neg_inf":
        bias[~allowed] = -np.inf
        return {"attn_mask": bias}
    if kind == "causal":
        return {"is_causal": True}
    if kind == "causal_and_bool":
        return {"attn_mask": allowed, "is_causal": True}
    if kind == "causal_and_float":
        return {"attn_mask": bias, "is_causal": True}
    if kind == "dead_row_bool":
        allowed[[1, 4]] = False
        return {"attn_mask": allowed}
    if kind == "dead_row_float":
        bias[2] = -np.inf
        return {"attn_mask": bias}
    if kind == "bool_batch":  # (B, 1, L, S): one mask per batch entry, shared by the heads
        batch = rng.random((2, 1, length, source)) > 0.4
        batch[0, 0, 3] = False  # and one dead row
        return {"attn_mask": batch}
    raise AssertionError(kind)


def _tiled(q, k, v, attn_mask=None, is_causal=False, **options):
    """The low-level entry point (to set tile sizes), with the mask arguments translated."""
    blocked = bias = None
    if attn_mask is not None and attn_mask.dtype == bool:
        blocked = ~attn_mask
    elif attn_mask is not None:
        bias = attn_mask
    return tiled_attention(q, k, v, blocked=blocked, bias=bias, causal=is_causal, **options)


def _sdpa(implementation):
    """The engine behind F.scaled_dot_product_attention: it also takes is_causal with a mask
    (as MultiHeadAttention passes them), which the public function refuses as PyTorch does."""
    def attend(q, k, v, **mask):
        out, weights = sdpa.attention(q, k, v, **mask, implementation=implementation)
        assert weights is None
        return out
    return attend


def _qkv(rng, batch=(2, 3), device="cpu"):
    return (randn(rng, *batch, L, E, device=device), randn(rng, *batch, S, E, device=device),
            randn(rng, *batch, S, EV, device=device))


def _output_and_grads(attend, q, k, v, d_out):
    for t in (q, k, v):
        t.grad = None
    out = attend(q, k, v)
    out = out[0] if isinstance(out, tuple) else out
    out.backward(d_out)
    return [backend.to_numpy(out.data)] + [backend.to_numpy(t.grad.data) for t in (q, k, v)]


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_tiled_matches_fused_and_composed(rng, kind, device, workers=2):
    """Outputs and all three gradients agree to 1e-10 in float64, with tiles smaller than the
    sequence (so the online rescaling and the causal tile skipping both happen)."""
    mask = _mask(kind, rng)
    q, k, v = _qkv(rng, device=device)
    d_out = rng.standard_normal((2, 3, L, EV))
    d_out = d_out if device == "cpu" else mt.tensor(d_out, device=device)
    tiled = _output_and_grads(
        lambda q, k, v: _tiled(q, k, v, **mask, block_q=3, block_k=2, workers=workers),
        q, k, v, d_out)
    fused = _output_and_grads(lambda q, k, v: sdpa.attention(q, k, v, **mask, need_weights=True),
                              q, k, v, d_out)
    composed = _output_and_grads(lambda q, k, v: F.attention_reference(q, k, v, **mask),
                                 q, k, v, d_out)
    public = [_output_and_grads(lambda q, k, v, name=name: _sdpa(name)(q, k, v, **mask),
                                q, k, v, d_out)
              for name in ("tiled", "fused", "composed")]
    for ours, theirs, other, *dispatched in zip(tiled, fused, composed, *public):
        assert np.isfinite(ours).all()
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-10)
        np.testing.assert_allclose(ours, other, rtol=0, atol=1e-10)
        for result in dispatched:
            np.testing.assert_allclose(result, ours, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_kept_weights_match_recomputed(rng, kind):
    """keep_weights=True reads each tile's exp(S - m_j) back instead of recomputing it; the
    numbers are the same, with masks, causal skipping and dead rows."""
    mask = _mask(kind, rng)
    q, k, v = _qkv(rng)
    d_out = rng.standard_normal((2, 3, L, EV))
    recomputed, kept = (
        _output_and_grads(lambda q, k, v, keep=keep: _tiled(q, k, v, **mask, block_q=3,
                                                            block_k=2, keep_weights=keep),
                          q, k, v, d_out)
        for keep in (False, True))
    for a, b in zip(recomputed, kept):
        assert np.isfinite(b).all()
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)


def test_kept_weights_with_large_negative_scores_after_a_masked_tile(rng):
    """A row that sees nothing in its first key tile (shift 0) and only scores near -200
    later: the factor exp(m_j - L) must not overflow where the kept tile is 0."""
    q, k, v = _qkv(rng, batch=(1,))
    bias = np.zeros((L, S))
    bias[3, :2], bias[3, 2:] = -np.inf, -200.0
    d_out = rng.standard_normal((1, L, EV))
    results = [_output_and_grads(lambda q, k, v, keep=keep: _tiled(
        q, k, v, attn_mask=bias, block_q=2, block_k=2, keep_weights=keep), q, k, v, d_out)
        for keep in (False, True)]
    for a, b in zip(*results):
        assert np.isfinite(b).all()
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)


def test_kept_tiles_are_reused_by_the_next_forward(rng, monkeypatch):
    """After a backward the kept tiles go back to a pool, and the next forward fills the
    same arrays again (fresh pages each time are what the pool saves). A retained graph
    keeps them for its second backward."""
    pool = tiled_module._TilePool(limit=2**20)
    monkeypatch.setattr(tiled_module, "_kept_tiles", pool)
    q, k, v = _qkv(rng, batch=(1,))

    def forward():
        return _tiled(q, k, v, block_q=4, block_k=3, keep_weights=True, workers=1)

    out = forward()
    out.sum().backward(retain_graph=True)
    assert pool.held == 0  # retained: nothing handed back yet
    out.sum().backward()
    pooled = [id(t) for stack in pool.free.values() for t in stack]
    assert len(pooled) == 4 and pool.held > 0  # 2 x 2 tiles, handed back after the last use
    again = forward()
    assert sorted(id(p) for p, _ in again._ctx.kept.values()) == sorted(pooled)
    assert pool.held == 0
    np.testing.assert_array_equal(again.data, out.data)


def test_one_worker_and_two_give_the_same_numbers(rng):
    mask = _mask("causal_and_float", rng)
    q, k, v = _qkv(rng)
    d_out = rng.standard_normal((2, 3, L, EV))
    one, two = (_output_and_grads(lambda q, k, v, w=w: _tiled(q, k, v, **mask, block_q=2,
                                                              block_k=3, workers=w),
                                  q, k, v, d_out)
                for w in (1, 2))
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


def test_tiled_fully_masked_row_gives_zeros(rng):
    q, k, v = _qkv(rng, batch=(1,))
    allowed = np.ones((L, S), dtype=bool)
    allowed[2] = False
    out = _tiled(q, k, v, attn_mask=allowed, block_q=2, block_k=4)
    out.backward(np.ones_like(out.data))
    assert (out.data[0, 2] == 0).all() and np.isfinite(out.data).all()
    assert (q.grad.data[0, 2] == 0).all() and np.isfinite(k.grad.data).all()


@pytest.mark.parametrize("kind, keep", [("none", False), ("causal_and_bool", False),
                                        ("float", False), ("dead_row_float", False),
                                        ("causal_and_bool", True), ("dead_row_float", True)])
def test_tiled_gradcheck(rng, kind, keep):
    mask = _mask(kind, rng)
    q, k, v = _qkv(rng, batch=(1, 2))
    assert mt.gradcheck(lambda q, k, v: _tiled(q, k, v, **mask, block_q=2, block_k=4,
                                               keep_weights=keep), [q, k, v])


def test_tiled_gradcheck_broadcast_leading_axes(rng):
    q = randn(rng, 2, 1, L, E)  # (B, 1, L, E)
    k = randn(rng, 1, 2, S, E)  # (1, H, S, E)
    v = randn(rng, S, EV)  # (S, Ev), shared by every batch entry and head
    assert _tiled(q, k, v, block_q=4).shape == (2, 2, L, EV)
    assert mt.gradcheck(lambda q, k, v: _tiled(q, k, v, scale=0.3, block_q=4, block_k=4),
                        [q, k, v])


@pytest.mark.parametrize("kind", ["bool", "causal"])
def test_tiled_gradgradcheck_falls_back_to_the_composed_path(rng, kind):
    """Under create_graph the backward is recorded, so second derivatives exist."""
    mask = _mask(kind, rng)
    q, k, v = _qkv(rng, batch=(1,))
    assert mt.gradgradcheck(lambda q, k, v: _tiled(q, k, v, **mask, block_q=3, block_k=2),
                            [q, k, v])


@pytest.mark.parametrize("keep", [False, True])
def test_tiled_float32_matches_fused(rng, keep):
    q, k, v = (mt.tensor(rng.standard_normal((2, 40, 8)).astype(np.float32), requires_grad=True)
               for _ in range(3))
    d_out = rng.standard_normal((2, 40, 8)).astype(np.float32)
    tiled = _output_and_grads(
        lambda q, k, v: _tiled(q, k, v, is_causal=True, block_q=16, block_k=8,
                               keep_weights=keep), q, k, v, d_out)
    fused = _output_and_grads(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                       implementation="fused"),
        q, k, v, d_out)
    for ours, theirs in zip(tiled, fused):
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("large", ["last tile", "key 0"])
def test_folded_shift_redoes_a_tile_whose_scores_outgrow_the_first(rng, keep, dtype, large):
    """Without masks the tiles take each row's score for key 0 as the shift; where a tile's
    scores exceed it by far more than exp can hold (here by hundreds: the last tile's keys
    scaled up, or key 0's, which puts it far below the rest in some rows), the tile is
    done again with its own maximum: the results stay the fused path's."""
    q = rng.standard_normal((2, 6, 4))
    k = rng.standard_normal((2, 12, 4))
    if large == "last tile":
        k[:, 8:] *= 60  # the last key tile's scores dwarf the others
    else:
        k[:, 0] *= 60  # key 0 scores far above the rest in some rows, far below in others
    q, k = mt.tensor(q.astype(dtype), requires_grad=True), mt.tensor(k.astype(dtype),
                                                                     requires_grad=True)
    v = mt.tensor(rng.standard_normal((2, 12, 3)).astype(dtype), requires_grad=True)
    d_out = rng.standard_normal((2, 6, 3)).astype(dtype)
    tiled = _output_and_grads(
        lambda q, k, v: _tiled(q, k, v, block_q=3, block_k=4, keep_weights=keep), q, k, v,
        d_out)
    fused = _output_and_grads(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, implementation="fused"),
        q, k, v, d_out)
    tolerance = ({"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32
                 else {"rtol": 1e-9, "atol": 1e-12})
    for ours, theirs in zip(tiled, fused):
        assert np.isfinite(ours).all()
        np.testing.assert_allclose(ours, theirs, **tolerance)


@pytest.mark.parametrize("workers", [2, 4, 8])
@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_tiles_of_one_head_match_the_fused_path(rng, keep, causal, workers):
    """Several heads and no mask array: the tiles are one head's each (see _work_items),
    in both passes, with the weights kept or not; with 6 heads on 2 or 4 workers the
    backward deals out whole heads, on 8 the row tiles in turn. The results stay the
    fused path's."""
    q, k, v = _qkv(rng)
    d_out = rng.standard_normal((2, 3, L, EV))
    options = {"is_causal": causal, "block_q": 3, "block_k": 2, "keep_weights": keep,
               "workers": workers}
    tiled = _output_and_grads(lambda q, k, v: _tiled(q, k, v, **options), q, k, v, d_out)
    node = _tiled(q, k, v, **options)._ctx
    assert node.tile_batch == () and node.items[0] == ((0, 0), 0)  # per head
    assert node.heads_owned == (workers <= 6)
    fused = _output_and_grads(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                       implementation="fused"),
        q, k, v, d_out)
    for ours, theirs in zip(tiled, fused):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-10)


def test_causal_skips_whole_tiles_above_the_diagonal(rng, monkeypatch):
    """8 queries and keys in tiles of 2: 16 tiles, of which 6 lie above the diagonal."""
    computed = []
    # a tile's scores come from _scores, or (no mask array) from _folded_weights after the
    # first tile of each row: count both
    scores, folded = TiledAttention._scores, TiledAttention._folded_weights

    def counting(self, xp, scratch, q_rows, key_t, i0, i1, j0, j1, batch, **options):
        computed.append((i0, j0))
        return scores(self, xp, scratch, q_rows, key_t, i0, i1, j0, j1, batch, **options)

    def counting_folded(self, xp, scratch, q_shifted, key_ones_t, i0, i1, j0, j1, *args,
                        **options):
        computed.append((i0, j0))
        return folded(self, xp, scratch, q_shifted, key_ones_t, i0, i1, j0, j1, *args,
                      **options)

    monkeypatch.setattr(TiledAttention, "_scores", counting)
    monkeypatch.setattr(TiledAttention, "_folded_weights", counting_folded)
    x = randn(rng, 1, 8, 4)
    out = _tiled(x, x, x, is_causal=True, block_q=2, block_k=2)
    assert len(computed) == 10 and all(j0 <= i0 for i0, j0 in computed)  # forward
    computed.clear()
    out.sum().backward()
    assert len(computed) == 10  # backward: the same tiles, recomputed
    computed.clear()
    x.grad = None
    out = _tiled(x, x, x, is_causal=True, block_q=2, block_k=2, keep_weights=True)
    assert len(out._ctx.kept) == 10  # the forward kept the 10 tiles it computed
    computed.clear()
    out.sum().backward()
    assert computed == []  # and the backward read them instead of recomputing


def test_block_sizes_fit_the_tile_budget():
    for batch, n in [(1, 8192), (8, 4096), (512, 512), (4096, 64), (256, 32)]:
        for workers in (1, 2):
            block_q, block_k = block_sizes(batch, n, n, workers)
            assert 1 <= block_q <= n and 1 <= block_k <= n
            assert batch * block_q * block_k <= max(tiled_module.TILE_ELEMENTS,
                                                    batch * tiled_module.MIN_BLOCK**2)
            assert -(-n // block_q) >= min(workers, n // tiled_module.MIN_BLOCK)  # work for all
            causal_q, causal_k = block_sizes(batch, n, n, workers, causal=True)
            assert causal_k <= tiled_module.MAX_BLOCK_K_CAUSAL and causal_q <= n
            assert batch * causal_q * causal_k <= max(tiled_module.TILE_ELEMENTS,
                                                      batch * tiled_module.MIN_BLOCK**2)


def test_tiled_attention_errors(rng):
    q, k, v = _qkv(rng, batch=(1,))
    with pytest.raises(mt.errors.ShapeError, match="tile sizes"):
        tiled_attention(q, k, v, block_q=-1)


@requires_torch
def test_tiled_matches_torch_sdpa_causal(rng):
    q, k, v = (rng.standard_normal((2, 3, 33, 8)) for _ in range(3))
    d_out = rng.standard_normal((2, 3, 33, 8))
    ours = [mt.tensor(a, requires_grad=True) for a in (q, k, v)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    out = tiled_attention(*ours, causal=True, block_q=8, block_k=16)
    out.backward(d_out)
    ref = torch.nn.functional.scaled_dot_product_attention(*theirs, is_causal=True)
    ref.backward(torch.tensor(d_out))
    np.testing.assert_allclose(out.data, ref.detach().numpy(), atol=1e-10)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.data, b.grad.numpy(), atol=1e-10)


def test_auto_chooses_tiled_only_for_large_scores_without_weights(rng, monkeypatch):
    q, k, v = _qkv(rng)  # (2, 3, L, E): (L, S) matrices of scores

    def node(attend=F.scaled_dot_product_attention, **options):
        out = attend(q, k, v, **options)
        out = out[0] if isinstance(out, tuple) else out
        return type(out._ctx).__name__

    monkeypatch.setattr(sdpa, "TILED_MIN_SCORES", L * S)
    assert node() == "TiledAttention"  # PyTorch's call: no weights, so tiled
    weights_wanted = F.scaled_dot_product_attention_with_weights
    assert node(weights_wanted) == "ScaledDotProductAttention"
    assert node(dropout_p=0.2, generator=np.random.default_rng(0)) == "ScaledDotProductAttention"
    monkeypatch.setattr(sdpa, "TILED_MIN_SCORES", L * S + 1)
    assert node() == "ScaledDotProductAttention"
    assert node(implementation="tiled") == "TiledAttention"


def test_pytorchs_call_runs_tiled_at_the_default_size_and_equals_the_weights_path(rng):
    """At n = 256 (the default TILED_MIN_SCORES) the one-tensor call never forms the
    weights; its output and gradients equal the weights path's to float64 rounding."""
    q, k, v = (randn(rng, 1, 2, 256, 4) for _ in range(3))
    d_out = rng.standard_normal((1, 2, 256, 4))
    tiled = _output_and_grads(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v, d_out)
    assert type(F.scaled_dot_product_attention(q, k, v)._ctx) is TiledAttention
    fused = _output_and_grads(
        lambda q, k, v: F.scaled_dot_product_attention_with_weights(q, k, v, is_causal=True),
        q, k, v, d_out)
    for a, b in zip(tiled, fused):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


def test_tiled_keeps_its_weights_under_the_memory_budget(rng, monkeypatch):
    q, k, v = _qkv(rng)
    scores_bytes = 2 * 3 * L * S * 8

    def kept(**options):
        out = F.scaled_dot_product_attention(q, k, v, implementation="tiled", **options)
        return out._ctx.kept is not None

    monkeypatch.setattr(sdpa, "TILED_KEEP_MAX_BYTES", scores_bytes)
    assert kept() and kept(is_causal=True)
    asked = []

    def spy(*args, keep_weights, **options):
        asked.append(keep_weights)
        return tiled_attention(*args, keep_weights=keep_weights, **options)

    monkeypatch.setattr(sdpa, "tiled_attention", spy)
    with mt.no_grad():  # no backward can come: nothing to keep
        F.scaled_dot_product_attention(q, k, v, implementation="tiled")
    assert asked == [False]
    monkeypatch.setattr(sdpa, "TILED_KEEP_MAX_BYTES", scores_bytes - 1)
    assert not kept()  # over the budget: FlashAttention's recompute


def test_multi_head_attention_without_weights_can_run_tiled(rng, monkeypatch):
    mha = mt.nn.MultiHeadAttention(8, 2, dtype=mt.float64)
    x = randn(rng, 2, 5, 8)
    expected, _ = mha(x, need_weights=False)
    monkeypatch.setattr(sdpa, "TILED_MIN_SCORES", 1)
    out, weights = mha(x, need_weights=False)
    assert weights is None and type(out._ctx).__name__ != "ScaledDotProductAttention"
    np.testing.assert_allclose(out.data, expected.data, atol=1e-12)
    _, weights = mha(x)  # weights wanted: the fused path, whatever the size
    assert weights.shape == (2, 5, 5)


def test_sdpa_implementation_errors(rng):
    q, k, v = _qkv(rng, batch=(1,))
    with pytest.raises(ValueError, match="never forms the weights"):
        F.scaled_dot_product_attention_with_weights(q, k, v, implementation="tiled")
    with pytest.raises(ValueError, match="implementation must be one of"):
        F.scaled_dot_product_attention(q, k, v, implementation="flash")
    with pytest.raises(ValueError, match="dropout"):
        F.scaled_dot_product_attention(q, k, v, dropout_p=0.1, generator=np.random.default_rng(),
                                       implementation="composed")


def test_benchmark_case_and_figure(tmp_path):
    """The memory benchmark's per-process measurement runs, and `make figures` can redraw
    the committed curve from the recorded JSON."""
    import shutil

    from benchmarks import attention_memory

    case = attention_memory.run_case("tiled", 64, repeats=1)
    assert case["seconds"] > 0 and case["peak_growth_mib"] >= 0
    (tmp_path / "img").mkdir()
    shutil.copy(attention_memory.RESULTS, tmp_path / "img" / attention_memory.RESULTS.name)
    (figure,) = attention_memory.write_docs_figures(tmp_path)
    assert figure.read_bytes().startswith(b"\x89PNG")
