"""Showing what the model attends to: the pronoun's table and the attention heatmaps.

    it -> the        -6.41    0.0%
    it -> animal      9.12   99.8%   <- highest
    ...
"""

from __future__ import annotations

from collections.abc import Sequence

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
    """Save the picture of one decision (``viz.plot_resolution``) as an image at ``path``."""
    from minitransformer.viz import plot_resolution, save_figure

    save_figure(plot_resolution(result, title), path)
