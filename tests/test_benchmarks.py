"""The benchmarks compare like with like: the same model, weights and data on both sides.

Nothing here is timed (speed is measured by the scripts themselves, never in tests); these
check that what the scripts time is the same computation in both libraries.
"""

from __future__ import annotations

import numpy as np
import pytest

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


@requires_torch
def test_the_nanogpt_benchmark_runs_the_same_model_in_both_libraries() -> None:
    """nanoGPT's model.py on both libraries, a tiny config: two rounds of train.py's step
    (clip_grad_norm_, configure_optimizers' AdamW); bench() raises if the losses differ."""
    from benchmarks import nanogpt_bench

    tiny = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, batch=2)
    ours, theirs = nanogpt_bench.training_steps("small", **tiny)
    for _ in range(3):
        np.testing.assert_allclose(ours(), theirs(), rtol=nanogpt_bench.RTOL)
    result = nanogpt_bench.bench("small", rounds=2, **tiny)
    assert result["loss rel diff"] <= nanogpt_bench.RTOL and result["ratio"] > 0


def test_the_numexpr_benchmark_times_the_same_chains_both_ways() -> None:
    """Each elementwise chain of benchmarks/numexpr_bench.py gives the NumPy formula's
    result when written for numexpr (skipped where numexpr is not installed)."""
    pytest.importorskip("numexpr")
    from benchmarks import numexpr_bench

    for name, (numpy_fn, numexpr_fn) in numexpr_bench.chains(np.random.default_rng(0)).items():
        np.testing.assert_allclose(np.array(numpy_fn()), np.array(numexpr_fn()),
                                   rtol=2e-5, atol=1e-5, err_msg=name)
