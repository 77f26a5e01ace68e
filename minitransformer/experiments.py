"""Small, reproducible experiments that the teaching pages run and quote.

:func:`softmax_saturation` is the "why divide by sqrt(d_k)" measurement: random
unit-variance queries and keys, the engine's softmax and backward, and statistics of the
weights and of the gradient that reaches the scores. The docs pages call it (rather than
each keeping its own copy), so every page reports the same numbers.

Means alone hide what saturation does: a few rows with a large gradient keep the mean up
while most rows get almost nothing. So each statistic comes as a mean and a median, and
:attr:`Saturation.vanishing` counts the rows whose gradient is near zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from minitransformer.tensor import Tensor

D_KS = (4, 16, 64, 256, 1024)


@dataclass(frozen=True)
class Saturation:
    """Statistics over the rows (queries) of one softmax(q k^T [/ sqrt(d_k)]) run.

    ``max_weight``: the largest weight in a row (1/keys is uniform, 1 is one-hot).
    ``entropy``: of the row's weights (log(keys) is uniform, 0 is one-hot).
    ``grad_norm``: the norm of the row of dS, the gradient that reaches the scores.
    ``vanishing``: the fraction of rows whose dS norm is below ``threshold``.
    """

    d_k: int
    scaled: bool
    max_weight_mean: float
    max_weight_median: float
    entropy_mean: float
    entropy_median: float
    grad_norm_mean: float
    grad_norm_median: float
    vanishing: float
    threshold: float


def softmax_saturation(d_k: int, scaled: bool, queries: int = 256, keys: int = 64,
                       seed: int = 0, threshold: float = 1e-2) -> Saturation:
    """Softmax of random scores q k^T (divided by sqrt(d_k) when ``scaled``), backward
    from a random standard-normal upstream gradient, in float64."""
    generator = np.random.default_rng(seed)
    q = generator.standard_normal((queries, d_k))  # (queries, d_k), unit variance
    k = generator.standard_normal((keys, d_k))  # (keys, d_k)
    scores = Tensor(q @ k.T / (math.sqrt(d_k) if scaled else 1.0), requires_grad=True)
    weights = scores.softmax(axis=-1)  # (queries, keys), rows sum to 1
    weights.backward(gradient=generator.standard_normal(weights.shape))
    a = weights.data
    entropy = -(a * np.log(np.maximum(a, 1e-300))).sum(axis=-1)  # (queries,)
    largest = a.max(axis=-1)  # (queries,)
    grad_norm = np.linalg.norm(scores.grad.data, axis=-1)  # (queries,): |dS| per row
    return Saturation(
        d_k=d_k, scaled=scaled,
        max_weight_mean=float(largest.mean()), max_weight_median=float(np.median(largest)),
        entropy_mean=float(entropy.mean()), entropy_median=float(np.median(entropy)),
        grad_norm_mean=float(grad_norm.mean()), grad_norm_median=float(np.median(grad_norm)),
        vanishing=float((grad_norm < threshold).mean()), threshold=threshold,
    )


def saturation_table(d_ks: tuple[int, ...] = D_KS,
                     **options: float) -> list[tuple[Saturation, Saturation]]:
    """The experiment for each d_k: ``(raw, scaled)`` pairs, in the order of ``d_ks``.

    ``options`` go to :func:`softmax_saturation` (queries, keys, seed, threshold).
    """
    return [(softmax_saturation(d, False, **options), softmax_saturation(d, True, **options))
            for d in d_ks]


def format_saturation_table(rows: list[tuple[Saturation, Saturation]]) -> str:
    """:func:`saturation_table`'s rows as fixed-width text: medians of the largest weight,
    mean and median of |dS| per row, and the fraction of rows where |dS| nearly vanishes."""
    threshold = rows[0][0].threshold if rows else 1e-2
    lines = [
        f"  d_k | max weight, median | |dS| per row, mean | |dS| per row, median "
        f"| rows with |dS| < {threshold:g}",
        "      | raw    / sqrt(d_k) | raw    / sqrt(d_k) | raw    / sqrt(d_k)   "
        "| raw     / sqrt(d_k)",
    ]
    for raw, scaled in rows:
        lines.append(
            f"{raw.d_k:5d} | {raw.max_weight_median:.3f}  {scaled.max_weight_median:.3f}"
            f"       | {raw.grad_norm_mean:.3f}  {scaled.grad_norm_mean:.3f}"
            f"       | {raw.grad_norm_median:.3f}  {scaled.grad_norm_median:.3f}"
            f"         | {raw.vanishing:6.1%}  {scaled.vanishing:6.1%}"
        )
    return "\n".join(lines)
