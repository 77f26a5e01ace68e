"""Pieces every sub-command shares: the one-line error and the argument types."""

from __future__ import annotations

import argparse
import os

from minitransformer import backend, files


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


def epoch_count(text: str) -> int:
    """``--epochs``: from 1 to :data:`minitransformer.runs.MAX_EPOCHS`."""
    from minitransformer.runs import MAX_EPOCHS

    value = positive_int(text)
    if value > MAX_EPOCHS:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_EPOCHS} epochs, got {value} (the default runs take 8 to 12)")
    return value


def add_device(parser: argparse.ArgumentParser) -> None:
    # None: main() resolves $MINITRANSFORMER_DEVICE then, refusing a value that is no device.
    parser.add_argument("--device", choices=list(backend.DEVICES), default=None,
                        help="where to compute (default: $MINITRANSFORMER_DEVICE or cpu; "
                             "cuda needs CuPy and an NVIDIA GPU)")


def check_run_directory(out: str, checkpoint_file: str) -> None:
    """Fail before any training if ``out`` cannot hold a run: a file, a checkpoint path
    that is a folder, or a folder we may not write into."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise CommandError(f"--out {out} is a file; a run needs a directory (give another --out)")
    checkpoint = os.path.join(out, checkpoint_file)
    if os.path.isdir(checkpoint):
        raise CommandError(f"{checkpoint} is a directory, so no checkpoint can be written "
                           "there; remove it or give another --out")
    files.check_writable(out)  # OSError now, on a read-only disk, not after training
    files.remove_stale_temporaries(checkpoint)  # what a save killed midway left
