"""A Transformer training step and multi-head attention throughput, next to PyTorch (CPU).

(1) One training step (forward, cross-entropy, backward, AdamW step) of a TransformerEncoder
    built from minitransformer's layers, and of the identical PyTorch model (same weights),
    float32, at two sizes:
      small: 2 layers, d_model 64, 4 heads, seq 32, batch 64
      large: 2 layers, d_model 256, 8 heads, seq 128, batch 16
(2) MultiHeadAttention forward+backward at seq 1024, d_model 512, 8 heads: achieved GFLOP/s
    of its matrix products, as a fraction of the float32 matmul rate NumPy reaches here.

Run: python -m benchmarks.transformer_bench [--default-malloc] [--as-users-run]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import minitransformer as mt
import minitransformer.functional as F
from benchmarks._timing import (
    add_malloc_option,
    apply_malloc_option,
    blockwise_seconds,
    machine_description,
    median_seconds,
)
from minitransformer.ops import sdpa

try:
    import torch
except ImportError:
    torch = None

ROOT = Path(__file__).resolve().parent.parent
NUM_CLASSES = 16
SIZES = {
    "small": dict(layers=2, d_model=64, heads=4, seq=32, batch=64),
    "large": dict(layers=2, d_model=256, heads=8, seq=128, batch=16),
}


class TokenClassifier(mt.nn.Module):
    """Encoder + a linear head that labels every token: enough to exercise every layer."""

    def __init__(self, layers: int, d_model: int, heads: int) -> None:
        super().__init__()
        layer = mt.nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=4 * d_model,
                                              batch_first=True, dropout=0.0)
        self.encoder = mt.nn.TransformerEncoder(layer, layers)
        self.head = mt.nn.Linear(d_model, NUM_CLASSES)

    def forward(self, x: mt.Tensor) -> mt.Tensor:
        return self.head(self.encoder(x))


def torch_state_dict(model: mt.nn.Module) -> dict[str, np.ndarray]:
    """Our parameters under PyTorch's names: q/k/v projections packed into in_proj."""
    ours = {name: p.numpy() for name, p in model.state_dict().items()}
    theirs: dict[str, np.ndarray] = {}
    for name, value in ours.items():
        prefix, _, leaf = name.rpartition(".")
        if prefix.endswith(("q_proj", "k_proj", "v_proj")):
            attn = prefix[: -len(".q_proj")]
            if prefix.endswith("q_proj"):
                parts = [ours[f"{attn}.{p}_proj.{leaf}"] for p in "qkv"]
                theirs[f"{attn}.in_proj_{leaf}"] = np.concatenate(parts)
            continue
        theirs[name] = value
    return theirs


def torch_twin(model: TokenClassifier, layers: int, d_model: int, heads: int):
    layer = torch.nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=4 * d_model,
                                             dropout=0.0, batch_first=True)
    twin = torch.nn.Sequential()
    twin.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
    twin.head = torch.nn.Linear(d_model, NUM_CLASSES)
    state = {k: torch.from_numpy(v.copy()) for k, v in torch_state_dict(model).items()}
    twin.load_state_dict(state, strict=True)
    return twin


def training_steps(size: str) -> tuple[Callable[[], Any], Callable[[], Any] | None]:
    """One training step of ours and of the PyTorch twin (None without PyTorch); each
    returns its loss, which is the same for the two (tests/test_benchmarks.py)."""
    cfg = SIZES[size]
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((cfg["batch"], cfg["seq"], cfg["d_model"])).astype(np.float32)
    y0 = rng.integers(0, NUM_CLASSES, (cfg["batch"], cfg["seq"]))

    mt.manual_seed(0)
    model = TokenClassifier(cfg["layers"], cfg["d_model"], cfg["heads"])
    optimizer = mt.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = mt.tensor(x0), mt.tensor(y0)

    def ours() -> mt.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x).reshape(-1, NUM_CLASSES), y.reshape(-1))
        loss.backward()
        optimizer.step()
        return loss

    if torch is None:
        return ours, None
    twin = torch_twin(model, cfg["layers"], cfg["d_model"], cfg["heads"])
    torch_optimizer = torch.optim.AdamW(twin.parameters(), lr=1e-3)
    tx, ty = torch.from_numpy(x0), torch.from_numpy(y0)

    def theirs() -> Any:
        torch_optimizer.zero_grad()
        logits = twin.head(twin.encoder(tx))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, NUM_CLASSES),
                                                 ty.reshape(-1))
        loss.backward()
        torch_optimizer.step()
        return loss

    return ours, theirs


