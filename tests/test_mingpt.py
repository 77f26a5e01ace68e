"""minGPT's model.py runs unchanged on minitransformer, with only its import lines changed.

``tests/data/mingpt/model.py`` is Andrej Karpathy's ``mingpt/model.py`` as published (MIT
licence). Like nanoGPT's (tests/test_nanogpt.py) it is loaded twice: as is, with PyTorch,
and with its three torch import lines replaced by minitransformer's. Its fourth import,
``from mingpt.utils import CfgNode as CN``, is served by a small stand-in module (minGPT's
CfgNode is a plain attribute bag with ``merge_from_dict``), not by editing the file.

In float64 the logits, the loss and every parameter gradient must agree to 1e-10, and so
must a few steps of minGPT's own ``configure_optimizers`` (AdamW with decay grouped by module
type through ``named_modules``/``named_parameters``/``isinstance``). ``generate`` without
sampling takes ``torch.topk(probs, k=1)``: token for token as PyTorch. ``do_sample=True``
(``torch.multinomial``) cannot match PyTorch's random numbers; it must be reproducible under
``mt.manual_seed``.

``generate(top_k=...)`` runs its ``logits[logits < v[:, [-1]]] = -float('Inf')`` as written.
(``from_pretrained`` needs Hugging Face ``transformers`` and a download; it is not tested.
Its ``sd[k].copy_(w)`` idiom is nanoGPT's, tested in tests/test_nanogpt.py.)
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

MODEL_PY = Path(__file__).parent / "data" / "mingpt" / "model.py"
MINGPT_SHA256 = "3586d4a957722864f7a790689a094478d3ee0b7de34d7456cb635923e4779576"
IMPORTS = TORCH_IMPORTS  # minGPT's three torch import lines, and what they become here
VOCAB = 11


class CfgNode:
    """The part of minGPT's ``mingpt.utils.CfgNode`` that model.py uses."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

    def merge_from_dict(self, d):
        self.__dict__.update(d)


def load_model_py(ours: bool) -> types.ModuleType:
    """minGPT's model.py as a module, on PyTorch or (``ours``) on minitransformer, with a
    stand-in for its ``mingpt.utils`` while it loads."""
    utils = types.ModuleType("mingpt.utils")
    utils.CfgNode = CfgNode
    package = types.ModuleType("mingpt")
    package.utils = utils
    name = "mingpt_on_" + ("minitransformer" if ours else "torch")
    return load_module(MODEL_PY, name, on_torch=not ours,
                       modules={"mingpt": package, "mingpt.utils": utils})


@pytest.fixture(scope="module")
def mingpt() -> tuple[types.ModuleType, types.ModuleType]:
    """(model.py on torch, model.py on minitransformer)."""
    return load_model_py(ours=False), load_model_py(ours=True)


def config(module: types.ModuleType, pdrop: float = 0.0) -> CfgNode:
    c = module.GPT.get_default_config()
    c.model_type = None
    c.n_layer, c.n_head, c.n_embd = 2, 2, 16
    c.vocab_size, c.block_size = VOCAB, 8
    c.embd_pdrop = c.resid_pdrop = c.attn_pdrop = pdrop
    return c


def build_pair(mingpt, capsys):
    """The torch model and ours with the torch weights, both float64."""
    torch_py, our_py = mingpt
    torch.manual_seed(0)
    theirs = torch_py.GPT(config(torch_py)).double()
    mt.manual_seed(0)
    ours = our_py.GPT(config(our_py)).double()
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == printed[1] and printed[0].startswith("number of parameters: ")
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return theirs, ours


def batch(seed: int, b: int = 3, t: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCAB, (b, t))
    y = rng.integers(0, VOCAB, (b, t))
    y[0, :2] = -1  # minGPT's ignore_index=-1
    return x, y


def test_model_py_is_mingpts_file_unedited() -> None:
    source = MODEL_PY.read_text()
    published = source[source.index('"""\nFull definition of a GPT'):]
    assert hashlib.sha256(published.encode()).hexdigest() == MINGPT_SHA256
    assert all(source.count(line) == 1 for line in IMPORTS)


def test_init_follows_mingpts_recipe(mingpt, capsys) -> None:
    """_init_weights through ``self.apply`` and the scaled c_proj init: the statistics
    PyTorch's init gives (the random numbers themselves differ)."""
    _, our_py = mingpt
    mt.manual_seed(0)
    c = config(our_py)
    c.n_embd = 64
    model = our_py.GPT(c)
    capsys.readouterr()
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    assert abs(sd["transformer.wte.weight"].std() - 0.02) < 0.002
    assert abs(sd["transformer.h.0.attn.c_proj.weight"].std() - 0.02 / 2) < 0.001
    assert abs(sd["transformer.h.0.mlp.c_proj.weight"].std() - 0.02 / 2) < 0.001
    assert not sd["transformer.h.0.attn.c_attn.bias"].any()
    assert (sd["transformer.ln_f.weight"] == 1).all() and not sd["transformer.ln_f.bias"].any()


