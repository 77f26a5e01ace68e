"""The command line under stress (issue 24): Ctrl-C at any moment, an unknown device, text
the model cannot read, a pronoun with nothing to point at, figures written exactly where
asked, a closed pipe, absurd epoch counts, and the user's own files in a run folder."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minitransformer.cli.main import main
from tests.test_cli import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parent.parent
SENTENCE = "The animal didn't cross the street because it was too tired."


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny coreference run and a tiny GPT run (one epoch each)."""
    from benchmarks.checkpoint_fuzz import tiny_runs

    paths = tiny_runs(os.fspath(tmp_path_factory.mktemp("runs")))
    return {kind: Path(path).parent for kind, path in paths.items()}


def _cli(*argv: str, **popen) -> subprocess.Popen:
    """``python -m minitransformer ARGV`` as a child with Python's own Ctrl-C handling."""
    env = {**os.environ, "PYTHONPATH": os.fspath(ROOT)}
    env.pop("MINITRANSFORMER_DEVICE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "minitransformer", *argv], env=env, text=True,
        stdout=popen.pop("stdout", subprocess.PIPE), stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen)


# ----------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("command", [["train", "--epochs", "1"], ["gpt", "train", "--epochs", "1"]])
@pytest.mark.parametrize("delay", [0.1, 0.2, 0.6])
def test_ctrl_c_early_in_training_gives_one_line(command, delay, tmp_path) -> None:
    for attempt in range(5):
        child = _cli(*command, "--quiet", "--out", os.fspath(tmp_path / f"run{attempt}"))
        time.sleep(delay + 0.1 * attempt)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=120)
        before_us = "init_import_site" in err or (  # Python's own start-up, before the
            "Traceback" in err and "minitransformer/" not in err.split("Traceback")[-1])
        if not before_us:  # package's first line (site, runpy): not ours to catch; later
            break
    assert "Traceback" not in err, err
    assert child.returncode != 0
    assert err.strip().splitlines()[-1].startswith("interrupted"), err


def test_ctrl_c_while_the_parser_is_built_gives_one_line(monkeypatch, capsys) -> None:
    cli_main = importlib.import_module("minitransformer.cli.main")  # the module, not main()

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "build_parser", interrupted)
    assert main(["train"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_ctrl_c_in_attend_does_not_speak_of_training(monkeypatch, capsys, runs) -> None:
    import minitransformer.coref.training as training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "load_run", interrupted)
    code, _, err = run_cli(capsys, "attend", runs["coref"], SENTENCE)
    assert code == 130 and err.strip() == "interrupted"


def test_ctrl_c_before_the_first_checkpoint_says_there_is_nothing_to_resume(
        monkeypatch, capsys, tmp_path) -> None:
    import minitransformer.gpt.training as gpt_training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gpt_training, "train_gpt", interrupted)
    code, _, err = run_cli(capsys, "gpt", "train", "--out", tmp_path / "g")
    assert code == 130 and "nothing to resume" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- devices


@pytest.mark.parametrize("argv", [["attend", "RUN", SENTENCE], ["train", "--out", "OUT"],
                                  ["gpt", "sample", "GPT"]])
def test_an_unknown_device_in_the_environment_is_an_error(argv, runs, tmp_path, capsys,
                                                          monkeypatch) -> None:
    monkeypatch.setenv("MINITRANSFORMER_DEVICE", "bogus")
    names = {"RUN": os.fspath(runs["coref"]), "GPT": os.fspath(runs["gpt"]),
             "OUT": os.fspath(tmp_path / "new")}
    code, out, err = run_cli(capsys, *[names.get(a, a) for a in argv])
    assert code == 1 and out == ""
    assert_one_line_error(err, "MINITRANSFORMER_DEVICE='bogus'", "cpu, cuda")
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------- epochs


