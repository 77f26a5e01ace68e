"""PyTorch's nn.TransformerEncoder language-model tutorial, on minitransformer.

``tests/data/tutorial_lm/model.py`` writes the tutorial's model and training loop in the
tutorial's API (sequence-first tensors, ``PositionalEncoding`` with a ``pe`` buffer,
``TransformerEncoderLayer(d_model, nhead, d_hid, dropout)``, ``.data.uniform_`` init,
``nn.Transformer.generate_square_subsequent_mask``, ``clip_grad_norm_``, SGD + StepLR). It is
loaded with PyTorch as is and, with the lines in ``CHANGES`` replaced, with minitransformer;
the weights are copied from torch to ours, and in float64 (dropout 0) the outputs, the loss,
every gradient and two epochs of the tutorial's loop must agree. docs/pytorch.md ("Other
PyTorch GPTs") says why each changed line differs.

The file's ``pe[:, 0, 0::2] = ...`` lines also run as written (``Tensor.__setitem__``):
``test_positional_encoding_runs_as_written``.
"""

from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np
import pytest

import minitransformer as mt
from tests.conftest import requires_torch, torch
from tests.test_nn_torch import ours_from_torch_names

pytestmark = [requires_torch,  # torch warns that a sequence-first encoder cannot be nested
              pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")]

MODEL_PY = Path(__file__).parent / "data" / "tutorial_lm" / "model.py"
NTOKENS, D_MODEL, NHEAD, D_HID, NLAYERS = 17, 8, 2, 12, 2

PE_FILL = ("        pe[:, 0, 0::2] = torch.sin(position * div_term)\n"
           "        pe[:, 0, 1::2] = torch.cos(position * div_term)\n")
CHANGES = {
    # Tensor.__setitem__ comes with [inplace]; until then the same table in one expression
    # ``.data`` is the NumPy array here, which has no uniform_/zero_
    "self.embedding.weight.data.uniform_(-initrange, initrange)":
        "nn.init.uniform_(self.embedding.weight, -initrange, initrange)",
    "self.linear.bias.data.zero_()": "nn.init.zeros_(self.linear.bias)",
    "self.linear.weight.data.uniform_(-initrange, initrange)":
        "nn.init.uniform_(self.linear.weight, -initrange, initrange)",
}


def ours_source(changes: dict[str, str]) -> str:
    source = MODEL_PY.read_text()
    source = re.sub(r"^(import|from) torch\b", r"\1 minitransformer", source, flags=re.M)
    source = source.replace("import minitransformer\n", "import minitransformer as torch\n")
    for old, new in changes.items():
        assert source.count(old) == 1, f"model.py no longer has {old!r}"
        source = source.replace(old, new)
    return source


def load(source: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = str(MODEL_PY)
    exec(compile(source, str(MODEL_PY), "exec"), module.__dict__)
    return module


@pytest.fixture(scope="module")
def tutorial() -> tuple[types.ModuleType, types.ModuleType]:
    return (load(MODEL_PY.read_text(), "tutorial_on_torch"),
            load(ours_source(CHANGES), "tutorial_on_minitransformer"))


def build_pair(tutorial):
    torch_py, our_py = tutorial
    torch.manual_seed(0)
    theirs = torch_py.TransformerModel(NTOKENS, D_MODEL, NHEAD, D_HID, NLAYERS, 0.0).double()
    mt.manual_seed(0)
    ours = our_py.TransformerModel(NTOKENS, D_MODEL, NHEAD, D_HID, NLAYERS, 0.0).double()
    ours.load_state_dict(ours_from_torch_names(theirs.state_dict()))
    return theirs, ours


def stream(seed: int, n: int = 61) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, NTOKENS, n)


def test_positional_encoding_table_matches_torch(tutorial) -> None:
    torch_py, our_py = tutorial
    theirs, ours = torch_py.PositionalEncoding(D_MODEL, 0.0), our_py.PositionalEncoding(D_MODEL,
                                                                                     0.0)
    assert ours.pe.shape == (5000, 1, D_MODEL) and list(ours.state_dict()) == ["pe"]
    # both compute the angles in float32 (int64 * float -> float32, as PyTorch promotes); the
    # float32 sin/cos of large angles differ in the last bits between the two libraries. The
    # models compared below take the buffer from torch's state_dict, so they share its table.
    np.testing.assert_allclose(ours.pe.numpy(), theirs.pe.numpy(), atol=5e-5)


def test_positional_encoding_is_float32(tutorial) -> None:
    assert tutorial[1].PositionalEncoding(D_MODEL, 0.0).pe.dtype == mt.float32


def test_init_weights_draws_the_tutorials_ranges(tutorial) -> None:
    _, our_py = tutorial
    mt.manual_seed(0)
    model = our_py.TransformerModel(NTOKENS, D_MODEL, NHEAD, D_HID, NLAYERS, 0.0)
    w = model.embedding.weight.detach().numpy()
    assert np.abs(w).max() <= 0.1 and np.abs(w).max() > 0.09 and w.std() > 0.04
    assert not model.linear.bias.detach().numpy().any()


@pytest.mark.parametrize("mask", ["default", "triu_full"])
def test_output_loss_and_every_gradient_match_torch(tutorial, mask) -> None:
    theirs, ours = build_pair(tutorial)
    data = stream(1)[:30].reshape(6, 5)  # [seq_len, batch_size], sequence first
    target = stream(2)[:30]
    masks = [None, None]
    if mask == "triu_full":  # the older tutorial's torch.triu(torch.full(..., -inf), 1)
        masks = [m.generate_square_subsequent_mask(6).double() for m in tutorial]
    criterion = torch.nn.CrossEntropyLoss(), mt.nn.CrossEntropyLoss()
    t_out = theirs(torch.from_numpy(data), masks[0])
    m_out = ours(mt.tensor(data), masks[1])
    assert m_out.shape == (6, 5, NTOKENS)
    np.testing.assert_allclose(m_out.detach().numpy(), t_out.detach().numpy(), atol=1e-10)
    t_loss = criterion[0](t_out.view(-1, NTOKENS), torch.from_numpy(target))
    m_loss = criterion[1](m_out.view(-1, NTOKENS), mt.tensor(target))
    assert abs(m_loss.item() - t_loss.item()) < 1e-10
    t_loss.backward()
    m_loss.backward()
    expected = ours_from_torch_names({n: p.grad for n, p in theirs.named_parameters()})
    got = dict(ours.named_parameters())
    assert set(got) == set(expected)
    for name, grad in expected.items():
        np.testing.assert_allclose(got[name].grad.numpy(), grad, atol=1e-10, err_msg=name)


def test_two_epochs_of_the_tutorial_loop_match_torch(tutorial) -> None:
    theirs, ours = build_pair(tutorial)
    losses, lrs = [], []
    for module, lib, model, wrap in zip(tutorial, (torch, mt), (theirs, ours),
                                        (torch.from_numpy, mt.tensor), strict=True):
        train_data = module.batchify(wrap(stream(3)), 4)  # (15, 4)
        assert tuple(train_data.shape) == (15, 4)
        optimizer = lib.optim.SGD(model.parameters(), lr=5.0)
        scheduler = lib.optim.lr_scheduler.StepLR(optimizer, 1.0, gamma=0.95)
        run = []
        for _ in range(2):
            run += module.train_epoch(model, train_data, 5, NTOKENS, lib.nn.CrossEntropyLoss(),
                                      optimizer, scheduler)
        losses.append(run)
        lrs.append(scheduler.get_last_lr())
    assert len(losses[1]) == 6  # bptt 5 over 15 rows: batches of 5, 5, 4
    np.testing.assert_allclose(losses[1], losses[0], atol=1e-9)
    np.testing.assert_allclose(lrs[1], lrs[0], rtol=1e-15)
    assert lrs[1] == pytest.approx([5.0 * 0.95 ** 2])
    expected = ours_from_torch_names(dict(theirs.named_parameters()))
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.detach().numpy(), expected[name], atol=1e-9, err_msg=name)


