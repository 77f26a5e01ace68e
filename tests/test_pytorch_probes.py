"""Everyday PyTorch lines that used to give another answer here, silently: each test runs the
same line on PyTorch and here and compares value, shape and dtype."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import minitransformer as mt
from tests.conftest import requires_torch, torch

pytestmark = requires_torch


def _same(ours, theirs) -> None:
    expected = theirs.detach().numpy()
    got = ours.detach().numpy()
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("args, kwargs", [
    ((5,), {}), ((5.0,), {}), ((0, 1, 0.25), {}), ((1, 10, 2), {}), ((10, 0, -3), {}),
    ((0, 5), {"dtype": "float64"}), ((-1.5, 2), {}), ((0, 1, 0.1), {}),
])
def test_arange_infers_int64_or_the_default_float_as_torch(args, kwargs) -> None:
    tkw = {k: getattr(torch, v) for k, v in kwargs.items()}
    _same(mt.arange(*args, **kwargs), torch.arange(*args, **tkw))


@pytest.mark.parametrize("fill", [7, 7.0, True, -2])
def test_full_takes_the_fill_values_dtype_as_torch(fill) -> None:
    _same(mt.full((2, 3), fill), torch.full((2, 3), fill))
    _same(mt.full((2,), fill, dtype=mt.float64), torch.full((2,), fill, dtype=torch.float64))


@pytest.mark.parametrize("dtype", ["bool", "int32", "int64"])
def test_prod_of_integers_and_bools_is_int64_as_torch(dtype) -> None:
    data = np.array([[1, 2, 3], [0, 1, 1]]).astype(dtype)
    for args in [(), (1,), (0, True)]:
        _same(mt.tensor(data).prod(*args), torch.tensor(data).prod(*args))


@pytest.mark.parametrize("name", ["all", "any"])
@pytest.mark.parametrize("args, kwargs", [((), {}), ((1,), {}), ((0, True), {}),
                                          ((), {"dim": -1})])
def test_all_any_give_bool_tensors_and_take_a_dim_as_torch(name, args, kwargs) -> None:
    data = np.array([[0, 1, 2], [3, 4, 5]])
    for array in (data, data > 2, data.astype(np.float32)):
        ours = getattr(mt.tensor(array), name)(*args, **kwargs)
        assert isinstance(ours, mt.Tensor)
        _same(ours, getattr(torch.tensor(array), name)(*args, **kwargs))


def test_cat_promotes_as_torch() -> None:
    i, f = np.array([[1, 2]]), np.array([[0.5, 1.5]], dtype=np.float32)
    _same(mt.cat([mt.tensor(i), mt.tensor(f)]), torch.cat([torch.tensor(i), torch.tensor(f)]))
    _same(mt.cat([mt.tensor(i, dtype=mt.int32), mt.tensor(i)], 1),
          torch.cat([torch.tensor(i, dtype=torch.int32), torch.tensor(i)], 1))
    leaf = mt.tensor(f, requires_grad=True)
    mt.cat([leaf, mt.tensor(i)]).sum().backward()
    assert leaf.grad.dtype == mt.float32


def test_split_returns_a_tuple_as_torch() -> None:
    ours, theirs = mt.arange(10).split(3), torch.arange(10).split(3)
    assert isinstance(ours, tuple) and len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        _same(a, b)


@pytest.mark.parametrize("data", [[-2, 0, 3], [-2.0, 0.5, 3.0]])
@pytest.mark.parametrize("kwargs", [{"min": 0.5}, {"max": 1}, {"min": 0, "max": 2.5},
                                    {"min": -1}])
def test_clamp_promotes_with_its_bounds_as_torch(data, kwargs) -> None:
    _same(mt.tensor(data).clamp(**kwargs), torch.tensor(data).clamp(**kwargs))
    _same(mt.clamp(mt.tensor(data), **kwargs), torch.clamp(torch.tensor(data), **kwargs))


@pytest.mark.parametrize("shape", [(3,), (2, 3), (2, 3, 4), (2, 3, 4, 5)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_functional_softmax_without_dim_picks_torchs_dim_and_warns(shape, name) -> None:
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        ours = getattr(mt.nn.functional, name)(mt.tensor(data))
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        theirs = getattr(torch.nn.functional, name)(torch.tensor(data))
    _same(ours, theirs)  # 3-D: dim 0, not the last axis


def test_nn_softmax_default_dim_and_dtype_as_torch() -> None:
    data = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    with pytest.warns(UserWarning):
        _same(mt.nn.Softmax()(mt.tensor(data)), torch.nn.Softmax()(torch.tensor(data)))
    assert mt.nn.Softmax(1).dim == torch.nn.Softmax(1).dim == 1
    _same(mt.nn.Softmax(dim=-1)(mt.tensor(data)), torch.nn.Softmax(dim=-1)(torch.tensor(data)))
    _same(mt.nn.functional.softmax(mt.tensor(data), -1, dtype=mt.float64),
          torch.nn.functional.softmax(torch.tensor(data), -1, dtype=torch.float64))


@pytest.mark.parametrize("name", ["sum", "mean", "amax", "amin", "var", "std"])
@pytest.mark.parametrize("dim", [(), []])
def test_an_empty_dim_reduces_every_axis_as_torch(name, dim) -> None:
    data = np.array([[1.0, 2.0], [3.0, 5.0]])
    _same(getattr(mt.tensor(data), name)(dim), getattr(torch.tensor(data), name)(dim))
    _same(getattr(mt.tensor(data), name)(dim=dim, keepdim=True),
          getattr(torch.tensor(data), name)(dim=dim, keepdim=True))


def test_nan_is_the_largest_in_topk_and_descending_sort_as_torch() -> None:
    # no ties in row 1: torch.topk orders equal values as it likes
    data = np.array([[1.0, np.nan, 3.0, np.inf, np.nan, -1.0], [2.0, 1.5, 2.5, 0.0, 5.0, 1.0]])
    x, t = mt.tensor(data), torch.tensor(data)
    for k in (1, 3, 6):
        ours, theirs = x.topk(k), t.topk(k)
        _same(ours.values, theirs.values)
        _same(ours.indices, theirs.indices)
    for descending in (True, False):
        _same(x.sort(descending=descending, stable=True).values,
              t.sort(descending=descending, stable=True).values)
        _same(x.sort(descending=descending, stable=True).indices,
              t.sort(descending=descending, stable=True).indices)
    _same(x.topk(2, largest=False).values, t.topk(2, largest=False).values)


@pytest.mark.parametrize("divisor", [0, [1, 0]])
def test_integer_floor_division_by_zero_raises_as_torch(divisor) -> None:
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        torch.tensor([5, 3]) // (torch.tensor(divisor) if isinstance(divisor, list) else divisor)
    with pytest.raises(ZeroDivisionError, match=r"x\.float\(\) // 0"):
        mt.tensor([5, 3]) // (mt.tensor(divisor) if isinstance(divisor, list) else divisor)
    _same(mt.tensor([5.0, -3.0]) // 0, torch.tensor([5.0, -3.0]) // 0)  # floats: +-inf


def test_layer_norm_of_integers_raises_as_torch() -> None:
    data = np.array([[1, 2, 4]])
    with pytest.raises(NotImplementedError, match="LayerNormKernelImpl"):
        torch.nn.functional.layer_norm(torch.tensor(data), (3,))
    with pytest.raises(TypeError, match=r"LayerNormKernelImpl.*'Long'.*x\.float\(\)"):
        mt.nn.functional.layer_norm(mt.tensor(data), (3,))
    with pytest.raises(TypeError, match="LayerNormKernelImpl"):
        mt.nn.LayerNorm(3)(mt.tensor(data))


@pytest.mark.parametrize("make", [
    lambda T: [T.tensor(1.5), T.tensor(2.0)],
    lambda T: [T.tensor(1), T.tensor(2)],
    lambda T: [T.tensor(1), 2.5],
    lambda T: [T.tensor(1.0, dtype=T.float64), 2],
    lambda T: [T.tensor(3, dtype=T.int32)],
    lambda T: [[T.tensor(1.0)], [T.tensor(2.0)]],
    lambda T: [T.tensor(True), T.tensor(False)],
    lambda T: (T.tensor(1.0), 2, 3),
])
def test_tensor_of_a_list_of_zero_d_tensors_as_torch(make) -> None:
    _same(mt.tensor(make(mt)), torch.tensor(make(torch)))


def test_tensor_of_a_list_of_longer_tensors_raises_naming_stack() -> None:
    with pytest.raises(ValueError, match="only one element tensors"):
        torch.tensor([torch.ones(2), torch.ones(2)])
    with pytest.raises(ValueError, match=r"only one element tensors.*mt\.stack"):
        mt.tensor([mt.ones(2), mt.ones(2)])


@pytest.mark.parametrize("method", ["masked_fill", "masked_fill_"])
def test_masked_fill_with_an_integer_mask_raises_as_torch(method) -> None:
    mask = [[1, 0], [0, 1]]
    with pytest.raises(RuntimeError, match="only supports boolean masks"):
        getattr(torch.ones(2, 2), method)(torch.tensor(mask), 0.0)
    with pytest.raises(TypeError, match=r"only supports boolean masks.*long int.*mask\.bool\(\)"):
        getattr(mt.ones(2, 2), method)(mt.tensor(mask), 0.0)
    _same(getattr(mt.ones(2, 2), method)(mt.tensor(mask).bool(), 0.0),
          getattr(torch.ones(2, 2), method)(torch.tensor(mask).bool(), 0.0))


def test_arange_takes_requires_grad_as_torch() -> None:
    assert mt.arange(3.0, requires_grad=True).requires_grad
    assert torch.arange(3.0, requires_grad=True).requires_grad
    assert not mt.arange(3).requires_grad


@pytest.mark.parametrize("call", [
    lambda T, x: x.flip(0), lambda T, x: x.flip(-1), lambda T, x: x.flip(0, 1),
    lambda T, x: x.flip((1, 2)), lambda T, x: T.flip(x, [0]), lambda T, x: T.flip(x, dims=(2,)),
])
def test_flip_as_torch(call) -> None:
    data = np.arange(24.0).reshape(2, 3, 4)
    x, t = mt.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    _same(call(mt, x), call(torch, t))
    weights = np.arange(24.0).reshape(2, 3, 4)
    (call(mt, x) * mt.tensor(weights)).sum().backward()
    (call(torch, t) * torch.tensor(weights)).sum().backward()
    _same(x.grad, t.grad)


def test_grad_of_a_non_leaf_is_none_with_torchs_warning() -> None:
    for lib in (mt, torch):
        leaf = lib.ones(2, requires_grad=True)
        y = leaf * 2
        y.sum().backward()
        with pytest.warns(UserWarning, match=r"not a leaf Tensor.*retain_grad\(\)"):
            assert y.grad is None
        kept = leaf * 3
        kept.retain_grad()
        kept.sum().backward()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert kept.grad is not None and leaf.grad is not None
            assert lib.ones(2).grad is None  # a leaf: no warning


def test_dropout_takes_torchs_positional_arguments_and_p_of_one() -> None:
    data = np.arange(1.0, 7.0).reshape(2, 3)
    x = mt.tensor(data, requires_grad=True)
    _same(mt.nn.functional.dropout(x, 1.0), torch.nn.functional.dropout(torch.tensor(data), 1.0))
    _same(mt.nn.Dropout(1.0)(x), torch.nn.Dropout(1.0)(torch.tensor(data)))
    mt.nn.functional.dropout(x, 1.0).sum().backward()
    assert x.grad.tolist() == [[0.0] * 3] * 2
    # the fourth argument of F.dropout, the second of nn.Dropout: inplace, as in PyTorch
    assert mt.nn.functional.dropout(x, 0.5, False, False) is x
    assert mt.nn.Dropout(0.5, False).p == torch.nn.Dropout(0.5, False).p == 0.5
    with pytest.raises(NotImplementedError, match=r"x = F\.dropout\(x, p\)"):
        mt.nn.functional.dropout(x, 0.5, True, True)
    with pytest.raises(NotImplementedError, match=r"nn\.Dropout\(p\)"):
        mt.nn.Dropout(0.5, True)
    with pytest.raises(ValueError, match="between 0 and 1"):
        mt.nn.Dropout(1.5)


def test_sgd_takes_torchs_positional_order_and_default_lr() -> None:
    for args in [(0.1, 0.9, 0.0, 0.01, True), (0.1, 0.9, 0.5), ()]:
        w0 = np.array([1.0, -2.0, 3.0])
        w, tw = mt.nn.Parameter(mt.tensor(w0)), torch.nn.Parameter(torch.tensor(w0))
        opt, topt = mt.optim.SGD([w], *args), torch.optim.SGD([tw], *args)
        for key in ("lr", "momentum", "dampening", "weight_decay", "nesterov"):
            assert opt.defaults[key] == topt.defaults[key], key
        for _ in range(3):
            for p, o in ((w, opt), (tw, topt)):
                o.zero_grad()
                (p ** 2).sum().backward()
                o.step()
        _same(w, tw)


def test_relu_takes_torchs_inplace_argument() -> None:
    data = np.array([-1.0, 0.0, 2.0])
    _same(mt.nn.ReLU(inplace=False)(mt.tensor(data)), torch.nn.ReLU(False)(torch.tensor(data)))
    with pytest.raises(NotImplementedError, match=r"write nn\.ReLU\(\)"):
        mt.nn.ReLU(True)