def bench_training_step(size: str, repeats: int) -> dict[str, float]:
    ours, theirs = training_steps(size)
    if theirs is None:
        return {"minitransformer": median_seconds(ours, repeats)}
    seconds, torch_seconds, ratio = blockwise_seconds(ours, theirs, repeats)
    return {"minitransformer": seconds, "torch": torch_seconds, "ratio": ratio}


def bench_as_users_run(size: str, repeats: int, blocks: int = 3) -> dict[str, float]:
    """Each library in a process of its own, as its users run it: ours with the setting its
    trainers apply (tuning.tune_for_training), PyTorch with glibc's defaults. The two kinds
    of process take turns, ``blocks`` times; returns the medians over blocks and the median
    block ratio."""
    def one_block(side: str, env: dict[str, str]) -> float:
        command = [sys.executable, "-m", "benchmarks.transformer_bench", "--side", side,
                   "--size", size, "--repeats", str(repeats)]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              check=True)
        return float(done.stdout.split()[-1])

    base = {k: v for k, v in os.environ.items() if k != "MINITRANSFORMER_MALLOC"}
    ours_times, torch_times, ratios = [], [], []
    for _ in range(blocks):
        ours_times.append(one_block("ours", base))
        torch_times.append(one_block("torch", base))
        ratios.append(ours_times[-1] / torch_times[-1])
    return {"minitransformer": statistics.median(ours_times),
            "torch": statistics.median(torch_times), "ratio": statistics.median(ratios)}


def run_side(side: str, size: str, repeats: int) -> None:
    """The median step time of one side alone (for :func:`bench_as_users_run`)."""
    if side == "ours":
        from minitransformer import tuning

        tuning.tune_for_training()  # as the library's trainers and command line run
    ours, theirs = training_steps(size)
    print(f"{side} {median_seconds(ours if side == 'ours' else theirs, repeats)}")


def numpy_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    seconds = median_seconds(lambda: a @ b, repeats, warmup=1)
    return 2 * n**3 / seconds / 1e9


def attention_flops(batch: int, seq: int, d_model: int) -> float:
    """Matrix-product FLOPs of one MHA forward+backward (backward = 2x forward)."""
    projections = 4 * 2 * batch * seq * d_model * d_model  # q, k, v, out
    scores_and_mix = 2 * 2 * batch * seq * seq * d_model  # Q K^T and A V, all heads
    return 3 * (projections + scores_and_mix)


@contextlib.contextmanager
def attention_path(path: str) -> Iterator[None]:
    """Inside the block, what sdpa's automatic choice picks: "auto" (the library's rule) or
    "fused" (never tiled), by moving the size at which it turns tiled."""
    saved = sdpa.TILED_MIN_SCORES
    sdpa.TILED_MIN_SCORES = saved if path == "auto" else 2**62
    try:
        yield
    finally:
        sdpa.TILED_MIN_SCORES = saved


