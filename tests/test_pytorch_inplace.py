"""In-place operations behave as in PyTorch: ``a += b`` changes ``a``'s memory (aliases see
it) and keeps its dtype; leaves that require grad refuse them inside the graph; other
tensors get them recorded; a tensor saved for a backward and then changed makes that
backward raise; item assignment, copy_ and friends; state_dict()[k].copy_(w) loads w."""

from __future__ import annotations

import operator

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import nn
from minitransformer.errors import GraphError, ShapeError
from minitransformer.inplace import CastError
from tests.conftest import requires_torch, torch

IN_PLACE = {"+=": operator.iadd, "-=": operator.isub, "*=": operator.imul,
            "/=": operator.itruediv, "**=": operator.ipow}


# ----- outside the graph: the memory changes ------------------------------------------------
def test_manual_sgd_loop_under_no_grad_updates_the_parameters_and_lowers_the_loss() -> None:
    mt.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = mt.randn(16, 3), mt.randn(16, 1)
    weight = model.weight
    losses = []
    for _ in range(20):
        loss = ((model(x) - y) ** 2).mean()
        losses.append(loss.item())
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            with mt.no_grad():
                p -= 0.1 * p.grad
    assert model.weight is weight and weight.is_leaf and weight.requires_grad
    assert losses[-1] < 0.5 * losses[0]
    assert weight._version == 20  # each -= counted, as PyTorch's version counter


@pytest.mark.parametrize("symbol", list(IN_PLACE))
def test_an_alias_sees_the_change_and_the_values_are_torchs(symbol: str) -> None:
    values, other = np.array([1.0, 2.0, 4.0], np.float32), np.array([2.0, 0.5, 3.0], np.float32)
    a = mt.tensor(values)
    alias = a
    view = a[1:]
    result = IN_PLACE[symbol](a, mt.tensor(other))
    assert result is alias  # the same tensor, not a new one bound to the name
    expected = IN_PLACE[symbol](values.copy(), other)
    np.testing.assert_allclose(alias.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(view.numpy(), expected[1:], rtol=1e-6)  # views see it too
    if torch is not None:
        t = torch.tensor(values)
        IN_PLACE[symbol](t, torch.tensor(other))
        np.testing.assert_allclose(alias.numpy(), t.numpy(), rtol=1e-6)


@requires_torch
def test_method_forms_match_torch() -> None:
    rng = np.random.default_rng(0)
    start, other = rng.standard_normal((2, 3)), rng.standard_normal(3)
    a, t = mt.tensor(start), torch.tensor(start)
    for name, args, kwargs in [("add_", (other,), {"alpha": -0.5}),
                               ("sub_", (other,), {"alpha": 2}), ("mul_", (other,), {}),
                               ("div_", (other + 3,), {}),
                               ("pow_", (2.0,), {}), ("clamp_", (), {"min": 0.1, "max": 0.9}),
                               ("clamp_", (0.3,), {}), ("fill_", (0.25,), {}), ("zero_", (), {})]:
        ours_args = tuple(mt.tensor(x) if isinstance(x, np.ndarray) else x for x in args)
        theirs_args = tuple(torch.tensor(x) if isinstance(x, np.ndarray) else x for x in args)
        assert getattr(a, name)(*ours_args, **kwargs) is a
        getattr(t, name)(*theirs_args, **kwargs)
        np.testing.assert_allclose(a.numpy(), t.numpy(), rtol=1e-12, err_msg=name)
    mask = start > 0
    a, t = mt.tensor(start), torch.tensor(start)
    a.masked_fill_(mask[0], -1.0)  # broadcast over the rows, as PyTorch
    t.masked_fill_(torch.tensor(mask[0]), -1.0)
    np.testing.assert_array_equal(a.numpy(), t.numpy())
    m, tm = mt.tensor(np.eye(2) + 1), torch.tensor(np.eye(2) + 1)
    alias, t_alias = m, tm
    m @= mt.tensor(np.array([[0.0, 1.0], [1.0, 0.0]]))  # torch has no __imatmul__: m = m @ ...
    tm @= torch.tensor(np.array([[0.0, 1.0], [1.0, 0.0]]))
    np.testing.assert_array_equal(m.numpy(), tm.numpy())
    assert m is not alias and tm is not t_alias  # rebound, not written in place
    np.testing.assert_array_equal(alias.numpy(), t_alias.numpy())  # the old values, both


def test_the_dtype_stays_and_results_it_cannot_hold_raise_torchs_error() -> None:
    ints = mt.tensor([1, 2])
    cases = [(lambda: ints.__iadd__(0.5), "Float", "Long"),
             (lambda: ints.__itruediv__(2), "Float", "Long"),
             (lambda: ints.__iadd__(mt.tensor([1.0], dtype=mt.float64)), "Double", "Long"),
             (lambda: ints.__imul__(1j), "ComplexFloat", "Long"),
             (lambda: mt.tensor([True]).__iadd__(1), "Long", "Bool")]
    for make, result, output in cases:
        with pytest.raises(RuntimeError, match=f"result type {result} can't be cast to the "
                                               f"desired output type {output}"):
            make()
    with pytest.raises(CastError):
        ints.clamp_(min=0.5)
    assert ints.tolist() == [1, 2] and ints.dtype == mt.int64  # nothing was written
    ints += 3
    assert ints.tolist() == [4, 5] and ints.dtype == mt.int64
    floats = mt.zeros(3)
    floats += mt.ones(3, dtype=mt.float64)  # same category: rounded to float32, as torch
    assert floats.dtype == mt.float32 and floats.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ShapeError, match=r"output with shape \[3\] doesn't match the "
                                         r"broadcast shape \[2, 3\]"):
        floats += mt.ones(2, 3)


