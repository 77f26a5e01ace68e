"""Every failure of the command line is one clear line and a non-zero status, never a
traceback; nothing is left half-written; demo never trains over a checkpoint it cannot read.
"""

from __future__ import annotations

import errno
import json
import os
import shutil

import numpy as np
import pytest

from minitransformer import files, serialization
from minitransformer.cli.main import main
from minitransformer.coref.training import CHECKPOINT_FILE, TrainConfig, train
from tests.conftest import requires_dot


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("tiny-run")
    config = TrainConfig(epochs=1, train_size=64, test_size=16, batch_size=16)
    train(config, directory, progress=False, log=lambda message: None)
    return directory


def one_line_error(capsys: pytest.CaptureFixture, *argv: object, status: int = 1) -> str:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    assert code == status, (code, captured.err)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def no_space(*args: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def read_only(*args: object, **kwargs: object) -> None:
    raise OSError(errno.EROFS, "Read-only file system", kwargs.get("dir") or args[0])


def leftovers(directory: os.PathLike) -> list[str]:
    return [name for name in os.listdir(directory) if name.endswith(".tmp")]


# ----- train / demo: where the run goes -----------------------------------------------------
def test_train_out_is_a_file(capsys, tmp_path) -> None:
    (tmp_path / "afile").write_text("x")
    line = one_line_error(capsys, "train", "--out", tmp_path / "afile", "--quiet")
    assert "is a file" in line and "--out" in line


def test_train_where_the_checkpoint_is_a_directory(capsys, tmp_path) -> None:
    (tmp_path / CHECKPOINT_FILE).mkdir()
    line = one_line_error(capsys, "train", "--out", tmp_path, "--quiet")
    assert "is a directory" in line


def test_train_on_a_full_disk_leaves_nothing_half_written(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(files.os, "fsync", no_space)
    line = one_line_error(capsys, "train", "--out", tmp_path, "--epochs", "1", "--quiet")
    assert "No space left on device" in line and "--out" in line
    assert leftovers(tmp_path) == [] and not (tmp_path / CHECKPOINT_FILE).exists()


def test_demo_on_a_read_only_disk(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    line = one_line_error(capsys, "demo", "--out", tmp_path / "run", "--quiet")
    assert "Read-only file system" in line


def usage_error(capsys: pytest.CaptureFixture, *argv: object) -> str:
    """argparse's own report of a bad argument: usage, then one error line, status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_distractors_are_bounded(capsys, tmp_path) -> None:
    line = usage_error(capsys, "train", "--out", tmp_path, "--distractors", "1000")
    assert "--distractors" in line and "at most 32" in line


def test_demo_never_trains_over_a_checkpoint_it_cannot_read(capsys, tmp_path) -> None:
    checkpoint = tmp_path / CHECKPOINT_FILE
    checkpoint.write_bytes(b"PK\x03\x04 a damaged checkpoint")
    line = one_line_error(capsys, "demo", "--out", tmp_path, "--quiet")
    assert str(checkpoint) in line and "--out" in line and "--force" in line
    assert checkpoint.read_bytes() == b"PK\x03\x04 a damaged checkpoint"


# ----- attend ---------------------------------------------------------------------------------
def test_attend_plot_into_a_missing_folder_creates_it(capsys, run_dir, tmp_path) -> None:
    target = tmp_path / "missing" / "x.png"
    assert main(["attend", str(run_dir), "The animal didn't cross the street because it "
                 "was too tired.", "--plot", str(target)]) == 0
    capsys.readouterr()
    assert target.read_bytes()[:4] == b"\x89PNG"


def test_attend_plot_with_an_unknown_extension(capsys, run_dir, tmp_path) -> None:
    line = one_line_error(capsys, "attend", run_dir, "The animal was tired because it slept.",
                          "--plot", tmp_path / "x.jpgg")
    assert "unknown" not in line or ".jpgg" in line
    assert ".png" in line and not (tmp_path / "x.jpgg").exists()


def test_attend_plot_on_a_full_disk(capsys, run_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(files.os, "fsync", no_space)
    line = one_line_error(capsys, "attend", run_dir, "The animal didn't cross the street "
                          "because it was too tired.", "--plot", tmp_path / "x.png")
    assert "No space left on device" in line
    assert os.listdir(tmp_path) == []  # no 0-byte PNG, no temporary file


def test_attend_with_nan_weights(capsys, run_dir, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    state = serialization.load(broken / CHECKPOINT_FILE)
    first = next(iter(state["model"]))
    state["model"][first] = np.full_like(state["model"][first].numpy(), np.nan)
    serialization.save(state, broken / CHECKPOINT_FILE)
    sentence = "The animal didn't cross the street because it was too tired."
    line = one_line_error(capsys, "attend", broken, sentence, "--json")
    assert "NaN or infinite" in line and "model.embedding.weight" in line
    assert capsys.readouterr().out == ""  # no invalid JSON (NaN) on stdout


def test_attend_json_is_valid_json(capsys, run_dir) -> None:
    assert main(["attend", str(run_dir), "The animal didn't cross the street because it was "
                 "too tired.", "--json"]) == 0
    json.loads(capsys.readouterr().out)


# ----- graph ----------------------------------------------------------------------------------
@pytest.mark.parametrize("collapse", ["0", "-1"])
def test_graph_collapse_depth_below_one(capsys, tmp_path, collapse) -> None:
    line = one_line_error(capsys, "graph", "--what", "encoder", "--collapse", collapse,
                          "--out", tmp_path / "g.svg")
    assert "at least 1" in line


def test_graph_collapse_an_unknown_module(capsys, tmp_path) -> None:
    line = one_line_error(capsys, "graph", "--what", "encoder", "--collapse", "nowhere",
                          "--out", tmp_path / "g.svg")
    assert "nowhere" in line


@pytest.mark.parametrize("what", ["attention", "mha", "backward"])
def test_graph_collapse_where_it_does_not_apply(capsys, tmp_path, what) -> None:
    line = one_line_error(capsys, "graph", "--what", what, "--collapse", "1",
                          "--out", tmp_path / "g.svg")
    assert "--collapse applies to" in line


def test_graph_checkpoint_where_it_does_not_apply(capsys, tmp_path, run_dir) -> None:
    line = one_line_error(capsys, "graph", "--what", "attention", "--checkpoint", run_dir,
                          "--out", tmp_path / "g.svg")
    assert "--checkpoint applies to --what coref" in line


@pytest.mark.parametrize("name", ["g.jpg", "g.txt"])
def test_graph_out_with_an_unknown_extension(capsys, tmp_path, name) -> None:
    line = one_line_error(capsys, "graph", "--out", tmp_path / name)
    assert "unknown extension" in line and ".svg" in line
    assert os.listdir(tmp_path) == []


@requires_dot
def test_graph_out_a_directory_gets_the_file_inside(capsys, tmp_path) -> None:
    assert main(["graph", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert (tmp_path / "graph.svg").read_text().lstrip().startswith("<?xml")


@requires_dot
def test_graph_on_a_full_disk(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(files.os, "fsync", no_space)
    line = one_line_error(capsys, "graph", "--out", tmp_path / "g.svg")
    assert "No space left on device" in line
    assert leftovers(tmp_path) == [] and not (tmp_path / "g.svg").exists()


def test_graph_on_a_read_only_disk(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    line = one_line_error(capsys, "graph", "--out", tmp_path / "g.svg")
    assert "Read-only file system" in line


# ----- compare, and the last resort -----------------------------------------------------------
def test_compare_negative_seed(capsys) -> None:
    line = usage_error(capsys, "compare", "--seed", "-1")
    assert "--seed" in line and "must not be negative" in line


def test_an_unexpected_exception_is_one_line_asking_for_a_report(capsys, tmp_path,
                                                                 monkeypatch) -> None:
    import minitransformer.cli.graph as graph_command

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("an internal bug")

    monkeypatch.setattr(graph_command, "render", broken)
    line = one_line_error(capsys, "graph", "--out", tmp_path / "g.svg")
    assert "ZeroDivisionError" in line and "please report this" in line


def test_an_interrupted_save_leaves_no_temporary_file_for_good(tmp_path) -> None:
    target = tmp_path / CHECKPOINT_FILE
    stale = tmp_path / f".{CHECKPOINT_FILE}.abcd1234.tmp"  # what a kill -9 mid-save leaves
    stale.write_bytes(b"half a checkpoint")
    serialization.save({"w": np.zeros(2)}, target)
    assert leftovers(tmp_path) == []
    np.testing.assert_array_equal(serialization.load(target)["w"], np.zeros(2))