def bench_attention(seq: int, d_model: int, heads: int, repeats: int,
                    blocks: int = 5) -> dict[str, float]:
    """MHA forward+backward, as a share of NumPy's matmul rate measured just before it,
    block after block (the machine's speed drifts between blocks, the share much less):
    the library's automatic path and the fused one, and PyTorch's time."""
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((1, seq, d_model)).astype(np.float32)
    mt.manual_seed(0)
    mha = mt.nn.MultiHeadAttention(d_model, heads)
    x = mt.tensor(x0, requires_grad=True)
    flops = attention_flops(1, seq, d_model)

    def ours() -> None:
        out, _ = mha(x, need_weights=False)
        out.sum().backward()

    times: dict[str, list[float]] = {"auto": [], "fused": []}
    shares: dict[str, list[float]] = {"auto": [], "fused": []}
    for _ in range(blocks):
        peak = numpy_matmul_gflops(repeats=3)
        for path in times:
            with attention_path(path):
                seconds = median_seconds(ours, max(3, repeats // blocks), warmup=1)
            times[path].append(seconds)
            shares[path].append(flops / seconds / 1e9 / peak)
    seconds = statistics.median(times["auto"])
    results = {"minitransformer s": seconds, "minitransformer GFLOP/s": flops / seconds / 1e9,
               "share": statistics.median(shares["auto"]),
               "fused s": statistics.median(times["fused"]),
               "share fused": statistics.median(shares["fused"])}
    if torch is not None:
        twin = torch.nn.MultiheadAttention(d_model, heads, batch_first=True)
        tx = torch.from_numpy(x0).requires_grad_()

        def theirs() -> None:
            out, _ = twin(tx, tx, tx, need_weights=False)
            out.sum().backward()

        t_seconds = median_seconds(theirs, repeats, warmup=1)
        results["torch s"] = t_seconds
        results["torch GFLOP/s"] = flops / t_seconds / 1e9
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--as-users-run", action="store_true",
                        help="also time each library in a process of its own: ours with its "
                             "first-backward allocator setting, PyTorch with glibc's defaults")
    parser.add_argument("--side", choices=("ours", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=tuple(SIZES), help=argparse.SUPPRESS)
    add_malloc_option(parser)
    args = parser.parse_args()
    if args.side:  # a child of --as-users-run: no setting of ours beyond the library's own
        run_side(args.side, args.size, args.repeats)
        return
    print(f"machine: {machine_description()}")
    print(f"malloc: {apply_malloc_option(args)}")

    print("\n(1) training step: forward, cross-entropy, backward, AdamW (median, float32)")
    for size, cfg in SIZES.items():
        r = bench_training_step(size, args.repeats)
        line = f"  {size:5s} {cfg}: minitransformer {r['minitransformer'] * 1e3:7.1f} ms"
        if "torch" in r:
            line += (f", torch {r['torch'] * 1e3:7.1f} ms, ratio {r['ratio']:.2f} "
                     f"(target <= 1.0)")
        print(line)
    if args.as_users_run and torch is not None:
        print("\n(1b) the same, each library in its own process as its users run it "
              "(ours: first-backward setting; PyTorch: glibc defaults)")
        for size in SIZES:
            r = bench_as_users_run(size, args.repeats)
            print(f"  {size:5s}: minitransformer {r['minitransformer'] * 1e3:7.1f} ms, torch "
                  f"{r['torch'] * 1e3:7.1f} ms, ratio {r['ratio']:.2f} (target <= 1.0)")

    print("\n(2) MultiHeadAttention seq 1024, d_model 512, 8 heads, fwd+bwd, as a share of "
          "NumPy's float32 2048^3 matmul rate measured just before, median of 5 blocks")
    r = bench_attention(1024, 512, 8, args.repeats)
    line = (f"  automatic path: {r['minitransformer s'] * 1e3:.1f} ms = {r['share']:.0%} "
            f"(target >= 70%); fused: {r['fused s'] * 1e3:.1f} ms = {r['share fused']:.0%}")
    if "torch s" in r:
        line += f"; torch {r['torch s'] * 1e3:.1f} ms"
    print(line)

if __name__ == "__main__":
    main()
