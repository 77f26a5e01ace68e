"""Figures: plotting functions return a matplotlib Figure, never touch the user's backend or
pyplot's list, show themselves in Jupyter; progress bars stay out of logs; a drawn graph
explains itself in Jupyter when Graphviz is missing."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

import minitransformer as mt
from minitransformer import nn, viz
from minitransformer.coref.models.coref import Resolution
from minitransformer.coref.training import History, TrainConfig, plot_curves, train

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


def a_resolution(rng) -> Resolution:
    tokens = ["the", "animal", "was", "tired", "because", "it"]
    maps = [rng.dirichlet(np.ones(6), size=(2, 6)) for _ in range(2)]  # 2 layers (nh, T, T)
    weights = rng.dirichlet(np.ones(6))
    return Resolution(tokens, 5, np.log(weights), weights, maps)


def test_plots_return_figures_and_leave_the_backend_and_pyplot_alone(rng) -> None:
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a backend the user chose; drawing must not change it
    try:
        pyplot_open = (sys.modules["matplotlib.pyplot"].get_fignums()
                       if "matplotlib.pyplot" in sys.modules else [])
        mha = nn.MultiHeadAttention(4, 2)
        _, weights = mha(mt.randn(1, 3, 4), average_attn_weights=False)  # (1, nh, T, T)
        history = History(step_loss=[1.0, 0.5], epoch_loss=[0.7], train_accuracy=[0.5],
                          test_accuracy=[0.6], seconds=[1.0])
        figures = [viz.plot_attention(weights[0], ["a", "b", "c"], title="two heads"),
                   viz.plot_attention(weights[0, 1].detach().numpy()),
                   viz.plot_resolution(a_resolution(rng)), plot_curves(history)]
        assert matplotlib.get_backend() == "svg"
        if "matplotlib.pyplot" in sys.modules:
            assert sys.modules["matplotlib.pyplot"].get_fignums() == pyplot_open
    finally:
        matplotlib.use(before)
    for fig in figures:
        assert isinstance(fig, Figure)
        assert fig._repr_png_()[:8] == PNG  # what a notebook cell shows as its value
    panels = [[ax for ax in fig.axes if ax.get_label() != "<colorbar>"] for fig in figures]
    assert len(panels[0]) == 2 and len(panels[1]) == 1
    assert len(panels[2]) == 2 * 2 + 1  # layers x heads, and the pointer head
    for fig in figures[:3]:  # every attention picture has its colour scale
        assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1


def test_the_library_never_chooses_a_backend() -> None:
    """Only a command line may decide where figures go; the library builds Figures."""
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for path in (ROOT / "minitransformer").rglob("*.py")
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib "
                              r"import pyplot", line) and "/cli/" not in path.as_posix()]
    assert offenders == []


def test_plot_attention_names_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(L, S\) or \(nh, L, S\), got \(1, 2, 3, 3\); "
                                         r"pick one batch element"):
        viz.plot_attention(np.zeros((1, 2, 3, 3)))
    with pytest.raises(ValueError, match="need 3 query and 3 key labels, got 2 and 2"):
        viz.plot_attention(np.eye(3), ["a", "b"])


def test_save_figure_is_atomic_makes_folders_and_checks_the_extension(tmp_path, rng) -> None:
    fig = viz.plot_attention(np.eye(3))
    path = viz.save_figure(fig, tmp_path / "new" / "deeper" / "eye.png")
    assert Path(path).read_bytes()[:8] == PNG
    assert viz.save_figure(fig, tmp_path / "eye.svg") and "<svg" in (
        tmp_path / "eye.svg").read_text()
    with pytest.raises(ValueError, match=r"cannot tell the image format of .*eye\.txt"):
        viz.save_figure(fig, tmp_path / "eye.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eye.svg", "new"]  # no leftovers


TINY = dict(epochs=1, train_size=64, test_size=16, batch_size=32, d_model=16, num_layers=1,
            dim_feedforward=32)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch, terminal) -> None:
    stderr = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    train(TrainConfig(**TINY), tmp_path, progress=True)
    output = stderr.getvalue()
    assert "held-out acc" in output  # the epoch line, either way
    assert ("\r" in output) == terminal  # bar frames only where a terminal redraws them


def test_a_drawn_graph_in_jupyter_without_dot(monkeypatch, tmp_path) -> None:
    """What a notebook shows for a draw_graph(...) cell value when `dot` is missing."""
    from IPython.core.formatters import DisplayFormatter

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no `dot`
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    graph = viz.draw_graph((x * x).sum())
    shown, _ = DisplayFormatter().format(graph)
    assert "image/svg+xml" not in shown
    for text in (shown["text/plain"], shown["text/html"]):
        assert "the Graphviz `dot` executable was not found" in text
        assert "sudo apt-get install graphviz" in text
    assert graph.source in shown["text/plain"]
