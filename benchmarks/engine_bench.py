"""Engine speed, side by side with PyTorch (CPU, eager) and raw NumPy, in one run.

(a) A chain of 1,000 elementwise ops on 8x8 float32 tensors, forward and backward:
    the per-op overhead of the engine. Compared with the same chain in PyTorch, and with
    the forward alone in raw NumPy (the floor: no graph, no gradient).
(b) A chain of 1024x1024 float32 matmuls, forward and backward: here the time is in BLAS,
    and the engine should add almost nothing to the products NumPy does by hand.

Run: python benchmarks/engine_bench.py   (prints a table of medians and ratios)
"""

from __future__ import annotations

import argparse

import numpy as np

import minitransformer as mt
from benchmarks._timing import (
    add_malloc_option,
    apply_malloc_option,
    machine_description,
    median_seconds,
    paired_seconds,
)

try:
    import torch
except ImportError:
    torch = None

CHAIN_OPS = 1000
SMALL = (8, 8)


def elementwise_chain(x, w, b, tanh, sigmoid):
    """200 rounds of five elementwise ops: 1,000 ops in all."""
    y = x
    for _ in range(CHAIN_OPS // 5):
        y = y * w
        y = y + b
        y = tanh(y)
        y = y * 0.5
        y = sigmoid(y)
    return y


def bench_elementwise(repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    x0, w0, b0 = (rng.standard_normal(SMALL).astype(np.float32) for _ in range(3))
    x, w, b = (mt.tensor(a, requires_grad=True) for a in (x0, w0, b0))

    def ours_step() -> None:
        elementwise_chain(x, w, b, mt.tanh, mt.sigmoid).sum().backward()

    def ours_forward() -> None:
        elementwise_chain(x, w, b, mt.tanh, mt.sigmoid)

    def numpy_sigmoid(a):
        return 1 / (1 + np.exp(-a))

    def numpy_forward() -> None:
        elementwise_chain(x0, w0, b0, np.tanh, numpy_sigmoid)

    results = {}
    ours, numpy_time, ratio = paired_seconds(ours_forward, numpy_forward, repeats)
    results.update({"minitransformer fwd": ours, "numpy fwd": numpy_time,
                    "ratio fwd to numpy": ratio})
    if torch is not None:
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x0, w0, b0))

        def torch_step() -> None:
            elementwise_chain(tx, tw, tb, torch.tanh, torch.sigmoid).sum().backward()

        def torch_forward() -> None:
            elementwise_chain(tx, tw, tb, torch.tanh, torch.sigmoid)

        ours, theirs, ratio = paired_seconds(ours_step, torch_step, repeats)
        results.update({"minitransformer fwd+bwd": ours, "torch fwd+bwd": theirs,
                        "ratio fwd+bwd to torch": ratio})
        ours, theirs, ratio = paired_seconds(ours_forward, torch_forward, repeats)
        results.update({"torch fwd": theirs, "ratio fwd to torch": ratio})
    else:
        results["minitransformer fwd+bwd"] = median_seconds(ours_step, repeats)
    return results


def bench_matmul(size: int, depth: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    scale = 1 / np.sqrt(size)
    x0 = rng.standard_normal((size, size)).astype(np.float32)
    ws0 = [(rng.standard_normal((size, size)) * scale).astype(np.float32) for _ in range(depth)]
    results = {}

    x = mt.tensor(x0, requires_grad=True)
    ws = [mt.tensor(w, requires_grad=True) for w in ws0]

    def mt_step():
        y = x
        for w in ws:
            y = y @ w
        y.sum().backward()
        x.grad = None
        for w in ws:
            w.grad = None

    def numpy_step():
        # The same products by hand: forward, then dY_i-1 = dY_i W_i^T and dW_i = Y_i-1^T dY_i.
        activations = [x0]
        for w in ws0:
            activations.append(activations[-1] @ w)
        grad = np.ones_like(activations[-1])
        for w, a in zip(reversed(ws0), reversed(activations[:-1])):
            _ = a.T @ grad
            grad = grad @ w.T

    ours, theirs, ratio = paired_seconds(mt_step, numpy_step, repeats, warmup=1)
    results.update({"minitransformer fwd+bwd": ours, "numpy fwd+bwd": theirs, "ratio": ratio})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--matmul-size", type=int, default=1024)
    parser.add_argument("--matmul-depth", type=int, default=4)
    add_malloc_option(parser)
    args = parser.parse_args()
    print(f"machine: {machine_description()}")
    print(f"malloc: {apply_malloc_option(args)}")
    small = bench_elementwise(args.repeats)
    print(f"\n(a) chain of {CHAIN_OPS} elementwise ops on {SMALL[0]}x{SMALL[1]} float32 "
          f"(medians of {args.repeats} alternating runs)")
    for name, value in small.items():
        if not name.startswith("ratio"):
            print(f"  {name:26s} {value * 1e3:8.2f} ms")
    if "ratio fwd+bwd to torch" in small:
        print(f"  ratio to PyTorch eager (fwd+bwd): {small['ratio fwd+bwd to torch']:.2f}"
              "  (target <= 0.75)")
        print(f"  ratio to PyTorch eager (fwd):     {small['ratio fwd to torch']:.2f}")
    print(f"  ratio of forward to raw NumPy:    {small['ratio fwd to numpy']:.2f}")

    big = bench_matmul(args.matmul_size, args.matmul_depth, max(5, args.repeats // 3))
    n = args.matmul_size
    print(f"\n(b) chain of {args.matmul_depth} matmuls {n}x{n} float32, forward + backward")
    for name in ("minitransformer fwd+bwd", "numpy fwd+bwd"):
        print(f"  {name:26s} {big[name] * 1e3:8.2f} ms")
    print(f"  ratio to raw NumPy: {big['ratio']:.2f}  (target <= 1.1)")


if __name__ == "__main__":
    main()
