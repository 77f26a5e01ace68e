"""RNN, LSTM and Conv1d: gradchecks in float64, and PyTorch with the same weights.

PyTorch comparisons copy torch's state dict into ours (the names must match one to one),
then compare outputs, final states, the input's gradient and every parameter's gradient.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.errors import ShapeError
from minitransformer.nn.conv import Conv1d, fold1d, unfold1d
from minitransformer.nn.rnn import LSTM, RNN
from tests.conftest import randn, requires_torch, torch

ATOL = 1e-10


def gradcheck_module(module, x, **kwargs) -> None:
    """Gradcheck every output of ``module(x, **kwargs)`` against x and every parameter."""
    module.to(mt.float64)
    params = list(module.parameters())

    def fn(*args):
        out = module(args[0], **kwargs)
        if isinstance(out, tuple):  # (output, h_n) or (output, (h_n, c_n))
            first, state = out
            return (first, *(state if isinstance(state, tuple) else (state,)))
        return out

    assert mt.gradcheck(fn, [x, *params])


# ----- gradchecks ------------------------------------------------------------------------------
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_gradcheck_rnn(rng, bidirectional, nonlinearity):
    rnn = RNN(3, 2, num_layers=2, nonlinearity=nonlinearity, bidirectional=bidirectional,
              batch_first=True)
    gradcheck_module(rnn, randn(rng, 2, 4, 3))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradcheck_lstm(rng, bidirectional):
    lstm = LSTM(3, 2, num_layers=2, bidirectional=bidirectional, batch_first=True)
    gradcheck_module(lstm, randn(rng, 2, 4, 3))


def test_gradcheck_lstm_with_lengths_and_initial_state(rng):
    lstm = LSTM(2, 2, bidirectional=True, batch_first=True).to(mt.float64)
    x, h0, c0 = randn(rng, 2, 4, 2), randn(rng, 2, 2, 2), randn(rng, 2, 2, 2)
    params = list(lstm.parameters())

    def fn(x, h0, c0, *_):
        output, (h_n, c_n) = lstm(x, (h0, c0), lengths=[4, 2])
        return output, h_n, c_n

    assert mt.gradcheck(fn, [x, h0, c0, *params])


@pytest.mark.parametrize("padding, kernel_size, dilation",
                         [("same", 3, 1), ("same", 4, 1), ("same", 2, 2), (1, 3, 2),
                          ("valid", 3, 1)])
def test_gradcheck_conv1d(rng, padding, kernel_size, dilation):
    conv = Conv1d(2, 3, kernel_size, padding=padding, dilation=dilation)
    gradcheck_module(conv, randn(rng, 2, 2, 6))


def test_gradgradcheck_conv1d(rng):
    conv = Conv1d(2, 2, 3, padding="same", dilation=2).to(mt.float64)
    assert mt.gradgradcheck(lambda x, w, b: conv(x), [randn(rng, 1, 2, 5), conv.weight,
                                                     conv.bias])


def test_fold_is_the_adjoint_of_unfold(rng):
    """<unfold(x), c> = <x, fold(c)> for every x and c: the definition of the adjoint."""
    x = rng.standard_normal((2, 3, 7))
    cols = rng.standard_normal((2, 3, 3, 7))
    unfolded = unfold1d(mt.tensor(x), 3, dilation=2, padding=(2, 2)).numpy()
    folded = fold1d(mt.tensor(cols), 7, 3, dilation=2, padding=(2, 2)).numpy()
    assert unfolded.shape == cols.shape
    np.testing.assert_allclose((unfolded * cols).sum(), (x * folded).sum(), rtol=1e-12)


# ----- behaviour ---------------------------------------------------------------------------------
def test_lstm_padding_does_not_touch_the_state(rng):
    """A padded sentence gives the same outputs and final state as the sentence alone."""
    mt.manual_seed(0)
    lstm = LSTM(3, 4, bidirectional=True, batch_first=True).to(mt.float64)
    sentence = rng.standard_normal((1, 3, 3))
    padded = np.concatenate([sentence, rng.standard_normal((1, 2, 3))], axis=1)  # junk after
    alone, (h_alone, _) = lstm(mt.tensor(sentence))
    output, (h_n, _) = lstm(mt.tensor(padded), lengths=[3])
    output, h_n, alone, h_alone = (t.detach().numpy() for t in (output, h_n, alone, h_alone))
    np.testing.assert_allclose(output[:, :3], alone, atol=1e-14)
    np.testing.assert_array_equal(output[:, 3:], 0.0)
    np.testing.assert_allclose(h_n, h_alone, atol=1e-14)


def test_sequential_steps_and_receptive_field():
    assert LSTM.sequential_steps(100) == 100
    conv = Conv1d(1, 1, 3, padding="same")
    assert conv.receptive_field == 3
    assert conv.layers_to_span(1024) == 512  # each layer adds k - 1 = 2 tokens
    assert Conv1d(1, 1, 3, dilation=4).layers_to_span(17) == 2


def test_parameter_names_and_init_bound():
    mt.manual_seed(0)
    lstm = LSTM(5, 4, num_layers=2, bidirectional=True)
    names = [name for name, _ in lstm.named_parameters()]
    assert names[:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert "weight_ih_l1_reverse" in names and len(names) == 16
    assert lstm.weight_ih_l0.shape == (16, 5) and lstm.weight_ih_l1.shape == (16, 8)
    assert all(np.abs(p.detach().numpy()).max() <= 0.5 for p in lstm.parameters())  # 1/sqrt(4)


def test_bad_shapes_are_named():
    with pytest.raises(ShapeError, match=r"\(B, T, I\).*input_size = 3.*\(2, 4, 5\)"):
        RNN(3, 2, batch_first=True)(mt.zeros(2, 4, 5))
    with pytest.raises(ShapeError, match=r"h0 must have shape.*\(1, 2, 2\).*\(1, 3, 2\)"):
        RNN(3, 2, batch_first=True)(mt.zeros(2, 4, 3), mt.zeros(1, 3, 2))
    with pytest.raises(ShapeError, match=r"lengths must be"):
        LSTM(3, 2, batch_first=True)(mt.zeros(2, 4, 3), lengths=[5, 1])
    with pytest.raises(ShapeError, match=r"\(B, C_in, T\).*C_in = 3.*\(2, 4, 3\)"):
        Conv1d(3, 2, 3)(mt.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="padding"):
        Conv1d(3, 2, 3, padding="full")


# ----- PyTorch ---------------------------------------------------------------------------------
def _copy_from_torch(ours, theirs) -> None:
    ours.to(mt.float64)
    ours.load_state_dict({name: value.detach().numpy()
                          for name, value in theirs.state_dict().items()})  # strict: 1:1 names


def _backward_both(ours_out, theirs_out) -> None:
    upstream = np.random.default_rng(7).standard_normal(ours_out.shape)
    (ours_out * mt.tensor(upstream)).sum().backward()
    (theirs_out * torch.tensor(upstream)).sum().backward()


def _assert_same_gradients(ours, theirs, x, x_torch) -> None:
    np.testing.assert_allclose(x.grad.numpy(), x_torch.grad.numpy(), rtol=0, atol=ATOL)
    for (name, p), (torch_name, q) in zip(ours.named_parameters(), theirs.named_parameters(),
                                          strict=True):
        assert name == torch_name
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=0, atol=ATOL,
                                   err_msg=name)


def _pair(shape, seed=0):
    values = np.random.default_rng(seed).standard_normal(shape)
    return mt.tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)


@requires_torch
@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_recurrent_matches_torch(kind, bidirectional, batch_first):
    kw = {"num_layers": 2, "bidirectional": bidirectional, "batch_first": batch_first}
    if kind == "lstm":
        ours, theirs = LSTM(3, 4, **kw), torch.nn.LSTM(3, 4, **kw)
    else:
        act = kind.split("_")[1]
        ours, theirs = (RNN(3, 4, nonlinearity=act, **kw),
                        torch.nn.RNN(3, 4, nonlinearity=act, **kw))
    theirs.double()
    _copy_from_torch(ours, theirs)
    count = 2 * (2 if bidirectional else 1)
    x, x_torch = _pair((2, 5, 3))
    batch = 2 if batch_first else 5  # x is (B, T, I) or (T, B, I)
    h0, h0_torch = _pair((count, batch, 4), seed=1)
    if kind == "lstm":
        c0, c0_torch = _pair(h0.shape, seed=2)
        output, (h_n, c_n) = ours(x, (h0, c0))
        output_torch, (h_n_torch, c_n_torch) = theirs(x_torch, (h0_torch, c0_torch))
        np.testing.assert_allclose(c_n.detach().numpy(), c_n_torch.detach().numpy(), atol=ATOL)
        final = mt.concat([h_n, c_n], axis=0)
        final_torch = torch.cat([h_n_torch, c_n_torch], dim=0)
    else:
        output, h_n = ours(x, h0)
        output_torch, h_n_torch = theirs(x_torch, h0_torch)
        final, final_torch = h_n, h_n_torch
    np.testing.assert_allclose(output.detach().numpy(), output_torch.detach().numpy(),
                               rtol=0, atol=ATOL)
    np.testing.assert_allclose(h_n.detach().numpy(), h_n_torch.detach().numpy(), atol=ATOL)
    _backward_both(mt.concat([output.flatten(), final.flatten()]),
                   torch.cat([output_torch.flatten(), final_torch.flatten()]))
    _assert_same_gradients(ours, theirs, x, x_torch)
    np.testing.assert_allclose(h0.grad.numpy(), h0_torch.grad.numpy(), rtol=0, atol=ATOL)


@requires_torch
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_lengths_match_torch_packed_sequence(bidirectional):
    ours = LSTM(3, 4, bidirectional=bidirectional, batch_first=True)
    theirs = torch.nn.LSTM(3, 4, bidirectional=bidirectional, batch_first=True).double()
    _copy_from_torch(ours, theirs)
    x, x_torch = _pair((3, 5, 3))
    lengths = [5, 2, 4]
    output, (h_n, c_n) = ours(x, lengths=lengths)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x_torch, torch.tensor(lengths),
                                                     batch_first=True, enforce_sorted=False)
    packed_output, (h_n_torch, c_n_torch) = theirs(packed)
    output_torch, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_output, batch_first=True,
                                                             total_length=5)
    np.testing.assert_allclose(output.detach().numpy(), output_torch.detach().numpy(),
                               rtol=0, atol=ATOL)
    np.testing.assert_allclose(h_n.detach().numpy(), h_n_torch.detach().numpy(), atol=ATOL)
    np.testing.assert_allclose(c_n.detach().numpy(), c_n_torch.detach().numpy(), atol=ATOL)
    _backward_both(output, output_torch)
    _assert_same_gradients(ours, theirs, x, x_torch)


@requires_torch
@pytest.mark.parametrize("padding, kernel_size, dilation, bias",
                         [("same", 3, 1, True), ("same", 4, 1, True), ("same", 2, 3, False),
                          (2, 3, 2, True), ("valid", 5, 1, True)])
def test_conv1d_matches_torch(padding, kernel_size, dilation, bias):
    ours = Conv1d(3, 4, kernel_size, padding=padding, dilation=dilation, bias=bias)
    theirs = torch.nn.Conv1d(3, 4, kernel_size, padding=padding, dilation=dilation,
                             bias=bias).double()
    _copy_from_torch(ours, theirs)
    x, x_torch = _pair((2, 3, 9))
    with warnings.catch_warnings():  # torch warns that an even "same" kernel pads a copy
        warnings.simplefilter("ignore")
        output_torch = theirs(x_torch)
    output = ours(x)
    assert output.shape == tuple(output_torch.shape)
    np.testing.assert_allclose(output.detach().numpy(), output_torch.detach().numpy(),
                               rtol=0, atol=ATOL)
    _backward_both(output, output_torch)
    _assert_same_gradients(ours, theirs, x, x_torch)

