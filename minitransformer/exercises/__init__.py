"""Exercises: the learner writes each backward of the attention stack; a checker says
exactly what is wrong.

    minitransformer exercise start my-work        # copies the stubs into my-work/
    minitransformer exercise check --dir my-work  # checks them all (or: check softmax)

The stubs (``stubs/``) give each forward and leave the backward raising
``NotImplementedError``; the reference solutions (``solutions/``) are kept apart. The
problems, hints and links to the derivations: docs/exercises.md, shipped with the package
as ``exercises.md`` (``minitransformer exercise hint N`` prints a section).
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from minitransformer.exercises import sandbox
from minitransformer.exercises.catalog import EXERCISES, Exercise
from minitransformer.exercises.checker import (
    CheckFailure,
    CheckResult,
    Mistake,
    judge,
)
from minitransformer.serialization import atomic_write

__all__ = ["EXERCISES", "CheckResult", "Exercise", "ExerciseError", "Mistake", "check_file",
           "check_workspace", "find", "section", "solution_source", "start", "stub_source",
           "text"]


class ExerciseError(Exception):
    """A problem with the command (unknown exercise, a workspace that exists), in one line."""


def find(name: str) -> Exercise:
    """The exercise called ``name``: its number ("4", "04"), name ("softmax") or file name."""
    key = name.strip().lower().removesuffix(".py")
    for exercise in EXERCISES:
        if key in (str(exercise.number), f"{exercise.number:02d}", exercise.name,
                   exercise.filename.removesuffix(".py")):
            return exercise
    names = ", ".join(e.name for e in EXERCISES)
    raise ExerciseError(f"no exercise called {name!r}; the exercises are: {names} "
                        f"(or their numbers, 1 to {len(EXERCISES)})")


def _package_file(folder: str, exercise: Exercise) -> str:
    return (resources.files("minitransformer.exercises") / folder / exercise.filename).read_text(
        encoding="utf-8")


def stub_source(exercise: Exercise) -> str:
    """The text of the exercise's stub, as ``start`` copies it."""
    return _package_file("stubs", exercise)


def solution_source(exercise: Exercise) -> str:
    """The reference solution: the backward functions only (they run appended to the stub)."""
    return _package_file("solutions", exercise)


def check_file(exercise: Exercise, path: str | os.PathLike, *,
               timeout: float = sandbox.TIMEOUT, method: str | None = None) -> CheckResult:
    """Check the learner's file for ``exercise``; never raises for what the file does.

    The file runs in a child process for at most ``timeout`` seconds
    (:mod:`minitransformer.exercises.sandbox`); its answers are judged here.
    """
    path = Path(path)
    head = f"{exercise.number:02d} {exercise.name}"
    if not path.is_file():
        return CheckResult("missing", f"{head}: {path} does not exist (`minitransformer "
                                      "exercise start DIR` writes the exercise files)")
    output = ""
    try:
        cases = exercise.cases()
        outcome = sandbox.run(exercise.number, path, cases, timeout=timeout, method=method)
        output = outcome.output
        status, mistake, lines = judge(
            cases, outcome.manifest, lambda entry: sandbox.unpack(entry, outcome.arrays))
    except CheckFailure as exc:
        status, mistake, lines = "fail", None, [str(exc)]
        output = getattr(exc, "output", output)  # the prints before a timeout, say
    except Exception as exc:  # noqa: BLE001 (the checker reports, it never shows a traceback)
        status, mistake, lines = "fail", None, [
            f"the checker could not run this exercise ({type(exc).__name__}: {exc})"]
    if status == "pass":
        return CheckResult("pass", f"{head}: passes (compared with {exercise.compared_with}; "
                                   f"edge cases: {exercise.edge_cases})", output=output)
    lines += _older_file(exercise, path)
    return CheckResult(status, f"{head}: {lines[0]}", lines[1:], mistake, output=output)


# Files of an earlier numbering: (exercise, a line only the old file has, what to do)
_OLDER = [("online_softmax", "def forward_with_stats(",
           "this file is the tiled backward, which is exercise 13 now: rename it to "
           "13_tiled_backward.py (check it with `minitransformer exercise check "
           "tiled_backward`), and get the new exercise 12, the online softmax's forward, "
           "with `minitransformer exercise start NEWDIR`")]


def _older_file(exercise: Exercise, path: Path) -> list[str]:
    """A note for a learner's file written by an earlier version's `start`."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [f"note: {note}" for name, marker, note in _OLDER
            if name == exercise.name and marker in text]


def check_workspace(directory: str | os.PathLike,
                    exercises: tuple[Exercise, ...] | list[Exercise] = EXERCISES, *,
                    timeout: float = sandbox.TIMEOUT) -> list[tuple[Exercise, CheckResult]]:
    """Check the learner's files in ``directory``, in order (each with ``timeout`` s)."""
    return [(e, check_file(e, Path(directory) / e.filename, timeout=timeout))
            for e in exercises]


def text() -> str:
    """The exercises' page (docs/exercises.md), as the package ships it."""
    return (resources.files("minitransformer.exercises") / "exercises.md").read_text(
        encoding="utf-8")


def section(exercise: Exercise, solution: bool = False) -> str:
    """Exercise's section of the page, for a terminal: the problem, then its hints in
    order (and the solution, if asked for); the HTML of the folded hints taken out."""
    page = text()
    match = re.search(rf"^## {exercise.number}\. .*?(?=^## |\Z)", page, re.M | re.S)
    if match is None:  # the page and the catalog disagree: a packaging error, said plainly
        raise ExerciseError(f"the exercises' text has no section {exercise.number}")
    body = match.group(0)
    if not solution:
        body = body.split("<details><summary>Solution</summary>")[0]
    body = re.sub(r"<details><summary>(.*?)</summary>", r"\1:", body)
    body = body.replace("</details>", "")
    body = re.sub(r"\n{3,}", "\n\n", body).strip()
    if not solution:
        body += ("\n\n(the solution: `minitransformer exercise hint "
                 f"{exercise.number} --solution`)")
    return body


def start(directory: str | os.PathLike) -> list[Path]:
    """Copy every stub into ``directory`` (created if needed); returns the files written.

    Refuses (ExerciseError) to overwrite any existing exercise file, and to write inside
    the installed package. Each file is written whole or not at all.
    """
    target = Path(directory)
    package = Path(str(resources.files("minitransformer"))).resolve()
    resolved = target.resolve()
    if resolved == package or package in resolved.parents:
        raise ExerciseError(f"{target} is inside minitransformer's own files; start the "
                            "exercises in a directory of your own")
    if target.exists() and not target.is_dir():
        raise ExerciseError(f"{target} exists and is not a directory")
    existing = [e.filename for e in EXERCISES if (target / e.filename).exists()]
    if existing:
        raise ExerciseError(
            f"{target} already holds {', '.join(existing[:3])}"
            f"{' and more' if len(existing) > 3 else ''}; refusing to overwrite your work "
            "(check it with `minitransformer exercise check --dir "
            f"{target}`, or start in another directory)")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExerciseError(f"cannot create {target}: {exc.strerror or exc}") from None
    written: list[Path] = []
    try:
        for exercise in EXERCISES:
            written.append(_write_atomically(target / exercise.filename, stub_source(exercise)))
    except OSError as exc:
        for path in written:  # all or nothing
            path.unlink(missing_ok=True)
        raise ExerciseError(f"cannot write into {target}: {exc.strerror or exc}") from None
    return written


def _write_atomically(path: Path, text: str) -> Path:
    """Write to a temporary file beside ``path``, then rename it into place."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path
