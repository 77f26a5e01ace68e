"""Pieces every sub-command shares: the one-line error and the argument types."""

from __future__ import annotations

import argparse
import os

from minitransformer import backend


class CommandError(Exception):
    """A problem to report in one line with exit status 1."""


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def add_device(parser: argparse.ArgumentParser) -> None:
    default = backend.device_name(os.environ.get("MINITRANSFORMER_DEVICE", "cpu")) or "cpu"
    parser.add_argument("--device", choices=list(backend.DEVICES), default=default,
                        help="where to compute (default: $MINITRANSFORMER_DEVICE or cpu; "
                             "cuda needs CuPy and an NVIDIA GPU)")
