"""The √d_k experiment: how saturated the softmax of q · k scores is, and what reaches Q.

Random unit-variance queries and keys, scores Ŝ = Q Kᵀ · c with c = 1/√d_k ("scaled") or
c = 1 ("raw"), A = softmax(Ŝ) row by row, a random upstream gradient dA; then the engine's
backward gives dŜ (the gradient at the softmax's input) and dQ = c · dŜ K.

Per row (one query) it measures the largest weight, the entropy, ‖dŜ‖ and ‖dQ‖, and reports
over rows the mean *and* the median, plus the fraction of rows whose ‖dŜ‖ is near zero.
The mean alone hides the effect: a saturated softmax makes most rows' gradient vanish while
the few unsaturated rows, multiplied by keys of length ~√d_k, get large ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import minitransformer as mt

NEAR_ZERO = 1e-3  # a row whose ‖dŜ‖ is below this passes on (almost) nothing


@dataclass(frozen=True)
class Saturation:
    d_k: int
    scaled: bool
    max_weight: float  # mean over rows of the largest weight (1/keys uniform, 1 one-hot)
    entropy: float  # mean over rows (log(keys) uniform, 0 one-hot)
    ds_mean: float  # ‖dŜ‖ per row: mean over rows
    ds_median: float  # ... and median
    ds_near_zero: float  # fraction of rows with ‖dŜ‖ < NEAR_ZERO
    dq_mean: float  # ‖dQ‖ per row: mean over rows
    dq_median: float  # ... and median


def softmax_saturation(d_k: int, scaled: bool = True, queries: int = 256, keys: int = 64,
                       seed: int = 0) -> Saturation:
    """Run the experiment once (float64) for one d_k, with or without the 1/√d_k scale."""
    generator = np.random.default_rng(seed)
    q = mt.tensor(generator.standard_normal((queries, d_k)), requires_grad=True)  # (L, d_k)
    k = mt.tensor(generator.standard_normal((keys, d_k)))  # (S, d_k)
    scale = 1 / math.sqrt(d_k) if scaled else 1.0
    scores = (q @ k.T) * scale  # Ŝ, (L, S)
    scores.retain_grad()
    weights = scores.softmax(axis=-1)  # A, (L, S)
    weights.backward(gradient=generator.standard_normal(weights.shape))
    a = weights.detach().numpy()
    entropy = -(a * np.log(np.maximum(a, 1e-300))).sum(axis=-1)
    ds = np.linalg.norm(scores.grad.numpy(), axis=-1)  # (L,)
    dq = np.linalg.norm(q.grad.numpy(), axis=-1)  # (L,)
    return Saturation(d_k, scaled, float(a.max(axis=-1).mean()), float(entropy.mean()),
                      float(ds.mean()), float(np.median(ds)), float((ds < NEAR_ZERO).mean()),
                      float(dq.mean()), float(np.median(dq)))