def test_positional_encoding_runs_as_written(tutorial) -> None:
    theirs, ours = (module.PositionalEncoding(D_MODEL, 0.0).pe for module in tutorial)
    assert PE_FILL in ours_source(CHANGES)  # the tutorial's lines, unchanged for ours
    # both float32 now; sin/cos of float32 angles up to 5,000 differ by a few 1e-6 between
    # NumPy's and torch's implementations
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=2e-5)


def test_step_lr_matches_torch_every_step() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))], [mt.nn.Parameter(mt.zeros(1))]
    optimizers = torch.optim.SGD(params[0], lr=0.5), mt.optim.SGD(params[1], lr=0.5)
    schedulers = (torch.optim.lr_scheduler.StepLR(optimizers[0], 3, gamma=0.5),
                  mt.optim.lr_scheduler.StepLR(optimizers[1], 3, gamma=0.5))
    for _ in range(8):
        for optimizer, scheduler in zip(optimizers, schedulers, strict=True):
            optimizer.step()
            scheduler.step()
        assert schedulers[1].get_last_lr() == pytest.approx(schedulers[0].get_last_lr(),
                                                            rel=1e-15)
        assert optimizers[1].param_groups[0]["lr"] == schedulers[1].get_last_lr()[0]
    assert schedulers[1].get_last_lr() == [0.5 * 0.5 ** 2]


def test_t_transposes_two_dimensions_and_names_the_fix_beyond() -> None:
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(mt.tensor(x).t().numpy(), torch.from_numpy(x).t().numpy())
    assert mt.tensor([1.0, 2.0]).t().shape == (2,)
    with pytest.raises(mt.errors.ShapeError, match=r"<= 2 dimensions.*transpose\(dim0, dim1\)"):
        mt.zeros(2, 3, 4).t()


def test_encoder_layer_takes_pytorchs_arguments_in_pytorchs_order() -> None:
    """So that a positional call (the tutorial's ``(d_model, nhead, d_hid, dropout)``, or
    more) means the same here, defaults included: batch_first=False, sequence first, as in
    PyTorch (docs/pytorch.md), so the tutorial's line runs as written."""
    import inspect

    ours = list(inspect.signature(mt.nn.TransformerEncoderLayer).parameters)
    theirs = list(inspect.signature(torch.nn.TransformerEncoderLayer).parameters)
    assert ours[:8] == theirs[:8] == ["d_model", "nhead", "dim_feedforward", "dropout",
                                      "activation", "layer_norm_eps", "batch_first",
                                      "norm_first"]
    for layer in ("TransformerEncoderLayer", "TransformerDecoderLayer", "Transformer"):
        ours = list(inspect.signature(getattr(mt.nn, layer)).parameters)
        theirs = list(inspect.signature(getattr(torch.nn, layer)).parameters)
        position = theirs.index("batch_first")
        assert ours[:position + 2] == theirs[:position + 2], layer  # ..., batch_first, norm_first
        assert inspect.signature(getattr(mt.nn, layer)).parameters["batch_first"].default is False
    assert "batch_first" not in repr(mt.nn.TransformerEncoderLayer(4, 2, 8, 0.0))
    assert "batch_first=True" in repr(mt.nn.TransformerEncoderLayer(4, 2, 8, 0.0,
                                                                     batch_first=True))
