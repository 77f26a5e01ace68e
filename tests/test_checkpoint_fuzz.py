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


# ----------------------------------------------------------------------------- content


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from benchmarks.checkpoint_fuzz import tiny_runs

    return tiny_runs(os.fspath(tmp_path_factory.mktemp("runs")))


@pytest.mark.parametrize("kind", ["coref", "gpt"])
def test_wrong_content_is_refused_naming_the_field(kind, tiny_runs, tmp_path) -> None:
    from benchmarks.checkpoint_fuzz import check_content

    assert check_content(kind, tiny_runs[kind], os.fspath(tmp_path)) == []


@pytest.mark.parametrize("kind", ["coref", "gpt"])
def test_the_genuine_run_loads_and_resumes(kind, tiny_runs) -> None:
    from minitransformer import runs
    from minitransformer.coref.training import RUN_FORMAT as COREF
    from minitransformer.gpt.training import RUN_FORMAT as GPT

    run, state = runs.load_checkpoint(tiny_runs[kind], COREF if kind == "coref" else GPT)
    optimizer, scheduler = runs.build_optimizer(run.model, run.config)
    runs.restore_training(run, state, optimizer, scheduler)


@pytest.mark.parametrize("kind", ["coref", "gpt"])
def test_the_shapes_computed_from_a_config_are_the_models(kind) -> None:
    """The loader checks a checkpoint's weights against shapes computed from its config
    (so nothing is allocated for a damaged size): they must be a real model's."""
    if kind == "coref":
        from minitransformer.coref.models.coref import CorefConfig, CorefModel
        from minitransformer.coref.training import expected_shapes

        configs = [CorefConfig(vocab_size=7, d_model=8, nhead=2, num_layers=n,
                               dim_feedforward=12, max_len=20) for n in (1, 3)]
        build = CorefModel
    else:
        from minitransformer.gpt.model import GPT, GPTConfig
        from minitransformer.gpt.training import expected_shapes

        configs = [GPTConfig(vocab_size=7, block_size=9, n_layer=n, n_head=2, n_embd=8,
                             dim_feedforward=12, tie_weights=tie)
                   for n, tie in ((1, True), (2, False))]
        build = GPT
    for config in configs:
        model = build(config)
        assert expected_shapes(config) == {name: tuple(value.shape)
                                           for name, value in model.state_dict().items()}
