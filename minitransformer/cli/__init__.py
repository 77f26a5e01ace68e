"""The ``minitransformer`` command line.

The library needs NumPy alone; the command line also draws (Graphviz's Python package,
matplotlib) and shows progress bars (tqdm), which come with the ``demo`` extra. Where one
is missing, the command says so in one line instead of failing on its first import.
"""

from __future__ import annotations

import importlib.util
import sys

DEMO_PACKAGES = ("graphviz", "tqdm", "matplotlib")  # the `demo` extra in pyproject.toml
_missing = [name for name in DEMO_PACKAGES if importlib.util.find_spec(name) is None]

if _missing:
    def main(argv: list[str] | None = None) -> int:
        """Say which packages of the ``demo`` extra are missing; exit status 1."""
        print(f"minitransformer: error: the command line needs {', '.join(_missing)}: "
              "pip install 'minitransformer[demo]'", file=sys.stderr)
        return 1
else:
    from minitransformer.cli.main import main

__all__ = ["DEMO_PACKAGES", "main"]
