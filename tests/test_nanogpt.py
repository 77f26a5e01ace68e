"""nanoGPT's model.py runs unchanged on minitransformer, with only its import lines changed.

``tests/data/nanogpt/model.py`` is Andrej Karpathy's file as published (MIT licence). It is
loaded twice: as is, with PyTorch, and with its three import lines replaced by

    import minitransformer as torch
    import minitransformer.nn as nn
    from minitransformer.nn import functional as F

Then the torch model's weights are copied into ours and, in float64, the logits, the loss
and every parameter gradient must agree to 1e-10, as must 20 steps of nanoGPT's own
``configure_optimizers`` + ``clip_grad_norm_`` + AdamW, and greedy generation token for
token. Sampling cannot match PyTorch's random numbers; it must be reproducible under
``mt.manual_seed``.

nanoGPT takes one of two attention paths, chosen in ``CausalSelfAttention.__init__`` by
``hasattr(torch.nn.functional, 'scaled_dot_product_attention')``: "flash" (SDPA) and, when
that function is missing, "slow" (``register_buffer("bias", torch.tril(...))``,
``masked_fill``, softmax). Both are tested: the slow one by building the models with
``scaled_dot_product_attention`` hidden from both libraries.
"""

from __future__ import annotations

import hashlib
import types
from pathlib import Path

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.porting import TORCH_IMPORTS, load_module
from tests.conftest import requires_torch, torch

pytestmark = requires_torch

MODEL_PY = Path(__file__).parent / "data" / "nanogpt" / "model.py"
NANOGPT_SHA256 = "7c01703240dbec5d554527dc666e35b3df8391d0b117fddc07afcf325a21d11c"
IMPORTS = TORCH_IMPORTS  # nanoGPT's three import lines, and what they become here


def load_model_py(ours: bool) -> types.ModuleType:
    """nanoGPT's model.py as a module, on PyTorch or (``ours``) on minitransformer."""
    name = "nanogpt_on_" + ("minitransformer" if ours else "torch")
    return load_module(MODEL_PY, name, on_torch=not ours)


@pytest.fixture(scope="module")
def nanogpt() -> tuple[types.ModuleType, types.ModuleType]:
    """(model.py on torch, model.py on minitransformer)."""
    return load_model_py(ours=False), load_model_py(ours=True)


def config(module: types.ModuleType, **changes) -> object:
    settings = dict(block_size=8, vocab_size=13, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
                    bias=True)
    return module.GPTConfig(**{**settings, **changes})


def build_pair(nanogpt, monkeypatch, path: str, **changes):
    """The torch model and ours with the torch weights, both float64, on ``path``."""
    torch_py, our_py = nanogpt
    with monkeypatch.context() as patch:
        if path == "slow":  # nanoGPT falls back to its own attention when SDPA is missing
            patch.delattr(torch.nn.functional, "scaled_dot_product_attention")
            patch.delattr(mt.nn.functional, "scaled_dot_product_attention")
        torch.manual_seed(0)
        theirs = torch_py.GPT(config(torch_py, **changes)).double()
        mt.manual_seed(0)
        ours = our_py.GPT(config(our_py, **changes)).double()
    assert all(block.attn.flash == (path == "flash") for block in ours.transformer.h)
    assert ours.transformer.wte.weight is ours.lm_head.weight  # the tying survived .double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return theirs, ours


def batch(seed: int, b: int = 3, t: int = 8, vocab: int = 13) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, (b, t))
    y = rng.integers(0, vocab, (b, t))
    y[0, :2] = -1  # nanoGPT's ignore_index=-1
    return x, y


def both(x: np.ndarray) -> tuple[torch.Tensor, mt.Tensor]:
    return torch.from_numpy(x), mt.tensor(x)


PATHS = ["slow", "flash"]


