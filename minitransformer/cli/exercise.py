"""``minitransformer exercise list | start DIR | check [NAME] | hint NAME``: write the
backward passes yourself, and have them checked.

Wired into the command line by ``add_exercise_command(subparsers)`` in ``cli/main.py``.
Exit status: 0 when every checked exercise passes, 1 when one does not (or a workspace
cannot be written), 2 for bad arguments (an unknown exercise).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOCS = "`minitransformer exercise hint N`"  # the text ships with the package
LABELS = {"pass": "PASS", "todo": "TODO", "fail": "FAIL", "missing": "MISSING"}


def add_exercise_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``exercise`` (and its three sub-commands) on the CLI's sub-command parsers."""
    parser = subparsers.add_parser(
        "exercise", help="exercises: write each backward of attention yourself, get it checked",
        description="Exercises in the order the docs teach: you write the backward of "
                    "each building block of attention, and the checker compares it with "
                    "minitransformer's own ops and names the common mistakes. The problems "
                    "and hints: `minitransformer exercise hint N` (also docs/exercises.md).")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="the exercises, and which ones your files pass")
    listing.add_argument("--dir", default=".", metavar="DIR",
                         help="your workspace (default: the current directory)")

    start = actions.add_parser(
        "start", help="copy the exercise files into a directory of your own",
        description="Copy the exercise files into DIR (created if needed). Refuses to "
                    "overwrite exercise files already there.")
    start.add_argument("dir", metavar="DIR")

    check = actions.add_parser(
        "check", help="check one exercise, or all of them",
        description="Check your backward passes against minitransformer's own ops on "
                    "several shapes and edge cases. Exits 0 only when every checked "
                    "exercise passes.")
    check.add_argument("name", nargs="?", metavar="NAME",
                       help="an exercise's name or number (default: all of them)")
    check.add_argument("--dir", default=".", metavar="DIR",
                       help="your workspace (default: the current directory)")
    check.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                       help="how long each exercise file may run (default: 10)")

    hint = actions.add_parser(
        "hint", help="print an exercise's problem and hints (the text of docs/exercises.md)",
        description="Print the problem and the hints of exercise NAME, as docs/exercises.md "
                    "has them (the text ships with the package).")
    hint.add_argument("name", metavar="NAME", help="an exercise's name or number")
    hint.add_argument("--solution", action="store_true", help="print its solution too")
    parser.set_defaults(handler=run_exercise_command)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def run_exercise_command(args: argparse.Namespace) -> int:
    from minitransformer import exercises

    try:
        if args.action == "start":
            return _start(args.dir)
        if args.action == "list":
            return _list(Path(args.dir))
        if args.action == "hint":
            print(exercises.section(exercises.find(args.name), solution=args.solution))
            return 0
        chosen = [exercises.find(args.name)] if args.name else list(exercises.EXERCISES)
    except exercises.ExerciseError as exc:
        print(f"minitransformer exercise {args.action}: error: {exc}", file=sys.stderr)
        return 2 if args.action in ("check", "hint") else 1
    return _check(Path(args.dir), chosen, named=bool(args.name), timeout=args.timeout)


def _start(directory: str) -> int:
    from minitransformer import exercises

    written = exercises.start(directory)
    print(f"wrote {len(written)} exercise files to {directory}")
    print(f"  begin with {Path(directory) / written[0].name} and `minitransformer exercise "
          "hint 1`")
    print(f"  check your work: minitransformer exercise check --dir {directory}")
    return 0


def _has_workspace(directory: Path) -> bool:
    from minitransformer import exercises

    return any((directory / e.filename).is_file() for e in exercises.EXERCISES)


def _list(directory: Path) -> int:
    from minitransformer import exercises

    present = _has_workspace(directory)
    results = dict((e.name, r) for e, r in exercises.check_workspace(directory)) if present \
        else {}
    words = {"pass": "passes", "todo": "not started", "fail": "fails", "missing": "no file"}
    for exercise in exercises.EXERCISES:
        status = words[results[exercise.name].status] if present else ""
        print(f"{exercise.number:3d}  {exercise.name:<14} {exercise.title:<46} {status}".rstrip())
    if present:
        passed = sum(r.passed for r in results.values())
        print(f"\n{passed} of {len(results)} pass in {directory}. Problems, hints and "
              f"derivations: {DOCS}")
    else:
        print(f"\nno exercise files in {directory}: `minitransformer exercise start DIR` "
              "copies them into DIR (then pass --dir DIR)")
    return 0


def _check(directory: Path, chosen: list, named: bool, timeout: float = 10.0) -> int:
    from minitransformer import exercises

    if not named and not _has_workspace(directory):
        print(f"minitransformer exercise check: error: no exercise files in {directory} "
              "(`minitransformer exercise start DIR` copies them; then pass --dir DIR)",
              file=sys.stderr)
        return 1
    passed = 0
    for _, result in exercises.check_workspace(directory, chosen, timeout=timeout):
        passed += result.passed
        print(f"{LABELS[result.status]:<5} {result.summary}")
        for line in result.details:
            print(f"        {line}")
        _show_output(result.output)
    if len(chosen) > 1:
        print(f"\n{passed} of {len(chosen)} pass. Problems and hints: "
              "`minitransformer exercise hint N`")
    elif not passed:
        print(f"\nproblem, hints and the derivation: `minitransformer exercise hint "
              f"{chosen[0].number}`")
    return 0 if passed == len(chosen) else 1


def _show_output(output: str, lines: int = 20) -> None:
    """What the learner's file printed (their debugging prints), indented, at most ``lines``."""
    shown = output.rstrip("\n").splitlines()
    if not shown:
        return
    more = f" (the first {lines} lines)" if len(shown) > lines else ""
    print(f"        your file printed{more}:")
    for line in shown[:lines]:
        print(f"        | {line[:200]}")
