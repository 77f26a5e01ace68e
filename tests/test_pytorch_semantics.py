"""The places where a PyTorch line used to give another answer here (issue 22): a positional
dim on reductions, max/min returning (values, indices), var/std's unbiased default, type
promotion, and cross_entropy's layout. Each test compares against PyTorch itself."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.errors import DtypeError
from tests.conftest import requires_torch, torch

pytestmark = requires_torch

TIES = [[1.0, 3.0, 3.0, -2.0], [4.0, 4.0, 0.0, 4.0], [-1.0, -5.0, -5.0, 2.0]]


def _pair(data, dtype=np.float64):
    """The same values as a leaf here and in torch."""
    array = np.asarray(data, dtype=dtype)
    return mt.tensor(array, requires_grad=True), torch.tensor(array, requires_grad=True)


def _same(ours, theirs, **kw) -> None:
    expected = theirs.detach().numpy()
    got = ours.detach().numpy() if isinstance(ours, mt.Tensor) else np.asarray(ours)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **kw)


# ----- 1. a positional int is dim; max/min along a dim are (values, indices) ----------------
@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("call", [
    lambda x, n: getattr(x, n)(1),
    lambda x, n: getattr(x, n)(0),
    lambda x, n: getattr(x, n)(-1, True),
    lambda x, n: getattr(x, n)(dim=1, keepdim=True),
    lambda x, n: getattr(x, n)(axis=0),  # torch takes axis= as dim=
])
def test_max_min_along_a_dim_give_values_and_indices_as_torch(name, call) -> None:
    x, t = _pair(TIES)
    ours, theirs = call(x, name), call(t, name)
    values, indices = ours  # unpacks, as torch.return_types.max
    _same(values, theirs.values)
    _same(indices, theirs.indices)  # ties: the first maximal index, as torch on CPU
    assert ours.values is values and ours.indices is indices and ours[0] is values
    assert indices.dtype == mt.int64
    upstream = np.arange(values.numel(), dtype=np.float64).reshape(values.shape) + 1
    values.backward(upstream)
    theirs.values.backward(torch.tensor(upstream))
    _same(x.grad, t.grad)  # the whole gradient goes to the selected index


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_without_dim_and_with_another_tensor(name) -> None:
    x, t = _pair(TIES)
    ours, theirs = getattr(x, name)(), getattr(t, name)()
    _same(ours, theirs)
    ours.backward()
    theirs.backward()
    _same(x.grad, t.grad)  # no dim: ties share the gradient, as torch
    other = np.full((3, 4), 2.0)
    _same(getattr(x, name)(mt.tensor(other)), getattr(t, name)(torch.tensor(other)))
    _same(getattr(mt, name)(x, 1).values, getattr(torch, name)(t, 1).values)


def test_max_over_several_axes_names_amax() -> None:
    x = mt.tensor(TIES)
    with pytest.raises(TypeError, match=r"x\.amax\(dim=\(0, 1\)\)"):
        x.max((0, 1))
    _same(x.amax((0, 1)), torch.tensor(TIES).amax((0, 1)))


@pytest.mark.parametrize("method", ["argmax", "argmin"])
def test_argmax_argmin_positional_dim_keepdim_and_first_on_ties(method) -> None:
    x, t = mt.tensor(TIES), torch.tensor(TIES)
    for args in [(), (1,), (0,), (-1, True)]:
        _same(getattr(x, method)(*args), getattr(t, method)(*args))


@pytest.mark.parametrize("name", ["sum", "mean", "var", "std", "logsumexp", "amax", "amin"])
@pytest.mark.parametrize("dim", [1, -1, (0, 2)])
def test_reductions_positional_dim(name, dim) -> None:
    rng = np.random.default_rng(0)
    x, t = _pair(rng.standard_normal((2, 3, 4)))
    _same(getattr(x, name)(dim), getattr(t, name)(dim), rtol=1e-12)
    _same(getattr(x, name)(dim, keepdim=True), getattr(t, name)(dim, keepdim=True), rtol=1e-12)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_positional_dim(name) -> None:
    rng = np.random.default_rng(1)
    x, t = _pair(rng.standard_normal((2, 3, 4)))
    _same(getattr(x, name)(1), getattr(t, name)(1), rtol=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda x: x.mean(), "mean(): could not infer output dtype. Input dtype must be either a "
                         "floating point or complex dtype. Got: Long"),
    (lambda x: x.mean(0), "Got: Long"),
    (lambda x: x.softmax(0), "\"softmax_lastdim_kernel_impl\" not implemented for 'Long'"),
    (lambda x: x.log_softmax(0), "not implemented for 'Long'"),
    (lambda x: x.var(), "std and var only support floating point and complex dtypes"),
])
def test_integer_tensors_refuse_mean_and_softmax_as_torch(call, message) -> None:
    with pytest.raises(RuntimeError, match="floating point|not implemented"):
        call(torch.tensor([1, 2, 3]))
    with pytest.raises(DtypeError) as caught:
        call(mt.tensor([1, 2, 3]))
    assert message in str(caught.value)


# ----- 2. var/std: unbiased by default, correction= and unbiased= ---------------------------
@pytest.mark.parametrize("name", ["var", "std"])
@pytest.mark.parametrize("args, kwargs", [
    ((), {}),
    ((1,), {}),
    ((1, True), {}),  # torch's var(dim, unbiased)
    ((1, False, True), {}),  # var(dim, unbiased, keepdim)
    ((False,), {}),  # var(unbiased)
    ((), {"dim": 0, "correction": 0}),
    ((), {"dim": (0, 1), "correction": 2, "keepdim": True}),
    ((), {"unbiased": False}),
    ((-1,), {"keepdim": True}),
])
def test_var_std_follow_torch(name, args, kwargs) -> None:
    rng = np.random.default_rng(2)
    x, t = _pair(rng.standard_normal((3, 4)))
    ours, theirs = getattr(x, name)(*args, **kwargs), getattr(t, name)(*args, **kwargs)
    _same(ours, theirs, rtol=1e-12)
    upstream = rng.standard_normal(ours.shape)
    ours.backward(upstream)
    theirs.backward(torch.tensor(upstream))
    _same(x.grad, t.grad, rtol=1e-10)
    _same(getattr(mt, name)(x.detach(), *args, **kwargs), theirs, rtol=1e-12)


@pytest.mark.parametrize("name", ["var", "std"])
def test_var_std_gradcheck_with_a_correction(name) -> None:
    rng = np.random.default_rng(3)
    x = mt.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    for kwargs in ({}, {"correction": 0}, {"unbiased": True}, {"correction": 2}):
        assert mt.gradcheck(lambda a, k=kwargs: getattr(a, name)(1, **k), [x])
        assert mt.gradgradcheck(lambda a, k=kwargs: getattr(a, name)(0, **k), [x])


def test_var_refuses_two_spellings_of_the_correction() -> None:
    with pytest.raises(TypeError, match="more than one of unbiased=, correction="):
        mt.tensor([1.0, 2.0]).var(unbiased=True, correction=0)


def test_layer_norm_keeps_the_biased_variance() -> None:
    import minitransformer.functional as F

    rng = np.random.default_rng(4)
    x, t = _pair(rng.standard_normal((2, 5)))
    _same(F.layer_norm_reference(x, 5), torch.nn.functional.layer_norm(t, (5,)), rtol=1e-10)
    _same(F.layer_norm(x, 5), torch.nn.functional.layer_norm(t, (5,)), rtol=1e-10)


# ----- 4. cross_entropy: PyTorch's layout and options ---------------------------------------
CE_OPTIONS = [
    {},
    {"reduction": "none"},
    {"reduction": "sum"},
    {"ignore_index": 1},
    {"label_smoothing": 0.2},
    {"weight": [1.0, 2.0, 0.5, 3.0]},
    {"weight": [1.0, 2.0, 0.5, 3.0], "label_smoothing": 0.1, "reduction": "none"},
    {"weight": [1.0, 2.0, 0.5, 3.0], "label_smoothing": 0.3, "ignore_index": 2},
]


def _ce_both(input_shape, target, kwargs):
    rng = np.random.default_rng(5)
    import minitransformer.functional as F

    z, tz = _pair(rng.standard_normal(input_shape) * 2)
    if "ignore_index" in kwargs and target.dtype.kind == "i":  # the ignored entries marked so
        target = np.where(target == -100, kwargs["ignore_index"], target)
    theirs_kw = {k: torch.tensor(v, dtype=torch.float64) if k == "weight" else v
                 for k, v in kwargs.items()}
    ours_kw = {k: mt.tensor(v, dtype=mt.float64) if k == "weight" else v
               for k, v in kwargs.items()}
    ours = F.cross_entropy(z, target, **ours_kw)
    theirs = torch.nn.functional.cross_entropy(tz, torch.tensor(target), **theirs_kw)
    _same(ours, theirs, rtol=1e-12, atol=1e-14)
    upstream = rng.standard_normal(ours.shape)
    ours.backward(upstream)
    theirs.backward(torch.tensor(upstream))
    _same(z.grad, tz.grad, rtol=1e-10, atol=1e-14)
    assert mt.gradcheck(lambda a: F.cross_entropy(a, target, **ours_kw), [z.detach()
                        .requires_grad_()])
    assert mt.gradgradcheck(lambda a: F.cross_entropy(a, target, **ours_kw), [z.detach()
                            .requires_grad_()])


@pytest.mark.parametrize("kwargs", CE_OPTIONS)
@pytest.mark.parametrize("input_shape, target", [
    ((5, 4), np.array([0, 3, 1, 1, -100])),  # (N, C), target (N,)
    ((2, 4, 3), np.array([[0, 1, 2], [3, 3, -100]])),  # (N, C, d1): classes on axis 1
    ((2, 4, 2, 3), np.array([[[0, 1, 2], [3, 0, 1]], [[2, 2, 1], [0, -100, 3]]])),
    ((4,), np.array(3)),  # unbatched (C,), target ()
])
def test_cross_entropy_class_indices_as_torch(input_shape, target, kwargs) -> None:
    _ce_both(input_shape, target, kwargs)


@pytest.mark.parametrize("kwargs", [k for k in CE_OPTIONS if "ignore_index" not in k])
@pytest.mark.parametrize("input_shape", [(5, 4), (2, 4, 3), (4,)])
def test_cross_entropy_class_probabilities_as_torch(input_shape, kwargs) -> None:
    rng = np.random.default_rng(6)
    probs = rng.random(input_shape)
    probs /= probs.sum(axis=1 if len(input_shape) > 1 else 0, keepdims=True)
    _ce_both(input_shape, probs, kwargs)


def test_cross_entropy_classes_last_is_an_error_naming_the_fix() -> None:
    """(B, T, C) logits with (B, T) targets: PyTorch reads C as axis 1 and refuses (or gives
    a wrong loss when T == C); here the error says what to write."""
    import minitransformer.functional as F

    logits = mt.randn(2, 3, 5)
    with pytest.raises(mt.ShapeError, match=r"target of shape \(2, 3\) does not fit input of "
                                            r"shape \(2, 3, 5\).*logits\.view\(-1, 5\)"):
        F.cross_entropy(logits, np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(RuntimeError):
        torch.nn.functional.cross_entropy(torch.randn(2, 3, 5), torch.zeros(2, 3).long())
    square = mt.randn(2, 4, 4)  # C == T: the classes are axis 1, as in torch
    t = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    _same(F.cross_entropy(square, t),
          torch.nn.functional.cross_entropy(torch.tensor(square.numpy()), torch.tensor(t)),
          rtol=1e-6)


def test_cross_entropy_nanogpt_call() -> None:
    import minitransformer.functional as F

    rng = np.random.default_rng(7)
    logits = rng.standard_normal((2, 3, 6)).astype(np.float32)
    targets = np.array([[1, 5, -1], [0, -1, 2]])
    ours_logits = mt.tensor(logits)
    ours = F.cross_entropy(ours_logits.view(-1, ours_logits.size(-1)),
                           mt.tensor(targets).view(-1), ignore_index=-1)
    t = torch.tensor(logits)
    theirs = torch.nn.functional.cross_entropy(t.view(-1, t.size(-1)),
                                               torch.tensor(targets).view(-1), ignore_index=-1)
    assert ours.dtype == mt.float32
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-6)


def test_cross_entropy_loss_module_as_torch() -> None:
    rng = np.random.default_rng(8)
    z = rng.standard_normal((3, 4, 2))
    t = np.array([[0, 3], [1, -100], [2, 2]])
    weight = np.array([1.0, 0.5, 2.0, 1.0])
    ours = mt.nn.CrossEntropyLoss(weight=mt.tensor(weight), label_smoothing=0.1)(mt.tensor(z), t)
    theirs = torch.nn.CrossEntropyLoss(weight=torch.tensor(weight), label_smoothing=0.1)(
        torch.tensor(z), torch.tensor(t))
    _same(ours, theirs, rtol=1e-12)


# ----- 3. type promotion: PyTorch's result_type for every binary op --------------------------
DTYPES = ["bool", "int32", "int64", "float16", "float32", "float64"]
KINDS = [("tensor", d) for d in DTYPES] + [("0-d", d) for d in DTYPES] + [
    ("python", 3), ("python", 2.5), ("python", True)]
BINARY = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a / b, "//": lambda a, b: a // b, "<": lambda a, b: a < b,
    "==": lambda a, b: a == b, ">=": lambda a, b: a >= b,
}


def _operand(kind, value):
    """(ours, torch's) for one operand of the table."""
    if kind == "python":
        return value, value
    shape = (3,) if kind == "tensor" else ()
    array = np.full(shape, 2, dtype=value)
    return mt.tensor(array), torch.tensor(array)


def _outcome(op, a, b):
    try:
        return op(a, b)
    except (RuntimeError, TypeError, NotImplementedError, ZeroDivisionError):
        return None  # refused (bool - bool, bool // bool): both must refuse


def _name(dtype) -> str:
    return str(dtype).replace("torch.", "")


@pytest.mark.parametrize("symbol", list(BINARY))
@pytest.mark.parametrize("left", KINDS, ids=lambda k: f"{k[0]}-{k[1]}")
def test_promotion_table_matches_torch(symbol, left) -> None:
    op = BINARY[symbol]
    for right in KINDS:
        if left[0] == right[0] == "python":
            continue
        (a, ta), (b, tb) = _operand(*left), _operand(*right)
        theirs = _outcome(op, ta, tb)
        ours = _outcome(op, a, b)
        where = f"{left} {symbol} {right}"
        if theirs is None:
            assert ours is None, f"{where}: torch refuses, got {ours!r}"
            continue
        assert ours is not None, f"{where}: torch gives {theirs.dtype}, ours refused"
        assert _name(ours.dtype) == _name(theirs.dtype), where
        assert ours.shape == tuple(theirs.shape), where
        np.testing.assert_array_equal(ours.numpy().astype(np.float64),
                                      theirs.numpy().astype(np.float64), err_msg=where)


def test_result_type_is_torchs_for_all_pairs() -> None:
    for left in KINDS:
        for right in KINDS:
            if left[0] == right[0] == "python":
                continue
            (a, ta), (b, tb) = _operand(*left), _operand(*right)
            assert _name(mt.result_type(a, b)) == _name(torch.result_type(ta, tb)), (left, right)


@pytest.mark.parametrize("leaf_dtype, other", [
    ("float32", 3),  # int * float32 leaf
    ("float32", mt.tensor([1.0, 2.0], dtype=mt.float64)),  # float32 leaf * float64 tensor
    ("float64", mt.tensor(2.0, dtype=mt.float32)),  # a 0-d float32 does not narrow float64
    ("float16", mt.tensor([1, 2])),
    ("float32", mt.tensor(2.0, dtype=mt.float64, requires_grad=True)),
])
def test_gradients_keep_each_leafs_dtype(leaf_dtype, other) -> None:
    leaf = mt.tensor([1.5, -2.0], dtype=leaf_dtype, requires_grad=True)
    t_leaf = torch.tensor([1.5, -2.0], dtype=getattr(torch, leaf_dtype), requires_grad=True)
    t_other = other if not isinstance(other, mt.Tensor) else torch.tensor(
        other.numpy() if not other.requires_grad else other.detach().numpy(),
        requires_grad=other.requires_grad)
    ours, theirs = leaf * other / 2 - other, t_leaf * t_other / 2 - t_other
    assert _name(ours.dtype) == _name(theirs.dtype)
    ours.sum().backward()
    theirs.sum().backward()
    assert leaf.grad.dtype == leaf.dtype
    _same(leaf.grad, t_leaf.grad)
    if isinstance(other, mt.Tensor) and other.requires_grad:
        assert other.grad.dtype == other.dtype
        _same(other.grad, t_other.grad, rtol=1e-6)


def test_promotion_under_gradcheck() -> None:
    """Mixed float32/float64 operands in the graph: the To nodes are differentiable."""
    x = mt.tensor(np.random.default_rng(9).standard_normal(3), requires_grad=True)
    ints = mt.tensor([1, 2, 3])
    assert mt.gradcheck(lambda a: (a * ints + ints / 2) * 0.5, [x])
    assert mt.gradgradcheck(lambda a: (a * ints) * (a / ints), [x])


def test_floor_division_has_no_derivative_as_torch() -> None:
    x = mt.tensor([1.5, -2.5], requires_grad=True)
    y = x // 2
    np.testing.assert_array_equal(y.detach().numpy(), [0.0, -2.0])
    with pytest.raises(NotImplementedError, match="floor_divide"):
        y.sum().backward()
    assert (7 // mt.tensor([2, -2])).tolist() == [3, -4]


def test_masked_fill_keeps_the_tensors_dtype() -> None:
    x, t = mt.tensor([1, 2, 3]), torch.tensor([1, 2, 3])
    mask = np.array([True, False, True])
    ours, theirs = x.masked_fill(mask, 0.0), t.masked_fill(torch.tensor(mask), 0.0)
    assert _name(ours.dtype) == _name(theirs.dtype) == "int64"


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "sin", "cos", "erf", "tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", ["int32", "int64", "bool"])
def test_float_functions_of_integers_give_the_default_float(name, dtype) -> None:
    array = np.array([1, 2, 1], dtype=dtype)
    ours, theirs = getattr(mt.tensor(array), name)(), getattr(torch.tensor(array), name)()
    assert _name(ours.dtype) == _name(theirs.dtype) == "float32"
    _same(ours, theirs, rtol=1e-6)
    assert _name(mt.tensor(array).logsumexp(0).dtype) == _name(
        torch.tensor(array).logsumexp(0).dtype)


def test_var_of_one_element_is_nan_with_a_nan_gradient_as_torch() -> None:
    x, t = _pair([[2.0, 3.0]])
    with pytest.warns(RuntimeWarning):
        ours = x.var(0)
    with pytest.warns(UserWarning):
        theirs = t.var(0)
    _same(ours, theirs)
    with np.errstate(invalid="ignore"):
        ours.sum().backward()
    theirs.sum().backward()
    _same(x.grad, t.grad)


@pytest.mark.parametrize("args, kwargs", [((), {}), ((1,), {}), ((-1,), {"keepdim": True}),
                                          ((), {"dim": 0})])
def test_prod_with_zeros_as_torch(args, kwargs) -> None:
    rng = np.random.default_rng(10)
    a = rng.standard_normal((2, 5, 3))
    a[0, 2, 1] = a[1, 1, 0] = a[1, 3, 0] = 0.0  # one zero and two zeros in a row
    x, t = _pair(a)
    ours, theirs = x.prod(*args, **kwargs), t.prod(*args, **kwargs)
    _same(ours, theirs, rtol=1e-12)
    upstream = rng.standard_normal(ours.shape)
    ours.backward(upstream)
    theirs.backward(torch.tensor(upstream))
    _same(x.grad, t.grad, rtol=1e-10, atol=1e-15)  # prod of the others, at zeros too
    assert mt.gradgradcheck(lambda z: z.prod(*args, **kwargs), [x.detach().requires_grad_()])
    assert mt.tensor([1, 2, 3]).prod().dtype == mt.int64
