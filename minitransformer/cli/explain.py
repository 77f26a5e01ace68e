"""``minitransformer explain``: a page that steps through one forward and backward pass.

    minitransformer explain --out explain.html               # the article's sentence
    minitransformer explain --what mha --out mha.html        # two heads, a head selector

Writes one self-contained HTML file (graph, styles, script and numbers inline; nothing is
fetched when it opens). Open it and press the right arrow: the forward pass, then the
gradient walking back until it reaches the parameters. Needs Graphviz's ``dot``.
"""

from __future__ import annotations

import argparse
from typing import Any

from minitransformer.cli.common import CommandError


def coref_trace(seed: int = 0) -> Any:
    """The coreference model on the article's sentence, shrunk to d = 4 and one layer, with
    fresh weights (the point is the flow of the gradient, not the answer): its trace."""
    import numpy as np

    import minitransformer as mt
    import minitransformer.functional as F
    from minitransformer.coref.data import ARTICLE_SENTENCE, build_vocabulary, tokenize
    from minitransformer.coref.models.coref import CorefConfig, CorefModel

    mt.manual_seed(seed)
    vocabulary = build_vocabulary()
    model = CorefModel(CorefConfig(vocab_size=len(vocabulary), d_model=4, nhead=2,
                                   num_layers=1, dim_feedforward=8))
    tokens = tokenize(ARTICLE_SENTENCE)
    ids = np.array([vocabulary.encode(tokens)])  # (1, T)
    pronoun = np.array([tokens.index("it")])  # (1,)
    with F.composed_attention():  # every step of attention its own node
        scores, _ = model(ids, pronoun, np.zeros(ids.shape, dtype=bool))  # (1, T)
        loss = F.cross_entropy(scores, np.array([tokens.index("animal")]))
    loss.name = "loss"
    trace = mt.trace_backward(loss, model=model)
    trace.tokens = tokens  # heatmap rows and columns labelled by token
    return trace


def _explain(args: argparse.Namespace) -> int:
    from minitransformer.viz.explain import GraphvizMissingError, run_example, write_explain

    trace = coref_trace() if args.what == "coref" else run_example(args.what)
    try:
        path = write_explain(args.out, trace, title=f"minitransformer explain: {args.what}")
    except GraphvizMissingError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    frames = path.read_text(encoding="utf-8").count('"phase":')
    print(f"wrote {path}: {frames} frames; open it in a browser and press the right arrow")
    return 0


def add_explain_command(commands: Any) -> None:
    from minitransformer.viz.explain import WHAT

    explain = commands.add_parser(
        "explain", help="write a page that steps through the forward and backward pass",
        description="Write one self-contained HTML page that walks through a small model's "
                    "forward pass and then its backward pass, one node at a time: the "
                    "graph with the current node highlighted, the formula, the values, the "
                    "gradient that arrived and what each node sends on.")
    explain.add_argument("--what", choices=(*WHAT, "coref"), default="sentence",
                         help="which model (default: sentence, the article's sentence "
                              "through one head at d = 4, loss -log A[it, animal])")
    explain.add_argument("--out", default="explain.html", metavar="FILE",
                         help="the page to write (default: explain.html)")
    explain.set_defaults(handler=_explain)