def test_logits_loss_and_every_gradient_match_torch(mingpt, capsys) -> None:
    theirs, ours = build_pair(mingpt, capsys)
    assert list(ours.state_dict()) == list(theirs.state_dict())  # the "bias" buffers too
    x, y = batch(1)
    t_logits, t_loss = theirs(torch.from_numpy(x), torch.from_numpy(y))
    m_logits, m_loss = ours(mt.tensor(x), mt.tensor(y))
    assert m_logits.shape == (3, 8, VOCAB)
    np.testing.assert_allclose(m_logits.detach().numpy(), t_logits.detach().numpy(), atol=1e-10)
    assert abs(m_loss.item() - t_loss.item()) < 1e-10
    t_loss.backward()
    m_loss.backward()
    t_grads = {n: p.grad.numpy() for n, p in theirs.named_parameters()}
    m_grads = {n: p.grad.numpy() for n, p in ours.named_parameters()}
    assert list(m_grads) == list(t_grads)
    for name, grad in t_grads.items():
        np.testing.assert_allclose(m_grads[name], grad, atol=1e-10, err_msg=name)


def test_optimizer_steps_match_torch(mingpt, capsys) -> None:
    theirs, ours = build_pair(mingpt, capsys)
    train = CfgNode(weight_decay=0.1, learning_rate=1e-2, betas=(0.9, 0.95))
    optimizers = [model.configure_optimizers(train) for model in (theirs, ours)]
    assert [len(g["params"]) for g in optimizers[1].param_groups] == [
        len(g["params"]) for g in optimizers[0].param_groups]
    assert [g["weight_decay"] for g in optimizers[1].param_groups] == [0.1, 0.0]
    clips = (torch.nn.utils.clip_grad_norm_, mt.nn.utils.clip_grad_norm_)
    losses: list[list[float]] = [[], []]
    x, y = batch(100)  # one batch, over and over: the loss must fall
    for _ in range(8):
        for i, (model, optimizer, clip, wrap) in enumerate(
                zip((theirs, ours), optimizers, clips, (torch.from_numpy, mt.tensor),
                    strict=True)):
            _, loss = model(wrap(x), wrap(y))
            model.zero_grad(set_to_none=True)  # minGPT's trainer.py zeroes the model
            loss.backward()
            clip(model.parameters(), 1.0)
            optimizer.step()
            losses[i].append(loss.item())
    np.testing.assert_allclose(losses[1], losses[0], atol=1e-9)
    assert losses[1][-1] < losses[1][0]
    ours_by_name = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(ours_by_name[name].detach().numpy(), p.detach().numpy(),
                                   atol=1e-9, err_msg=name)


def test_greedy_generation_matches_torch_token_for_token(mingpt, capsys) -> None:
    theirs, ours = build_pair(mingpt, capsys)
    theirs.eval()
    ours.eval()
    start = np.array([[1, 2], [3, 4]])
    expected = theirs.generate(torch.from_numpy(start), 10).numpy()
    got = ours.generate(mt.tensor(start), 10)  # 12 > block_size: the crop too
    np.testing.assert_array_equal(got.numpy(), expected)


def test_sampling_is_reproducible_under_manual_seed(mingpt, capsys) -> None:
    _, ours = build_pair(mingpt, capsys)
    ours.eval()
    runs = []
    for _ in range(2):
        mt.manual_seed(11)
        runs.append(ours.generate(mt.tensor([[1, 2]]), 12, temperature=0.8,
                                  do_sample=True).numpy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert runs[0].shape == (1, 14) and runs[0].min() >= 0 and runs[0].max() < VOCAB


def test_top_k_generation_matches_torch(mingpt, capsys) -> None:
    theirs, ours = build_pair(mingpt, capsys)
    theirs.eval()
    ours.eval()
    start = np.array([[1, 2]])
    expected = theirs.generate(torch.from_numpy(start), 6, top_k=3).numpy()
    np.testing.assert_array_equal(ours.generate(mt.tensor(start), 6, top_k=3).numpy(),
                                  expected)


def test_dropout_is_reproducible_under_manual_seed(mingpt, capsys) -> None:
    _, our_py = mingpt
    x, y = batch(3)
    losses = []
    for _ in range(2):
        mt.manual_seed(7)
        model = our_py.GPT(config(our_py, pdrop=0.2)).double()
        losses.append(model(mt.tensor(x), mt.tensor(y))[1].item())
    assert losses[0] == losses[1]
    model.eval()
    assert model(mt.tensor(x), mt.tensor(y))[1].item() == model(mt.tensor(x),
                                                                 mt.tensor(y))[1].item()
