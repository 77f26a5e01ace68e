"""The PyTorch names real model code uses (nanoGPT's model.py, tests/test_nanogpt.py), each
checked against PyTorch where it is installed: the ``nn.functional`` path, ``tril``/``triu``,
the dtype names and casts, ``from_numpy``, ``multinomial``, ``topk``, ``sort``, ``randint``,
``unique``, ``nn.init``, ``nn.ModuleDict``, ``LayerNorm(bias=False)``, non-persistent
buffers, ``nn.utils.clip_grad_norm_``, ``mt.cuda``, ``AdamW(fused=)``, dropout from the
seeded default generator, and the one-line error for a torch tensor passed by mistake."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import backend, nn
from tests.conftest import requires_torch, torch


def _t(x: mt.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.array(x.detach().numpy()))


# ----- import paths and names ----------------------------------------------------------------
def test_nn_functional_is_the_functional_module_under_pytorchs_path() -> None:
    import minitransformer.nn.functional as F1

    from minitransformer.nn import functional as F2

    assert F1 is F2 is mt.functional is mt.nn.functional
    assert hasattr(mt.nn.functional, "scaled_dot_product_attention")
    x = mt.randn(2, 3)  # F.softmax is PyTorch's (dim=None, dtype=); with a dim, mt.softmax
    assert np.array_equal(F1.softmax(x, dim=-1).numpy(), mt.softmax(x, -1).numpy())


def test_dtype_names_and_casts_as_torch() -> None:
    assert (mt.long, mt.int64, mt.int, mt.float, mt.float32, mt.double, mt.bool) == (
        np.int64, np.int64, np.int32, np.float32, np.float32, np.float64, np.bool_)
    x = mt.tensor([[1.7, -2.2], [0.0, 3.9]], dtype=mt.float64, requires_grad=True)
    for cast, dtype in (("long", np.int64), ("int", np.int32), ("bool", np.bool_),
                        ("float", np.float32), ("double", np.float64), ("half", np.float16)):
        ours = getattr(x, cast)()
        assert ours.dtype == dtype, cast
        if torch is not None:
            theirs = getattr(torch.tensor(x.detach().numpy()), cast)()
            np.testing.assert_array_equal(ours.detach().numpy(), theirs.numpy())
    # an integer copy is out of the graph, as in PyTorch
    assert not x.long().requires_grad and x.float().requires_grad
    pos = mt.arange(0, 5, dtype=mt.long, device="cpu")
    assert pos.dtype == np.int64 and pos.tolist() == [0, 1, 2, 3, 4]
    assert x.nelement() == x.numel() == 4
    assert x.contiguous() is x


def test_from_numpy_shares_memory() -> None:
    a = np.arange(6.0).reshape(2, 3)
    t = mt.from_numpy(a)
    a[0, 0] = 42.0
    assert t.shape == (2, 3) and t.dtype == np.float64 and t.data[0, 0] == 42.0
    with pytest.raises(TypeError, match="numpy.ndarray"):
        mt.from_numpy([1.0, 2.0])


def test_cuda_is_available_answers_from_the_backend() -> None:
    assert mt.cuda.is_available() is backend.cuda_is_available()
    assert mt.cuda.device_count() >= int(mt.cuda.is_available())


@requires_torch
def test_eye_matches_torch() -> None:
    for args, kwargs in (((3,), {}), ((2, 4), {}), ((3,), {"dtype": "float64"}), ((0,), {})):
        ours = mt.eye(*args, **{k: getattr(mt, v) for k, v in kwargs.items()})
        theirs = torch.eye(*args, **{k: getattr(torch, v) for k, v in kwargs.items()})
        assert ours.dtype == _dtype_of(theirs)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert mt.eye(2, requires_grad=True).requires_grad
    with pytest.raises(ValueError, match="non-negative int"):
        mt.eye(-1)


def _dtype_of(t) -> np.dtype:
    return t.numpy().dtype


# ----- triangles ---------------------------------------------------------------------------
@requires_torch
@pytest.mark.parametrize("diagonal", [-1, 0, 2])
def test_tril_triu_match_torch(diagonal: int) -> None:
    x = mt.tensor(np.random.default_rng(0).standard_normal((2, 3, 4)))
    for name in ("tril", "triu"):
        expected = getattr(torch, name)(_t(x), diagonal).numpy()
        np.testing.assert_array_equal(getattr(mt, name)(x, diagonal).numpy(), expected)
        np.testing.assert_array_equal(getattr(x, name)(diagonal=diagonal).numpy(), expected)
    ones = mt.tril(mt.ones(4, 4))
    assert ones.dtype == np.float32
    np.testing.assert_array_equal(ones.numpy(), torch.tril(torch.ones(4, 4)).numpy())


def test_tril_triu_gradcheck_and_errors() -> None:
    x = mt.tensor(np.random.default_rng(1).standard_normal((3, 4)), requires_grad=True)
    assert mt.gradcheck(lambda t: mt.tril(t, -1), (x,))
    assert mt.gradcheck(lambda t: t.triu(1), (x,))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        mt.tril(mt.ones(3))


# ----- sorting and selecting ---------------------------------------------------------------
@requires_torch
def test_topk_and_sort_match_torch() -> None:
    x = mt.tensor(np.random.default_rng(2).permutation(24).reshape(2, 3, 4) * 1.5)
    for dim in (-1, 1, 0):
        for largest in (True, False):
            ours = mt.topk(x, 2, dim=dim, largest=largest)
            theirs = torch.topk(_t(x), 2, dim=dim, largest=largest)
            np.testing.assert_array_equal(ours.values.numpy(), theirs.values.numpy())
            np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
            assert ours.indices.dtype == np.int64
        for descending in (False, True):
            values, indices = x.sort(dim=dim, descending=descending)
            theirs = torch.sort(_t(x), dim=dim, descending=descending)
            np.testing.assert_array_equal(values.numpy(), theirs.values.numpy())
            np.testing.assert_array_equal(indices.numpy(), theirs.indices.numpy())
    v, i = x.topk(3)
    assert v.shape == i.shape == (2, 3, 3)
    with pytest.raises(RuntimeError, match="out of range"):
        mt.topk(x, 5)


def test_topk_and_sort_values_are_differentiable() -> None:
    x = mt.tensor(np.random.default_rng(3).standard_normal((3, 5)), requires_grad=True)
    assert mt.gradcheck(lambda t: mt.topk(t, 2).values, (x,))
    assert mt.gradcheck(lambda t: mt.sort(t, dim=0, descending=True).values, (x,))


@requires_torch
def test_unique_matches_torch() -> None:
    x = mt.tensor([[3, 1, 3], [2, 1, 7]])
    np.testing.assert_array_equal(x.unique().numpy(), _t(x).unique().numpy())
    values, inverse, counts = mt.unique(x, return_inverse=True, return_counts=True)
    theirs = torch.unique(_t(x), return_inverse=True, return_counts=True)
    for ours, expected in zip((values, inverse, counts), theirs, strict=True):
        np.testing.assert_array_equal(ours.numpy(), expected.numpy())


# ----- sampling ----------------------------------------------------------------------------
def test_randint_as_torch_and_seeded() -> None:
    mt.manual_seed(0)
    a = mt.randint(0, 10, (2, 3))
    b = mt.randint(5, (4,))
    mt.manual_seed(0)
    assert a.tolist() == mt.randint(0, 10, (2, 3)).tolist()
    assert a.dtype == b.dtype == np.int64 and a.shape == (2, 3) and b.shape == (4,)
    assert 0 <= a.numpy().min() and a.numpy().max() < 10 and b.numpy().max() < 5
    assert mt.randint(0, 3, size=(2,), dtype=mt.int32).dtype == np.int32
    with pytest.raises(TypeError, match="randint"):
        mt.randint(3)


def test_multinomial_shapes_distribution_and_seed() -> None:
    assert mt.multinomial(mt.tensor([[0.0, 1.0, 0.0]]), 1).tolist() == [[1]]
    probs = mt.tensor([[0.1, 0.9, 0.0], [0.2, 0.3, 0.5]])
    mt.manual_seed(1)
    draws = mt.multinomial(probs, num_samples=2)
    assert draws.dtype == np.int64 and draws.shape == (2, 2)
    assert all(len(set(row)) == 2 for row in draws.tolist())  # no replacement
    assert mt.multinomial(mt.tensor([0.5, 0.5]), 3, replacement=True).shape == (3,)
    mt.manual_seed(1)
    assert mt.multinomial(probs, 2).tolist() == draws.tolist()
    # unnormalised weights, with replacement: frequencies follow the weights
    counts = np.bincount(mt.multinomial(mt.tensor([1.0, 3.0]), 4000, True).numpy(), minlength=2)
    assert abs(counts[1] / 4000 - 0.75) < 0.03
    with pytest.raises(RuntimeError, match="replacement"):
        mt.multinomial(probs, 3)
    with pytest.raises(RuntimeError, match="non-negative"):
        mt.multinomial(mt.tensor([-1.0, 2.0]), 1)


def test_dropout_without_a_generator_draws_from_the_seeded_default() -> None:
    x = mt.ones(50, 40)
    mt.manual_seed(3)
    a = mt.nn.functional.dropout(x, 0.5)
    layer = nn.Dropout(0.5)
    b = layer(x)
    mt.manual_seed(3)
    np.testing.assert_array_equal(mt.nn.functional.dropout(x, 0.5).numpy(), a.numpy())
    np.testing.assert_array_equal(nn.Dropout(0.5)(x).numpy(), b.numpy())
    assert 0.4 < (a.numpy() == 0).mean() < 0.6


# ----- nn.init -------------------------------------------------------------------------------
@requires_torch
def test_init_functions_follow_torchs_formulas() -> None:
    mt.manual_seed(0)
    w = nn.Parameter(mt.zeros(300, 200))
    assert nn.init.normal_(w, mean=1.0, std=0.02) is w
    assert abs(w.data.mean() - 1.0) < 1e-3 and abs(w.data.std() - 0.02) < 1e-3
    nn.init.uniform_(w, -2.0, 3.0)
    assert w.data.min() >= -2.0 and w.data.max() <= 3.0 and abs(w.data.mean() - 0.5) < 0.05
    nn.init.constant_(w, 0.25)
    assert (w.data == 0.25).all()
    assert (nn.init.zeros_(w).data == 0).all() and (nn.init.ones_(w).data == 1).all()
    # the uniform inits reach their bound: compare it with torch's (fan_in 200, fan_out 300)
    t = torch.empty(300, 200)
    for ours, theirs in ((nn.init.xavier_uniform_(w, gain=2.0),
                          torch.nn.init.xavier_uniform_(t, gain=2.0)),
                         (nn.init.kaiming_uniform_(w), torch.nn.init.kaiming_uniform_(t)),
                         (nn.init.kaiming_uniform_(w, a=math.sqrt(5)),
                          torch.nn.init.kaiming_uniform_(t, a=math.sqrt(5)))):
        assert abs(np.abs(ours.data).max() - theirs.abs().max().item()) < 2e-3
        assert abs(ours.data.std() - theirs.std().item()) < 2e-3
    for ours, theirs in ((nn.init.xavier_normal_(w), torch.nn.init.xavier_normal_(t)),
                         (nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"),
                          torch.nn.init.kaiming_normal_(t, mode="fan_out",
                                                        nonlinearity="relu"))):
        assert abs(ours.data.std() - theirs.std().item()) < 2e-3
    for name, param in (("tanh", None), ("relu", None), ("leaky_relu", 0.2), ("linear", None)):
        assert nn.init.calculate_gain(name, param) == pytest.approx(
            torch.nn.init.calculate_gain(name, param))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(mt.zeros(3))


def test_init_is_seeded_and_invalidates_old_graphs() -> None:
    w = nn.Parameter(mt.zeros(4, 3))
    mt.manual_seed(5)
    first = nn.init.normal_(w).detach().numpy().copy()
    mt.manual_seed(5)
    np.testing.assert_array_equal(nn.init.normal_(w).detach().numpy(), first)
    loss = (w * w).sum()
    nn.init.zeros_(w)  # an in-place change: the recorded graph read the old values
    with pytest.raises(mt.GraphError):
        loss.backward()


# ----- modules -------------------------------------------------------------------------------
@requires_torch
def test_module_dict_layer_norm_without_bias_and_buffers_as_torch() -> None:
    def build(lib):  # the same model in either library
        class Net(lib.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.parts = lib.nn.ModuleDict(dict(
                    ln=lib.nn.LayerNorm(4, bias=False),
                    h=lib.nn.ModuleList([lib.nn.Linear(4, 4) for _ in range(2)]),
                ))
                self.register_buffer("mask", lib.tril(lib.ones(3, 3)).view(1, 3, 3))
                self.register_buffer("scratch", lib.zeros(2), persistent=False)

        return Net()

    ours, theirs = build(mt), build(torch)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert ours.parts["ln"] is ours.parts.ln and ours.parts.ln.bias is None
    assert list(ours.parts) == list(ours.parts.keys()) == ["ln", "h"] and len(ours.parts) == 2
    assert "h" in ours.parts and isinstance(ours.parts.pop("h"), nn.ModuleList)
    assert [n for n, _ in ours.named_parameters()] == ["parts.ln.weight"]
    x = np.random.default_rng(4).standard_normal((2, 4))
    ln = nn.LayerNorm(4, bias=False).double()
    expected = torch.nn.LayerNorm(4, bias=False, dtype=torch.float64)(torch.from_numpy(x))
    np.testing.assert_allclose(ln(mt.tensor(x)).detach().numpy(), expected.detach().numpy(),
                               atol=1e-12)


@requires_torch
def test_clip_grad_norm_at_torchs_path_returns_the_norm_as_a_tensor() -> None:
    grads = [np.random.default_rng(5).standard_normal(s) for s in ((3, 4), (4,))]
    ours = [nn.Parameter(mt.zeros(*g.shape, dtype=mt.float64)) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for o, t, g in zip(ours, theirs, grads, strict=True):
        o.grad, t.grad = mt.tensor(g), torch.from_numpy(g.copy())
    total = mt.nn.utils.clip_grad_norm_(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert isinstance(total, mt.Tensor) and total.ndim == 0 and total.dtype == np.float64
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)
    for o, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(o.grad.numpy(), t.grad.numpy(), rtol=1e-12)
    ours[0].grad = mt.tensor(np.full((3, 4), np.inf))
    with pytest.raises(RuntimeError, match="non-finite"):
        mt.nn.utils.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    assert np.isinf(ours[0].grad.numpy()).all()  # nothing was scaled


def test_adamw_accepts_fused_as_pytorch_code_asks() -> None:
    assert "fused" in inspect.signature(mt.optim.AdamW).parameters
    p = nn.Parameter(mt.ones(2))
    p.grad = mt.ones(2)
    mt.optim.AdamW([p], lr=0.1, fused=True).step()
    assert p.data.max() < 1.0


# ----- a torch tensor by mistake ---------------------------------------------------------------
@requires_torch
def test_a_torch_tensor_where_ours_is_expected_says_how_to_convert() -> None:
    x, t = mt.ones(2, 3), torch.ones(2, 3)
    message = r"got a torch.Tensor; convert it with mt.tensor\(t.detach\(\).numpy\(\)\)"
    for call in (lambda: x + t, lambda: t * x, lambda: mt.exp(t), lambda: nn.Linear(3, 2)(t),
                 lambda: mt.cat([x, t]), lambda: nn.Embedding(4, 2)(torch.tensor([1])),
                 lambda: mt.nn.functional.cross_entropy(x, torch.tensor([0, 1]))):
        with pytest.raises(TypeError, match=message):
            call()
    assert mt.tensor(t).shape == (2, 3)  # converting on purpose works


# ----- on each device --------------------------------------------------------------------------
def test_the_new_functions_run_on_each_device(device: str) -> None:
    host = np.random.default_rng(6).permutation(12).reshape(3, 4).astype(np.float64)
    x = mt.tensor(host, device=device)
    assert mt.tril(x).device == device
    np.testing.assert_array_equal(mt.tril(x, 1).numpy(), np.tril(host, 1))
    values, indices = mt.topk(x, 2)
    assert values.device == indices.device == device
    np.testing.assert_array_equal(values.numpy(), -np.sort(-host, axis=-1)[:, :2])
    np.testing.assert_array_equal(x.sort(dim=0).values.numpy(), np.sort(host, axis=0))
    np.testing.assert_array_equal(mt.tensor([2, 1, 2], device=device).unique().numpy(), [1, 2])
    draws = mt.multinomial(mt.tensor([[0.0, 1.0]], device=device), 1)
    assert draws.device == device and draws.tolist() == [[1]]
    assert mt.randint(0, 5, (2,), device=device).device == device
    assert mt.linspace(0, 1, 3, device=device).device == device
    assert mt.full_like(x, 2.0).device == mt.empty(2, device=device).device == device
    w = mt.nn.Parameter(mt.zeros(3, 4, device=device))
    assert mt.nn.init.kaiming_uniform_(w).device == device and w.data.std() > 0


# ----- chunk and unbind: tuples of views over split / indexing -----------------------------------
@requires_torch
@pytest.mark.parametrize(("shape", "chunks", "dim"),
                         [((5,), 3, 0), ((6,), 4, 0), ((2, 7), 3, 1), ((2, 7), 10, -1),
                          ((0, 2), 3, 0), ((4, 3), 1, 0)])
def test_chunk_matches_torch_pieces_and_gradients(shape: tuple, chunks: int, dim: int) -> None:
    host = np.random.default_rng(7).standard_normal(shape)
    x = mt.tensor(host, requires_grad=True)
    t = torch.tensor(host, requires_grad=True)
    ours, theirs = x.chunk(chunks, dim), torch.chunk(t, chunks, dim)
    assert type(ours) is tuple and len(ours) == len(theirs)  # 6 in 4 chunks: 3 pieces
    for o, th in zip(ours, theirs, strict=True):
        assert o.shape == tuple(th.shape) and o.dtype == np.float64
        np.testing.assert_array_equal(o.detach().numpy(), th.detach().numpy())
    assert [p.shape for p in mt.chunk(x, chunks, dim=dim)] == [p.shape for p in ours]
    if host.size:
        weights = [float(i + 1) for i in range(len(ours))]
        sum(w * p.sum() for w, p in zip(weights, ours, strict=True)).backward()
        sum(w * p.sum() for w, p in zip(weights, theirs, strict=True)).backward()
        np.testing.assert_array_equal(x.grad.numpy(), t.grad.numpy())


def test_chunk_and_unbind_pieces_are_views_of_the_input() -> None:
    x = mt.arange(12.0).reshape(3, 4)
    for piece in (*x.chunk(3, dim=1), *x.unbind(0), *mt.unbind(x, dim=1)):
        assert np.shares_memory(piece.data, x.data)


def test_chunk_refuses_what_torch_refuses() -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        mt.ones(4).chunk(0)
    with pytest.raises(ValueError, match="at least a 1-dimensional"):
        mt.tensor(1.0).chunk(1)


@requires_torch
@pytest.mark.parametrize(("shape", "dim"), [((3,), 0), ((2, 3), 1), ((2, 3, 4), -1), ((0, 3), 0)])
def test_unbind_matches_torch_slices_and_gradients(shape: tuple, dim: int) -> None:
    host = np.random.default_rng(8).standard_normal(shape)
    x = mt.tensor(host, requires_grad=True)
    t = torch.tensor(host, requires_grad=True)
    ours, theirs = x.unbind(dim), torch.unbind(t, dim)
    assert type(ours) is tuple and len(ours) == len(theirs)
    for o, th in zip(ours, theirs, strict=True):
        assert o.shape == tuple(th.shape)
        np.testing.assert_array_equal(o.detach().numpy(), th.detach().numpy())
    assert len(mt.unbind(x, dim=dim)) == len(ours)
    if ours:
        sum((i + 1) * p.sum() for i, p in enumerate(ours)).backward()
        sum((i + 1) * p.sum() for i, p in enumerate(theirs)).backward()
        np.testing.assert_array_equal(x.grad.numpy(), t.grad.numpy())
    with pytest.raises(IndexError, match="no dimensions"):
        mt.tensor(1.0).unbind()


# ----- SiLU ------------------------------------------------------------------------------------
@requires_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_silu_matches_torch_values_dtypes_and_gradients(dtype: str) -> None:
    host = np.linspace(-30.0, 30.0, 41).reshape(1, 41)  # far out: no overflow in the sigmoid
    x = mt.tensor(host, dtype=getattr(mt, dtype), requires_grad=True)
    t = torch.tensor(host, dtype=getattr(torch, dtype), requires_grad=True)
    ours, theirs = mt.nn.functional.silu(x), torch.nn.functional.silu(t)
    assert isinstance(ours, mt.Tensor) and ours.dtype == _dtype_of(theirs.detach())
    tol = 1e-6 if dtype == "float32" else 1e-14
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=tol, atol=tol)
    ours.sum().backward()
    theirs.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=tol, atol=tol)
    layer = nn.SiLU()
    assert isinstance(layer, nn.Module) and repr(layer) == repr(torch.nn.SiLU())
    np.testing.assert_array_equal(layer(x).detach().numpy(), ours.detach().numpy())


def test_silu_gradcheck_and_gradgradcheck_in_float64() -> None:
    x = mt.tensor(np.random.default_rng(9).standard_normal((2, 3)), requires_grad=True)
    assert mt.gradcheck(mt.nn.functional.silu, [x])
    assert mt.gradgradcheck(mt.nn.functional.silu, [x])


def test_silu_refuses_integers_and_inplace_as_torch_does() -> None:
    with pytest.raises(TypeError, match="silu"):
        mt.nn.functional.silu(mt.tensor([1, 2]))
    with pytest.raises(NotImplementedError, match="inplace"):
        nn.SiLU(inplace=True)


# ----- Identity, Flatten and flatten -------------------------------------------------------------
@requires_torch
def test_identity_accepts_any_arguments_and_returns_its_input() -> None:
    x = mt.randn(2, 3, requires_grad=True)
    for layer, twin in ((nn.Identity(), torch.nn.Identity()),
                        (nn.Identity(54, unused="x"), torch.nn.Identity(54, unused="x"))):
        assert layer(x) is x and repr(layer) == repr(twin)
        assert not list(layer.parameters()) and layer.state_dict() == {}


@requires_torch
@pytest.mark.parametrize(("args", "shape"), [((), (2, 3, 4, 5)), ((0, 1), (2, 3, 4)),
                                             ((1, 2), (2, 3, 4, 5)), ((-2,), (2, 3, 4))])
def test_flatten_module_and_method_match_torch(args: tuple, shape: tuple) -> None:
    host = np.random.default_rng(10).standard_normal(shape)
    x, t = mt.tensor(host, requires_grad=True), torch.tensor(host, requires_grad=True)
    layer, twin = nn.Flatten(*args), torch.nn.Flatten(*args)
    assert repr(layer) == repr(twin)
    ours, theirs = layer(x), twin(t)
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours.detach().numpy(), theirs.detach().numpy())
    (ours * ours).sum().backward()
    (theirs * theirs).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), t.grad.numpy())
    # the method and function: torch's argument names and default (start_dim=0)
    assert x.flatten().shape == tuple(t.flatten().shape)
    last = len(shape) - 1
    assert x.flatten(start_dim=last).shape == tuple(t.flatten(start_dim=last).shape)
    assert mt.flatten(x, end_dim=0).shape == tuple(torch.flatten(t, end_dim=0).shape)
    assert mt.tensor(1.0).flatten().shape == tuple(torch.tensor(1.0).flatten().shape) == (1,)


def test_flatten_refuses_what_torch_refuses() -> None:
    with pytest.raises(IndexError, match="out of range"):
        nn.Flatten()(mt.ones(2))  # start_dim=1 of a 1-D input
    with pytest.raises(ValueError, match="start_dim cannot come after end_dim"):
        mt.ones(2, 3, 4).flatten(2, 1)


# ----- linspace, empty, full_like -----------------------------------------------------------------
@requires_torch
@pytest.mark.parametrize(("args", "dtype"), [((0, 1, 7), None), ((0, 1, 7), "float64"),
                                             ((-10, 3, 5), "int64"), ((2, 5, 4), None),
                                             ((0, 1, 1), None), ((0, 1, 0), None),
                                             ((3.5, -1.25, 6), "float64"), ((-3, 4, 50), "int32")])
def test_linspace_matches_torch(args: tuple, dtype: str | None) -> None:
    kwargs = {} if dtype is None else {"dtype": getattr(mt, dtype)}
    ours = mt.linspace(*args, **kwargs)
    theirs = torch.linspace(*args, **({} if dtype is None else {"dtype": getattr(torch, dtype)}))
    assert ours.dtype == _dtype_of(theirs) and ours.shape == tuple(theirs.shape)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-6)
    if ours.numel():
        assert ours.numpy()[0] == theirs.numpy()[0] and ours.numpy()[-1] == theirs.numpy()[-1]
    assert "steps" in inspect.signature(mt.linspace).parameters
    assert mt.linspace(0, 1, 3, requires_grad=True).requires_grad
    with pytest.raises(ValueError, match="non-negative"):
        mt.linspace(0, 1, -1)


@requires_torch
def test_empty_and_full_like_match_torch_shapes_and_dtypes() -> None:
    for args, kwargs in (((2, 3), {}), (((4,),), {"dtype": "float64"}), ((0,), {"dtype": "int64"})):
        ours = mt.empty(*args, **{k: getattr(mt, v) for k, v in kwargs.items()})
        theirs = torch.empty(*args, **{k: getattr(torch, v) for k, v in kwargs.items()})
        assert ours.shape == tuple(theirs.shape) and ours.dtype == _dtype_of(theirs)
        assert not ours.numpy().any()  # zeros here; torch leaves them uninitialised
    assert mt.empty(2, requires_grad=True).requires_grad
    for base, fill, dtype in ((np.ones((2, 3)), 2.5, None), (np.ones(2, dtype=np.int64), 2.7, None),
                              (np.ones((2, 2), dtype=np.float32), True, None),
                              (np.ones(3), 7, "int64")):
        kw_ours = {} if dtype is None else {"dtype": getattr(mt, dtype)}
        kw_theirs = {} if dtype is None else {"dtype": getattr(torch, dtype)}
        ours = mt.full_like(mt.tensor(base), fill, **kw_ours)
        theirs = torch.full_like(torch.from_numpy(base), fill, **kw_theirs)
        assert ours.dtype == _dtype_of(theirs)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    x = mt.full_like(mt.ones(2, dtype=mt.float64), 3.0, requires_grad=True)
    assert x.requires_grad and x.is_leaf


# ----- one_hot ---------------------------------------------------------------------------------
@requires_torch
@pytest.mark.parametrize(("indices", "num_classes"), [([0, 2, 1], -1), ([0, 2, 1], 5),
                                                      ([[1, 0], [3, 3]], -1), (2, 4), ([], 3)])
def test_one_hot_matches_torch(indices: object, num_classes: int) -> None:
    ours = mt.nn.functional.one_hot(mt.tensor(indices, dtype=mt.long), num_classes)
    theirs = torch.nn.functional.one_hot(torch.tensor(indices, dtype=torch.long), num_classes)
    assert ours.dtype == np.int64 == _dtype_of(theirs) and ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert not ours.requires_grad


@requires_torch
@pytest.mark.parametrize(("indices", "num_classes", "dtype"),
                         [([0, -1], -1, "long"), ([0, 3], 3, "long"), ([], -1, "long"),
                          ([1], 0, "long"), ([1], -2, "long"), ([1], -1, "int"),
                          ([1.0], -1, "float")])
def test_one_hot_refuses_as_torch_does(indices: list, num_classes: int, dtype: str) -> None:
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.functional.one_hot(torch.tensor(indices, dtype=getattr(torch, dtype)),
                                    num_classes)
    with pytest.raises(RuntimeError, match=str(theirs.value).split(".")[0]):
        mt.nn.functional.one_hot(mt.tensor(indices, dtype=getattr(mt, dtype)), num_classes)


# ----- cumsum ----------------------------------------------------------------------------------
@requires_torch
@pytest.mark.parametrize(("shape", "dim"), [((5,), 0), ((3, 4), 1), ((2, 3, 4), -2), ((), 0),
                                            ((0, 3), 0)])
def test_cumsum_matches_torch_values_and_gradients(shape: tuple, dim: int) -> None:
    rng = np.random.default_rng(11)
    host, upstream = rng.standard_normal(shape), rng.standard_normal(shape)
    x, t = mt.tensor(host, requires_grad=True), torch.tensor(host, requires_grad=True)
    ours, theirs = x.cumsum(dim), torch.cumsum(t, dim)
    assert ours.shape == tuple(theirs.shape) and ours.dtype == np.float64
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-12)
    np.testing.assert_array_equal(mt.cumsum(x, dim=dim).detach().numpy(), ours.detach().numpy())
    (ours * mt.tensor(upstream)).sum().backward()
    (theirs * torch.from_numpy(upstream)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-12)


@requires_torch
def test_cumsum_dtypes_as_torch() -> None:
    for values, dtype, kwargs in (([True, False, True], "bool", {}), ([1, 2, 3], "int32", {}),
                                  ([1, 2, 3], "int64", {}), ([1.5, 2.0], "float32", {}),
                                  ([1, 2, 3], "int64", {"dtype": "float64"})):
        ours = mt.tensor(values, dtype=getattr(mt, dtype)).cumsum(
            0, **{k: getattr(mt, v) for k, v in kwargs.items()})
        theirs = torch.tensor(values, dtype=getattr(torch, dtype)).cumsum(
            0, **{k: getattr(torch, v) for k, v in kwargs.items()})
        assert ours.dtype == _dtype_of(theirs), (dtype, kwargs)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_cumsum_gradcheck_and_gradgradcheck_in_float64() -> None:
    x = mt.tensor(np.random.default_rng(12).standard_normal((3, 4)), requires_grad=True)
    for dim in (0, 1, -1):
        assert mt.gradcheck(lambda a, d=dim: (a.cumsum(d) ** 2).sum(d), [x])
        assert mt.gradgradcheck(lambda a, d=dim: (a.cumsum(d) ** 2).sum(d), [x])