# ----- inside the graph ---------------------------------------------------------------------
LEAF = "a leaf Variable that requires grad is being used in an in-place operation."
VIEW = "a view of a leaf Variable that requires grad is being used in an in-place operation."
# Each change written once for both libraries: (message, change(x, library)).
LEAF_CHANGES = [(LEAF, lambda x, lib: x.__iadd__(1)),
                (LEAF, lambda x, lib: x.copy_(lib.zeros(3))),
                (LEAF, lambda x, lib: x.zero_()),
                (LEAF, lambda x, lib: x.__setitem__(x > 0, 0.0)),
                (VIEW, lambda x, lib: x.__setitem__(0, 5.0)),
                (VIEW, lambda x, lib: x[:2].add_(1))]


@pytest.mark.parametrize("message, change", LEAF_CHANGES)
def test_a_leaf_that_requires_grad_refuses_in_place_ops_unless_under_no_grad(message, change):
    x = mt.ones(3, requires_grad=True)
    with pytest.raises(GraphError, match=message.replace(".", r"\.")):
        change(x, mt)
    assert x.tolist() == [1.0, 1.0, 1.0]
    if torch is not None:
        with pytest.raises(RuntimeError, match=message.replace(".", r"\.")):
            change(torch.ones(3, requires_grad=True), torch)
    with mt.no_grad():
        change(x, mt)
    assert x.tolist() != [1.0, 1.0, 1.0] and x.is_leaf and x.requires_grad


@requires_torch
@pytest.mark.parametrize("symbol", list(IN_PLACE))
def test_in_place_on_a_non_leaf_is_recorded_as_torch(symbol: str) -> None:
    rng = np.random.default_rng(1)
    x0, w0 = rng.uniform(0.5, 2, (2, 3)), rng.uniform(0.5, 2, 3)

    def run(lib, tensor):
        x, w = tensor(x0, requires_grad=True), tensor(w0, requires_grad=True)
        y = x * 3
        alias = y
        IN_PLACE[symbol](y, w)
        assert y is alias
        (y * tensor(np.arange(6.0).reshape(2, 3))).sum().backward()
        return y.detach().numpy(), x.grad.numpy(), w.grad.numpy(), y.is_leaf

    ours = run(mt, mt.tensor)
    theirs = run(torch, torch.tensor)
    for a, b in zip(ours[:3], theirs[:3]):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    assert ours[3] is theirs[3] is False


