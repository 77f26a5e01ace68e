"""The benchmarks compare like with like: the same model, weights and data on both sides.

Nothing here is timed (speed is measured by the scripts themselves, never in tests); these
check that what the scripts time is the same computation in both libraries.
"""

from __future__ import annotations

import numpy as np

from benchmarks.transformer_bench import training_steps
from tests.conftest import requires_torch


@requires_torch
def test_the_training_step_benchmark_runs_the_same_model_in_both_libraries() -> None:
    """Two AdamW steps of the small configuration: the same losses on both sides (float32),
    so the timed steps do the same work; the second loss also checks the updates agree."""
    ours, theirs = training_steps("small")
    for _ in range(2):
        ours_loss, their_loss = ours().item(), theirs().item()
        np.testing.assert_allclose(ours_loss, their_loss, rtol=1e-4)