@pytest.mark.parametrize("command", [["train"], ["gpt", "train"]])
def test_an_endless_epoch_count_is_refused_up_front(command, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--epochs", "1000000000", "--out", os.fspath(tmp_path / "r")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "at most 10000 epochs, got 1000000000" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_a_long_run_says_how_long_after_its_first_epoch() -> None:
    from minitransformer.runs import time_left_note

    assert time_left_note(2.0, 1, 8) == ""  # 14 s more: nothing to say
    assert "the 9999 epochs left take about 5 h 33 min" in time_left_note(2.0, 1, 10_000)
    assert "the 20 epochs left take about 3 min" in time_left_note(10.0, 80, 100)


def test_training_says_how_long_the_rest_takes_once(tmp_path, monkeypatch) -> None:
    import minitransformer.gpt.training as gpt_training
    from minitransformer import runs as runs_module

    calls = []
    monkeypatch.setattr(runs_module, "time_left_note",
                        lambda seconds, done, epochs: calls.append((done, epochs)) or " NOTE")
    lines = []
    gpt_training.train_gpt(gpt_training.GPTTrainConfig(
        epochs=2, train_size=16, val_size=8, batch_size=8, n_embd=8, dim_feedforward=8,
        n_layer=1), tmp_path, progress=False, log=lines.append)
    assert calls == [(1, 2)] and lines[0].endswith(" NOTE") and "NOTE" not in lines[1]


# ----------------------------------------------------------------------------- text


@pytest.mark.parametrize(("sentence", "hint"), [
    (SENTENCE.replace("animal", "animal \U0001f600"), "`minitransformer vocab` lists"),
    (SENTENCE.replace("animal", "anima\U0001f600l"), "closest known words: animal"),
    (SENTENCE.replace("animal", "animal\u2122"), "closest known words: animal")])
def test_attend_refuses_a_character_it_would_drop(sentence, hint, runs, capsys) -> None:
    code, out, err = run_cli(capsys, "attend", runs["coref"], sentence)
    assert code == 1 and out == ""
    assert_one_line_error(err, "cannot read and would drop silently", hint)


def test_attend_refuses_an_unknown_word_naming_the_closest(runs, capsys) -> None:
    code, _, err = run_cli(capsys, "attend", runs["coref"], SENTENCE.replace("animal", "animl"))
    assert code == 1
    assert_one_line_error(err, "'animl' (closest known: animal")


@pytest.mark.parametrize("sentence", ["it", "It.", "it they"])
def test_attend_refuses_a_pronoun_with_nothing_to_point_at(sentence, runs, capsys) -> None:
    code, out, err = run_cli(capsys, "attend", runs["coref"], sentence,
                             *(["--pronoun", "it"] if "they" in sentence else []))
    assert code == 1 and out == ""
    assert_one_line_error(err, "no candidate antecedent")


@pytest.mark.parametrize("command", ["sample", "attend"])
@pytest.mark.parametrize("text", ["the dog\U0001f436 met the nurse .", "the dog, met the nurse .",
                                  "the dog2 met the nurse ."])
def test_gpt_refuses_a_character_the_story_language_lacks(command, text, runs, capsys) -> None:
    argv = (["--prompt", text] if command == "sample" else [text])
    code, out, err = run_cli(capsys, "gpt", command, runs["gpt"], *argv)
    assert code == 1 and out == ""
    assert_one_line_error(err, "cannot read and would drop silently", "closest known words: dog")


def test_gpt_refuses_an_unknown_word_naming_the_closest(runs, capsys) -> None:
    code, _, err = run_cli(capsys, "gpt", "sample", runs["gpt"], "--prompt", "the dgo met")
    assert code == 1
    assert_one_line_error(err, "'dgo' (closest known: dog")


# ----------------------------------------------------------------------------- figures


def test_gpt_attend_plot_into_a_directory_writes_a_file_inside(runs, tmp_path, capsys) -> None:
    code, out, err = run_cli(capsys, "gpt", "attend", runs["gpt"], "the dog met the nurse .",
                             "--plot", tmp_path)
    assert code == 0, err
    assert (tmp_path / "attention.png").read_bytes().startswith(b"\x89PNG")
    assert f"wrote {tmp_path / 'attention.png'}" in out and "is a directory" in err


def test_gpt_attend_plot_without_extension_adds_png_and_says_so(runs, tmp_path, capsys) -> None:
    code, out, err = run_cli(capsys, "gpt", "attend", runs["gpt"], "the dog met the nurse .",
                             "--plot", tmp_path / "heat")
    assert code == 0, err
    assert (tmp_path / "heat.png").read_bytes().startswith(b"\x89PNG")
    assert os.listdir(tmp_path) == ["heat.png"]
    assert f"wrote {tmp_path / 'heat.png'}" in out and "no extension" in err


def test_gpt_attend_plot_with_an_unknown_extension_is_refused(runs, tmp_path, capsys) -> None:
    code, _, err = run_cli(capsys, "gpt", "attend", runs["gpt"], "the dog met the nurse .",
                           "--plot", tmp_path / "heat.txt")
    assert code == 1 and os.listdir(tmp_path) == []
    assert_one_line_error(err, "heat.txt", ".png")


def test_attend_plot_into_a_directory_writes_a_file_inside(runs, tmp_path, capsys) -> None:
    code, out, err = run_cli(capsys, "attend", runs["coref"], SENTENCE, "--plot", tmp_path)
    assert code == 0, err
    assert (tmp_path / "attention.png").exists() and "is a directory" in err


def test_gpt_refuses_a_lone_emoji_saying_what_the_language_has(runs, capsys) -> None:
    code, _, err = run_cli(capsys, "gpt", "sample", runs["gpt"], "--prompt", "the dog \U0001f436")
    assert code == 1
    assert_one_line_error(err, "'\U0001f436'", "lowercase words and full stops only")


# ----------------------------------------------------------------------------- pipes


def test_vocab_into_a_pipe_gives_one_word_a_line(runs, capsys) -> None:
    code, out, err = run_cli(capsys, "vocab", runs["coref"])
    assert code == 0
    words = out.splitlines()
    assert words == sorted(words) and "animal" in words and all(" " not in w for w in words)
    assert "words" in err  # the count goes to stderr, out of the pipe's way


def test_vocab_into_a_closed_pipe_ends_quietly(runs) -> None:
    child = _cli("vocab", os.fspath(runs["coref"]))
    child.stdout.close()  # the reader left before the first line (`| head -0`)
    err = child.stderr.read()
    child.wait(timeout=120)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert child.returncode in (0, 141)


def test_vocab_piped_into_head_gives_the_first_word(runs) -> None:
    env = {**os.environ, "PYTHONPATH": os.fspath(ROOT)}
    result = subprocess.run(f"'{sys.executable}' -m minitransformer vocab '{runs['coref']}' "
                            "| head -1", shell=True, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip().isalpha(), result.stdout
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- the user's files


def _tiny_coref(monkeypatch) -> None:
    """`train` and `demo` build this tiny config instead of the default one."""
    import functools

    import minitransformer.coref.training as training

    monkeypatch.setattr(training, "TrainConfig", functools.partial(
        training.TrainConfig, train_size=32, test_size=8, batch_size=16, d_model=8,
        num_layers=1, dim_feedforward=8))


def _tiny_gpt(monkeypatch) -> None:
    import functools

    import minitransformer.gpt.training as gpt_training

    monkeypatch.setattr(gpt_training, "GPTTrainConfig", functools.partial(
        gpt_training.GPTTrainConfig, train_size=16, val_size=8, batch_size=8, n_embd=8,
        dim_feedforward=8, n_layer=1))


@pytest.mark.parametrize("name", ["metrics.json", "curves.png"])
def test_train_does_not_overwrite_the_users_own_files(name, tmp_path, capsys,
                                                      monkeypatch) -> None:
    _tiny_coref(monkeypatch)
    (tmp_path / name).write_text("mine")
    code, _, err = run_cli(capsys, "train", "--out", tmp_path, "--epochs", "1", "--quiet")
    assert code == 1
    assert_one_line_error(err, f"holds {name}, which minitransformer did not write", "--force")
    assert (tmp_path / name).read_text() == "mine" and sorted(os.listdir(tmp_path)) == [name]
    code, _, err = run_cli(capsys, "train", "--out", tmp_path, "--epochs", "1", "--quiet",
                           "--force")
    assert code == 0, err
    assert (tmp_path / name).read_bytes() != b"mine"


def test_a_run_written_by_minitransformer_is_resumed_and_forced_freely(tmp_path, capsys,
                                                                     monkeypatch) -> None:
    _tiny_coref(monkeypatch)
    args = ["train", "--out", tmp_path, "--epochs", "1", "--quiet"]
    assert run_cli(capsys, *args)[0] == 0
    from minitransformer.runs import WRITTEN_FILE, files_written

    assert {"checkpoint.npz", "metrics.json", "curves.png"} <= files_written(tmp_path)
    assert (tmp_path / WRITTEN_FILE).exists()
    assert run_cli(capsys, "train", "--out", tmp_path, "--epochs", "2", "--resume",
                   "--quiet")[0] == 0
    assert run_cli(capsys, *args, "--force")[0] == 0


def test_demo_does_not_overwrite_the_users_graph(tmp_path, capsys, monkeypatch) -> None:
    _tiny_coref(monkeypatch)
    (tmp_path / "attention_graph.dot").write_text("digraph mine {}")
    code, _, err = run_cli(capsys, "demo", "--out", tmp_path, "--quiet")
    assert code == 1
    assert_one_line_error(err, "attention_graph.dot, which minitransformer did not write")
    assert (tmp_path / "attention_graph.dot").read_text() == "digraph mine {}"
    assert os.listdir(tmp_path) == ["attention_graph.dot"]


def test_gpt_train_over_a_run_needs_resume_or_force(tmp_path, capsys, monkeypatch) -> None:
    _tiny_gpt(monkeypatch)
    args = ["gpt", "train", "--out", tmp_path, "--epochs", "1", "--quiet"]
    assert run_cli(capsys, *args)[0] == 0
    before = (tmp_path / "checkpoint.npz").read_bytes()
    code, _, err = run_cli(capsys, *args, "--seed", "5")
    assert code == 1
    assert_one_line_error(err, "already holds a run", "--resume", "--force")
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    code, _, err = run_cli(capsys, *args, "--seed", "5", "--force")
    assert code == 0, err
    assert (tmp_path / "checkpoint.npz").read_bytes() != before


def test_gpt_train_does_not_overwrite_the_users_metrics(tmp_path, capsys, monkeypatch) -> None:
    _tiny_gpt(monkeypatch)
    (tmp_path / "metrics.json").write_text("{}")
    code, _, err = run_cli(capsys, "gpt", "train", "--out", tmp_path, "--epochs", "1")
    assert code == 1
    assert_one_line_error(err, "metrics.json, which minitransformer did not write")
    assert (tmp_path / "metrics.json").read_text() == "{}"


def test_gpt_attend_does_not_draw_over_the_users_picture(runs, tmp_path, capsys) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["gpt"], run)
    from minitransformer.runs import WRITTEN_FILE

    (run / WRITTEN_FILE).write_text('{"files": ["checkpoint.npz", "metrics.json"]}')
    (run / "attention.png").write_text("mine")
    code, _, err = run_cli(capsys, "gpt", "attend", run, "the dog met the nurse .")
    assert code == 1
    assert_one_line_error(err, "attention.png, which minitransformer did not write", "--plot")
    assert (run / "attention.png").read_text() == "mine"


def test_attend_plot_without_extension_adds_png_and_says_so(runs, tmp_path, capsys) -> None:
    code, out, err = run_cli(capsys, "attend", runs["coref"], SENTENCE, "--plot",
                             tmp_path / "heat")
    assert code == 0, err
    assert os.listdir(tmp_path) == ["heat.png"] and "no extension" in err
    assert f"wrote {tmp_path / 'heat.png'}" in out


def test_importing_the_library_leaves_ctrl_c_alone() -> None:
    """Only the command line's own process gets the start-up handler (minitransformer/
    _startup.py); a program importing the library keeps Python's KeyboardInterrupt."""
    import minitransformer._startup as startup

    assert not startup.is_command_line()  # pytest is not the command line
    assert signal.getsignal(signal.SIGINT) is not startup._interrupted_while_starting


def test_the_command_line_and_the_benchmarks_quiet_openblas_threads_a_library_import_not() -> None:
    """OPENBLAS_THREAD_TIMEOUT must be in the environment before NumPy loads: the command
    line and the benchmarks set it (keeping a user's own value); importing the library does
    not touch the environment."""
    probe = ("import os, sys; {setup}; import {module}; "
             "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}

    def read(setup: str, module: str, **extra: str) -> str:
        code = probe.format(setup=setup, module=module)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**env, **extra}, check=True, timeout=120)
        return done.stdout.strip()

    as_command = "sys.argv = ['minitransformer']"
    assert read(as_command, "minitransformer") == "4"
    assert read(as_command, "minitransformer", OPENBLAS_THREAD_TIMEOUT="9") == "9"
    assert read("pass", "minitransformer") == "None"
    assert read("pass", "benchmarks") == "4"
