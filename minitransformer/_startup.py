"""Ctrl-C while the command line is still starting: one line, not a traceback.

``python -m minitransformer`` and the ``minitransformer`` script import the whole package
(NumPy and the engine) before :func:`minitransformer.cli.main.main` can catch anything; on
a busy machine that takes a second or more, and a KeyboardInterrupt raised inside a C
extension's import even comes out as an ImportError. So when, and only when, this process
*is* the command line, ``minitransformer/__init__.py`` imports this module first, and
importing it installs a SIGINT handler that prints one line and exits with status 130 at
once (nothing has been written yet). ``main()`` hands Ctrl-C back to Python
(:func:`end_of_start`) at its top, inside its own KeyboardInterrupt handling. A program
that merely imports the library keeps Python's own behaviour.
"""

from __future__ import annotations

import os
import signal
import sys


def is_command_line() -> bool:
    """Whether this process runs ``python -m minitransformer`` or the console script."""
    argv = list(getattr(sys, "orig_argv", ()))
    if "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "minitransformer":
        return True
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "minitransformer"


def _interrupted_while_starting(signum, frame) -> None:  # noqa: ANN001 - a signal handler
    os.write(2, b"\ninterrupted\n")
    os._exit(130)


def guard_command_line_start() -> None:
    """In the command line only: Ctrl-C before ``main()`` runs exits with one line."""
    if is_command_line() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted_while_starting)


def end_of_start() -> None:
    """From here on Ctrl-C raises KeyboardInterrupt again (``main()`` reports it)."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# OpenBLAS keeps each worker thread spinning for 2^28 cycles after a product, on the core
# the next op's threads need: with a timeout of 4 a MultiHeadAttention forward plus backward
# at T = 1,024 took a third less time (docs/benchmarks.md). OpenBLAS reads the setting once,
# when NumPy loads it, so it must be in the environment before ``import numpy``.
OPENBLAS_THREAD_TIMEOUT = "4"


def quiet_blas_threads() -> None:
    """Set ``OPENBLAS_THREAD_TIMEOUT`` (unless the user set it) before NumPy loads: the
    command line and the benchmarks do; a library import leaves the environment alone. In
    your own script: ``OPENBLAS_THREAD_TIMEOUT=4 python train.py``."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_THREAD_TIMEOUT)


guard_command_line_start()
if is_command_line():
    quiet_blas_threads()
