"""``minitransformer compare``: self-attention against an LSTM and a CNN, measured.

Wired into the command line by ``add_compare_command(subparsers)`` in ``cli/main.py``.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_compare_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``compare`` (and its handler) on the CLI's sub-command parsers."""
    from minitransformer.cli.common import non_negative_int  # here: cli imports this module

    parser = subparsers.add_parser(
        "compare",
        help="compare self-attention with an LSTM and a CNN (accuracy, speed, attention)",
        description="Train a self-attention, a BiLSTM and a convolutional coreference model "
                    "of about the same size; measure held-out accuracy per antecedent "
                    "distance, training speed, one layer's time against sequence length, and "
                    "how often attention lands on the antecedent. Writes results.md, "
                    "results.json and PNG plots to --out.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="a smaller run (a few minutes on a laptop CPU)")
    parser.add_argument("--out", default="runs/compare", metavar="DIR",
                        help="where to write the results (default: runs/compare)")
    parser.add_argument("--force", action="store_true",
                        help="replace results and plots in --out that minitransformer did "
                             "not write there")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="data, weights and order (default 0)")
    parser.set_defaults(handler=run_compare_command)
    return parser


def run_compare_command(args: argparse.Namespace) -> int:
    from minitransformer.cli.common import refuse_to_overwrite
    from minitransformer.coref.compare import OUTPUT_FILES, quick_or_full, run_comparison

    config = quick_or_full(args.quick, args.seed)
    refuse_to_overwrite(args.out, list(OUTPUT_FILES), args.force)  # before any training
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        print(f"minitransformer compare: cannot create output directory {args.out!r}: {exc}",
              file=sys.stderr)
        return 2

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results = run_comparison(config, args.out, log=log)
    print(f"wrote results.md, results.json and plots to {args.out} "
          f"({results['seconds']:.0f} s)")
    return 0
