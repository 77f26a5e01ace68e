"""Progress bars for the training loops: tqdm.auto's, and none where nobody watches.

Under Jupyter (with ipywidgets) the bar is a widget; on a terminal it is tqdm's text bar;
when stderr is a file or a pipe (a log, CI) no bar is drawn at all, since there it is a pile
of carriage-return frames (the loops print one line per epoch instead). tqdm is imported
only when a bar is made.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None,
                 desc: str = "", enabled: bool = True) -> Any:
    """A tqdm bar over ``iterable`` (or updated by hand), shown only where it can redraw."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tqdm.auto's note that ipywidgets is missing
        from tqdm.auto import tqdm
    widget = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)
    shown = enabled and (widget or _is_terminal(sys.stderr))
    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False,
                disable=not shown, file=sys.stderr, dynamic_ncols=True)


def _is_terminal(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False
