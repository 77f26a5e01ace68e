"""Attention heatmaps: where each query looks, as matplotlib Figures.

    out, weights = mha(x, average_attn_weights=False)   # weights (B, nh, T, T)
    fig = viz.plot_attention(weights[0], tokens)          # one panel per head
    fig                                                  # a notebook cell shows it
    viz.save_figure(fig, "heads.png")                    # or write it to a file

The figures are built with matplotlib's object API (``matplotlib.figure.Figure``), never
through ``pyplot``: the library neither changes the backend you chose nor leaves figures
open in pyplot's list. Where a figure goes is the caller's decision (the command line saves
it; a notebook displays it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from minitransformer import files

if TYPE_CHECKING:  # matplotlib is imported only when something is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGURE_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg")


def _as_array(weights: Any) -> np.ndarray:
    """A NumPy copy of attention weights given as a Tensor (any device) or an array."""
    if hasattr(weights, "detach"):  # a Tensor: off the graph, onto the CPU
        weights = weights.detach().cpu().numpy()
    return np.asarray(weights, dtype=float)


def plot_attention(weights: Any, tokens: Sequence[str] | None = None, *,
                   query_tokens: Sequence[str] | None = None, title: str | None = None,
                   highlight_query: int | None = None) -> Figure:
    """Heatmap of attention weights: row i is query i, column j is key j, colour A[i, j].

    ``weights`` is (L, S) for one map or (nh, L, S) for one panel per head (a Tensor or an
    array; take one batch element of what an attention layer returns). ``tokens`` label the
    keys (and the queries, unless ``query_tokens`` is given); ``highlight_query`` frames one
    query's row. Returns the Figure.
    """
    maps = _as_array(weights)
    if maps.ndim == 2:
        maps = maps[None]  # (L, S) -> (1, L, S): one head
    if maps.ndim != 3:
        raise ValueError(f"plot_attention expects weights of shape (L, S) or (nh, L, S), "
                         f"got {tuple(maps.shape)}; pick one batch element, e.g. weights[0]")
    n_heads, n_queries, n_keys = maps.shape
    keys = list(tokens) if tokens is not None else [str(j) for j in range(n_keys)]
    queries = list(query_tokens) if query_tokens is not None else (
        keys if tokens is not None and n_queries == n_keys else
        [str(i) for i in range(n_queries)])
    if len(keys) != n_keys or len(queries) != n_queries:
        raise ValueError(f"weights of shape {tuple(maps.shape[1:])} (queries, keys) need "
                         f"{n_queries} query and {n_keys} key labels, got {len(queries)} "
                         f"and {len(keys)}")
    from minitransformer.viz.figure import ShownFigure

    size = 0.32 * max(n_queries, n_keys) + 1.6
    fig = ShownFigure(figsize=(size * n_heads, size + 0.6), layout="constrained")
    axes = fig.subplots(1, n_heads, squeeze=False)[0]
    for head, ax in enumerate(axes):
        image = _heatmap(ax, maps[head], keys, queries, highlight_query)
        if n_heads > 1:
            ax.set_title(f"head {head + 1}", fontsize=9)
    axes[0].set_ylabel("query (attends from)", fontsize=8)
    _colour_scale(fig, image, list(axes))
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_resolution(result: Any, title: str | None = None) -> Figure:
    """Every encoder layer's and head's attention (a row of panels per layer) and, below,
    the pointer head's weights for the pronoun: the picture of one coreference decision.

    ``result`` is what the coreference app's ``resolve`` returns (tokens, pronoun_position,
    weights, encoder_attention). Returns the Figure.
    """
    from minitransformer.viz.figure import ShownFigure

    tokens = result.tokens
    n_layers = len(result.encoder_attention)
    n_heads = result.encoder_attention[0].shape[0] if n_layers else 1
    size = 0.32 * len(tokens) + 1.6
    fig = ShownFigure(figsize=(size * n_heads, size * n_layers + 2.2))
    grid = fig.add_gridspec(n_layers + 1, n_heads,
                            height_ratios=[size] * n_layers + [1.2], hspace=0.55)
    for layer, maps in enumerate(result.encoder_attention):  # maps (nh, T, T)
        for head in range(n_heads):
            ax = fig.add_subplot(grid[layer, head])
            # Framing the pronoun's row shows what "it" itself looks at in this head.
            _heatmap(ax, maps[head], tokens, tokens, result.pronoun_position)
            ax.set_title(f"encoder layer {layer + 1}, head {head + 1}", fontsize=9)
            if head == 0:
                ax.set_ylabel("query (attends from)", fontsize=8)

    pointer = fig.add_subplot(grid[n_layers, :])
    image = pointer.imshow(result.weights[None, :], vmin=0.0, vmax=1.0, cmap="viridis",
                           aspect="auto")
    _write_percentages(pointer, result.weights[None, :])
    _label_axes(pointer, tokens, rows=[result.pronoun])
    _colour_scale(fig, image, fig.axes)
    pointer.set_xlabel("key (attended to)", fontsize=8)
    pointer.set_title(f"pointer head: where {result.pronoun!r} points, weights in % "
                      f"(prediction: {result.antecedent!r})", fontsize=10)
    fig.suptitle(title or " ".join(tokens), fontsize=11)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> str:
    """Write ``fig`` to ``path`` in the format its extension names, atomically
    (:mod:`minitransformer.files`: whole or not at all), creating missing folders; returns
    the path. An extension that names no format is an error before anything is drawn."""
    path = os.fspath(path)
    extension = files.check_figure_path(path, FIGURE_FORMATS)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    files.atomic_write(path, lambda f: fig.savefig(f, format=extension, dpi=dpi,
                                                     bbox_inches="tight"))
    return path


NUMBERED_CELLS = 16
"""Maps up to this many keys get each weight written in its cell, in %."""


def _heatmap(ax: Axes, weights: np.ndarray, keys: Sequence[str], queries: Sequence[str],
             highlight_query: int | None) -> Any:
    image = ax.imshow(weights, vmin=0.0, vmax=1.0, cmap="viridis")
    if len(keys) <= NUMBERED_CELLS:  # the cells are big enough for a number
        _write_percentages(ax, weights)
    _label_axes(ax, keys, rows=queries)
    if highlight_query is not None:
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((-0.5, highlight_query - 0.5), len(keys), 1, fill=False,
                               edgecolor="red", linewidth=1.5))
    return image


def _write_percentages(ax: Axes, weights: np.ndarray) -> None:
    """Each weight of a (rows, columns) map in its cell, in %, dark on light cells."""
    for (row, column), weight in np.ndenumerate(weights):
        ax.text(column, row, f"{100 * weight:.0f}", ha="center", va="center", fontsize=6,
                color="black" if weight > 0.5 else "white")


def _colour_scale(fig: Figure, image: Any, axes: Any) -> None:
    """One colour bar for every panel: they all share vmin=0, vmax=1."""
    bar = fig.colorbar(image, ax=axes, fraction=0.025, pad=0.02)
    bar.set_label("attention weight", fontsize=8)


def _label_axes(ax: Axes, columns: Sequence[str], rows: Sequence[str]) -> None:
    ax.set_xticks(np.arange(len(columns)))
    ax.set_xticklabels(columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
