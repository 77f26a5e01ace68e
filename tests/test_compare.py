"""The comparison pipeline at a tiny size: every model, bucket and layer reaches the outputs.

The numbers of a one-epoch run on 64 sentences mean nothing; what is checked is that the
experiment runs end to end and reports everything it promises, plus the properties that
hold whatever the training did (parameter counts, receptive fields, gradient reach).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from minitransformer.cli.main import main
from minitransformer.coref.cli.compare import add_compare_command
from minitransformer.coref.compare import (
    LAYERS,
    MODELS,
    OUTPUT_FILES,
    CompareConfig,
    accuracy_by_bucket,
    run_comparison,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    results = run_comparison(CompareConfig.tiny(), out, log=lambda message: None)
    return out, results


def test_outputs_name_every_model_bucket_and_layer(tiny_run):
    out, results = tiny_run
    config = CompareConfig.tiny()
    buckets = ["1-5", "6-10", "11-20", "21-30", "31+"]
    saved = json.loads((out / "results.json").read_text())
    table = (out / "results.md").read_text()
    assert list(saved["models"]) == list(MODELS)
    for name in MODELS:
        model = saved["models"][name]
        assert list(model["accuracy_by_distance"]) == buckets
        assert list(model["gradient_reach"]) == buckets
        assert len(model["training"]["test_accuracy"]) == config.epochs
        assert 0.0 <= model["test_accuracy"] <= 1.0
        assert f"| {name} |" in table
    for bucket in buckets:
        assert bucket in table
    assert {(row["layer"], row["length"]) for row in saved["layers"]} == {
        (layer, length) for layer in LAYERS for length in config.lengths}
    for png in ("accuracy_by_distance.png", "layer_time.png", "training.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "attention_hits" in saved["models"]["self-attention"]


def test_sequential_steps_and_reach_follow_the_architectures(tiny_run):
    _, results = tiny_run
    for row in results["layers"]:
        expected = row["length"] if row["layer"] == "LSTM" else 1
        assert row["sequential_steps"] == expected
    conv_rows = [row for row in results["layers"] if row["layer"] == "conv"]
    assert [row["layers_to_span"] for row in conv_rows] == [
        int(np.ceil((row["length"] - 1) / 2)) for row in conv_rows]
    # A stack of 5 kernel-3 convolutions sees 5 tokens each side: nothing further away
    # can change the pronoun's vector, so its gradient is exactly zero.
    cnn = results["models"]["CNN"]
    assert cnn["receptive_field"] == 11
    assert cnn["gradient_reach"]["11-20"] == 0.0
    assert results["models"]["self-attention"]["gradient_reach"]["11-20"] > 0.0
    counts = [m["parameters"]["without_embedding"] for m in results["models"].values()]
    assert max(counts) / min(counts) < 1.2  # comparable sizes


def test_accuracy_by_bucket_counts_and_open_last_bucket():
    correct = np.array([True, False, True, True])
    distances = np.array([2, 3, 7, 40])
    result = accuracy_by_bucket(correct, distances, [(1, 5), (6, 10), (11, None)])
    assert result == {"1-5": {"accuracy": 0.5, "count": 2},
                      "6-10": {"accuracy": 1.0, "count": 1},
                      "11+": {"accuracy": 1.0, "count": 1}}


def test_cli_registers_compare_with_its_options():
    parser = argparse.ArgumentParser()
    add_compare_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compare", "--quick", "--out", "somewhere", "--seed", "3"])
    assert (args.quick, args.out, args.seed, args.force) == (True, "somewhere", 3, False)
    assert callable(args.handler)


@pytest.mark.parametrize("name", ["results.md", "training.png"])
def test_compare_will_not_overwrite_a_file_it_did_not_write(name, tmp_path, capsys):
    mine = tmp_path / name
    mine.write_text("my own notes\n")
    status = main(["compare", "--quick", "--out", str(tmp_path)])  # refused before training
    err = capsys.readouterr().err
    assert status == 1
    assert mine.read_text() == "my own notes\n"
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert name in err and "--force" in err


def test_a_comparison_records_every_file_it_writes(tiny_run):
    from minitransformer.runs import files_written, foreign_files

    out, _ = tiny_run
    written = {path.name for path in out.iterdir() if not path.name.startswith(".")}
    assert written == set(OUTPUT_FILES) <= files_written(out)
    assert foreign_files(out, list(OUTPUT_FILES)) == []  # compare again: no --force needed
