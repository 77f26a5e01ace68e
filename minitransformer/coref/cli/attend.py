"""Showing what the model attends to: the pronoun's table and the attention heatmaps.

    it -> the        -6.41    0.0%
    it -> animal      9.12   99.8%   <- highest
    ...
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from minitransformer.coref.models.coref import Resolution

ARTICLE_TABLE: tuple[tuple[str, float, int], ...] = (
    ("The", 0.02, 1), ("animal", 0.85, 45), ("didn't", 0.05, 3), ("cross", 0.08, 4),
    ("street", 0.12, 6), ("because", 0.15, 8), ("it", 0.50, 26), ("was", 0.06, 3),
    ("too", 0.04, 2), ("tired", 0.13, 7),
)
"""The article's numbers for "it" in "The animal didn't cross the street because it was too
tired" (word, score, weight in %). It lists no second "the"."""


def align_reference(tokens: Sequence[str],
                    reference: Sequence[tuple[str, float, int]]) -> list[tuple[float, int] | None]:
    """The reference's (score, weight %) for each token, matching words in order; None for
    a token the reference skips."""
    aligned: list[tuple[float, int] | None] = []
    next_entry = 0
    for token in tokens:
        if next_entry < len(reference) and reference[next_entry][0].lower() == token:
            aligned.append(reference[next_entry][1:])
            next_entry += 1
        else:
            aligned.append(None)
    return aligned


def format_table(result: Resolution,
                 reference: Sequence[tuple[str, float, int]] | None = None) -> str:
    """One line per token: the pointer head's raw score and its weight in percent, the
    highest marked; with ``reference``, the article's numbers beside ours."""
    pronoun = result.pronoun
    width = max(len(token) for token in result.tokens)
    aligned = align_reference(result.tokens, reference) if reference else None
    lines = []
    if aligned is not None:
        label = " " * (len(pronoun) + 4 + width)
        lines.append(f"  {label}  {'this model':>16}   {'the article':>12}")
    for position, token in enumerate(result.tokens):
        line = (f"  {pronoun} -> {token:<{width}}  {result.scores[position]:8.2f}  "
                f"{100 * result.weights[position]:5.1f}%")
        if aligned is not None:
            numbers = aligned[position]
            line += (f"   {numbers[0]:6.2f}  {numbers[1]:3d}%" if numbers is not None
                     else " " * 15)
        if position == result.antecedent_position:
            line += "   <- highest"
        lines.append(line.rstrip())
    return "\n".join(lines)


def describe(result: Resolution) -> str:
    """The header above a table: the sentence, the pronoun and the model's answer."""
    return (f"{' '.join(result.tokens)}\n"
            f"  pronoun {result.pronoun!r} (position {result.pronoun_position}) -> "
            f"{result.antecedent!r} (position {result.antecedent_position}, "
            f"{100 * result.weights[result.antecedent_position]:.1f}%)")


def plot_attention(result: Resolution, path: str, title: str | None = None) -> None:
    """Draw every encoder layer's and head's attention (query rows, key columns) and, below,
    the pointer head's weights for the pronoun; save as an image at ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, no display needed
    import matplotlib.pyplot as plt

    tokens = result.tokens
    n_layers = len(result.encoder_attention)
    n_heads = result.encoder_attention[0].shape[0] if n_layers else 1
    size = 0.32 * len(tokens) + 1.6
    fig = plt.figure(figsize=(size * n_heads, size * n_layers + 2.2))
    grid = fig.add_gridspec(n_layers + 1, n_heads,
                            height_ratios=[size] * n_layers + [1.2], hspace=0.55)
    image = None
    for layer, maps in enumerate(result.encoder_attention):  # maps (nh, T, T)
        for head in range(n_heads):
            ax = fig.add_subplot(grid[layer, head])
            image = ax.imshow(maps[head], vmin=0.0, vmax=1.0, cmap="viridis")
            if len(tokens) <= NUMBERED_CELLS:  # the weight in %, where the cells are big enough
                _write_percentages(ax, maps[head])
            _label_axes(ax, tokens, rows=tokens)
            # Frame the pronoun's row: what "it" itself looks at in this head.
            ax.add_patch(plt.Rectangle((-0.5, result.pronoun_position - 0.5), len(tokens), 1,
                                       fill=False, edgecolor="red", linewidth=1.5))
            ax.set_title(f"encoder layer {layer + 1}, head {head + 1}", fontsize=9)
            if head == 0:
                ax.set_ylabel("query (attends from)", fontsize=8)

    pointer = fig.add_subplot(grid[n_layers, :])
    image = pointer.imshow(result.weights[None, :], vmin=0.0, vmax=1.0, cmap="viridis",
                           aspect="auto")
    _write_percentages(pointer, result.weights[None, :])
    _label_axes(pointer, tokens, rows=[result.pronoun])
    # One colour scale for every panel: they all share vmin=0, vmax=1.
    bar = fig.colorbar(image, ax=fig.axes, fraction=0.025, pad=0.02)
    bar.set_label("attention weight", fontsize=8)
    pointer.set_xlabel("key (attended to)", fontsize=8)
    pointer.set_title(f"pointer head: where {result.pronoun!r} points, weights in % "
                      f"(prediction: {result.antecedent!r})", fontsize=10)
    fig.suptitle(title or " ".join(tokens), fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


NUMBERED_CELLS = 16
"""Sentences up to this many tokens get each weight written in its heatmap cell."""


def _write_percentages(ax: object, weights: np.ndarray) -> None:
    """Each weight of a (rows, columns) map in its cell, in %, dark on light cells."""
    for (row, column), weight in np.ndenumerate(weights):
        ax.text(column, row, f"{100 * weight:.0f}", ha="center", va="center", fontsize=6,
                color="black" if weight > 0.5 else "white")


def _label_axes(ax: object, columns: Sequence[str], rows: Sequence[str]) -> None:
    ax.set_xticks(np.arange(len(columns)))
    ax.set_xticklabels(columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
