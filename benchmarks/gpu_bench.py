"""GPU benchmark: attention forward+backward on CuPy next to PyTorch on the same GPU.

Attention: batch 8, 8 heads, head dim 64, sequence 1024 and 4096, float32, through
``F.scaled_dot_product_attention`` (our fused op) and PyTorch eager (softmax(QK^T/sqrt d) V
from primitives, and torch's own fused scaled_dot_product_attention). Target: within 2x of
PyTorch eager. Then one coreference training step (forward, loss, backward, AdamW) on the
GPU and on the CPU.

Run on a machine with a GPU: python -m benchmarks.gpu_bench
"""

from __future__ import annotations

import math
import sys

import numpy as np

import minitransformer as mt
import minitransformer.functional as F
from benchmarks._timing import median_seconds

try:
    import torch
except ImportError:
    torch = None


def synchronize() -> None:
    import cupy

    cupy.cuda.Device().synchronize()


def bench_attention(seq: int, repeats: int) -> dict[str, float]:
    batch, heads, head_dim = 8, 8, 64
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((batch, heads, seq, head_dim)).astype(np.float32)
              for _ in range(3)]
    q, k, v = (mt.tensor(a, device="cuda", requires_grad=True) for a in arrays)

    def ours() -> None:
        out, _ = F.scaled_dot_product_attention_with_weights(q, k, v)  # the fused node
        out.sum().backward()
        synchronize()

    def ours_tiled() -> None:
        out = F.scaled_dot_product_attention(q, k, v, implementation="tiled")
        out.sum().backward()
        synchronize()

    results = {"minitransformer": median_seconds(ours, repeats, warmup=2),
               "minitransformer tiled": median_seconds(ours_tiled, repeats, warmup=2)}
    if torch is not None and torch.cuda.is_available():
        tq, tk, tv = (torch.tensor(a, device="cuda", requires_grad=True) for a in arrays)

        def eager() -> None:
            weights = torch.softmax(tq @ tk.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
            (weights @ tv).sum().backward()
            torch.cuda.synchronize()

        def fused() -> None:
            torch.nn.functional.scaled_dot_product_attention(tq, tk, tv).sum().backward()
            torch.cuda.synchronize()

        results["torch eager"] = median_seconds(eager, repeats, warmup=2)
        results["torch sdpa"] = median_seconds(fused, repeats, warmup=2)
    return results


def bench_coref_step(device: str, repeats: int) -> float:
    """One training step of the default coreference model on one batch of 32 sentences."""
    from minitransformer.coref import training
    from minitransformer.coref.data import encode_batch

    config = training.TrainConfig(train_size=64, test_size=8)
    data = training.build_dataset(config)
    model = training.build_model(config, data.vocabulary, device=device)
    optimizer, _ = training.build_optimizer(model, config)
    batch = encode_batch(data.train[: config.batch_size], data.vocabulary)

    def step() -> None:
        optimizer.zero_grad()
        loss, _ = training.batch_loss(model, batch)
        loss.backward()
        optimizer.step()

    if device == "cuda":
        return median_seconds(lambda: (step(), synchronize()), repeats, warmup=2)
    return median_seconds(step, repeats, warmup=2)


def main() -> int:
    if not mt.cuda_is_available():
        print("gpu_bench: no CUDA GPU with CuPy; nothing to measure")
        return 1
    print("attention forward+backward, B=8, 8 heads, head dim 64, float32 (median ms)")
    for seq in (1024, 4096):
        r = bench_attention(seq, repeats=5 if seq == 4096 else 10)
        line = (f"  seq {seq:5d}: minitransformer {r['minitransformer'] * 1e3:8.2f} "
                f"(tiled {r['minitransformer tiled'] * 1e3:8.2f})")
        if "torch eager" in r:
            ratio = r["minitransformer"] / r["torch eager"]
            line += (f" | torch eager {r['torch eager'] * 1e3:8.2f} | torch sdpa "
                     f"{r['torch sdpa'] * 1e3:8.2f} | ratio to eager {ratio:.2f} (target <= 2)")
        print(line)
    try:
        gpu = bench_coref_step("cuda", 10)
        cpu = bench_coref_step("cpu", 10)
        print(f"coreference training step: GPU {gpu * 1e3:.2f} ms, CPU {cpu * 1e3:.2f} ms")
    except (AttributeError, ImportError) as exc:
        print(f"coreference training step: not measured ({exc})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
