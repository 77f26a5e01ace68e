"""Smoke tests: every script in examples/ runs to the end and prints its key result.

Each script asserts its own numbers (hand-derived gradients, by-hand vs layer outputs,
accuracy above chance); here we check that it exits cleanly and reaches its last step.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import torch

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# script -> a line (or part of one) that only the end of a successful run prints
EXPECTED = {
    "01_autograd_basics.py": "all gradients match the hand-derived values",
    "02_softmax_backward.py": "max difference between the three:",
    "03_attention_step_by_step.py": "nn.Attention(X) gives the same Z and A",
    "04_multi_head_attention.py": (
        "torch.nn.MultiheadAttention with those weights" if torch is not None
        else "PyTorch is not installed"
    ),
    "05_gradcheck_attention.py": "float32 gradcheck failed, as expected",
    "06_train_coreference.py": '"it" -> "animal"',
    "07_render_graph.py": "DOT source written:",
    "08_copy_reverse.py": "100% of target positions look hardest at the source position",
    "09_nanogpt_chars.py": "loss fell from",
}


def run_example(name: str, *args: str, **env_changes: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT), **env_changes}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def test_every_example_is_tested():
    scripts = sorted(path.name for path in EXAMPLES.glob("[0-9]*.py"))
    assert scripts == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name, tmp_path):
    args = (str(tmp_path),) if name in ("07_render_graph.py", "08_copy_reverse.py") else ()
    result = run_example(name, *args)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-2000:]}\n{result.stderr}"
    assert EXPECTED[name] in result.stdout, f"{name} printed:\n{result.stdout[-2000:]}"
    if name == "07_render_graph.py":
        source = (tmp_path / "attention_graph.dot").read_text()
        assert "q_proj.weight" in source and "grad" in source  # model names, show_grad
        if "SVG written:" in result.stdout:  # Graphviz is installed
            assert "<svg" in (tmp_path / "attention_graph.svg").read_text()


def test_render_graph_without_graphviz(tmp_path):
    """With no `dot` on PATH the example explains, keeps the DOT source, and exits 0."""
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    result = run_example("07_render_graph.py", str(tmp_path), PATH=str(empty_bin))
    assert result.returncode == 0, result.stderr
    assert "`dot` executable was not found" in result.stdout
    assert "SVG written" not in result.stdout
    assert (tmp_path / "attention_graph.dot").is_file()
    assert not (tmp_path / "attention_graph.svg").exists()
