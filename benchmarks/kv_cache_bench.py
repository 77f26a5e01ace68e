"""What the KV cache saves: generating N tokens with and without it, same model, same run.

Without the cache every new token runs the model over the whole prefix again, so N tokens
cost about N^2 / 2 positions of work; with it, each token runs one position through the
layers and attends over the cached keys and values (N positions of layer work, plus the
attention over the prefix). A GPT of 4 layers, d_model 128, 4 heads, float32, one
sequence, generating 128 and 512 tokens from a one-token prompt; greedy, so both paths
write the same tokens (checked). Median per-token time of a few runs, the two paths
timed in alternation, and the median ratio of the pairs.

Run: python -m benchmarks.kv_cache_bench  [--quick]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import minitransformer as mt
from benchmarks._timing import (
    add_malloc_option,
    apply_malloc_option,
    machine_description,
    paired_seconds,
)
from minitransformer import tuning
from minitransformer.gpt.model import GPT, GPTConfig

CONFIG = dict(vocab_size=64, n_layer=4, n_head=4, n_embd=128, dim_feedforward=512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, for a smoke test")
    add_malloc_option(parser)
    args = parser.parse_args()
    allocator = apply_malloc_option(args)
    print(f"machine: {machine_description()}; {allocator}")
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    mt.manual_seed(0)
    model = GPT(GPTConfig(block_size=513, **CONFIG))
    repeats = 1 if args.quick else 3
    print(f"GPT {CONFIG}, float32, greedy, median of {repeats} paired runs")
    print("BLAS single-threaded, as in training: at batch 1 threads only add overhead, and on "
          "a busy machine a lot of it")
    print(f"{'tokens':>7} {'no cache ms/token':>18} {'cache ms/token':>15} {'speed-up':>9}")
    with tuning.single_threaded_blas():
        _measure(model, repeats)
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def _measure(model: GPT, repeats: int) -> None:
    for tokens in (128, 512):
        with_cache = model.generate([1], tokens, temperature=0, use_cache=True)
        without = model.generate([1], tokens, temperature=0, use_cache=False)
        assert np.array_equal(with_cache.ids, without.ids), "the two paths disagree"
        slow, fast, ratio = paired_seconds(
            lambda n=tokens: model.generate([1], n, temperature=0, use_cache=False),
            lambda n=tokens: model.generate([1], n, temperature=0, use_cache=True),
            repeats=repeats, warmup=0)
        print(f"{tokens:>7} {1e3 * slow / tokens:>18.2f} {1e3 * fast / tokens:>15.2f} "
              f"{ratio:>8.1f}x")


if __name__ == "__main__":
    main()
