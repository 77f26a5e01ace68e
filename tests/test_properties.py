"""Property tests over random shapes: broadcasting gradients, reshape/transpose round trips.

The reference gradients are derived here with NumPy alone: the elementwise derivative at
the broadcast shape, then summed back over the broadcast axes by :func:`reduce_to`, which
is written independently of the engine's ``unbroadcast``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minitransformer as mt

PROPERTY_SETTINGS = settings(max_examples=25, deadline=None)

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=3)
broadcast_pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                                    max_side=3)
seeds = st.integers(0, 2**32 - 1)


def reduce_to(full: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast-shaped array back to ``shape``: leading axes, then stretched 1-axes."""
    while full.ndim > len(shape):
        full = full.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and full.shape[axis] != 1:
            full = full.sum(axis=axis, keepdims=True)
    return full


# op: (engine function, NumPy forward, NumPy d/dx, NumPy d/dy); x is drawn positive for pow.
BINARY_OPS = {
    "add": (lambda x, y: x + y, np.add, lambda x, y: np.ones_like(x * y),
            lambda x, y: np.ones_like(x * y)),
    "sub": (lambda x, y: x - y, np.subtract, lambda x, y: np.ones_like(x * y),
            lambda x, y: -np.ones_like(x * y)),
    "mul": (lambda x, y: x * y, np.multiply, lambda x, y: y + 0 * x, lambda x, y: x + 0 * y),
    "div": (lambda x, y: x / y, np.divide, lambda x, y: 1 / y + 0 * x,
            lambda x, y: -x / y**2),
    "pow": (lambda x, y: x**y, np.power, lambda x, y: y * x ** (y - 1),
            lambda x, y: x**y * np.log(x)),
    "maximum": (mt.maximum, np.maximum, lambda x, y: (x > y) * 1.0, lambda x, y: (x < y) * 1.0),
    "minimum": (mt.minimum, np.minimum, lambda x, y: (x < y) * 1.0, lambda x, y: (x > y) * 1.0),
}


@PROPERTY_SETTINGS
@given(op=st.sampled_from(sorted(BINARY_OPS)), pair=broadcast_pairs, seed=seeds)
def test_binary_op_gradients_sum_over_broadcast_axes(op, pair, seed) -> None:
    engine_fn, forward, d_dx, d_dy = BINARY_OPS[op]
    (shape_x, shape_y), out_shape = pair.input_shapes, pair.result_shape
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0.5, 2.0, shape_x)  # positive: a valid base for pow, a safe divisor
    y0 = rng.uniform(0.5, 2.0, shape_y) * rng.choice([-1.0, 1.0], shape_y)
    upstream = rng.standard_normal(out_shape)

    x, y = mt.tensor(x0, requires_grad=True), mt.tensor(y0, requires_grad=True)
    z = engine_fn(x, y)
    assert z.shape == out_shape
    np.testing.assert_allclose(z.detach().numpy(), forward(x0, y0), rtol=1e-12)
    z.backward(mt.tensor(upstream))

    assert x.grad.shape == shape_x and y.grad.shape == shape_y
    np.testing.assert_allclose(x.grad.numpy(), reduce_to(upstream * d_dx(x0, y0), shape_x),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y.grad.numpy(), reduce_to(upstream * d_dy(x0, y0), shape_y),
                               rtol=1e-10, atol=1e-12)


@PROPERTY_SETTINGS
@given(pair=broadcast_pairs, seed=seeds)
def test_broadcast_to_gradient_is_the_sum_over_stretched_axes(pair, seed) -> None:
    shape, target = pair.input_shapes[0], pair.result_shape
    rng = np.random.default_rng(seed)
    x = mt.tensor(rng.standard_normal(shape), requires_grad=True)
    upstream = rng.standard_normal(target)
    y = x.broadcast_to(target)
    np.testing.assert_array_equal(y.detach().numpy(), np.broadcast_to(x.detach().numpy(), target))
    y.backward(mt.tensor(upstream))
    np.testing.assert_allclose(x.grad.numpy(), reduce_to(upstream, shape), rtol=1e-12)


@PROPERTY_SETTINGS
@given(shape=shapes, data=st.data())
def test_reshape_round_trip(shape, data) -> None:
    size = int(np.prod(shape))
    target = data.draw(st.permutations(shape).map(tuple) | st.just((size,)) | st.just((-1,)),
                       label="target")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    x0, w = rng.standard_normal(shape), rng.standard_normal(shape)
    x = mt.tensor(x0, requires_grad=True)
    reshaped = x.reshape(target)
    np.testing.assert_array_equal(reshaped.detach().numpy(), x0.reshape(target))
    back = reshaped.reshape(shape)
    assert back.shape == shape
    np.testing.assert_array_equal(back.detach().numpy(), x0)
    (back * mt.tensor(w)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), w)


@PROPERTY_SETTINGS
@given(shape=shapes, data=st.data())
def test_transpose_round_trip(shape, data) -> None:
    axes = tuple(data.draw(st.permutations(range(len(shape))), label="axes"))
    inverse = tuple(int(i) for i in np.argsort(axes))
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    x0 = rng.standard_normal(shape)
    x = mt.tensor(x0, requires_grad=True)
    moved = x.transpose(axes) if axes else x.transpose()  # a tuple: NumPy's permutation
    np.testing.assert_array_equal(moved.detach().numpy(), np.transpose(x0, axes))
    back = moved.permute(*inverse) if inverse else moved
    np.testing.assert_array_equal(back.detach().numpy(), x0)

    w = rng.standard_normal(moved.shape)
    (moved * mt.tensor(w)).sum().backward()
    assert x.grad.shape == shape
    np.testing.assert_array_equal(x.grad.numpy(), np.transpose(w, inverse))


@PROPERTY_SETTINGS
@given(shape=shapes, data=st.data())
def test_reductions_match_numpy(shape, data) -> None:
    ndim = len(shape)
    axis = data.draw(st.none() | st.lists(st.integers(-ndim, max(ndim - 1, 0)), min_size=1,
                                          max_size=ndim, unique_by=lambda a: a % max(ndim, 1))
                     .map(tuple), label="axis") if ndim else None
    keepdims = data.draw(st.booleans(), label="keepdims")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    x0 = rng.standard_normal(shape)
    # NumPy's max over axes is torch's amax; NumPy's var is the biased one (correction=0)
    for name, ours, extra in (("sum", "sum", {}), ("mean", "mean", {}), ("max", "amax", {}),
                              ("var", "var", {"correction": 0})):
        x = mt.tensor(x0, requires_grad=True)
        y = getattr(x, ours)(axis=axis, keepdims=keepdims, **extra)
        expected = getattr(np, name)(x0, axis=axis, keepdims=keepdims)
        assert y.shape == np.shape(expected)
        np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-12, atol=1e-14)
        y.sum().backward()
        assert x.grad.shape == shape
        count = x0.size // max(np.asarray(expected).size, 1)
        if name == "sum":
            np.testing.assert_array_equal(x.grad.numpy(), np.ones(shape))
        if name == "mean":
            np.testing.assert_allclose(x.grad.numpy(), np.full(shape, 1 / count), rtol=1e-14)
        if name == "max":  # continuous random values: one winner per reduced group
            np.testing.assert_allclose(x.grad.numpy().sum(), np.asarray(expected).size)
