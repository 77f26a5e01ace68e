"""Damaged checkpoints give the one-line CheckpointError, never another exception.

A bounded run of benchmarks/checkpoint_fuzz.py (which runs thousands of cases on demand):
hand-made damage (a header claiming 10**11 elements, a manifest nested 200,000 deep,
compressed entries) and random bit flips, overwritten bytes and truncations.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from benchmarks.checkpoint_fuzz import check, genuine_checkpoint, random_damage, targeted
from minitransformer.errors import CheckpointError
from minitransformer.serialization import load


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return genuine_checkpoint(os.fspath(tmp_path_factory.mktemp("fuzz") / "genuine.npz"))


def test_targeted_damage_gives_the_checkpoint_error(genuine: bytes, tmp_path) -> None:
    failures = [check(name, damaged, os.fspath(tmp_path)) for name, damaged in targeted(genuine)]
    assert [f for f in failures if f] == []


def test_a_huge_array_header_is_refused_before_reading(genuine: bytes, tmp_path) -> None:
    name, damaged = next(targeted(genuine))
    path = tmp_path / "huge.npz"
    path.write_bytes(damaged)
    with pytest.raises(CheckpointError, match=r"shape \[100000000000\]"):
        load(path)


def test_random_damage_gives_the_checkpoint_error(genuine: bytes, tmp_path) -> None:
    rng = np.random.default_rng(2026)
    failures = [check(name, damaged, os.fspath(tmp_path), slow_seconds=5.0)
                for name, damaged in random_damage(genuine, rng, 150)]
    assert [f for f in failures if f] == []


def test_a_damaged_optimizer_state_fails_when_loaded_not_at_the_next_step() -> None:
    import minitransformer as mt

    layer = mt.nn.Linear(3, 2)
    opt = mt.optim.Adam(layer.parameters())
    layer(mt.randn(4, 3)).sum().backward()
    opt.step()
    good = opt.state_dict()
    key = next(iter(good["state"]))  # the weight's state
    wrong_shape = {**good, "state": {**good["state"], key: {**good["state"][key],
                                                            "exp_avg": np.zeros((3, 3))}}}
    with pytest.raises(ValueError, match=r"parameter 0: exp_avg has shape \(3, 3\).*\(2, 3\)"):
        mt.optim.Adam(layer.parameters()).load_state_dict(wrong_shape)
    bad_step = {**good, "state": {**good["state"], key: {**good["state"][key], "step": -5}}}
    with pytest.raises(ValueError, match="step count"):
        mt.optim.Adam(layer.parameters()).load_state_dict(bad_step)
