"""A matplotlib Figure that the library can hand back without touching pyplot.

Figures made through ``pyplot`` live in its global list and follow whatever backend was
chosen (calling ``matplotlib.use`` to pick one would change it for the user). A
``matplotlib.figure.Figure`` built directly does neither: it draws into files with
``savefig`` whatever the backend. Jupyter only knows how to show a plain Figure once pyplot's
inline backend is loaded, so this subclass also shows itself as a PNG.

This module imports matplotlib: import it only where a figure is drawn.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure


class ShownFigure(Figure):
    """A ``matplotlib.figure.Figure`` that a notebook cell displays as its value."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()
