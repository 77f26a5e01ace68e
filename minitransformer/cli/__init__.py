"""The ``minitransformer`` command line."""

from minitransformer.cli.main import main

__all__ = ["main"]