def test_changing_a_saved_tensor_makes_the_backward_raise_the_version_error() -> None:
    w = mt.ones(3, requires_grad=True)
    a = mt.tensor([1.0, 2.0, 3.0])  # no grad: Mul saves it for w's gradient
    product = a * w
    a += 1
    with pytest.raises(GraphError, match=r"modified in place: input 0 of Mul.*changed by `\+=`"):
        product.sum().backward()

    x = mt.ones(3, requires_grad=True)
    y = x.sigmoid()  # saves its output y
    y *= 2  # recorded, but Sigmoid's backward would read the new y: PyTorch raises too
    with pytest.raises(GraphError, match=r"output 0 of Sigmoid.*changed by `\*=`"):
        y.sum().backward()
    if torch is not None:
        tx = torch.ones(3, requires_grad=True)
        ty = tx.sigmoid()
        ty *= 2
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            ty.sum().backward()


def test_a_node_that_used_the_tensor_before_it_was_rebased_raises() -> None:
    # z used y before y += w moved y's history: its gradient must not reach w
    x, w = mt.ones(3, requires_grad=True), mt.ones(3, requires_grad=True)
    y = x * 3
    z = y + 1
    y += w
    with pytest.raises(GraphError, match=r"input 0 of Add.*`\+=`.*`a = a \+ b`"):
        (z.sum() + y.sum()).backward()
    x.grad = w.grad = None
    y = x * 3
    z = y + 1
    y = y + w  # out of place: the line to write here
    (z.sum() + y.sum()).backward()
    assert x.grad.tolist() == [6.0, 6.0, 6.0] and w.grad.tolist() == [1.0, 1.0, 1.0]


VIEW_CHANGES = {
    "y[:, 0] *= w": lambda y, w: y[:, 0].__imul__(w),
    "y[:, 0].mul_(w)": lambda y, w: y[:, 0].mul_(w),
    "y[1] += w[0]": lambda y, w: y[1].__iadd__(w[0]),
    "v = y[:, 1]; v.add_(w); v *= 2": lambda y, w: y[:, 1].add_(w).__imul__(2),
    "y[:, 0] *= w; y[:, 0] += w; y *= 2": lambda y, w: (y[:, 0].__imul__(w),
                                                        y[:, 0].__iadd__(w), y.__imul__(2)),
}


