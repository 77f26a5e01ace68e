"""Edge cases that used to give raw NumPy errors or silently wrong values: empty axes,
float16 layer norm, pow's gradient at 0, and arguments that are checked up front."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
import minitransformer.nn as nn
from minitransformer.errors import AxisError, DtypeError, ShapeError
from tests.conftest import requires_torch, torch


# ----- empty axes: as PyTorch (an empty result, or its error) ---------------------------------
def test_softmax_and_log_softmax_of_an_empty_axis_are_empty() -> None:
    x = mt.zeros(2, 0, requires_grad=True)
    for f in (mt.softmax, mt.log_softmax):
        y = f(x, axis=-1)
        assert y.shape == (2, 0)
        y.sum().backward()
        assert x.grad.shape == (2, 0)


def test_logsumexp_of_an_empty_axis_is_minus_infinity() -> None:
    y = mt.zeros(3, 0).logsumexp(axis=-1)
    np.testing.assert_array_equal(y.numpy(), [-np.inf] * 3)


def test_max_over_an_empty_axis_is_a_clear_error() -> None:
    with pytest.raises(ShapeError, match=r"axis 1 of a tensor of shape \(2, 0\).*empty"):
        mt.zeros(2, 0).max(axis=1)
    assert mt.zeros(2, 0).max(axis=0).values.shape == (0,)  # the other axis: an empty result


def test_attention_with_zero_keys_and_on_empty_sequences() -> None:
    q, k = mt.randn(1, 2, 3, 4), mt.randn(1, 2, 0, 4)
    out, weights = F.scaled_dot_product_attention_with_weights(q, k, k)
    assert F.scaled_dot_product_attention(q, k, k).shape == (1, 2, 3, 4)
    assert out.shape == (1, 2, 3, 4) and weights.shape == (1, 2, 3, 0)
    np.testing.assert_array_equal(out.numpy(), 0)  # PyTorch: an empty sum is 0
    mha = nn.MultiHeadAttention(8, 2)
    x = mt.randn(2, 0, 8)
    assert mha(x, x, x)[0].shape == (2, 0, 8)
    layer = nn.TransformerEncoderLayer(8, 2, batch_first=True, dim_feedforward=16, dropout=0.0)
    assert nn.TransformerEncoder(layer, 1)(x).shape == (2, 0, 8)


# ----- float16 layer norm ------------------------------------------------------------------
def test_layer_norm_in_float16_keeps_large_inputs() -> None:
    x = mt.tensor(np.array([[300.0, -300.0, 600.0, 0.0]], dtype=np.float16),
                  requires_grad=True)
    norm = nn.LayerNorm(4, dtype=mt.float16)
    y = norm(x)
    assert y.dtype == np.float16
    want = (x.detach().numpy().astype(np.float64) - 150) / np.sqrt(112500 + 1e-5)
    np.testing.assert_allclose(y.detach().numpy(), want, atol=2e-3)
    y.sum().backward()
    assert x.grad.dtype == np.float16 and norm.weight.grad.dtype == np.float16
    assert np.isfinite(x.grad.numpy()).all()


# ----- pow's gradient at 0 -------------------------------------------------------------------
def test_pow_gradient_at_zero_is_zero_not_nan() -> None:
    x = mt.tensor([0.0, 2.0], requires_grad=True)
    (x ** 0).sum().backward()  # d(x^0)/dx = 0 everywhere, even at x = 0
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0])
    p = mt.tensor([2.0, 0.0], requires_grad=True)
    (mt.tensor([0.0, 0.0]) ** p).sum().backward()  # d(0^p)/dp = 0 for p >= 0
    np.testing.assert_array_equal(p.grad.numpy(), [0.0, 0.0])


@requires_torch
def test_pow_gradients_at_zero_match_pytorch() -> None:
    base = np.array([0.0, 0.0, 0.0, 1.5, 2.0])
    exponent = np.array([0.0, 2.0, 0.5, 0.0, -1.0])
    x, p = mt.tensor(base, requires_grad=True), mt.tensor(exponent, requires_grad=True)
    (x ** p).sum().backward()
    tx = torch.tensor(base, requires_grad=True)
    tp = torch.tensor(exponent, requires_grad=True)
    (tx ** tp).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy())
    np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy())


def test_pow_gradient_away_from_zero_passes_gradcheck() -> None:
    x = mt.tensor([0.5, 1.5, 2.0], dtype=mt.float64, requires_grad=True)
    p = mt.tensor([2.0, 0.5, -1.0], dtype=mt.float64, requires_grad=True)
    assert mt.gradcheck(lambda a, b: a ** b, (x, p))
    assert mt.gradgradcheck(lambda a, b: a ** b, (x, p))


# ----- arguments checked up front ------------------------------------------------------------
@pytest.mark.parametrize("sizes", [(0, 4), (-1, 4), (4, 0), (2.5, 4)])
def test_linear_sizes(sizes) -> None:
    with pytest.raises(ValueError, match="Linear: (in|out)_features must be a positive integer"):
        nn.Linear(*sizes)


def test_multi_head_attention_heads() -> None:
    with pytest.raises(ValueError, match="num_heads must be a positive integer, got 0"):
        nn.MultiHeadAttention(8, 0)


def test_linear_given_a_list() -> None:
    with pytest.raises(TypeError, match="linear: input must be a Tensor, got a list"):
        F.linear([[1.0, 2.0]], mt.ones(3, 2))


def test_a_repeated_axis() -> None:
    with pytest.raises(AxisError, match="same axis twice"):
        mt.ones(2, 3).sum(axis=(0, 0))


@pytest.mark.parametrize("data", ["abc", np.array([object(), 1], dtype=object)])
def test_tensors_hold_numbers(data) -> None:
    with pytest.raises(DtypeError, match="tensors hold numbers"):
        mt.tensor(data)


def test_adding_a_string() -> None:
    with pytest.raises(DtypeError, match="cannot make a tensor from str 'a'"):
        mt.ones(2) + "a"


def test_erf_without_scipy_matches_math_erf_over_the_whole_line() -> None:
    """backend.erf_numpy (used when SciPy is missing): the series below |x| = 1/2, the
    fitted erfc above, float64 throughout; both sides of the seam, the tails, signed zeros,
    infinities and NaN."""
    import math

    from minitransformer import backend

    xs = np.concatenate([np.linspace(-12, 12, 20001), np.logspace(-20, 1, 400),
                         -np.logspace(-20, 1, 400), [0.5, np.nextafter(0.5, 0), 0.0, -0.0]])
    expected = np.array([math.erf(v) for v in xs])
    got = backend.erf_numpy(xs)
    np.testing.assert_allclose(got, expected, rtol=4e-15, atol=4e-16)
    assert np.signbit(backend.erf_numpy(np.array([-0.0])))[0]
    special = backend.erf_numpy(np.array([np.inf, -np.inf, np.nan], dtype=np.float32))
    assert special.dtype == np.float32
    np.testing.assert_array_equal(special[:2], [1.0, -1.0])
    assert np.isnan(special[2])


def test_softmax_of_integers_and_of_a_0d_tensor() -> None:
    """Integers are refused, as PyTorch refuses them (it will not pick a float type); a 0-d
    tensor gives 1."""
    with pytest.raises(DtypeError, match="not implemented for 'Long'"):
        mt.softmax(mt.tensor([1, 2, 3]), -1)
    weights = mt.softmax(mt.tensor([1, 2, 3]).double(), -1)
    np.testing.assert_allclose(weights.numpy(), np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())
    assert mt.softmax(mt.tensor(np.array(2.0)), 0).item() == 1.0


def test_float32_erf_is_within_its_stated_bound_of_math_erf() -> None:
    """backend.erf_float32 (float32 and float16 on the CPU, GELU's erf): within 4.5e-7 of
    math.erf over the whole line (about 7 float32 units near |x| = 3; PyTorch's is within 1),
    odd, exactly +-1 in the tails, NaN kept; float16 in, float16 out."""
    import math

    from minitransformer import backend

    xs = np.concatenate([np.linspace(-12, 12, 200001), np.logspace(-30, 1, 400),
                         -np.logspace(-30, 1, 400)]).astype(np.float32)
    expected = np.array([math.erf(float(v)) for v in xs])
    got = backend.erf(xs)
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() < 4.5e-7
    tiny = np.abs(xs) < 1e-3  # relative accuracy where erf x ~ 2x / sqrt(pi)
    np.testing.assert_allclose(got[tiny], expected[tiny], rtol=2e-7)
    np.testing.assert_array_equal(got, -backend.erf(-xs))
    special = backend.erf(np.array([np.inf, -np.inf, np.nan, -0.0, 4.0, 9.0], np.float32))
    np.testing.assert_array_equal(special[[0, 1, 4, 5]], [1.0, -1.0, 1.0, 1.0])
    assert np.isnan(special[2]) and np.signbit(special[3])
    half = backend.erf(np.array([0.5, -2.0], np.float16))
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, [math.erf(0.5), math.erf(-2.0)], rtol=1e-3)


def test_row_scatter_add_sorted_path_matches_numpy_add_at() -> None:
    """backend.scatter_add's path for whole rows (an embedding's backward: sort, reduceat,
    one add) gives np.add.at's sums: repeated rows, negative indices, a 2-D index, 3-D rows,
    rows never indexed left alone, float64 to rounding."""
    from minitransformer import backend

    rng = np.random.default_rng(0)
    for index_shape, row_shape in (((4096,), (3,)), ((16, 64), (5,)), ((300,), (4, 6))):
        index = rng.integers(-7, 7, index_shape)  # 14 rows of 20: repeats and negatives
        values = rng.standard_normal(index_shape + row_shape)
        assert backend._adds_rows(np.zeros((20, *row_shape)), index, values)
        expected = np.ones((20, *row_shape))
        np.add.at(expected, index, values)
        got = np.ones((20, *row_shape))
        backend.scatter_add(got, index, values)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(got[7:13], 1.0)  # rows 7..12 are never indexed


def test_gelu_in_cache_blocks_equals_the_formula_on_the_whole_array() -> None:
    """GELU's forward and backward run in blocks on BLOCK_WORKERS threads (backend.by_cache_blocks)
    for arrays past one block: the same values as the formula on the whole array, for a
    size that is not a multiple of the block, a transposed input and a broadcast gradient."""
    import math

    from minitransformer import backend

    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((5, 3 * backend.CACHE_BLOCK // 5 + 7)).T  # not C-contiguous
    x = mt.tensor(x0, requires_grad=True)
    y = mt.gelu(x)
    erf = np.vectorize(math.erf)
    cdf = 0.5 * (1 + erf(x0 / math.sqrt(2)))
    np.testing.assert_allclose(y.detach().numpy(), x0 * cdf, rtol=1e-14, atol=1e-15)
    y.sum().backward()  # the gradient of a sum: a broadcast (zero-stride) array
    slope = cdf + x0 * np.exp(-0.5 * x0 * x0) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(x.grad.numpy(), slope, rtol=1e-14, atol=1e-15)


def test_a_failing_block_kernel_raises_in_the_caller() -> None:
    from minitransformer import backend

    def kernel(x: np.ndarray, out: np.ndarray) -> None:
        if x[0] == backend.CACHE_BLOCK:  # the second block: a pool thread's, with 2 workers
            raise ValueError("a block failed")
        out[...] = x

    x = np.arange(4 * backend.CACHE_BLOCK, dtype=np.float64)
    with pytest.raises(ValueError, match="a block failed"):
        backend.by_cache_blocks(kernel, (x,), (np.empty_like(x),))


def test_float32_normal_cdf_and_gelu_tails() -> None:
    """backend.normal_cdf_float32 (GELU's Phi in float32): within 2.5e-7 of the exact
    Phi, never outside [0, 1]; so GELU of a very negative x is 0 or a tiny negative (it
    was a positive 1.8e-6 at -30 when rounding took Phi below 0), GELU(-inf) is NaN and
    GELU(inf) inf, as PyTorch's float64 GELU (its float32 one gives NaN at inf)."""
    import math

    from minitransformer import backend

    xs = np.linspace(-40, 40, 400001).astype(np.float32)
    exact = np.array([0.5 * math.erfc(-float(v) / math.sqrt(2)) for v in xs])
    phi = np.empty_like(xs)
    backend.normal_cdf_float32(xs, phi)
    assert np.abs(phi - exact).max() < 2.5e-7
    assert phi.min() >= 0 and phi.max() <= 1
    tails = np.array([-np.inf, -30.0, -6.0, np.inf, np.nan], np.float32)
    y = mt.gelu(mt.tensor(np.concatenate([tails, np.zeros(70000, np.float32)]))).numpy()[:5]
    assert np.isnan(y[0]) and y[1] <= 0 and y[2] <= 0 and y[3] == np.inf and np.isnan(y[4])
    assert abs(y[2]) < 1e-6
