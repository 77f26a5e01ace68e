"""``minitransformer explain``: a page that steps through one forward and backward pass.

    minitransformer explain --out explain.html
    minitransformer explain --what mha --out mha.html

Writes one self-contained HTML file (graph, styles, script and numbers inline; nothing is
fetched when it opens). Open it and press the right arrow: the forward pass, then the
gradient walking back until it reaches the parameters. Needs Graphviz's ``dot``.
"""

from __future__ import annotations

import argparse
from typing import Any

from minitransformer.cli.common import CommandError


def _explain(args: argparse.Namespace) -> int:
    from minitransformer.viz.explain import GraphvizMissingError, run_example, write_explain

    trace = run_example(args.what)
    try:
        path = write_explain(args.out, trace, title=f"minitransformer explain: {args.what}")
    except GraphvizMissingError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    frames = len(trace.steps) + sum(1 for f in trace.forward if f.op is not None)
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
    explain.add_argument("--what", choices=WHAT, default="attention",
                         help="which model (default: attention, single head, d = 4)")
    explain.add_argument("--out", default="explain.html", metavar="FILE",
                         help="the page to write (default: explain.html)")
    explain.set_defaults(handler=_explain)
