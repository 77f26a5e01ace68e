"""numexpr against the NumPy formulas, for the engine's hot elementwise chains (float32).

Each chain is written as the engine writes it today (NumPy, in place where the engine does)
and as one numexpr expression; the two are timed in turns, round after round, and the
median times and the median of the per-round ratios (NumPy / numexpr: above 1, numexpr is
faster) are printed, for numexpr on 1 thread and on 2. Each chain's results are checked
to agree first.

  tile exp:   the online softmax's P = exp(S - m_new) on one score tile, in place
              (ops/tiled_attention.py; the tile of block_sizes for (1, 8, 1024, 64)),
              and its rescaling acc = acc * alpha + P V's product (the product excluded)
  softmax:    exp(x - max) / sum on (16, 4, 64, 64) scores (the max and sum as NumPy's)
  gelu tanh:  0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) on (16, 64, 512)
              (numexpr has no erf: the exact GELU cannot be one expression)
  layer norm: (x - mean) * inv_std * w + b on (16, 64, 128), the statistics as NumPy's
  adamw:      the decay, m, v and parameter update of 1M parameters

Run: python -m benchmarks.numexpr_bench [--rounds N]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np

from benchmarks._timing import machine_description
from minitransformer.ops.tiled_attention import block_sizes

try:
    import numexpr as ne
except ImportError:
    ne = None

F32 = np.float32


def chains(rng: np.random.Generator) -> dict[str, tuple[Callable[[], object],
                                                        Callable[[], object]]]:
    """name -> (NumPy formula, numexpr formula), each a no-argument call on fixed data."""
    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(F32)

    bq, bk = block_sizes(1, 1024, 1024, workers=2)
    s0, row_max = normal(1, 8, bq, bk) * 3, normal(1, 8, bq, 1)
    shift = np.maximum(row_max, s0.max(axis=-1, keepdims=True))
    s = s0.copy()

    def tile_np() -> np.ndarray:
        np.copyto(s, s0)
        return np.exp(np.subtract(s, shift, out=s), out=s)

    def tile_ne() -> np.ndarray:
        np.copyto(s, s0)
        return ne.evaluate("exp(s - shift)", local_dict=dict(s=s, shift=shift), out=s,
                           casting="same_kind")

    acc0, pv, alpha = normal(1, 8, bq, 64), normal(1, 8, bq, 64), normal(1, 8, bq, 1)
    acc = acc0.copy()

    def rescale_np() -> np.ndarray:
        np.copyto(acc, acc0)
        np.multiply(acc, alpha, out=acc)
        return np.add(acc, pv, out=acc)

    def rescale_ne() -> np.ndarray:
        np.copyto(acc, acc0)
        return ne.evaluate("acc * alpha + pv", local_dict=dict(acc=acc, alpha=alpha, pv=pv),
                           out=acc, casting="same_kind")

    scores = normal(16, 4, 64, 64)

    def softmax_np() -> np.ndarray:
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))
        e /= e.sum(axis=-1, keepdims=True)
        return e

    def softmax_ne() -> np.ndarray:
        top = scores.max(axis=-1, keepdims=True)
        e = ne.evaluate("exp(scores - top)", local_dict=dict(scores=scores, top=top))
        total = e.sum(axis=-1, keepdims=True)
        return ne.evaluate("e / total", local_dict=dict(e=e, total=total), out=e,
                           casting="same_kind")

    x = normal(16, 64, 512)
    c, k = F32(math.sqrt(2 / math.pi)), F32(0.044715)
    half, one = F32(0.5), F32(1)

    def gelu_np() -> np.ndarray:
        u = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1 + np.tanh(u))

    def gelu_ne() -> np.ndarray:
        return ne.evaluate("half * x * (one + tanh(c * (x + k * x * x * x)))",
                           local_dict=dict(half=half, one=one, c=c, k=k, x=x))

    h, w, b = normal(16, 64, 128), normal(128), normal(128)

    def norm_np() -> np.ndarray:
        x_hat = h - h.mean(axis=-1, keepdims=True)
        inv_std = 1 / np.sqrt((x_hat * x_hat).mean(axis=-1, keepdims=True) + F32(1e-5))
        x_hat *= inv_std
        y = x_hat * w
        y += b
        return y

    def norm_ne() -> np.ndarray:
        mean = h.mean(axis=-1, keepdims=True)
        x_hat = ne.evaluate("h - mean", local_dict=dict(h=h, mean=mean))
        squares = ne.evaluate("x_hat * x_hat", local_dict=dict(x_hat=x_hat))
        inv_std = 1 / np.sqrt(squares.mean(axis=-1, keepdims=True) + F32(1e-5))
        return ne.evaluate("x_hat * inv_std * w + b",
                           local_dict=dict(x_hat=x_hat, inv_std=inv_std, w=w, b=b))

    n = 1 << 20
    p0, g = normal(n), normal(n) * F32(0.01)
    p, m, v = p0.copy(), np.zeros(n, F32), np.zeros(n, F32)
    lr, wd, b1, b2, eps, t = 6e-4, 0.1, 0.9, 0.95, 1e-8, 10

    def reset() -> None:  # the same state for each call (in both: the same cost)
        np.copyto(p, p0)
        m.fill(0.01)
        v.fill(0.001)

    def adamw_np() -> np.ndarray:
        reset()
        np.multiply(p, 1 - lr * wd, out=p)  # as optim/optimizers.py, in place
        np.multiply(m, b1, out=m)
        np.add(m, (1 - b1) * g, out=m)
        np.multiply(v, b2, out=v)
        np.add(v, (1 - b2) * g * g, out=v)
        step = lr / (1 - b1**t)
        denom = np.sqrt(v) / (1 - b2**t) ** 0.5 + eps
        return np.subtract(p, step * (m / denom), out=p)

    consts = dict(decay=F32(1 - lr * wd), b1=F32(b1), c1=F32(1 - b1), b2=F32(b2),
                  c2=F32(1 - b2), step=F32(lr / (1 - b1**t)),
                  bc2=F32((1 - b2**t) ** 0.5), eps=F32(eps))

    def adamw_ne() -> np.ndarray:
        reset()
        env = dict(consts, p=p, m=m, v=v, g=g)
        ne.evaluate("b1 * m + c1 * g", local_dict=env, out=m, casting="same_kind")
        ne.evaluate("b2 * v + c2 * g * g", local_dict=env, out=v, casting="same_kind")
        return ne.evaluate("p * decay - step * (m / (sqrt(v) / bc2 + eps))", local_dict=env,
                           out=p, casting="same_kind")

    return {"tile exp": (tile_np, tile_ne), "tile rescale": (rescale_np, rescale_ne),
            "softmax": (softmax_np, softmax_ne), "gelu tanh": (gelu_np, gelu_ne),
            "layer norm": (norm_np, norm_ne), "adamw": (adamw_np, adamw_ne)}


def paired(a: Callable[[], object], b: Callable[[], object], rounds: int,
           inner: int) -> tuple[float, float, float]:
    """Median per-call seconds of a and b, timed in turns, and the median ratio a / b."""
    ta, tb = [], []
    for i in range(rounds + 1):
        times = {}
        for fn in ((a, b) if i % 2 == 0 else (b, a)):
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            times[fn] = (time.perf_counter() - start) / inner
        if i:  # the first round warms up
            ta.append(times[a])
            tb.append(times[b])
    return (statistics.median(ta), statistics.median(tb),
            statistics.median(x / y for x, y in zip(ta, tb)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--inner", type=int, default=5)
    args = parser.parse_args()
    if ne is None:
        print("numexpr is not installed: nothing to compare")
        return
    print(f"machine: {machine_description()}, numexpr {ne.__version__}")
    rng = np.random.default_rng(0)
    for threads in (1, 2):
        ne.set_num_threads(threads)
        print(f"numexpr on {threads} thread(s): NumPy ms, numexpr ms, median ratio NumPy/numexpr")
        for name, (numpy_fn, numexpr_fn) in chains(rng).items():
            np.testing.assert_allclose(np.array(numpy_fn()), np.array(numexpr_fn()),
                                       rtol=2e-5, atol=1e-5, err_msg=name)
            a, b, ratio = paired(numpy_fn, numexpr_fn, args.rounds, args.inner)
            print(f"  {name:12s} {a * 1e3:7.3f} {b * 1e3:7.3f}   {ratio:5.2f}x")


if __name__ == "__main__":
    main()
