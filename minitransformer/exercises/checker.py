"""The checker: runs a learner's exercise file and says exactly what is wrong with it.

For every case of an exercise (several shapes, with the op's edge cases) the checker

1. runs the file's ``forward`` and compares it with minitransformer's own op, so that an
   edited forward is caught before its backward is judged;
2. draws a random upstream gradient ``dout`` and computes the expected gradients with the
   project's op and autograd, in float64; the same ``dout`` goes to the learner's backward,
   so both compute the vector-Jacobian product ``dout^T J`` (what a central-difference
   gradient check measures; :func:`numerical_gradients` computes that too, and the tests
   check every case's expected gradients against it);
3. compares the learner's gradients with the expected ones, one input at a time.

A wrong gradient is reported by input name, with the largest error and its index, and
compared with the answers that common mistakes produce (:func:`diagnose`): a transposed
gradient, a gradient not summed back over a broadcast axis, a wrong sign, a factor off by a
constant (a missing 1/sqrt(d_k) among them), an ignored upstream gradient, and each
exercise's own (a forgotten mask, a repeated index overwritten, ...).

Whatever the learner's file does (fail to import, raise, return the wrong number of
gradients or the wrong shapes, NaN, a complex or integer array), the result is a
:class:`CheckResult` with one clear line, never a traceback.

The learner's code runs in a child process (:mod:`minitransformer.exercises.sandbox`:
``Case.call`` there, with a time limit), and only arrays come back; everything else in
this module (:func:`judge`, :func:`run_case`, :func:`diagnose`, :func:`close`) runs in
the checker's own process, on its own NumPy, which the learner's code never touched.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

RTOL, ATOL = 1e-6, 1e-9  # float64 answers of a right formula agree to ~1e-12


@dataclass(frozen=True)
class Mistake:
    """A common mistake the checker recognises by name, with a hint to fix it."""

    name: str
    hint: str


@dataclass
class Case:
    """One check: how to call the learner's code, and what it should return.

    ``call(module)`` runs the learner's functions and returns what their backward returned
    (it raises :class:`CheckFailure` for a problem found on the way, such as a forward that
    differs from the project's). ``expected`` holds one array per returned value, named by
    ``names``. ``alternatives`` are the answers that named mistakes would give (one array,
    or None, per returned value). ``scale`` is the op's 1/sqrt(d_k), when it has one.
    ``differentiated`` = (forward's name, inputs, indices of the differentiated inputs,
    dout), for a gradient case: what :func:`numerical_gradients` needs to check
    ``expected`` against central differences.

    ``call`` (and ``call_forward``) run in the child process
    (:mod:`minitransformer.exercises.sandbox`); everything else here is the parent's.
    ``call_forward(module)``, when given, runs the file's own forward, whose output the
    parent compares with ``forward_output`` (``forward_name`` and ``op`` name them) before
    judging the backward. ``adjust`` turns what came back into what is compared (the
    parent's code, e.g. Adam's new parameter into its move). ``non_finite`` names the
    mistake that a NaN or an inf means in a case built to make it overflow.
    """

    label: str
    call: Callable[[ModuleType], Any]
    expected: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    alternatives: list[tuple[Mistake, tuple[np.ndarray | None, ...]]] = field(
        default_factory=list)
    scale: float | None = None
    differentiated: tuple[str, Sequence[Any], Sequence[int], np.ndarray] | None = None
    call_forward: Callable[[ModuleType], Any] | None = None
    forward_output: np.ndarray | None = None
    forward_name: str = "forward"
    op: str = ""
    adjust: Callable[[Any], Any] | None = None
    non_finite: Mistake | None = None  # the mistake a NaN or inf means in this case
    inputs: Sequence[Any] | None = None  # what the learner's function is called with


class CheckFailure(Exception):
    """A problem with the learner's file, stated in one line (raised inside ``Case.call``)."""


class NotImplementedYet(Exception):
    """The learner's function still raises NotImplementedError."""


@dataclass
class CheckResult:
    """The verdict on one exercise file: ``status`` is "pass", "todo", "fail" or "missing".

    ``summary`` is one line; ``details`` are the lines under it (where, which mistake, hint).
    """

    status: str
    summary: str
    details: list[str] = field(default_factory=list)
    mistake: str | None = None  # the name of the recognised mistake, if any
    output: str = ""  # what the learner's file printed (capped)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


# ----------------------------------------------------------------------------- loading


def load_module(path: Path) -> ModuleType:
    """Import the learner's file by path (it is not a package module); CheckFailure if not."""
    name = f"_minitransformer_exercise_{path.stem}"
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise CheckFailure(f"{path.name} cannot be loaded as a Python file")
        module = importlib.util.module_from_spec(spec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec.loader.exec_module(module)
    except CheckFailure:
        raise
    except SyntaxError as exc:
        raise CheckFailure(f"{path.name} does not import: SyntaxError on line {exc.lineno}: "
                           f"{exc.msg}") from None
    except BaseException as exc:  # noqa: BLE001 (any error in the learner's file)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise CheckFailure(f"{path.name} does not import: {_describe_error(exc, path)}") from None
    finally:
        sys.modules.pop(name, None)
    return module


def learner_function(module: ModuleType, name: str) -> Callable[..., Any]:
    function = getattr(module, name, None)
    if not callable(function):
        file = Path(getattr(module, "__file__", "") or "the file").name
        raise CheckFailure(f"{file} has no function {name}() (keep the names the exercise "
                           "gives; `minitransformer exercise start` writes a fresh copy "
                           "elsewhere)")
    return function


def call_learner(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a learner's function; its errors become one-line CheckFailures."""
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return function(*args, **kwargs)
    except NotImplementedError as exc:
        raise NotImplementedYet(" ".join(str(exc).split())) from None
    except BaseException as exc:  # noqa: BLE001 (whatever the learner's code raises)
        if isinstance(exc, KeyboardInterrupt):
            raise
        file = Path(getattr(function, "__code__", None).co_filename) if hasattr(
            function, "__code__") else None
        raise CheckFailure(f"{function.__name__}() raised {_describe_error(exc, file)}") from None


def _describe_error(exc: BaseException, path: Path | None) -> str:
    """'ValueError: message (file.py, line 12: the line)', from the learner's deepest frame."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if path is not None:
        mine = [f for f in frames if Path(f.filename).name == path.name]
        if mine:
            frame = mine[-1]
            line = (frame.line or "").strip()
            text += f" ({path.name}, line {frame.lineno}" + (f": {line})" if line else ")")
    return text


# ----------------------------------------------------------------------------- gradients


def numerical_gradients(forward: Callable[..., Any], inputs: Sequence[Any],
                        wrt: Sequence[int], dout: np.ndarray,
                        eps: float = 1e-6) -> list[np.ndarray]:
    """Central differences of ``sum(dout * forward(*inputs))`` for the inputs ``wrt``:
    the vector-Jacobian product a backward computes, one element at a time (float64)."""
    inputs = [np.array(x, dtype=np.float64) if i in wrt else x for i, x in enumerate(inputs)]
    grads = []
    for i in wrt:
        x = inputs[i]
        flat = x.reshape(-1)  # a view: writing to it perturbs x
        grad = np.zeros(x.size)
        for k in range(x.size):
            original = flat[k]
            flat[k] = original + eps
            plus = float((np.asarray(forward(*inputs)) * dout).sum())
            flat[k] = original - eps
            minus = float((np.asarray(forward(*inputs)) * dout).sum())
            flat[k] = original
            grad[k] = (plus - minus) / (2 * eps)
        grads.append(grad.reshape(x.shape))
    return grads


def close(got: np.ndarray, expected: np.ndarray) -> bool:
    """Equal up to float64 rounding of a correct formula."""
    if got.shape != expected.shape:
        return False
    atol = ATOL + RTOL * float(np.max(np.abs(expected), initial=0.0))
    return bool(np.allclose(got, expected, rtol=RTOL, atol=atol))


# ----------------------------------------------------------------------------- mistakes

TRANSPOSED = Mistake(
    "transposed gradient",
    "the gradient of a matrix has that matrix's own layout: for C = A @ B, dA = dC @ B^T "
    "(n, k) and dB = A^T @ dC (k, m); check which side each transpose goes on")
NOT_SUMMED = Mistake(
    "gradient not summed over a broadcast axis",
    "an input that broadcasting reused along an axis collects the gradient of every use: "
    "sum over the axes broadcasting added (and over those where the input had size 1, "
    "keeping them), so the gradient gets the input's shape")
KEEPDIMS = Mistake(
    "right numbers, wrong layout (keepdims or reshape)",
    "a gradient always has exactly its input's shape: keep (keepdims=True) or drop the "
    "size-1 axes as the input has them")
SIGN = Mistake(
    "wrong sign",
    "every entry has the right size but the opposite sign: look for a subtraction written "
    "the wrong way round (e.g. onehot - p instead of p - onehot) or a stray minus")
FACTOR = Mistake(
    "factor off by a constant",
    "the direction is right but every entry is scaled by the same number: look for a "
    "missing or extra 1/n of a mean, a 2 of a square, or a scale")
MISSING_SCALE = Mistake(
    "missing 1/sqrt(d_k)",
    "the scores are S = Q K^T / sqrt(d_k), so dQ and dK carry that factor too: "
    "dQ = dS K / sqrt(d_k) and dK = dS^T Q / sqrt(d_k)")
DOUBLE_SCALE = Mistake(
    "1/sqrt(d_k) applied twice",
    "the scale enters dQ and dK once; if you computed the scores' gradient with the scale "
    "already in it, do not multiply by it again")
IGNORED_UPSTREAM = Mistake(
    "upstream gradient ignored",
    "your result is the gradient of sum(output), as if dout were all ones: multiply by "
    "the incoming gradient dout (the chain rule's outer factor)")


def diagnose(got: np.ndarray, expected: np.ndarray, position: int,
             case: Case) -> tuple[Mistake, str] | None:
    """Name the mistake that turns ``expected`` into ``got``, with a detail, if one does."""
    if got.shape != expected.shape:
        return _diagnose_shape(got, expected)
    for mistake, answers in case.alternatives:
        wrong = answers[position]
        if wrong is not None and not close(wrong, expected) and close(got, wrong):
            return mistake, ""
    if (got.ndim >= 2 and got.shape[-1] == got.shape[-2]
            and not close(expected.swapaxes(-1, -2), expected)
            and close(got, expected.swapaxes(-1, -2))):
        return TRANSPOSED, "(your values are the expected ones with the last two axes swapped)"
    norm = float((expected * expected).sum())
    if norm == 0:
        return None
    factor = float((got * expected).sum()) / norm  # least squares: got ~ factor * expected
    if not close(got, factor * expected) or abs(factor - 1) < 1e-6:
        return None
    if abs(factor + 1) < 1e-6:
        return SIGN, ""
    if case.scale is not None:
        if abs(factor * case.scale - 1) < 1e-6:
            return MISSING_SCALE, f"(yours is sqrt(d_k) = {1 / case.scale:.4g} times too large)"
        if abs(factor - case.scale) < 1e-6:
            return DOUBLE_SCALE, f"(yours is 1/sqrt(d_k) = {case.scale:.4g} times the answer)"
    return FACTOR, f"(yours is {_describe_factor(factor)} times the expected gradient)"


def _describe_factor(factor: float) -> str:
    """2, -1/3 or 0.7071: a simple fraction when the factor is one."""
    fraction = Fraction(factor).limit_denominator(64)
    if abs(float(fraction) - factor) < 1e-9 * max(1.0, abs(factor)):
        return str(fraction)
    return f"{factor:.4g}"


def _diagnose_shape(got: np.ndarray, expected: np.ndarray) -> tuple[Mistake, str] | None:
    shape, want = got.shape, expected.shape
    if len(shape) == len(want) >= 2 and shape == (*want[:-2], want[-1], want[-2]):
        return TRANSPOSED, f"(your shape {shape} is the expected {want} transposed)"
    try:
        broadcast = np.broadcast_shapes(shape, want) == shape
    except ValueError:
        broadcast = False
    if broadcast and got.size > expected.size:
        lead = len(shape) - len(want)
        axes = list(range(lead)) + [lead + i for i, n in enumerate(want) if n == 1
                                    and shape[lead + i] != 1]
        return NOT_SUMMED, f"(sum over axis {', '.join(map(str, axes))} of your {shape})"
    if got.size == expected.size:
        return KEEPDIMS, f"(yours is {shape}, the input's is {want})"
    return None


# ----------------------------------------------------------------------------- running


def _type_name(value: Any) -> str:
    return value.type_name if hasattr(value, "type_name") else type(value).__name__


def run_case(result: Any, case: Case) -> tuple[str, Mistake | None, list[str]] | None:
    """None if ``result`` (what the learner's code returned, brought back from the child:
    a tuple, or one value; each None, an ndarray or a non-numeric stand-in) passes the
    case, else (one line, the recognised mistake or None, details)."""
    if case.adjust is not None:
        result = case.adjust(result)
    count = len(case.names)
    if count == 1 and not isinstance(result, (tuple, list)):
        result = (result,)
    if not isinstance(result, (tuple, list)):
        kind = "ndarray" if isinstance(result, np.ndarray) else _type_name(result)
        return (f"returned one {kind}, expected {count} values "
                f"({', '.join(case.names)})", None, [])
    if len(result) != count:
        return (f"returned {len(result)} value{'s' if len(result) != 1 else ''}, expected "
                f"{count} ({', '.join(case.names)})", None, [])
    arrays, single = [], []  # single: computed in float32 or float16
    for name, value, want in zip(case.names, result, case.expected):
        if value is None:
            return f"returned None for {name}, expected an array of shape {want.shape}", None, []
        if isinstance(value, np.generic):  # a 0-d answer after arithmetic in the parent
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            return (f"{name} is a {_type_name(value)}, not an array of numbers "
                    f"(expected shape {want.shape})", None, [])
        if value.dtype.kind == "c":
            return (f"{name} is complex ({value.dtype}); a gradient of real inputs is real: "
                    "look for np.sqrt or a power of a negative number, or a complex dtype",
                    None, [])
        if value.dtype.kind != "f":
            return (f"{name} has dtype {value.dtype}, not a floating-point dtype (expected "
                    "float64): look for an integer or boolean array, e.g. np.zeros_like of "
                    "an integer input", None, [])
        arrays.append(value.astype(np.float64))
        single.append(value.dtype in (np.float32, np.float16))
    for position, (name, got, want) in enumerate(zip(case.names, arrays, case.expected)):
        if got.shape != want.shape:
            found = diagnose(got, want, position, case)
            line = f"{name} has shape {got.shape}, expected {want.shape} (the input's shape)"
            return line, *_finding(found)
        bad = ~np.isfinite(got)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            line = (f"{name} holds {got[index]} at index {_index(index)} (expected "
                    f"{want[index]:.6g}); look for a division by zero or an exp that "
                    "overflows")
            if case.non_finite is not None:  # a case built so that one mistake overflows
                return line, *_finding((case.non_finite, ""))
            return line, None, []
    for position, (name, got, want) in enumerate(zip(case.names, arrays, case.expected)):
        if close(got, want):
            continue
        if single[position] and np.allclose(got, want, rtol=1e-3, atol=1e-4):
            return (f"{name} agrees only to float32 precision: compute in float64 (the inputs "
                    "are float64; look for a float32 array or dtype in your code)", None, [])
        error = np.abs(got - want)
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(error)), error.shape))
        line = (f"{name} is wrong: largest error {float(error[index]):.4g} at index "
                f"{_index(index)} (yours {float(got[index]):.6g}, expected "
                f"{float(want[index]):.6g})")
        others = [n for p, (n, g, w) in enumerate(zip(case.names, arrays, case.expected))
                  if p != position and not close(g, w)]
        mistake, details = _finding(diagnose(got, want, position, case))
        if others:
            details.append(f"also wrong: {', '.join(others)}")
        return line, mistake, details
    return None


def _finding(found: tuple[Mistake, str] | None) -> tuple[Mistake | None, list[str]]:
    if found is None:
        return None, ["no common mistake recognised; compare your formula with the hints, "
                      "one intermediate at a time"]
    mistake, detail = found
    return mistake, [f"recognised: {mistake.name} {detail}".rstrip(), f"hint: {mistake.hint}"]


def _index(index: tuple[int, ...]) -> str:
    return "()" if not index else "(" + ", ".join(map(str, index)) + (",)" if len(index) == 1
                                                                       else ")")


def _forward_differs(got: Any, case: Case) -> bool:
    if not isinstance(got, np.ndarray) or got.dtype.kind not in "biuf":
        return True
    return not close(got.astype(np.float64), case.forward_output)


def judge(cases: Sequence[Case], manifest: dict, unpack: Callable[[dict], Any]
          ) -> tuple[str, str | None, list[str]]:
    """Judge, in the parent, what the child brought back for ``cases``, in order;
    ("pass" | "todo" | "fail", the mistake's name, lines). ``unpack`` turns a manifest
    entry back into the returned value."""
    if "error" in manifest:
        return manifest["error"][0], None, [manifest["error"][1]]
    entries = manifest["cases"]
    for case, entry in zip(cases, entries):
        if "forward" in entry and _forward_differs(unpack(entry["forward"]), case):
            return "fail", None, [
                f"{case.forward_name}() no longer computes what {case.op} computes; the "
                "exercise gives the forward: restore it (a fresh copy: `minitransformer "
                f"exercise start NEWDIR`) [case: {case.label}]"]
        if "error" in entry:
            kind, message = entry["error"]
            if kind == "todo":
                return "todo", None, [f"not implemented yet: {message}" if message
                                      else "not implemented yet"]
            return "fail", None, [f"{message} [case: {case.label}]"]
        failure = run_case(unpack(entry["result"]), case)
        if failure is not None:
            line, mistake, details = failure
            return ("fail", mistake.name if mistake else None,
                    [f"{line} [case: {case.label}]", *details])
    if len(entries) < len(cases):
        return "fail", None, [f"no answer came back for case {cases[len(entries)].label}"]
    return "pass", None, []

