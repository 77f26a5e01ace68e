"""Bad input raises the right error class, with the actual shapes, dtypes and names."""

from __future__ import annotations

import re

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.errors import (
    AxisError,
    DeviceError,
    DtypeError,
    GraphError,
    ShapeError,
)


def shapes_in(*shapes: tuple[int, ...]) -> str:
    """A regex that matches a message naming every shape, in order."""
    return ".*".join(re.escape(str(s)) for s in shapes)


@pytest.mark.parametrize("a, b", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)),
                                  ((4,), (3, 2)), ((2, 3, 4), (5, 4, 2)), ((2, 2, 3), (3, 3, 2))])
def test_matmul_incompatible_shapes(a, b) -> None:
    with pytest.raises(ShapeError, match=shapes_in(a, b)):
        mt.ones(a) @ mt.ones(b)


def test_matmul_of_a_scalar() -> None:
    with pytest.raises(ShapeError, match=r"\(\) and \(3,\)"):
        mt.matmul(mt.tensor(2.0), mt.ones(3))


@pytest.mark.parametrize("op", [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b,
                                lambda a, b: a / b, lambda a, b: a**b, mt.maximum, mt.minimum,
                                lambda a, b: mt.where(np.ones(a.shape, bool), a, b)],
                         ids=["add", "sub", "mul", "div", "pow", "maximum", "minimum", "where"])
@pytest.mark.parametrize("a, b", [((2, 3), (4,)), ((3, 1, 2), (4, 3))])
def test_broadcasting_failure_names_both_shapes(op, a, b) -> None:
    x = mt.ones(a, requires_grad=True)
    with pytest.raises(ShapeError, match=shapes_in(a, b)):
        op(x, mt.ones(b))
    assert x.grad is None


def test_where_condition_that_does_not_broadcast() -> None:
    with pytest.raises(ShapeError, match=r"condition \(5,\)"):
        mt.where(np.ones(5, bool), mt.ones(2, 3), mt.ones(3))
    with pytest.raises(ShapeError, match=r"\(2, 3\)"):
        mt.ones(2, 3).masked_fill(np.ones(4, bool), 0.0)


def test_broadcast_to_and_concat_and_stack_name_the_shapes() -> None:
    with pytest.raises(ShapeError, match=shapes_in((2, 3), (4, 4))):
        mt.ones(2, 3).broadcast_to(4, 4)
    with pytest.raises(ShapeError, match=shapes_in((2, 3), (2, 4))):
        mt.concat([mt.ones(2, 3), mt.ones(2, 4)], axis=0)
    with pytest.raises(ShapeError, match=shapes_in((2, 3), (3, 2))):
        mt.stack([mt.ones(2, 3), mt.ones(3, 2)])
    with pytest.raises(ShapeError, match=r"\[2, 2\].*5"):
        mt.ones(5).split([2, 2])


def test_backward_on_non_scalar_needs_a_gradient() -> None:
    y = mt.ones(2, 3, requires_grad=True) * 2
    with pytest.raises(GraphError, match=r"non-scalar.*\(2, 3\).*gradient"):
        y.backward()


def test_gradient_of_the_wrong_shape() -> None:
    x = mt.ones(2, 3, requires_grad=True)
    y = x * 2
    with pytest.raises(ShapeError, match=shapes_in((3, 2), (2, 3))):
        y.backward(mt.ones(3, 2))
    with pytest.raises(ShapeError, match=shapes_in((6,), (2, 3))):
        mt.grad(y, x, grad_outputs=mt.ones(6))
    assert x.grad is None
    y.backward(mt.ones(2, 3))  # the graph survived the failed calls
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 2.0))


def test_backward_on_a_tensor_that_does_not_require_grad() -> None:
    with pytest.raises(GraphError, match=r"does not require grad \(shape \(2,\)\)"):
        (mt.ones(2) * 2).sum(axis=None, keepdims=True).reshape(1).broadcast_to(2).backward(
            mt.ones(2))
    with pytest.raises(GraphError, match="does not require grad"):
        mt.tensor(1.0).backward()


def test_second_backward_without_retain_graph() -> None:
    x = mt.ones(3, requires_grad=True)
    y = (x.tanh() * x).sum()
    y.backward()
    grad_after_first = x.grad.numpy().copy()
    with pytest.raises(GraphError, match=r"second time.*retain_graph=True"):
        y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), grad_after_first)


@pytest.mark.parametrize("dtype", [mt.int64, mt.int32, mt.bool_])
def test_requires_grad_on_a_non_float_tensor(dtype) -> None:
    with pytest.raises(DtypeError, match=str(dtype)):
        mt.tensor([1, 0], dtype=dtype, requires_grad=True)
    t = mt.tensor([1, 0], dtype=dtype)
    with pytest.raises(DtypeError, match=str(dtype)):
        t.requires_grad_()
    assert not t.requires_grad


def test_mixing_devices() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    other = mt.tensor([3.0, 4.0])
    other.device = "cuda"  # pretend, to reach the check without a GPU
    for op in (lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a @ b,
               lambda a, b: mt.concat([a, b])):
        with pytest.raises(DeviceError, match="cpu, cuda.*to\\(device\\)"):
            op(x, other)
    assert x.grad is None and x._ctx is None


