"""``minitransformer exercise list | start DIR | check [NAME]``: write the backward passes
yourself, and have them checked.

Wired into the command line by ``add_exercise_command(subparsers)`` in ``cli/main.py``.
Exit status: 0 when every checked exercise passes, 1 when one does not (or a workspace
cannot be written), 2 for bad arguments (an unknown exercise).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOCS = "docs/exercises.md"
LABELS = {"pass": "PASS", "todo": "TODO", "fail": "FAIL", "missing": "MISSING"}


def add_exercise_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``exercise`` (and its three sub-commands) on the CLI's sub-command parsers."""
    parser = subparsers.add_parser(
        "exercise", help="exercises: write each backward of attention yourself, get it checked",
        description="Exercises in the order the docs teach: you write the backward of "
                    "each building block of attention, and the checker compares it with "
                    f"minitransformer's own ops and names the common mistakes. See {DOCS}.")
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
    parser.set_defaults(handler=run_exercise_command)
    return parser


def run_exercise_command(args: argparse.Namespace) -> int:
    from minitransformer import exercises

    try:
        if args.action == "start":
            return _start(args.dir)
        if args.action == "list":
            return _list(Path(args.dir))
        chosen = [exercises.find(args.name)] if args.name else list(exercises.EXERCISES)
    except exercises.ExerciseError as exc:
        print(f"minitransformer exercise {args.action}: error: {exc}", file=sys.stderr)
        return 2 if args.action == "check" else 1
    return _check(Path(args.dir), chosen, named=bool(args.name))


def _start(directory: str) -> int:
    from minitransformer import exercises

    written = exercises.start(directory)
    print(f"wrote {len(written)} exercise files to {directory}")
    print(f"  begin with {Path(directory) / written[0].name} and {DOCS} (section 1)")
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


def _check(directory: Path, chosen: list, named: bool) -> int:
    from minitransformer import exercises

    if not named and not _has_workspace(directory):
        print(f"minitransformer exercise check: error: no exercise files in {directory} "
              "(`minitransformer exercise start DIR` copies them; then pass --dir DIR)",
              file=sys.stderr)
        return 1
    passed = 0
    for _, result in exercises.check_workspace(directory, chosen):
        passed += result.passed
        print(f"{LABELS[result.status]:<5} {result.summary}")
        for line in result.details:
            print(f"        {line}")
    if len(chosen) > 1:
        print(f"\n{passed} of {len(chosen)} pass. Problems and hints: {DOCS}")
    elif not passed:
        print(f"\nproblem, hints and the derivation: {DOCS}, section {chosen[0].number}")
    return 0 if passed == len(chosen) else 1
