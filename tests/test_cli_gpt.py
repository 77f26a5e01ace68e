"""``minitransformer gpt train | sample | attend`` on a tiny run."""

from __future__ import annotations

import functools

import pytest

import minitransformer.gpt.training as gpt_training
from minitransformer.cli.main import main
from tests.test_gpt import TINY


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run (the real defaults take a minute: they are not for tests)."""
    out = tmp_path_factory.mktemp("gpt")
    patch = pytest.MonkeyPatch()
    patch.setattr(gpt_training, "GPTTrainConfig",
                  functools.partial(gpt_training.GPTTrainConfig, **TINY))
    try:
        assert main(["gpt", "train", "--out", str(out), "--epochs", "1", "--quiet"]) == 0
    finally:
        patch.undo()
    return out


def test_train_writes_the_run_and_reports_the_floor(run_dir, capsys):
    assert (run_dir / "checkpoint.npz").exists() and (run_dir / "metrics.json").exists()
    assert main(["gpt", "train", "--out", str(run_dir), "--resume", "--seed", "3"]) == 1
    err = capsys.readouterr().err
    assert "continues with its own settings" in err and "Traceback" not in err


def test_sample_is_reproducible_and_stops_at_the_end_of_a_story(run_dir, capsys):
    args = ["gpt", "sample", str(run_dir), "--prompt", "the dog met the nurse .", "--seed", "4",
            "--top-k", "5"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("the dog met the nurse .") and "<eos>" not in first
    assert main([*args, "--no-cache"]) == 0
    assert capsys.readouterr().out == first  # the cache changes nothing but the time


@pytest.mark.parametrize(("args", "message"), [
    (["--prompt", "the zebra"], "'zebra'"),
    (["--temperature", "-1"], "--temperature must be >= 0"),
])
def test_sample_errors_are_one_line(run_dir, capsys, args, message):
    assert main(["gpt", "sample", str(run_dir), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_run_is_one_line(tmp_path, capsys):
    assert main(["gpt", "sample", str(tmp_path / "nothing")]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_attend_prints_a_causal_table_and_draws_it(run_dir, tmp_path, capsys):
    plot = tmp_path / "attention.png"
    assert main(["gpt", "attend", str(run_dir), "the cat saw the boy . he", "--plot",
                 str(plot)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["position", "L1"]
    rows = lines[1:-1]
    assert len(rows) == 8  # <bos> and 7 words
    for t, row in enumerate(rows):  # every head names a position <= the row's own
        looked_at = [int(cell.split(":")[0]) for cell in row.split()[1::2]]
        assert max(looked_at) <= t
    assert plot.stat().st_size > 0
