"""Command-line rough edges found by trying it: unknown words name the closest known ones
and `vocab` lists them, an existing run is not replaced without --force, the Ctrl-C hint
names the --out used, a GPU that is not there is reported before any work, a closed pipe
ends quietly, and the compare page explains a baseline beating attention."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from minitransformer import backend
from minitransformer.cli import main
from minitransformer.coref.compare import _ranking_note
from minitransformer.coref.training import TrainConfig, train
from tests.test_cli import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    train(TrainConfig(epochs=1, train_size=64, test_size=16, batch_size=32, d_model=16,
                      num_layers=1, dim_feedforward=32), directory, progress=False,
          log=lambda message: None)
    return directory


def test_unknown_words_name_the_closest_known_ones_and_vocab_lists_them(tiny_run, capsys):
    code, out, err = run_cli(capsys, "attend", tiny_run,
                             "The animal didn't cross the streets because it was too tird.")
    assert code == 1 and out == ""
    assert_one_line_error(err, "'streets' (closest known: street", "'tird' (closest known: ",
                          "tired", "`minitransformer vocab` lists every known word")
    code, out, _ = run_cli(capsys, "vocab", tiny_run)
    assert code == 0
    words = out.split()
    assert {"animal", "street", "tired", "it"} <= set(words) and "<pad>" not in words


def test_train_refuses_to_replace_a_run_without_force(tiny_run, capsys):
    code, _, err = run_cli(capsys, "train", "--out", tiny_run, "--epochs", "1")
    assert code == 1
    assert_one_line_error(err, f"{tiny_run} already holds a run", "--resume", "--force")


def test_interrupt_hint_names_the_out_used(tmp_path, capsys, monkeypatch):
    import minitransformer.coref.training as training

    def interrupted(config, out_dir, *args, **kwargs):
        (Path(out_dir) / "checkpoint.npz").write_bytes(b"")  # as if an epoch had ended
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "mine")
    assert code == 130
    assert f"minitransformer train --resume --out {tmp_path / 'mine'}" in err


@pytest.mark.skipif(backend.cuda_is_available(), reason="checks the message without a GPU")
def test_a_missing_gpu_is_reported_before_any_work(tmp_path, capsys):
    code, out, err = run_cli(capsys, "demo", "--device", "cuda", "--out", tmp_path / "d")
    assert code == 1 and out == "" and not (tmp_path / "d").exists()
    assert "minitransformer demo: error: " in err and "cuda" in err
    if "not installed" in err:
        assert "pip install -e '.[gpu]'" in err


def test_json_into_a_closed_pipe_ends_quietly(tiny_run, tmp_path, monkeypatch, capsys):
    """`attend ... --json | head`: the reader closes the pipe; no traceback, status 141."""

    class ClosedPipe:
        def __init__(self) -> None:
            self.file = open(tmp_path / "sink", "w")  # a real descriptor to redirect

        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            pass

        def fileno(self) -> int:
            return self.file.fileno()

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code = main(["attend", str(tiny_run), "it was too tired.", "--json"])
    assert code == 141
    assert capsys.readouterr().err == ""


def test_compare_page_explains_a_baseline_beating_attention() -> None:
    models = {name: {"test_accuracy": accuracy} for name, accuracy in
              (("self-attention", 0.91), ("LSTM", 0.85), ("CNN", 0.978))}
    note = " ".join(_ranking_note({"models": models, "data": {"train_size": 1200},
                                   "config": {"epochs": 6, "conv_layers": 5,
                                              "kernel_size": 3}},
                                  list(models)))
    assert "Why CNN can beat self-attention in this run" in note and "11-token window" in note
    models["self-attention"]["test_accuracy"] = 0.99
    assert _ranking_note({"models": models, "data": {}, "config": {}}, list(models)) == []
