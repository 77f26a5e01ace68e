"""Save a drawn graph as SVG, PNG or PDF, with a clear message when Graphviz is missing.

The ``graphviz`` Python package only writes DOT text; turning it into a picture needs the
``dot`` program from Graphviz. Rather than failing with a traceback deep inside a
subprocess call, :func:`render` always writes the DOT source first and, if ``dot`` cannot
be found, raises :class:`GraphvizNotFoundError` saying where that source is and how to
install Graphviz.
"""

from __future__ import annotations

import html
import os
import shutil
from pathlib import Path
from typing import Any

import graphviz

from minitransformer import files

FORMATS = ("svg", "png", "pdf")

INSTALL_HINT = (
    "Install Graphviz (it provides the `dot` program), then run this again:\n"
    "  Debian/Ubuntu: sudo apt-get install graphviz\n"
    "  macOS:         brew install graphviz\n"
    "  conda:         conda install -c conda-forge graphviz"
)


class GraphvizNotFoundError(RuntimeError):
    """The ``dot`` executable is not on PATH; the DOT source was written anyway."""

    def __init__(self, source_path: Path, output_path: Path) -> None:
        self.source_path = source_path
        self.output_path = output_path
        super().__init__(
            f"cannot render {output_path}: the Graphviz `dot` executable was not found on "
            f"PATH.\nThe graph's DOT source was written to {source_path}; render it later "
            f"with: dot -T{output_path.suffix[1:]} {source_path} -o {output_path}\n"
            + INSTALL_HINT
        )


class DrawnGraph(graphviz.Digraph):
    """What ``draw_graph`` returns: a ``graphviz.Digraph`` that, as a Jupyter cell's value,
    shows the picture, or, where the ``dot`` program is missing, this project's message
    and the DOT source (instead of graphviz's long traceback)."""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None,
                          **kwargs: Any) -> dict[str, str]:
        if shutil.which("dot") is not None:
            try:
                return super()._repr_mimebundle_(include, exclude, **kwargs)
            except graphviz.ExecutableNotFound:  # found by `which` but not runnable
                pass
        text = (f"This graph cannot be shown as a picture: the Graphviz `dot` executable was "
                f"not found on PATH.\n{INSTALL_HINT}\n"
                f"Its DOT source (paste it into any Graphviz viewer):\n\n{self.source}")
        return {"text/plain": text, "text/html": f"<pre>{html.escape(text)}</pre>"}


def render(
    graph: graphviz.Digraph,
    name: str,
    format: str = "svg",  # noqa: A002  (the word users know from graphviz and dot -T)
    directory: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``graph`` to ``directory/name.format`` (and its source to ``name.dot``).

    Returns the path of the picture. Raises :class:`GraphvizNotFoundError` when the
    ``dot`` executable is missing, after writing the source.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if name.endswith("." + format):  # render(g, "attention.svg") means the same file
        name = name[: -len(format) - 1]
    folder = Path(directory) if directory is not None else Path.cwd()
    folder.mkdir(parents=True, exist_ok=True)
    source_path = folder / f"{name}.dot"
    output_path = folder / f"{name}.{format}"
    source_path.parent.mkdir(parents=True, exist_ok=True)  # `name` may hold a sub-folder
    files.write_text(source_path, graph.source)

    if shutil.which("dot") is None:
        raise GraphvizNotFoundError(source_path, output_path)
    try:  # dot writes to a pipe, we write the file: whole or not at all (a full disk)
        picture = graphviz.pipe("dot", format, graph.source.encode("utf-8"), quiet=True)
    except graphviz.ExecutableNotFound:  # found by `which` but not runnable
        raise GraphvizNotFoundError(source_path, output_path) from None
    files.write_bytes(output_path, picture)
    return output_path
