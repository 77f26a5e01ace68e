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
"""

from __future__ import annotations

import math
import sys
import time
import types
from pathlib import Path

import numpy as np

import minitransformer as mt

ROOT = Path(__file__).resolve().parent.parent
MODEL_PY = ROOT / "tests" / "data" / "nanogpt" / "model.py"
TEXT = ROOT / "examples" / "data" / "rhymes.txt"
IMPORTS = {
    "import torch\n": "import minitransformer as torch\n",
    "import torch.nn as nn\n": "import minitransformer.nn as nn\n",
    "from torch.nn import functional as F\n": "from minitransformer.nn import functional as F\n",
}


def load_nanogpt() -> types.ModuleType:
    """model.py with only its import lines changed, as a module."""
    source = MODEL_PY.read_text()
    for theirs, ours in IMPORTS.items():
        source = source.replace(theirs, ours)
    module = types.ModuleType("nanogpt_model")
    sys.modules[module.__name__] = module  # @dataclass looks its module up there
    exec(compile(source, str(MODEL_PY), "exec"), module.__dict__)
    return module


def main() -> None:
    started = time.perf_counter()
    nanogpt = load_nanogpt()
    text = TEXT.read_text()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.int64)
    print(f"{len(text)} characters, vocabulary of {len(chars)}")

    block_size, batch_size = 32, 12
    config = nanogpt.GPTConfig(block_size=block_size, vocab_size=len(chars), n_layer=2,
                               n_head=2, n_embd=32, dropout=0.0, bias=False)
    mt.manual_seed(0)
    sdpa = mt.nn.functional.scaled_dot_product_attention
    # nanoGPT then warns "using slow attention": here that is the point (see the docstring)
    del mt.nn.functional.scaled_dot_product_attention
    try:
        model = nanogpt.GPT(config)
    finally:
        mt.nn.functional.scaled_dot_product_attention = sdpa
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=5e-3,
                                           betas=(0.9, 0.99), device_type="cpu")

    def get_batch() -> tuple[mt.Tensor, mt.Tensor]:  # as in nanoGPT's train.py
        ix = mt.randint(len(data) - block_size, (batch_size,))
        x = mt.stack([mt.from_numpy(data[i:i + block_size]) for i in ix.tolist()])
        y = mt.stack([mt.from_numpy(data[i + 1:i + 1 + block_size]) for i in ix.tolist()])
        return x, y

    losses = []
    for step in range(60):
        x, y = get_batch()
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        mt.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 20 == 0:
            print(f"step {step:3d}: loss {loss.item():.3f}")
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


if __name__ == "__main__":
    main()
