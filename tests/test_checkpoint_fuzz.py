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
