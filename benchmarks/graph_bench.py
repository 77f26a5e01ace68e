"""How long drawing takes: building the graphviz.Digraph of a 10,000-node graph.

Only the DOT text is built (``draw_graph``); running ``dot`` to lay it out is Graphviz's
business and is not timed. The graph is a stack of small layers, y = tanh(y @ W_i + b_i),
with every W_i and b_i a named parameter, so that labels, colours and edges all get built.

Run: python -m benchmarks.graph_bench   (prints the median over several runs; target < 1 s)
"""

from __future__ import annotations

import argparse

import numpy as np

import minitransformer as mt
from benchmarks._timing import machine_description, median_seconds
from minitransformer.viz import draw_graph

NODES_PER_LAYER = 8  # W, b, MatMul, its result, Add, its result, Tanh, its result


def layered_graph(nodes: int = 10_000) -> tuple[mt.Tensor, dict[str, mt.Tensor]]:
    """A loss over ``nodes // 8`` layers (about ``nodes`` nodes), and its named parameters."""
    generator = np.random.default_rng(0)
    y = mt.randn(2, 4, generator=generator, requires_grad=True)
    params: dict[str, mt.Tensor] = {}
    for i in range(nodes // NODES_PER_LAYER):
        w = params[f"layers.{i}.weight"] = mt.randn(4, 4, generator=generator, requires_grad=True)
        b = params[f"layers.{i}.bias"] = mt.zeros(4, requires_grad=True)
        y = (y @ w + b).tanh()  # (2, 4)
    return y, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    output, params = layered_graph(args.nodes)
    graph = draw_graph(output, params=params, show_grad=True, show_saved=True)
    drawn = sum(1 for line in graph.body if "[label=" in line)
    seconds = median_seconds(lambda: draw_graph(output, params=params, show_grad=True,
                                                show_saved=True),
                             repeats=args.repeats, warmup=1)
    print(f"machine: {machine_description()}")
    print(f"draw_graph on {drawn} nodes (legend included): {seconds * 1e3:.1f} ms "
          f"(median of {args.repeats}; target < 1000 ms)")


if __name__ == "__main__":
    main()
