"""Pieces every sub-command shares: the one-line error and the argument types."""

from __future__ import annotations

import argparse
import difflib
import os
import string
from collections.abc import Callable, Sequence

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


# What the coreference tokenizer drops on purpose: spaces and punctuation (quotes, dashes).
_PUNCTUATION = frozenset(string.punctuation) | frozenset("\u2018\u2019\u201c\u201d\u00ab\u00bb"
                                                         "\u2013\u2014\u2026\u02bc")


def coref_keeps(character: str) -> bool:
    """Whether the coreference tokenizer reads ``character`` (a letter or digit) or drops
    it knowingly (space, punctuation); anything else (an emoji, a symbol) it would drop
    without a word."""
    return character.isalnum() or character.isspace() or character in _PUNCTUATION


def refuse_unreadable(text: str, reads: Callable[[str], bool], known: Sequence[str],
                      what: str) -> None:
    """CommandError naming the first character of ``text`` that the tokenizer would drop
    silently (``reads`` says which it reads), the word it sits in, and the closest words
    the model knows (difflib)."""
    for chunk in text.split():
        bad = [c for c in chunk if not reads(c)]
        if not bad:
            continue
        rest = "".join(c for c in chunk if reads(c)).lower().strip(string.punctuation)
        close = difflib.get_close_matches(rest, list(known), n=3, cutoff=0.6) if rest else []
        if close:
            hint = f"closest known words: {', '.join(close)}"
        elif what == "the sentence":
            hint = "`minitransformer vocab` lists every known word"
        else:
            hint = "the story language has lowercase words and full stops only"
        raise CommandError(f"{what} holds {bad[0]!r} (in {chunk!r}), which the model cannot "
                           f"read and would drop silently; {hint}")


def figure_destination(path: str, default_name: str,
                       formats: tuple[str, ...] = ("png", "svg", "pdf")) -> tuple[str, str]:
    """Where a figure asked for at ``path`` goes, and a note saying so when that is not
    ``path`` itself: a directory gets ``default_name`` inside it, a name without an
    extension gets ``.png``; an extension no format has is a CommandError. Call it before
    the work."""
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        target = os.path.join(path, default_name)
        return target, f"{path} is a directory: the figure is {target}"
    if not os.path.splitext(path)[1]:
        return path + ".png", f"{path} has no extension: the figure is {path}.png (PNG)"
    try:
        files.check_figure_path(path, formats)
    except files.UnknownFormatError as exc:
        raise CommandError(f"--plot {exc}") from None
    return path, ""


def refuse_to_overwrite(directory: str, names: list[str], force: bool,
                        way_out: str = "give another --out, or --force to replace {it}") -> None:
    """CommandError when ``directory`` holds a file of one of ``names`` that minitransformer
    did not write there (its record says which it did), unless ``force``."""
    from minitransformer.runs import foreign_files

    theirs = foreign_files(directory, names) if os.path.isdir(directory) else []
    if theirs and not force:
        it = "it" if len(theirs) == 1 else "them"
        raise CommandError(f"{directory} holds {', '.join(theirs)}, which minitransformer did "
                           f"not write: it will not overwrite {it}; "
                           + way_out.format(it=it))