@pytest.mark.parametrize("shape, target", [((2, 3), (4, 2)), ((6,), (4, -1)), ((2, 3), (7,))])
def test_reshape_to_an_incompatible_size(shape, target) -> None:
    with pytest.raises(ShapeError, match=shapes_in(shape, target)):
        mt.ones(shape).reshape(target)
    with pytest.raises(ShapeError, match=re.escape(str(shape))):
        mt.ones(shape).view(*target)


@pytest.mark.parametrize("call, axis", [
    (lambda x: x.sum(axis=3), 3),
    (lambda x: x.mean(axis=(0, -4)), -4),
    (lambda x: x.max(axis=5), 5),
    (lambda x: x.var(axis=-3), -3),
    (lambda x: x.logsumexp(axis=2), 2),
    (lambda x: x.softmax(axis=2), 2),
    (lambda x: mt.log_softmax(x, axis=-3), -3),
    (lambda x: x.squeeze(4), 4),
    (lambda x: x.permute(0, 3), 3),
    (lambda x: x.swapaxes(0, 2), 2),
    (lambda x: x.expand_dims(4), 4),
    (lambda x: x.flatten(0, 2), 2),
    (lambda x: mt.concat([x, x], axis=2), 2),
    (lambda x: x.split(1, axis=-3), -3),
])
def test_axis_out_of_range(call, axis) -> None:
    x = mt.ones(2, 3, requires_grad=True)
    with pytest.raises(AxisError, match=rf"axis {axis}\b.*2 dimensions") as info:
        call(x)
    assert isinstance(info.value, IndexError) and isinstance(info.value, ValueError)


def test_permute_needs_a_permutation() -> None:
    with pytest.raises(AxisError, match=r"\(2, 3\)"):
        mt.ones(2, 3).permute(0)
    with pytest.raises(AxisError, match=r"\(0, 0\)"):
        mt.ones(2, 3).permute(0, 0)


def test_squeeze_of_an_axis_that_is_not_size_one() -> None:
    with pytest.raises(ShapeError, match=r"axis 1 of size 3.*\(2, 3\)"):
        mt.ones(2, 3).squeeze(1)


def test_item_on_a_multi_element_tensor() -> None:
    with pytest.raises(ValueError, match=r"exactly one element.*\(2, 2\)"):
        mt.ones(2, 2).item()
    with pytest.raises(ValueError, match=r"\(3,\) is ambiguous"):
        bool(mt.ones(3))


def test_numpy_on_a_tensor_that_requires_grad() -> None:
    with pytest.raises(GraphError, match=r"requires grad.*detach\(\)\.numpy\(\)"):
        mt.ones(2, requires_grad=True).numpy()
    with pytest.raises(GraphError, match="detach"):
        (mt.ones(2, requires_grad=True) * 2).numpy()


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda0", "mps"])
def test_unknown_device_string(device) -> None:
    with pytest.raises(DeviceError, match=rf"unknown device '{device}'"):
        mt.tensor([1.0], device=device)
    with pytest.raises(DeviceError, match=rf"'{device}'"):
        mt.ones(2).to(device)


def test_unknown_default_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINITRANSFORMER_DEVICE", "tpu")
    with pytest.raises(DeviceError, match="MINITRANSFORMER_DEVICE='tpu'"):
        mt.zeros(2)


def test_index_out_of_range_names_the_shape() -> None:
    with pytest.raises(IndexError, match=r"\(2, 3\)"):
        mt.ones(2, 3)[5]
    with pytest.raises(IndexError, match=r"\(2, 3\)"):
        mt.ones(2, 3, requires_grad=True)[np.array([0, 7])]


def test_bad_arguments_are_named() -> None:
    x = mt.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match="'exact'"):
        mt.gelu(x, approximate="exact")
    with pytest.raises(ValueError, match="min and max"):
        x.clip()
    with pytest.raises(ValueError, match="at least one"):
        mt.concat([])
    with pytest.raises(DtypeError, match="'float33'"):
        x.to(dtype="float33")
    with pytest.raises(DeviceError, match="'float33'"):  # a string alone names a device
        x.to("float33")


def test_failed_ops_leave_inputs_untouched() -> None:
    """Nothing is left half-updated: data, .grad and the graph are as before the error."""
    x = mt.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    (x * x).sum().backward()
    data_before, grad_before = x.data.copy(), x.grad.numpy().copy()
    grad_object = x.grad
    failing = [
        lambda: x @ mt.ones(2, 2),
        lambda: x + mt.ones(4),
        lambda: x.reshape(4, 2),
        lambda: x.sum(axis=2),
        lambda: (x * 2).backward(mt.ones(3)),
        lambda: (x * 2).backward(),
        lambda: mt.concat([x, mt.ones(3, 3)], axis=1),
        lambda: x[3],
    ]
    for fail in failing:
        with pytest.raises((ValueError, IndexError, GraphError)):
            fail()
        np.testing.assert_array_equal(x.data, data_before)
        assert x.grad is grad_object
        np.testing.assert_array_equal(x.grad.numpy(), grad_before)
    (x * 1).sum().backward()  # still usable
    np.testing.assert_array_equal(x.grad.numpy(), grad_before + 1)
