"""Entry point: ``minitransformer <command> ...``."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    import minitransformer as mt

    x = mt.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    w = mt.tensor([[0.5], [-1.0], [0.25]], requires_grad=True)
    y = (x @ w).tanh().sum()
    y.backward()
    print(f"y = tanh(x @ w) = {y.item():.4f}")
    print(f"dy/dx = {x.grad.numpy().round(4).tolist()}")
    print(f"dy/dw = {w.grad.numpy().round(4).ravel().tolist()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minitransformer",
        description="Train, inspect and draw a small self-attention model.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the demo")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
