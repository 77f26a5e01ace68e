"""A real client: one training step of nanoGPT's model.py, on PyTorch and on minitransformer.

The same file (tests/data/nanogpt/model.py, Karpathy's, with its three import lines changed
for ours, as tests/test_nanogpt.py loads it), the same config, the same initial weights
(copied from the PyTorch model), the same batches, float32. A step is what nanoGPT's
train.py does: forward (logits and loss), zero_grad(set_to_none=True), backward,
clip_grad_norm_(1.0), and the AdamW step of ``configure_optimizers(0.1, 6e-4, (0.9, 0.95),
"cpu")``. The two libraries take turns, round after round (the order swapped every round);
reported: the median step time of each and the median of the per-round ratios. Both sides'
losses must agree at every step (float32 tolerance), so the benchmark also checks that they
compute the same thing.

Both libraries use 2 threads: ``torch.set_num_threads(2)`` and OpenBLAS's 2 (the VM's
cores) for NumPy.

Run: python -m benchmarks.nanogpt_bench [--rounds N] [--config small|long] [--no-bias]
"""

from __future__ import annotations

import argparse
import statistics
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import minitransformer as mt
from benchmarks._timing import machine_description
from minitransformer import tuning
from minitransformer.porting import load_module

try:
    import torch
except ImportError:
    torch = None

THREADS = 2
MODEL_PY = Path(__file__).resolve().parent.parent / "tests" / "data" / "nanogpt" / "model.py"
# nanoGPT's defaults (bias True, dropout 0 as for its small runs), at two context lengths
BASE = dict(n_layer=4, n_head=4, n_embd=128, vocab_size=65, dropout=0.0, bias=True)
CONFIGS = {
    "small": dict(BASE, block_size=64, batch=16),
    "long": dict(BASE, block_size=1024, batch=4),
}
RTOL = 1e-4  # float32: the two libraries sum in different orders


def load_model_py(ours: bool) -> types.ModuleType:
    """nanoGPT's model.py as a module, on PyTorch or (``ours``) on minitransformer."""
    name = "nanogpt_bench_on_" + ("minitransformer" if ours else "torch")
    return load_module(MODEL_PY, name, on_torch=not ours)


def set_threads(n: int = THREADS) -> None:
    torch.set_num_threads(n)
    library = tuning._openblas()
    if library is not None:
        library[1](n)


def training_steps(name: str = "small", **changes) -> tuple[Callable[[], float],
                                                             Callable[[], float]]:
    """(ours, theirs): each call runs one training step on the next batch and returns its
    loss; the n-th call of each gives the same loss (to float32 rounding)."""
    cfg = {**CONFIGS[name], **changes}
    batch = cfg.pop("batch")
    torch_py, our_py = load_model_py(ours=False), load_model_py(ours=True)
    torch.manual_seed(0)
    twin = torch_py.GPT(torch_py.GPTConfig(**cfg))
    mt.manual_seed(0)
    model = our_py.GPT(our_py.GPTConfig(**cfg))
    model.load_state_dict({k: v.detach().numpy().copy() for k, v in twin.state_dict().items()})
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, cfg["vocab_size"], (2, batch, cfg["block_size"]))
               for _ in range(8)]

    def stepper(net, clip, wrap) -> Callable[[], float]:
        optimizer = net.configure_optimizers(weight_decay=0.1, learning_rate=6e-4,
                                             betas=(0.9, 0.95), device_type="cpu")
        data = [(wrap(b[0]), wrap(b[1])) for b in batches]
        count = [0]

        def step() -> float:
            x, y = data[count[0] % len(data)]
            count[0] += 1
            _, loss = net(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip(net.parameters(), 1.0)
            optimizer.step()
            return loss.item()

        return step

    return (stepper(model, mt.nn.utils.clip_grad_norm_, mt.tensor),
            stepper(twin, torch.nn.utils.clip_grad_norm_, torch.from_numpy))


def bench(name: str, rounds: int, warmup: int = 1, **changes) -> dict[str, Any]:
    """Median step times, the median per-round ratio (ours / torch), the largest relative
    loss difference; raises if the losses disagree."""
    ours, theirs = training_steps(name, **changes)
    times: dict[str, list[float]] = {"ours": [], "torch": []}
    ratios, worst = [], 0.0
    for i in range(warmup + rounds):
        result = {}
        for side in (("ours", "torch") if i % 2 == 0 else ("torch", "ours")):
            start = time.perf_counter()
            loss = (ours if side == "ours" else theirs)()
            result[side] = (time.perf_counter() - start, loss)
        difference = abs(result["ours"][1] - result["torch"][1]) / abs(result["torch"][1])
        if difference > RTOL:
            raise AssertionError(f"{name}, step {i}: loss {result['ours'][1]!r} on ours, "
                                 f"{result['torch'][1]!r} on torch")
        worst = max(worst, difference)
        if i >= warmup:
            for side in times:
                times[side].append(result[side][0])
            ratios.append(result["ours"][0] / result["torch"][0])
    return {"ours": statistics.median(times["ours"]), "torch": statistics.median(times["torch"]),
            "ratio": statistics.median(ratios), "loss rel diff": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed rounds per config (default: 11 small, 5 long)")
    parser.add_argument("--config", choices=tuple(CONFIGS), action="append")
    parser.add_argument("--no-bias", action="store_true",
                        help="bias=False in Linear and LayerNorm (nanoGPT's default is True)")
    args = parser.parse_args()
    if torch is None:
        print("nanogpt_bench compares against PyTorch: install the oracle extra")
        return
    set_threads()
    tuning.retain_freed_memory()
    print(f"machine: {machine_description()}")
    print(f"threads: {THREADS} on both sides (torch.set_num_threads, OpenBLAS)")
    print("nanoGPT training step: forward, backward, clip_grad_norm_, AdamW (float32)")
    for name in args.config or list(CONFIGS):
        rounds = args.rounds or (11 if name == "small" else 5)
        r = bench(name, rounds, bias=not args.no_bias)
        cfg = CONFIGS[name]
        print(f"  {name:5s} block {cfg['block_size']}, batch {cfg['batch']}, "
              f"bias {not args.no_bias}: "
              f"minitransformer {r['ours'] * 1e3:7.1f} ms, torch {r['torch'] * 1e3:7.1f} ms, "
              f"ratio {r['ratio']:.2f} (median of {rounds} rounds), "
              f"losses agree to {r['loss rel diff']:.1e}")


if __name__ == "__main__":
    main()
