"""The command line: train, attend, demo; exit codes and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import serialization
from minitransformer.cli import main
from minitransformer.coref.data import ARTICLE_SENTENCE, ARTICLE_SENTENCE_WIDE
from minitransformer.coref.training import CHECKPOINT_FILE, TrainConfig, load_run, train

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small run that resolves the article's sentence and its twin correctly."""
    directory = tmp_path_factory.mktemp("coref")
    config = TrainConfig(epochs=4, train_size=800, test_size=100, batch_size=16)
    train(config, directory, progress=False, log=lambda message: None)
    return directory


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ----------------------------------------------------------------------------- attend


def test_attend_prints_every_token_and_the_antecedent(run_dir, capsys):
    code, out, _ = run_cli(capsys, "attend", run_dir, ARTICLE_SENTENCE)
    assert code == 0
    rows = [line for line in out.splitlines() if line.strip().startswith("it -> ")]
    assert [row.split()[2] for row in rows] == [
        "the", "animal", "didn't", "cross", "the", "street", "because", "it", "was", "too",
        "tired"]
    weights = [float(row.split()[4].rstrip("%")) for row in rows]
    assert sum(weights) == pytest.approx(100, abs=0.1 * len(rows))
    (highest,) = [row for row in rows if row.endswith("<- highest")]
    assert highest.split()[2] == "animal"
    assert "-> 'animal'" in out

    code, out, _ = run_cli(capsys, "attend", run_dir / CHECKPOINT_FILE, ARTICLE_SENTENCE_WIDE)
    assert code == 0
    (highest,) = [row for row in out.splitlines() if row.endswith("<- highest")]
    assert highest.split()[2] == "street"


