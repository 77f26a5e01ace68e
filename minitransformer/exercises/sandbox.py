"""Run a learner's exercise file in a child process, and bring back arrays only.

The learner's code may loop forever, sleep, print without end, start a thread that never
ends, call ``os._exit(0)``, close ``sys.stdout`` or monkeypatch NumPy (``np.allclose``,
or the checker's own comparison). None of that may hang the checker, end it, or make it
pass a wrong answer. So:

* the file runs in a child process (a fork of the checker on Linux, where it costs a few
  milliseconds; a fresh interpreter running :func:`main` elsewhere), with
  stdin closed, in a process group of its own;
* the child has ``timeout`` seconds (10 by default); past them it is killed, and so is it
  once it has printed more than ``OUTPUT_CAP`` bytes; on Linux it may allocate at most
  ``MEMORY_CAP`` bytes more than it starts with (beyond, NumPy raises MemoryError);
* the child writes what the learner's functions returned into an ``.npz`` file, numeric
  arrays and a JSON manifest of the returned structure, nothing else; the parent loads it
  with ``allow_pickle=False``, so no object of the learner's crosses over;
* the parent compares with its own NumPy, which the child's monkeypatching never touched.
  A child that ends without writing its answers (``os._exit``, a crash, a signal) is a
  failure, with the reason.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minitransformer.exercises.checker import (
    Case,
    CheckFailure,
    NotImplementedYet,
    load_module,
)

TIMEOUT = 10.0  # seconds a learner's file may run (all its cases together)
OUTPUT_CAP = 64 * 1024  # bytes of printing before the child is stopped
MEMORY_CAP = 2 * 1024**3  # bytes the child may allocate beyond what it starts with
MANIFEST = "__manifest__"


@dataclass(frozen=True)
class Other:
    """A returned value that is not an array of numbers: only its type's name comes back."""

    type_name: str


class ChildFailure(CheckFailure):
    """The child brought no answers back; ``output`` is what it printed until then."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


@dataclass
class Outcome:
    """What the child sent back: the manifest, its arrays, and what the file printed."""

    manifest: dict
    arrays: dict[str, np.ndarray]
    output: str


# ----------------------------------------------------------------------------- the child


def _pack_item(value: Any, key: str, arrays: dict[str, np.ndarray]) -> dict | None:
    if value is None:
        return None
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 (a learner's object that NumPy cannot read)
        return {"other": type(value).__name__}
    if array.dtype.kind not in "biufc":  # strings, objects, dates: not numbers
        return {"other": type(value).__name__}
    arrays[key] = np.array(array)  # a plain ndarray, whatever subclass came in
    return {"array": key, "type": type(value).__name__}


def pack(value: Any, key: str, arrays: dict[str, np.ndarray]) -> dict:
    """The manifest entry of a returned value; its arrays go into ``arrays``."""
    if isinstance(value, (tuple, list)):
        return {"seq": [_pack_item(v, f"{key}_{i}", arrays) for i, v in enumerate(value)]}
    return {"one": _pack_item(value, key, arrays)}


def unpack(entry: dict, arrays: dict[str, np.ndarray]) -> Any:
    """A tuple, or one value; each value None, an ndarray, or an :class:`Other`."""
    def item(e: dict | None) -> Any:
        if e is None:
            return None
        if "other" in e:
            return Other(str(e["other"]))
        return arrays[e["array"]]

    if "seq" in entry:
        return tuple(item(e) for e in entry["seq"])
    return item(entry["one"])


def collect(path: Path, cases: Sequence[Case]) -> tuple[dict, dict[str, np.ndarray]]:
    """Run the learner's file on every case (in the child); stop at the first error."""
    arrays: dict[str, np.ndarray] = {}
    try:
        module = load_module(path)
    except CheckFailure as exc:
        return {"error": ["fail", str(exc)]}, arrays
    entries: list[dict] = []
    for i, case in enumerate(cases):
        entry: dict = {}
        entries.append(entry)
        try:
            if case.call_forward is not None:
                entry["forward"] = pack(case.call_forward(module), f"f{i}", arrays)
            entry["result"] = pack(case.call(module), f"c{i}", arrays)
        except NotImplementedYet as exc:
            entry["error"] = ["todo", str(exc)]
            break
        except CheckFailure as exc:
            entry["error"] = ["fail", str(exc)]
            break
    return {"cases": entries}, arrays