@requires_torch
@pytest.mark.parametrize("line", list(VIEW_CHANGES))
def test_an_in_place_op_on_an_indexed_view_changes_its_base_as_torch(line: str) -> None:
    def run(tensor):
        x = tensor(np.arange(6.0).reshape(2, 3) + 1, requires_grad=True)
        w = tensor([2.0, 3.0], requires_grad=True)
        y = x * 3
        if line.startswith("y[:, 0] *= w") and ";" not in line:
            y[:, 0] *= w  # Python's own spelling: a view changed, then assigned back
        else:
            VIEW_CHANGES[line](y, w)
        (y * y).sum().backward()
        return y.detach().numpy(), x.grad.numpy(), w.grad.numpy()

    for ours, theirs in zip(run(mt.tensor), run(torch.tensor)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


VALUE_FROM_ITSELF = {
    "y[y > 6] *= 0.5": lambda y, w: y.__setitem__(y > 6, y[y > 6].__imul__(0.5)),
    "y[0] = y[0] + w[0]": lambda y, w: y.__setitem__(0, y[0] + w[0]),
    "y += y.sum()": lambda y, w: y.__iadd__(y.sum()),
    "y[:, 1] = y[:, 0] + w": lambda y, w: y.__setitem__((slice(None), 1), y[:, 0] + w),
}


@requires_torch
@pytest.mark.parametrize("line", list(VALUE_FROM_ITSELF))
def test_a_new_value_computed_from_the_old_one_is_recorded_as_torch(line: str) -> None:
    # the nodes that computed the right side used y's old version: they keep pointing at it
    def run(tensor):
        x = tensor(np.arange(6.0).reshape(2, 3) + 1, requires_grad=True)
        w = tensor([2.0, 3.0], requires_grad=True)
        y = x * 3
        VALUE_FROM_ITSELF[line](y, w)
        (y * y).sum().backward()
        return y.detach().numpy(), x.grad.numpy(), 0.0 if w.grad is None else w.grad.numpy()

    for ours, theirs in zip(run(mt.tensor), run(torch.tensor)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


@requires_torch
@pytest.mark.parametrize("then", ["", "v += 1", "y[:, 0] *= w",
                                  "y[:, 0] *= w; y[:, 0] += 1; v *= 3"])
def test_a_changed_view_follows_later_changes_of_its_base_as_torch(then: str) -> None:
    def run(tensor):
        x = tensor(np.arange(6.0).reshape(2, 3) + 1, requires_grad=True)
        w = tensor([2.0, 3.0], requires_grad=True)
        y = x * 3
        v = y[:, 0]
        v *= w
        y *= 2  # v's values double: its history must say so
        if then == "v += 1":
            v += 1
        elif then:
            y[:, 0] *= w
            if "v *= 3" in then:
                y[:, 0] += 1
                v *= 3
        ((v + 1).sum() + (y * y).sum()).backward()
        return v.detach().numpy(), x.grad.numpy(), w.grad.numpy()

    for ours, theirs in zip(run(mt.tensor), run(torch.tensor)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_an_in_place_op_on_another_kind_of_view_inside_the_graph_says_what_to_write() -> None:
    x = mt.ones(2, 3, requires_grad=True)
    y = x * 2
    with pytest.raises(GraphError, match=r"view \(Reshape of another tensor\).*out of place"):
        y.reshape(6).__imul__(mt.ones(6, requires_grad=True))


# ----- item assignment --------------------------------------------------------------------
@requires_torch
def test_item_assignment_outside_the_graph_as_torch() -> None:
    rng = np.random.default_rng(2)
    logits0 = rng.standard_normal((2, 6)).astype(np.float32)
    logits, tlogits = mt.tensor(logits0), torch.tensor(logits0)
    v, tv = mt.tensor(np.sort(logits0, axis=1)[:, ::-1][:, :3].copy()), torch.topk(tlogits, 3)[0]
    logits[logits < v[:, [-1]]] = -float("inf")  # nanoGPT's top-k sampling
    tlogits[tlogits < tv[:, [-1]]] = -float("inf")
    np.testing.assert_array_equal(logits.numpy(), tlogits.numpy())

    y, ty = mt.arange(6), torch.arange(6)
    alias = y
    y[:2] = -1
    ty[:2] = -1
    y[3] = 2.7  # cast to the tensor's dtype, as PyTorch's copy
    ty[3] = 2.7
    assert alias.tolist() == ty.tolist() == [-1, -1, 2, 2, 4, 5]
    x, tx = mt.zeros(2, 3), torch.zeros(2, 3)
    x[0, 1] = mt.tensor(5.0)
    tx[0, 1] = torch.tensor(5.0)
    x[1] = mt.tensor([1.0, 2.0, 3.0])
    tx[1] = torch.tensor([1.0, 2.0, 3.0])
    x[:, mt.tensor([0, 2])] += 1
    tx[:, torch.tensor([0, 2])] += 1
    np.testing.assert_array_equal(x.numpy(), tx.numpy())


@requires_torch
def test_item_assignment_inside_the_graph_as_torch() -> None:
    def run(tensor):
        x = tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
        w = tensor(3.0, requires_grad=True)
        y = x * 2
        y[1:3] = w  # x's gradient stops there; w gets theirs
        y[y > 7] = 0.0
        (y * tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
        return y.detach().numpy(), x.grad.numpy(), w.grad.numpy()

    for ours, theirs in zip(run(mt.tensor), run(torch.tensor)):
        np.testing.assert_array_equal(ours, theirs)


def test_item_assignment_on_a_saved_tensor_raises_at_backward() -> None:
    w = mt.ones(3, requires_grad=True)
    a = mt.tensor([1.0, 2.0, 3.0])
    product = a * w
    a[0] = 0.0
    with pytest.raises(GraphError, match=r"input 0 of Mul.*item assignment"):
        product.sum().backward()


def test_item_assignment_passes_gradcheck_and_gradgradcheck() -> None:
    mt.manual_seed(3)
    x0, v0 = mt.randn(3, 4, dtype=mt.float64), mt.randn(4, dtype=mt.float64)

    def put(x: mt.Tensor, v: mt.Tensor) -> mt.Tensor:
        y = x * x
        y[1] = v * v
        return y * x

    inputs = [x0.requires_grad_(), v0.requires_grad_()]
    assert mt.gradcheck(put, inputs) and mt.gradgradcheck(put, inputs)


# ----- copy_ and state_dict -----------------------------------------------------------------
@requires_torch
def test_copy_broadcasts_converts_the_dtype_and_works_on_parameters_under_no_grad() -> None:
    f, tf = mt.zeros(2, 3), torch.zeros(2, 3)
    assert f.copy_(mt.tensor([1, 2, 3])) is f  # int64 into float32, broadcast over rows
    tf.copy_(torch.tensor([1, 2, 3]))
    np.testing.assert_array_equal(f.numpy(), tf.numpy())
    assert f.dtype == mt.float32
    i = mt.zeros(2, dtype=mt.int64)
    i.copy_(mt.tensor([2.7, -1.5]))
    assert i.tolist() == torch.zeros(2, dtype=torch.long).copy_(torch.tensor([2.7, -1.5])).tolist()
    with pytest.raises(ShapeError):
        f.copy_(mt.ones(3, 3))

    layer = nn.Linear(3, 2)
    weight = layer.weight
    with mt.no_grad():
        layer.weight.copy_(np.ones((2, 3)))
    assert layer.weight is weight and weight.requires_grad and weight.tolist() == [[1.0] * 3] * 2

    src = mt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    dst = mt.zeros(2, 3)
    dst.copy_(src)  # recorded: the gradient reaches src, summed over the broadcast rows
    dst.sum().backward()
    assert src.grad.tolist() == [2.0, 2.0, 2.0]


def test_state_dict_copy_loads_into_the_model_and_saving_keeps_the_values(tmp_path) -> None:
    mt.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    pretrained = {"0.weight": np.arange(6.0).reshape(2, 3), "0.bias": np.ones(2),
                  "1.weight": np.full(2, 3.0), "1.bias": np.zeros(2)}
    sd = model.state_dict()
    with mt.no_grad():  # nanoGPT's from_pretrained
        for k, w in pretrained.items():
            sd[k].copy_(mt.tensor(w))
    for k, w in pretrained.items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), w)
    np.testing.assert_array_equal(model[0].weight.detach().numpy(), pretrained["0.weight"])

    path = tmp_path / "model.mtz"
    mt.save(model.state_dict(), path)
    with mt.no_grad():
        model[0].weight += 1  # training goes on after the save
    loaded = mt.load(path)
    np.testing.assert_array_equal(loaded["0.weight"].numpy(), pretrained["0.weight"])


@requires_torch
def test_mask_and_or_and_tensor_bounds_and_module_attributes_in_place_as_torch() -> None:
    m, tm = mt.tensor([True, False, True]), torch.tensor([True, False, True])
    alias = m
    m &= mt.tensor([True, True, False])
    tm &= torch.tensor([True, True, False])
    m |= mt.tensor([False, True, False])
    tm |= torch.tensor([False, True, False])
    assert alias.tolist() == tm.tolist() == [True, True, False]
    with pytest.raises(CastError, match="result type Long can't be cast to the desired output "
                                        "type Bool"):
        m |= 1
    a, ta = mt.tensor([1.0, 5.0, -3.0]), torch.tensor([1.0, 5.0, -3.0])
    a.clamp_(mt.tensor(0.0), mt.tensor([2.0, 4.0, 2.0]))
    ta.clamp_(torch.tensor(0.0), torch.tensor([2.0, 4.0, 2.0]))
    assert a.tolist() == ta.tolist()
    layer = nn.Linear(2, 2)
    weight = layer.weight
    with mt.no_grad():
        layer.weight *= 0  # through Module.__setattr__: the same Parameter comes back
    assert layer.weight is weight and not weight.data.any()
    assert [p is weight for p in layer.parameters()] == [True, False]


@requires_torch
def test_filling_a_buffer_step_by_step_inside_the_graph_as_torch() -> None:
    # out[:, t] = h_t, as an RNN written by hand: each write recorded on the buffer
    rng = np.random.default_rng(4)
    x0, w0 = rng.standard_normal((2, 3)), rng.standard_normal(3)

    def run(lib, tensor):
        x, w = tensor(x0, requires_grad=True), tensor(w0, requires_grad=True)
        out = lib.zeros(2, 3, dtype=x.dtype)
        h = x[:, 0] * 0
        for t in range(3):
            h = (h + x[:, t]) * w[t]
            out[:, t] = h
        (out * out).sum().backward()
        return out.detach().numpy(), x.grad.numpy(), w.grad.numpy()

    for ours, theirs in zip(run(mt, mt.tensor), run(torch, torch.tensor)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_a_view_made_without_grad_refuses_a_recorded_in_place_op() -> None:
    buffer = mt.zeros(4)
    view = buffer[:2]  # no graph: a plain view of buffer's memory
    with pytest.raises(GraphError, match=r"view \(a view of another tensor's memory\)"):
        view += mt.ones(2, requires_grad=True)
    view += mt.ones(2)  # nothing requires grad: written through, as PyTorch
    assert buffer.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_read_only_memory_says_clone_first() -> None:
    stretched = mt.ones(3).expand(2, 3)  # one value under several positions (PyTorch refuses too)
    for change in (lambda: stretched.__iadd__(1), lambda: stretched.__setitem__(0, 2.0),
                   lambda: stretched.clamp_(0, 1)):
        with pytest.raises(ValueError, match=r"read-only.*use \.clone\(\) first"):
            change()
    mt.manual_seed(0)
    attention = nn.Attention(4)
    x = mt.randn(1, 3, 4, requires_grad=True)
    z, weights = attention(x)  # the graph reads them
    with pytest.raises(ValueError, match=r"item assignment: this tensor's memory is read-only"):
        weights[0, 0] = 0.0
    (z.sum() + weights.sum()).backward()  # the refused write left the graph as it was
    assert x.grad is not None and weights.grad_fn is not None


@requires_torch
def test_matmul_in_place_inside_the_graph_as_torch() -> None:
    rng = np.random.default_rng(5)
    x0, w0 = rng.standard_normal((2, 3)), rng.standard_normal((3, 3))

    def run(tensor):
        x, w = tensor(x0, requires_grad=True), tensor(w0, requires_grad=True)
        y = x * 2
        y @= w
        (y * y).sum().backward()
        return y.detach().numpy(), x.grad.numpy(), w.grad.numpy()

    for ours, theirs in zip(run(mt.tensor), run(torch.tensor)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    y, t_y = mt.ones(2, 3) * 2, torch.ones(2, 3) * 2
    y @= mt.ones(3, 4)  # a new (2, 4) tensor in both: `@=` rebinds
    t_y @= torch.ones(3, 4)
    assert y.shape == tuple(t_y.shape) == (2, 4)
    leaf, t_leaf = mt.ones(2, 2, requires_grad=True), torch.ones(2, 2, requires_grad=True)
    leaf @= mt.ones(2, 2)  # allowed on a leaf in both: nothing is written into it
    t_leaf @= torch.ones(2, 2)
    assert leaf.grad_fn is not None and t_leaf.grad_fn is not None


@requires_torch
@pytest.mark.parametrize("fill", ["masked_fill_", "fill_", "zero_", "copy_"])
def test_writes_inside_the_graph_send_gradients_as_torch(fill: str) -> None:
    def run(tensor):
        x = tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
        v = tensor(2.0, requires_grad=True)
        y = x * 3
        if fill == "masked_fill_":
            y.masked_fill_(tensor([True, False, True]), v)  # the mask broadcast over rows
        elif fill == "fill_":
            y.fill_(v)
        elif fill == "zero_":
            y.zero_()
        else:
            y.copy_(v * tensor([1.0, 2.0, 3.0]))
        (y * y + y).sum().backward()
        return y.detach().numpy(), x.grad.numpy(), 0.0 if v.grad is None else v.grad.numpy()

    for ours, theirs in zip(run(mt.tensor), run(torch.tensor)):  # zero_: v unused in both
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
