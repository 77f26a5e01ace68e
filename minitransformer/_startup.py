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


guard_command_line_start()