def _write_answers(path: Path, cases: Sequence[Case], answers: Path) -> None:
    manifest, arrays = collect(path, cases)
    arrays[MANIFEST] = np.array(json.dumps(manifest))
    partial = answers.with_suffix(".partial.npz")
    np.savez(partial, **arrays)
    os.replace(partial, answers)  # all or nothing: a half-written file never counts


def _child_streams() -> None:
    """Print to fd 1 (the parent's pipe) and read fd 0 (empty), whatever sys.stdout and
    sys.stdin the parent had (a test runner's capture, say)."""
    stream = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    sys.stdout = sys.stderr = stream
    sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)


def _limit_memory() -> None:
    """Let the child allocate at most MEMORY_CAP more bytes (Linux): a learner's huge
    array is a MemoryError in their file, not a machine swapping or an OOM kill."""
    try:
        import resource

        with open("/proc/self/statm", encoding="ascii") as statm:
            size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_CAP, size + MEMORY_CAP))
    except (ImportError, OSError, ValueError):  # not Linux: no cap (the time limit stays)
        pass


def _end_child(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 (the learner may have closed it)
            pass
    os._exit(code)  # no waiting for the learner's threads, no atexit of theirs


def main(argv: Sequence[str] | None = None) -> None:
    """The spawned child's entry point; its one argument is the job, in JSON."""
    from minitransformer.exercises import find

    job = json.loads((sys.argv[1:] if argv is None else argv)[0])
    code = 70
    try:
        _child_streams()
        cases = find(str(job["exercise"])).cases(job["seed"])
        _limit_memory()
        _write_answers(Path(job["path"]), cases, Path(job["answers"]))
        code = 0
    except BaseException as exc:  # noqa: BLE001 (reported through the exit status)
        print(f"the checker's child failed: {type(exc).__name__}: {exc}", file=sys.__stderr__)
    finally:
        _end_child(code)


# ----------------------------------------------------------------------------- the parent


def _fork(work: Callable[[], None]) -> tuple[int, int]:
    """Fork a child that runs ``work`` with its output on a pipe; (pid, read end)."""
    read, write = os.pipe()
    for stream in (sys.stdout, sys.stderr):  # or the child would print them a second time
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    with warnings.catch_warnings():  # Python 3.12+ warns when any thread exists; ours
        warnings.simplefilter("ignore", DeprecationWarning)  # runs NumPy and the file only
        pid = os.fork()
    if pid == 0:  # the child
        code = 70
        try:
            os.setpgid(0, 0)  # its own group: killing it kills what it started too
            os.close(read)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)  # input() gets EOF instead of waiting
            os.dup2(write, 1)
            os.dup2(write, 2)
            _child_streams()
            _limit_memory()
            work()
            code = 0
        except BaseException:  # noqa: BLE001 (reported through the exit status)
            pass
        finally:
            _end_child(code)
    os.close(write)
    try:
        os.setpgid(pid, pid)  # as the child does: whichever runs first, the group exists
    except OSError:
        pass
    return pid, read


