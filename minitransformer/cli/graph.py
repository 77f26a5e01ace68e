"""``minitransformer graph``: draw one forward/backward pass of a model with Graphviz.

    minitransformer graph --out graph.svg
    minitransformer graph --what encoder --collapse 2 --out encoder.pdf
    minitransformer graph --what coref --checkpoint runs/coref --out coref.svg

Without the ``dot`` program the DOT source is still written next to the output, and the
command says how to install Graphviz, then exits with status 1.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import graphviz
import numpy as np

import minitransformer as mt
import minitransformer.functional as F
from minitransformer.cli.common import CommandError
from minitransformer.viz import GraphvizNotFoundError, draw_graph, render
from minitransformer.viz.examples import EXAMPLES
from minitransformer.viz.render import FORMATS

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
    if len(values) == 1 and re.fullmatch(r"[+-]?\d+", values[0]):
        depth = int(values[0])
        if depth < 1:
            raise CommandError(f"--collapse {values[0]}: a depth must be at least 1 (or give "
                               "module paths, e.g. --collapse layers.0)")
        return depth
    return values


def _output(args: argparse.Namespace) -> tuple[Path, str]:
    """The picture's path and format, checked before any work: a folder gets graph.<fmt>
    inside it; an extension must name a format, and agree with --format."""
    out = Path(args.out)
    if out.is_dir():
        out = out / f"graph.{args.format or 'svg'}"
    suffix = out.suffix[1:].lower()
    if suffix and suffix not in FORMATS:
        raise CommandError(f"--out {args.out}: unknown extension '.{suffix}'; a graph is "
                           f"written as {', '.join('.' + f for f in FORMATS)}")
    if suffix and args.format and suffix != args.format:
        raise CommandError(f"--out {args.out} and --format {args.format} disagree; "
                           "give one of them")
    return out, args.format or suffix or "svg"


def _graph(args: argparse.Namespace) -> int:
    out, fmt = _output(args)
    collapse = _collapse(args.collapse)
    if collapse is not None and args.what not in ("encoder", "coref"):
        raise CommandError(f"--collapse applies to --what encoder and coref (a model with "
                           f"modules), not to --what {args.what}")
    if args.checkpoint is not None and args.what != "coref":
        raise CommandError(f"--checkpoint applies to --what coref only, not to --what {args.what}")
    try:
        if args.what == "coref":
            graph = coref_graph(args.checkpoint, collapse if collapse is not None else 2)
        elif args.what == "encoder":
            graph = EXAMPLES["encoder"](collapse=collapse if collapse is not None else 3)
        else:
            graph = EXAMPLES[args.what]()
    except ValueError as exc:
        if not str(exc).startswith("collapse"):
            raise
        raise CommandError(f"--{exc}") from None
    name = out.name[: -len(out.suffix)] if out.suffix else out.name
    try:
        path = render(graph, name, format=fmt, directory=out.parent)
    except GraphvizNotFoundError as exc:  # the DOT source is written: the error says where
        raise CommandError(str(exc)) from None
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
