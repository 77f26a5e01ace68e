"""Entry point: the ``minitransformer`` command and its sub-commands.

The coreference task (minitransformer/coref/):
    minitransformer train --epochs 8 --seed 0 --out runs/coref    train, checkpoint per epoch
    minitransformer vocab runs/coref                              the words a model knows
    minitransformer attend runs/coref "The animal didn't cross the street because it was too tired."
    minitransformer demo                                          train (or reuse), then show
    minitransformer compare --out runs/compare                    vs an LSTM and a CNN
Looking inside the engine:
    minitransformer graph --what encoder --out graph.svg          the computation graph
    minitransformer explain --what attention --out explain.html   step through fwd and bwd
    minitransformer exercise list | start DIR | check [NAME]      write the backwards yourself
A tiny GPT (minitransformer/gpt/):
    minitransformer gpt train | sample | attend

Bad arguments exit with status 2 (argparse's usage message); a bad checkpoint, unknown
words, a sentence without a clear pronoun or any other expected problem exit with status 1
and one line naming it, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from minitransformer import _startup, backend, tuning
from minitransformer.cli.common import CommandError
from minitransformer.cli.exercise import add_exercise_command
from minitransformer.cli.explain import add_explain_command
from minitransformer.cli.gpt import add_gpt_command
from minitransformer.cli.graph import add_graph_command
from minitransformer.coref.cli.commands import add_coref_commands
from minitransformer.coref.cli.compare import add_compare_command
from minitransformer.coref.data import UnknownWordError
from minitransformer.coref.models.coref import SentenceError
from minitransformer.errors import CheckpointError, DeviceError

# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minitransformer",
        description="A small autograd engine and Transformer: train a self-attention "
                    "model to resolve pronouns and see what it attends to, draw and step "
                    "through computation graphs, do the exercises, train a tiny GPT.",
    )
    from minitransformer import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Not required: with no command at all, main() prints this help.
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    add_coref_commands(commands)  # train, attend, demo: the coreference task
    add_graph_command(commands)  # computation graphs with Graphviz
    add_compare_command(commands)  # self-attention against an LSTM and a CNN
    add_exercise_command(commands)  # write the backward passes yourself, get them checked
    add_explain_command(commands)  # a page stepping through forward and backward
    add_gpt_command(commands)  # a tiny GPT: train, sample, attend
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: bad arguments, 1: other errors,
    130: interrupted, with one line at any moment, even while the parser is built)."""
    args = None
    try:
        _startup.end_of_start()  # Ctrl-C is a KeyboardInterrupt again, reported below
        parser = build_parser()
        args = parser.parse_args(argv)
        return _run(parser, args)
    except KeyboardInterrupt:
        print(f"\n{interrupted_message(args)}", file=sys.stderr)
        return 130


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command is None:  # `minitransformer` alone: say what there is to do
        parser.print_help()
        return 0
    tuning.tune_for_training()  # steps reuse freed arrays instead of fresh pages
    try:
        if hasattr(args, "device"):  # an unknown $MINITRANSFORMER_DEVICE is an error too
            args.device = backend.normalize_device(args.device)
        if getattr(args, "device", "cpu") != "cpu":  # a missing GPU is said before any work
            backend.array_module(args.device)
        status = args.handler(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return status
    except BrokenPipeError:  # `... --json | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141  # 128 + SIGPIPE, as a program killed by the closed pipe
    except (CheckpointError, UnknownWordError, SentenceError, DeviceError, CommandError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"minitransformer {args.command}: error: {message}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file that cannot be written or read: a full or read-only disk
        print(f"minitransformer {args.command}: error: {describe_os_error(exc)}",
              file=sys.stderr)
        return 1
    except Exception as exc:  # the last resort: still one line, never a traceback
        message = " ".join(str(exc).split())[:300]
        print(f"minitransformer {args.command}: internal error ({type(exc).__name__}: "
              f"{message}); please report this, with the command you ran", file=sys.stderr)
        return 1


def interrupted_message(args: argparse.Namespace | None) -> str:
    """The line for Ctrl-C: how to go on where a run was training, nothing else elsewhere."""
    command = getattr(args, "command", None)
    if command == "gpt" and getattr(args, "gpt_command", None) == "train":
        command = "gpt train"
    if command not in ("train", "gpt train", "demo"):
        return "interrupted"
    out = args.out
    if not os.path.exists(os.path.join(out, "checkpoint.npz")):
        return f"interrupted before the first checkpoint in {out}: nothing to resume"
    if command == "demo":
        return f"interrupted (`minitransformer demo --out {out}` goes on with its training)"
    return f"interrupted (the run goes on with `minitransformer {command} --resume --out {out}`)"


def describe_os_error(exc: OSError) -> str:
    """One line: what could not be done to which file, and why (a full disk...)."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        reason += " (free some space, or write elsewhere with --out)"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason += " (write elsewhere with --out)"
    if exc.filename is not None:
        return f"{exc.filename}: {reason}"
    return reason


if __name__ == "__main__":
    sys.exit(main())
