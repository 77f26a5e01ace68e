"""``minitransformer graph``: draw one forward/backward pass of a model with Graphviz.

    minitransformer graph --out graph.svg
    minitransformer graph --what encoder --collapse 2 --out encoder.pdf
    minitransformer graph --what coref --checkpoint runs/coref --out coref.svg

Without the ``dot`` program the DOT source is still written next to the output, and the
command says how to install Graphviz, then exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import graphviz
import numpy as np

import minitransformer as mt
import minitransformer.functional as F
from minitransformer.viz import GraphvizNotFoundError, draw_graph, render
from minitransformer.viz.examples import EXAMPLES

WHAT = ("attention", "mha", "encoder", "coref", "backward")


def coref_graph(checkpoint: str | None, collapse: Any) -> graphviz.Digraph:
    """The coreference model resolving the article's sentence: forward, loss, backward.

    With a checkpoint, its trained weights and vocabulary; without, a fresh model.
    """
    from minitransformer.coref.data import ARTICLE_SENTENCE, build_vocabulary, tokenize
    from minitransformer.coref.models.coref import CorefConfig, CorefModel
    from minitransformer.coref.training import load_run

    if checkpoint is not None:
        run = load_run(checkpoint)
        model, vocabulary = run.model, run.vocabulary
    else:
        mt.manual_seed(0)
        vocabulary = build_vocabulary()
        model = CorefModel(CorefConfig(vocab_size=len(vocabulary)))
    tokens = tokenize(ARTICLE_SENTENCE)
    ids = np.array([vocabulary.encode(tokens)])  # (1, T)
    pronoun = np.array([tokens.index("it")])  # (1,)
    scores, _ = model(ids, pronoun, np.zeros(ids.shape, dtype=bool))  # (1, T)
    loss = F.cross_entropy(scores, np.array([tokens.index("animal")]))
    loss.name = "loss"
    loss.backward()
    return draw_graph(loss, model=model, collapse=collapse, show_grad=True)


def _collapse(values: list[str] | None) -> list[str] | int | None:
    """``--collapse 2`` is a depth; ``--collapse layers.0 layers.1`` are module paths."""
    if not values:
        return None
    if len(values) == 1 and values[0].isdigit():
        return int(values[0])
    return values


def _graph(args: argparse.Namespace) -> int:
    out = Path(args.out)
    fmt = args.format or (out.suffix[1:] if out.suffix[1:] in ("svg", "png", "pdf") else "svg")
    collapse = _collapse(args.collapse)
    if args.what == "coref":
        graph = coref_graph(args.checkpoint, collapse if collapse is not None else 2)
    elif args.what == "encoder":
        graph = EXAMPLES["encoder"](collapse=collapse if collapse is not None else 3)
    else:
        graph = EXAMPLES[args.what]()
    name = out.name[: -len(out.suffix)] if out.suffix else out.name
    try:
        path = render(graph, name, format=fmt, directory=out.parent)
    except GraphvizNotFoundError as exc:
        print(f"minitransformer graph: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} (and its DOT source {path.with_suffix('.dot')})")
    return 0


def add_graph_command(commands: Any) -> None:
    graph = commands.add_parser(
        "graph", help="draw the computation graph of one forward/backward pass",
        description="Draw what the engine records for one forward and backward pass of a "
                    "model on a small input: ops, tensors with names and shapes, gradient "
                    "norms, modules as clusters.")
    graph.add_argument("--what", choices=WHAT, default="attention",
                       help="which model (default: attention; backward draws the graph of "
                            "the gradient itself, built with create_graph=True)")
    graph.add_argument("--checkpoint", metavar="CKPT",
                       help="for --what coref: a run directory or checkpoint to draw")
    graph.add_argument("--collapse", nargs="+", metavar="PATH",
                       help="module paths to draw as single nodes, or one number: a depth")
    graph.add_argument("--format", choices=("svg", "png", "pdf"),
                       help="picture format (default: from --out's suffix, else svg)")
    graph.add_argument("--out", default="graph.svg", metavar="FILE",
                       help="the picture to write (default: graph.svg)")
    graph.set_defaults(handler=_graph)