def test_attend_json(run_dir, capsys):
    code, out, _ = run_cli(capsys, "attend", run_dir, ARTICLE_SENTENCE, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["pronoun"] == "it"
    assert result["antecedent"] == "animal"
    assert [t["token"] for t in result["tokens"]][:2] == ["the", "animal"]
    weights = np.array([t["weight"] for t in result["tokens"]])
    scores = np.array([t["score"] for t in result["tokens"]])
    assert weights.sum() == pytest.approx(1.0, abs=1e-5)
    softmax = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    np.testing.assert_allclose(weights, softmax, atol=1e-6)  # the weights are softmax(scores)


def test_attend_pronoun_choice(run_dir, capsys):
    sentence = "the cat caught the mouse because it was quick because she was old"
    code, _, err = run_cli(capsys, "attend", run_dir, sentence)
    assert code == 1
    assert_one_line_error(err, "2 pronouns", "'it' at 6", "'she' at 10", "--pronoun")

    code, out, _ = run_cli(capsys, "attend", run_dir, sentence, "--pronoun", "she", "--json")
    assert code == 0 and json.loads(out)["pronoun"] == "she"
    code, out, _ = run_cli(capsys, "attend", run_dir, sentence, "--position", "6", "--json")
    assert code == 0 and json.loads(out)["pronoun_position"] == 6

    code, _, err = run_cli(capsys, "attend", run_dir, "the dog didn't cross the road")
    assert code == 1
    assert_one_line_error(err, "no pronoun", "--position")

    code, _, err = run_cli(capsys, "attend", run_dir, sentence, "--pronoun", "they")
    assert code == 1
    assert_one_line_error(err, "'they' does not occur")


def test_attend_unknown_words(run_dir, capsys):
    code, out, err = run_cli(capsys, "attend", run_dir,
                             "The giraffe didn't cross the motorway because it was too tired.")
    assert code == 1 and out == ""
    assert_one_line_error(err, "2 words are not in the vocabulary", "'giraffe'", "'motorway'")


def test_attend_plot(run_dir, tmp_path, capsys):
    image = tmp_path / "heat.png"
    code, _, _ = run_cli(capsys, "attend", run_dir, ARTICLE_SENTENCE, "--plot", image)
    assert code == 0
    assert image.read_bytes()[:8] == PNG


def test_bad_checkpoints_exit_1_naming_the_file(run_dir, tmp_path, capsys):
    missing = tmp_path / "missing.npz"
    code, _, err = run_cli(capsys, "attend", missing, ARTICLE_SENTENCE)
    assert code == 1
    assert_one_line_error(err, str(missing))

    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    code, _, err = run_cli(capsys, "attend", empty_dir, ARTICLE_SENTENCE)
    assert code == 1
    assert_one_line_error(err, str(empty_dir / CHECKPOINT_FILE))

    truncated = tmp_path / "truncated.npz"
    content = (run_dir / CHECKPOINT_FILE).read_bytes()
    truncated.write_bytes(content[: len(content) // 3])
    code, _, err = run_cli(capsys, "attend", truncated, ARTICLE_SENTENCE)
    assert code == 1
    assert_one_line_error(err, str(truncated), "truncated")

    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    code, _, err = run_cli(capsys, "attend", foreign, ARTICLE_SENTENCE)
    assert code == 1
    assert_one_line_error(err, str(foreign), "not a minitransformer checkpoint")

    other = tmp_path / "other.npz"
    serialization.save({"something": "else"}, other)
    code, _, err = run_cli(capsys, "attend", other, ARTICLE_SENTENCE)
    assert code == 1
    assert_one_line_error(err, str(other), "not a checkpoint of a coreference run")


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("argv", [
    ["fly"],
    ["train", "--epochs", "0"],
    ["train", "--epochs", "many"],
    ["train", "--seed", "-1"],
    ["train", "--device", "tpu"],
    ["train", "--distractors"],
    ["attend"],
    ["attend", "runs/coref"],
    ["attend", "runs/coref", "it was", "--pronoun", "it", "--position", "0"],
    ["attend", "runs/coref", "it was", "--position", "first"],
    ["demo", "--epochs", "3"],
])
def test_bad_arguments_exit_2_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: minitransformer" in capsys.readouterr().err


def test_no_arguments_prints_the_help_and_version_works(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: minitransformer") and "train" in out and "demo" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"minitransformer {mt.__version__}"


def test_python_m_minitransformer_exit_codes(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "minitransformer", "--help"],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "train" in ok.stdout and "attend" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "minitransformer", "attend",
                          str(tmp_path / "nope.npz"), ARTICLE_SENTENCE],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert_one_line_error(bad.stderr, "nope.npz")


# ----------------------------------------------------------------------------- train, demo


def test_train_command_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "train", "--epochs", "1", "--seed", "3", "--out", out,
                              "--quiet")
    assert code == 0
    assert "held-out accuracy" in stdout and "training time" in stdout
    for name in ("checkpoint.npz", "metrics.json", "curves.png"):
        assert (out / name).exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["config"]["seed"] == 3
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert f"{metrics['test_accuracy']:.1%}" in stdout

    code, _, err = run_cli(capsys, "train", "--resume", "--seed", "4", "--out", out)
    assert code == 1
    assert_one_line_error(err, "--seed 4 (the run has 3)")

    code, stdout, _ = run_cli(capsys, "train", "--resume", "--seed", "3", "--out", out, "--quiet")
    assert code == 0  # a finished run: nothing more to train, the results again
    assert load_run(out).history.epochs_done == 1

    code, stdout, _ = run_cli(capsys, "train", "--resume", "--epochs", "2", "--out", out,
                              "--quiet")
    assert code == 0  # a finished run extended to two epochs in all
    extended = load_run(out)
    assert extended.history.epochs_done == 2 and extended.config.epochs == 2
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2

    code, _, err = run_cli(capsys, "train", "--resume", "--epochs", "1", "--out", out)
    assert code == 1
    assert_one_line_error(err, "already trained 2 epochs", "not shorten it")

    code, _, err = run_cli(capsys, "train", "--resume", "--out", tmp_path / "none")
    assert code == 1
    assert_one_line_error(err, str(tmp_path / "none" / CHECKPOINT_FILE))


def test_demo_reuses_a_finished_run(run_dir, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "demo", "--out", run_dir)
    assert "using the trained model" in out
    assert "the article" in out and "0.85" in out and "45%" in out  # the article's numbers
    assert out.count("<- highest") == 7  # the article's sentence, its twin, 5 other families
    assert code == (0 if "7/7 pronouns resolved" in out else 1)
    assert (run_dir / "attention_tired.png").read_bytes()[:8] == PNG
    assert (run_dir / "attention_wide.png").read_bytes()[:8] == PNG
