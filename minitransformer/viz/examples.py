"""Ready-made drawings: one forward and backward pass through each attention layer.

Each function runs a tiny model (batch 1, 4 tokens, 8 features) on random input, takes a
stand-in loss (the mean squared error against a random target), runs ``backward`` and
returns the drawing, with gradient norms on the parameters. ``minitransformer graph
--what NAME`` renders them; :data:`EXAMPLES` maps those names to the functions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import graphviz

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import nn
from minitransformer.tensor import Tensor
from minitransformer.trace import trace_backward
from minitransformer.viz.graph import draw_graph

BATCH, TOKENS, FEATURES = 1, 4, 8


def _input_and_target(seed: int) -> tuple[Tensor, Tensor]:
    """Reseed (layer weights come from the default generator too), then draw x and target."""
    mt.manual_seed(seed)
    x = mt.randn(BATCH, TOKENS, FEATURES, requires_grad=True)  # (B, T, E)
    x.name = "x"
    target = mt.randn(BATCH, TOKENS, FEATURES)  # (B, T, E)
    target.name = "target"
    return x, target


def _loss(output: Tensor, target: Tensor) -> Tensor:
    loss = F.mse_loss(output, target)
    loss.name = "loss"
    return loss


def attention_graph(seed: int = 0) -> graphviz.Digraph:
    """Single-head self-attention: Q, K, V projections, softmax(QK^T / sqrt(d)) V."""
    x, target = _input_and_target(seed)
    attention = nn.Attention(FEATURES)
    z, _ = attention(x)  # (B, T, E)
    loss = _loss(z, target)
    trace = trace_backward(loss, model=attention)  # the gradient norm at every node
    return draw_graph(loss, model=attention, show_grad=True, show_values=True, trace=trace)


def mha_graph(seed: int = 0, num_heads: int = 2) -> graphviz.Digraph:
    """Multi-head self-attention: the heads split, attend, and merge back."""
    x, target = _input_and_target(seed)
    attention = nn.MultiHeadAttention(FEATURES, num_heads)
    out, _ = attention(x, need_weights=False)  # (B, T, E)
    loss = _loss(out, target)
    loss.backward()
    return draw_graph(loss, model=attention, show_grad=True)


def encoder_graph(seed: int = 0, num_layers: int = 2,
                  collapse: list[str] | int | None = 3) -> graphviz.Digraph:
    """A Transformer encoder. Every sub-layer (``layers.0.self_attn``, ``layers.0.norm1``,
    ...) is collapsed to one node by default: the full graph has hundreds of ops."""
    x, target = _input_and_target(seed)
    layer = nn.TransformerEncoderLayer(FEATURES, nhead=2, dim_feedforward=2 * FEATURES,
                                       batch_first=True, dropout=0.0)
    encoder = nn.TransformerEncoder(layer, num_layers)
    out = encoder(x)  # (B, T, E)
    loss = _loss(out, target)
    loss.backward()
    return draw_graph(loss, model=encoder, collapse=collapse, show_grad=True)


def backward_graph(seed: int = 0) -> graphviz.Digraph:
    """The computation of dloss/dx through single-head attention.

    ``backward(create_graph=True)`` records the backward pass as ops too, so ``x.grad``
    has a graph of its own: every gradient formula, applied to values saved by the forward
    pass (those forward ops sit inside their module clusters; the backward ops outside).
    Drawn with the loss, backward ops as hexagons and the gradients dZ, dA, dS_hat, dS,
    dQ, dK, dV in their own colour; kept within 1,600 px on its longer side at 96 dpi
    (tests/test_viz.py measures it).
    """
    x, target = _input_and_target(seed)
    attention = nn.Attention(FEATURES)
    z, _ = attention(x)  # (B, T, E)
    loss = _loss(z, target)
    loss.backward(create_graph=True)
    # compact: shape-only ops ride on the arrows and unnamed intermediates are left out;
    # forward=loss: what is not in the loss's history is the backward pass, drawn apart
    graph = draw_graph(x.grad, loss, model=attention, forward=loss, compact=True)
    graph.graph_attr["size"] = "16.5,16.5"  # inches: scaled down, if wider, to 1,584 px
    return graph


EXAMPLES: dict[str, Callable[..., graphviz.Digraph]] = {
    "attention": attention_graph,
    "mha": mha_graph,
    "encoder": encoder_graph,
    "backward": backward_graph,
}


def write_docs_figures(docs: str | os.PathLike[str]) -> list[Path]:
    """Render every drawing of :data:`EXAMPLES` to ``docs/img/graphs/NAME.svg``, keeping the DOT
    source next to it as ``NAME.dot`` (the stale-figure test compares that source with what
    the current code draws). Needs Graphviz's ``dot``; returns the paths written."""
    from minitransformer.viz.render import render

    paths = []
    for name, make in EXAMPLES.items():
        svg = render(make(), name, directory=Path(docs) / "img" / "graphs")
        paths += [svg.with_suffix(".dot"), svg]
    return paths


NUMBER = re.compile(r"\d+\.\d+(?:e[+-]?\d+)?")
_NODE = re.compile(r'^\s*(?P<id>\w+) \[label="(?P<label>(?:[^"\\]|\\.)*)"')
_EDGE = re.compile(r"^\s*(?P<tail>\w+) -> (?P<head>\w+)")
_CLUSTER = re.compile(r'^\s*subgraph "(?P<name>cluster_[^"]*)" \{')


def dot_structure(source: str) -> tuple[dict[str, tuple[str, str]], set[tuple[str, str]]]:
    """What a DOT drawing shows, without its styling or measured values.

    Returns ``(nodes, edges)``: ``nodes`` maps each node id to ``(cluster, label)``, with
    every decimal number in the label replaced by ``#`` (a gradient norm may differ in its
    last digit between machines; a shape or a name may not); ``edges`` is the set of
    ``(tail, head)`` pairs. Two sources with equal structures draw the same graph.
    """
    nodes: dict[str, tuple[str, str]] = {}
    edges: set[tuple[str, str]] = set()
    clusters: list[str] = []
    for line in source.splitlines():
        if (cluster := _CLUSTER.match(line)) is not None:
            clusters.append(cluster["name"])
        elif line.strip() == "}" and clusters:
            clusters.pop()
        elif (edge := _EDGE.match(line)) is not None:
            if "style=invis" not in line:  # layout only: dot draws nothing for it
                edges.add((edge["tail"], edge["head"]))
        elif (node := _NODE.match(line)) is not None:
            where = "/".join(clusters)
            nodes[node["id"]] = (where, NUMBER.sub("#", node["label"]))
    return nodes, edges
