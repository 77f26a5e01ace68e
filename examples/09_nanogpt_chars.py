"""nanoGPT's model.py, unchanged but for its imports, trained on a little character text.

Karpathy's nanoGPT is written for PyTorch. Its model file (vendored in
tests/data/nanogpt/model.py, MIT licence) is loaded here with its three import lines
replaced by

    import minitransformer as torch
    import minitransformer.nn as nn
    from minitransformer.nn import functional as F

and then used exactly as nanoGPT's train.py uses it: GPTConfig, GPT, configure_optimizers,
clip_grad_norm_, AdamW, generate. The text is examples/data/rhymes.txt, one token per
character. A few seconds of training take the loss well below log(vocab), the loss of a
uniform guess, and the samples start to look like the rhymes.

nanoGPT has two attention paths: F.scaled_dot_product_attention when torch.nn.functional
has it, else its own, written out (q @ k^T, masked_fill with a tril buffer, softmax, @ v).
This script takes the written-out one (it hides SDPA while the model is built), because
that is the attention a learner can read line by line; tests/test_nanogpt.py checks both
paths against PyTorch.

    python examples/09_nanogpt_chars.py            # train on minitransformer, sample
    python examples/09_nanogpt_chars.py --torch    # and on PyTorch too, from the same
                                                   # initial weights on the same batches

With --torch (PyTorch installed) both models run in float64 and the script prints the
largest difference between the two loss curves; scripts/nanogpt_figures.py draws them
(docs/img/nanogpt-chars-loss.png, `make figures`).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

import minitransformer as mt
from minitransformer.porting import load_module

ROOT = Path(__file__).resolve().parent.parent
MODEL_PY = ROOT / "tests" / "data" / "nanogpt" / "model.py"
TEXT = ROOT / "examples" / "data" / "rhymes.txt"
BLOCK_SIZE, BATCH_SIZE = 32, 12


def load_nanogpt(ours: bool = True) -> types.ModuleType:
    """model.py as a module: with only its import lines changed (``ours``), or as is, on
    PyTorch."""
    return load_module(MODEL_PY, "nanogpt_model" + ("" if ours else "_torch"), on_torch=not ours)


def read_text() -> tuple[list[str], np.ndarray]:
    """The vocabulary and the text as int64 ids."""
    text = TEXT.read_text()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    return chars, np.array([stoi[c] for c in text], dtype=np.int64)


def build(nanogpt: types.ModuleType, lib: Any, vocab_size: int) -> Any:
    """nanoGPT's GPT on ``lib`` (minitransformer or torch), on its written-out attention:
    nanoGPT takes that path when the functional module has no SDPA (see the docstring)."""
    config = nanogpt.GPTConfig(block_size=BLOCK_SIZE, vocab_size=vocab_size, n_layer=2,
                               n_head=2, n_embd=32, dropout=0.0, bias=False)
    functional = lib.nn.functional
    sdpa = functional.scaled_dot_product_attention
    # nanoGPT then warns "using slow attention": here that is the point (see the docstring)
    del functional.scaled_dot_product_attention
    try:
        return nanogpt.GPT(config)
    finally:
        functional.scaled_dot_product_attention = sdpa


def batches(data: np.ndarray, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``steps`` batches drawn as nanoGPT's train.py draws them, with ``mt.randint``."""
    result = []
    for _ in range(steps):
        ix = mt.randint(len(data) - BLOCK_SIZE, (BATCH_SIZE,)).tolist()
        result.append((np.stack([data[i:i + BLOCK_SIZE] for i in ix]),
                       np.stack([data[i + 1:i + 1 + BLOCK_SIZE] for i in ix])))
    return result


def train(model: Any, lib: Any, steps: list[tuple[np.ndarray, np.ndarray]],
          log: bool = False) -> list[float]:
    """nanoGPT's training step on every batch (``lib`` is minitransformer or torch);
    returns the losses."""
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=5e-3,
                                           betas=(0.9, 0.99), device_type="cpu")
    losses = []
    for step, (x, y) in enumerate(steps):
        _, loss = model(lib.from_numpy(x), lib.from_numpy(y))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lib.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if log and step % 20 == 0:
            print(f"step {step:3d}: loss {loss.item():.3f}")
    return losses


def same_start_curves(steps: int = 60) -> tuple[list[float], list[float]]:
    """(minitransformer's losses, PyTorch's): the same float64 initial weights (PyTorch's
    init, copied into ours), the same batches, ``steps`` steps each."""
    import torch

    chars, data = read_text()
    torch.manual_seed(0)
    theirs = build(load_nanogpt(ours=False), torch, len(chars)).double()
    ours = build(load_nanogpt(), mt, len(chars)).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    mt.manual_seed(0)
    drawn = batches(data, steps)
    return train(ours, mt, drawn), train(theirs, torch, drawn)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", action="store_true",
                        help="also train on PyTorch from the same initial weights (float64)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    nanogpt = load_nanogpt()
    chars, data = read_text()
    stoi = {c: i for i, c in enumerate(chars)}
    print(f"{len(data)} characters, vocabulary of {len(chars)}")

    mt.manual_seed(0)
    model = build(nanogpt, mt, len(chars))
    losses = train(model, mt, batches(data, 60), log=True)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    uniform = math.log(len(chars))
    assert last < 0.75 * uniform, f"the loss did not fall enough: {last:.3f}"

    model.eval()
    mt.manual_seed(1)
    start = mt.tensor([[stoi[c] for c in "the cat "]])
    sample = model.generate(start, 60, temperature=0.6)
    print("sample:", repr("".join(chars[i] for i in sample[0].tolist())))
    print(f"loss fell from {first:.2f} to {last:.2f} (a uniform guess: {uniform:.2f}) "
          f"in {time.perf_counter() - started:.1f} s")

    if args.torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            sys.exit("--torch needs PyTorch: pip install -e '.[oracle]'")
        ours, theirs = same_start_curves()
        gap = float(np.max(np.abs(np.subtract(ours, theirs))))
        print(f"the same start on PyTorch: {len(ours)} steps, largest loss difference "
              f"{gap:.1e} (float64)")


if __name__ == "__main__":
    main()