def _kill_group(pid: int, alive: bool = True) -> None:
    """SIGKILL the child's process group (the child and whatever it started). ``alive``:
    the child is not reaped yet, so its pid is still ours to kill on its own, should the
    group not exist yet; once reaped, only the group (the pid may belong to another)."""
    try:
        os.killpg(pid, signal.SIGKILL)
        return
    except OSError:
        pass
    if alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _watch_fork(pid: int, read: int, timeout: float) -> tuple[int | None, bytes, str | None]:
    """Drain the child's output until it ends; (exit code or None, output, why stopped)."""
    output, why, status = bytearray(), None, None
    deadline = time.monotonic() + timeout
    open_pipe = True
    reaped = False
    try:
        while True:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status, reaped = os.waitstatus_to_exitcode(raw), True
                break
            left = deadline - time.monotonic()
            if left <= 0:
                why = "time"
                break
            if open_pipe:
                ready, _, _ = select.select([read], [], [], min(left, 0.05))
                if ready:
                    chunk = os.read(read, 65536)
                    open_pipe = bool(chunk)
                    output += chunk
                    if len(output) > OUTPUT_CAP:
                        why = "output"
                        break
            else:
                time.sleep(0.005)
        if why is not None:
            _kill_group(pid)
            os.waitpid(pid, 0)
            reaped = True
        else:
            _kill_group(pid, alive=False)  # what the child started and left behind
            os.set_blocking(read, False)
            while len(output) <= OUTPUT_CAP:
                try:
                    chunk = os.read(read, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                output += chunk
    finally:
        os.close(read)
        if not reaped:  # interrupted (Ctrl-C): the child, in a group of its own, would live on
            _kill_group(pid)
            os.waitpid(pid, 0)
    return status, bytes(output[:OUTPUT_CAP]), why


def _watch_spawn(job: dict, timeout: float) -> tuple[int | None, bytes, str | None]:
    """The same with a fresh interpreter (where fork is not the platform's way)."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from minitransformer.exercises.sandbox import main; "
         "main(sys.argv[1:])", json.dumps(job)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=os.name == "posix")
    output = bytearray()
    too_much = threading.Event()

    def drain() -> None:
        while chunk := process.stdout.read1(65536):
            if len(output) <= OUTPUT_CAP:
                output.extend(chunk)
            else:
                too_much.set()
                return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline, why = time.monotonic() + timeout, None
    try:
        while process.poll() is None:
            if too_much.is_set():
                why = "output"
            elif time.monotonic() > deadline:
                why = "time"
            if why:
                break
            time.sleep(0.01)
    finally:
        if process.poll() is None:  # stopped, or interrupted (Ctrl-C)
            if os.name == "posix":
                _kill_group(process.pid)
            process.kill()
            process.wait()
    reader.join(timeout=1.0)
    process.stdout.close()
    return (None if why else process.returncode), bytes(output[:OUTPUT_CAP]), why


def default_method() -> str:
    """fork on Linux (fast, and safe there with NumPy); spawn elsewhere."""
    return "fork" if sys.platform.startswith("linux") and hasattr(os, "fork") else "spawn"


def run(exercise_number: int, path: Path, cases: Sequence[Case], *, seed: int = 0,
        timeout: float = TIMEOUT, method: str | None = None) -> Outcome:
    """Run the learner's file on ``cases`` in a child; CheckFailure with the reason if the
    child does not bring its answers back."""
    with tempfile.TemporaryDirectory(prefix="minitransformer-check-") as scratch:
        answers = Path(scratch) / "answers.npz"
        if (method or default_method()) == "fork":
            pid, read = _fork(lambda: _write_answers(path, cases, answers))
            status, output, why = _watch_fork(pid, read, timeout)
        else:
            job = {"exercise": exercise_number, "seed": seed, "path": str(path.resolve()),
                   "answers": str(answers)}
            status, output, why = _watch_spawn(job, timeout)
        text = output.decode("utf-8", errors="replace")
        if why == "time":
            raise ChildFailure(
                f"stopped after {timeout:g} s: your code did not finish (an endless loop, a "
                "long sleep, or a wait?); the limit is --timeout SECONDS", text)
        if why == "output":
            raise ChildFailure(
                f"stopped: your code printed more than {OUTPUT_CAP // 1024} KiB (a print "
                "in an endless loop?)", text)
        if not answers.is_file():
            if status == 0:
                raise ChildFailure(
                    "your code ended the checker's process (os._exit or the like, with "
                    "status 0) before its answers came back: return them instead", text)
            how = (f"was killed by signal {signal.Signals(-status).name}"
                   if status is not None and status < 0 and -status in signal.valid_signals()
                   else f"exited with status {status}")
            raise ChildFailure(f"the process running your code {how} before its answers "
                               "came back", text)
        try:
            with np.load(answers, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            manifest = json.loads(str(arrays.pop(MANIFEST)))
        except Exception as exc:  # noqa: BLE001 (a damaged answers file)
            raise ChildFailure(f"the answers of your code could not be read back "
                               f"({type(exc).__name__})", text) from None
    return Outcome(manifest, arrays, text)


if __name__ == "__main__":
    main()