# ----- the model ---------------------------------------------------------------------------
def test_model_py_is_nanogpts_file_unedited() -> None:
    source = MODEL_PY.read_text()
    # after the licence header, byte for byte the published file (nanoGPT 3adf61e)
    published = source[source.index('"""\nFull definition of a GPT'):]
    assert hashlib.sha256(published.encode()).hexdigest() == NANOGPT_SHA256
    assert all(source.count(line) == 1 for line in IMPORTS)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bias", [True, False])
def test_logits_loss_and_every_gradient_match_torch(nanogpt, monkeypatch, path, bias) -> None:
    theirs, ours = build_pair(nanogpt, monkeypatch, path, bias=bias)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours.get_num_params() == theirs.get_num_params()
    assert ours.get_num_params(non_embedding=False) == theirs.get_num_params(False)
    assert ours.estimate_mfu(4, 0.5) == theirs.estimate_mfu(4, 0.5)
    x, y = batch(1)
    (tx, mx), (ty, my) = both(x), both(y)
    t_logits, t_loss = theirs(tx, ty)
    m_logits, m_loss = ours(mx, my)
    np.testing.assert_allclose(m_logits.detach().numpy(), t_logits.detach().numpy(), atol=1e-10)
    assert abs(m_loss.item() - t_loss.item()) < 1e-10
    t_loss.backward()
    m_loss.backward()
    t_grads = {n: p.grad.numpy() for n, p in theirs.named_parameters()}
    m_grads = {n: p.grad.numpy() for n, p in ours.named_parameters()}
    assert list(m_grads) == list(t_grads)
    for name, grad in t_grads.items():
        np.testing.assert_allclose(m_grads[name], grad, atol=1e-10, err_msg=name)
    # inference: only the last position goes through lm_head (the logits[:, [-1], :] path)
    t_last, t_none = theirs(tx)
    m_last, m_none = ours(mx)
    assert m_none is None and t_none is None and m_last.shape == (3, 1, 13)
    np.testing.assert_allclose(m_last.detach().numpy(), t_last.detach().numpy(), atol=1e-10)


