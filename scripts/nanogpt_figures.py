"""docs/img/nanogpt-chars-loss.png: examples/09_nanogpt_chars.py's nanoGPT trained on
minitransformer and on PyTorch from the same initial weights, on the same batches.

``make figures`` runs :func:`write_docs_figures` (an entry of scripts/make_figures.py); it
needs PyTorch (the ``oracle`` extra) and matplotlib.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "09_nanogpt_chars.py"
STEPS = 200


def load_example():
    """examples/09_nanogpt_chars.py as a module (its name starts with a digit)."""
    spec = importlib.util.spec_from_file_location("nanogpt_chars_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_docs_figures(docs: str | os.PathLike[str]) -> list[Path]:
    """Both loss curves on one figure, and below them their difference."""
    from matplotlib.figure import Figure  # no pyplot: no backend, no global state

    from minitransformer.viz.attention import save_figure

    ours, theirs = load_example().same_start_curves(STEPS)
    gap = np.abs(np.subtract(ours, theirs))
    steps = np.arange(len(ours))
    fig = Figure(figsize=(8, 5.5))
    curve_ax, gap_ax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    curve_ax.plot(steps, theirs, color="tab:orange", linewidth=3.5, alpha=0.6, label="PyTorch")
    curve_ax.plot(steps, ours, color="tab:blue", linewidth=1.2, label="minitransformer")
    curve_ax.set(ylabel="training loss (cross-entropy, nats)",
                 title=f"nanoGPT's model.py on rhymes.txt: the same start, the same {STEPS} "
                       "batches (float64)")
    curve_ax.legend()
    gap_ax.semilogy(steps, np.maximum(gap, 1e-18), color="tab:gray")
    gap_ax.set(xlabel="step", ylabel="|difference|\n(0 drawn at 1e-18)",
               title=f"largest difference {gap.max():.1e}")
    for ax in (curve_ax, gap_ax):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(docs) / "img" / "nanogpt-chars-loss.png"
    return [Path(save_figure(fig, path))]


if __name__ == "__main__":
    print(write_docs_figures(ROOT / "docs"))