@pytest.mark.parametrize("path", PATHS)
def test_twenty_training_steps_match_torch(nanogpt, monkeypatch, path) -> None:
    theirs, ours = build_pair(nanogpt, monkeypatch, path)
    optimizers = [model.configure_optimizers(weight_decay=0.1, learning_rate=1e-2,
                                             betas=(0.9, 0.95), device_type="cpu")
                  for model in (theirs, ours)]
    assert [len(g["params"]) for g in optimizers[1].param_groups] == [
        len(g["params"]) for g in optimizers[0].param_groups]
    clips = (torch.nn.utils.clip_grad_norm_, mt.nn.utils.clip_grad_norm_)
    losses: list[list[float]] = [[], []]
    for step in range(20):
        x, y = batch(100 + step)
        for i, (model, optimizer, clip, wrap) in enumerate(
                zip((theirs, ours), optimizers, clips, (torch.from_numpy, mt.tensor),
                    strict=True)):
            _, loss = model(wrap(x), wrap(y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip(model.parameters(), 1.0)
            optimizer.step()
            losses[i].append(loss.item())
    np.testing.assert_allclose(losses[1], losses[0], atol=1e-9)
    assert losses[1][-1] < losses[1][0]
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(dict(ours.named_parameters())[name].detach().numpy(),
                                   p.detach().numpy(), atol=1e-9, err_msg=name)


def test_weights_copied_as_from_pretrained_does(nanogpt, monkeypatch) -> None:
    """from_pretrained's idiom: ``sd = model.state_dict()``, then ``sd[k].copy_(w)`` under
    no_grad writes into the model."""
    theirs, _ = build_pair(nanogpt, monkeypatch, "slow")
    mt.manual_seed(1)
    with monkeypatch.context() as patch:
        patch.delattr(mt.nn.functional, "scaled_dot_product_attention")
        ours = nanogpt[1].GPT(config(nanogpt[1])).double()  # fresh weights, not theirs
    sd = ours.state_dict()
    with mt.no_grad():
        for k, v in theirs.state_dict().items():
            sd[k].copy_(mt.tensor(v.numpy()))
    x, y = batch(4)
    (tx, mx), (ty, my) = both(x), both(y)
    assert abs(ours(mx, my)[1].item() - theirs(tx, ty)[1].item()) < 1e-10


def test_crop_block_size_matches_torch(nanogpt, monkeypatch) -> None:
    theirs, ours = build_pair(nanogpt, monkeypatch, "slow")
    theirs.crop_block_size(4)
    ours.crop_block_size(4)
    assert ours.transformer.h[0].attn.bias.shape == (1, 1, 4, 4)
    assert ours.transformer.wpe.weight.shape == (4, 16)
    x, y = batch(2, t=4)
    (tx, mx), (ty, my) = both(x), both(y)
    assert abs(ours(mx, my)[1].item() - theirs(tx, ty)[1].item()) < 1e-10


@pytest.mark.parametrize("path", PATHS)
def test_dropout_is_reproducible_under_manual_seed(nanogpt, monkeypatch, path) -> None:
    _, our_py = nanogpt
    x, y = batch(3)
    losses = []
    for _ in range(2):
        mt.manual_seed(7)
        with monkeypatch.context() as patch:
            if path == "slow":
                patch.delattr(mt.nn.functional, "scaled_dot_product_attention")
            model = our_py.GPT(config(our_py, dropout=0.2)).double()
        losses.append(model(mt.tensor(x), mt.tensor(y))[1].item())
    assert losses[0] == losses[1]
    model.eval()  # no dropout in eval mode: the same loss on every call
    assert model(mt.tensor(x), mt.tensor(y))[1].item() == model(mt.tensor(x),
                                                                 mt.tensor(y))[1].item()


# ----- generation --------------------------------------------------------------------------
def test_greedy_generation_matches_torch_token_for_token(nanogpt, monkeypatch) -> None:
    theirs, ours = build_pair(nanogpt, monkeypatch, "slow")
    theirs.eval()
    ours.eval()
    start = np.array([[1, 2], [3, 4]])
    # top_k=1 leaves one token with probability 1: multinomial must pick it in both
    expected = theirs.generate(torch.from_numpy(start), 10, top_k=1).numpy()
    got = ours.generate(mt.tensor(start), 10, top_k=1)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got.numpy(), expected)  # 10 > block_size: the crop too


def test_top_k_sampling_is_reproducible_under_manual_seed(nanogpt, monkeypatch) -> None:
    _, ours = build_pair(nanogpt, monkeypatch, "slow")
    ours.eval()
    runs = []
    for _ in range(2):
        mt.manual_seed(11)
        runs.append(ours.generate(mt.tensor([[1, 2]]), 12, temperature=0.8, top_k=3).tolist())
    assert runs[0] == runs[1]


def test_sampling_without_top_k_is_reproducible_under_manual_seed(nanogpt, monkeypatch) -> None:
    _, ours = build_pair(nanogpt, monkeypatch, "slow")
    ours.eval()
    runs = []
    for _ in range(2):
        mt.manual_seed(11)
        runs.append(ours.generate(mt.tensor([[1, 2]]), 12, temperature=0.8).numpy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert runs[0].shape == (1, 14) and runs[0].min() >= 0 and runs[0].max() < 13
    assert runs[0][0, :2].tolist() == [1, 2]


# ----- examples/09_nanogpt_chars.py --torch ------------------------------------------------
def test_the_example_trains_the_same_start_as_pytorch() -> None:
    """The loss curves of docs/img/nanogpt-chars-loss.png: the same float64 start on the same
    batches gives PyTorch's losses, step by step (a few steps here; the figure draws 200)."""
    from scripts.nanogpt_figures import load_example

    ours, theirs = load_example().same_start_curves(steps=6)
    assert len(ours) == len(theirs) == 6
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert ours[-1] < ours[0]  # it trains: the comparison is not of two constant curves
