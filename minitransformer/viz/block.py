"""Measurements and figures of the pages that teach the Transformer block.

* :func:`layer_gradient_norms`: the residual-stream gradient at each layer of a deep stack,
  post-norm against pre-norm, at initialisation (docs/residual.md);
* :func:`sinusoidal_table`: the sinusoidal position signal (docs/positions.md);
* :func:`write_docs_figures`: draws both for ``make figures``.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

import minitransformer as mt
from minitransformer import nn


def layer_gradient_norms(norm_first: bool, num_layers: int = 12, d_model: int = 64,
                         nhead: int = 4, tokens: int = 16, batch: int = 4,
                         seed: int = 0) -> dict[str, np.ndarray]:
    """One backward through a freshly initialised stack of encoder layers.

    Each layer is initialised on its own (not copies of one layer); the pre-norm stack ends
    with a final LayerNorm, as pre-norm models do. The loss is the mean of the output
    against a fixed random direction, so every layer receives a gradient of the same
    kind. Returns, per layer (index 0 = the layer nearest the input):

    ``stream``: the mean over tokens of ‖∂L/∂h‖ at the layer's input h (the residual
    stream), and ``weights``: ‖∂L/∂W‖ of the layer's attention and feed-forward matrices
    together (what the optimiser sees).
    """
    mt.manual_seed(seed)
    layers = [nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=2 * d_model,
                                         norm_first=norm_first, batch_first=True, dropout=0.0)
              for _ in range(num_layers)]
    final = nn.LayerNorm(d_model) if norm_first else None
    generator = np.random.default_rng(seed)
    h = mt.tensor(generator.standard_normal((batch, tokens, d_model)).astype(np.float32),
                  requires_grad=True)  # (B, T, E)
    inputs = []
    for layer in layers:
        h.retain_grad()
        inputs.append(h)
        h = layer(h)  # (B, T, E)
    if final is not None:
        h = final(h)
    direction = mt.tensor(generator.standard_normal(d_model).astype(np.float32))  # (E,)
    (h @ direction).mean().backward()
    stream = np.array([np.linalg.norm(t.grad.numpy(), axis=-1).mean() for t in inputs])
    weights = np.array([
        math.sqrt(sum(float((p.grad.numpy() ** 2).sum()) for name, p in layer.named_parameters()
                      if p.ndim == 2 and p.grad is not None))
        for layer in layers])
    return {"stream": stream, "weights": weights}


def sinusoidal_table(max_len: int, d_model: int) -> np.ndarray:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...): (max_len, d_model),
    read from :class:`~minitransformer.nn.PositionalEncoding`'s buffer."""
    return nn.PositionalEncoding(d_model, max_len).pe.numpy().astype(np.float64)


def write_docs_figures(docs: str | os.PathLike[str]) -> list[Path]:
    """docs/img/residual_gradients.png and docs/img/positional_encoding.png."""
    from matplotlib.figure import Figure  # no pyplot: no backend, no global state

    img = Path(docs) / "img"
    img.mkdir(parents=True, exist_ok=True)
    written = []

    fig = Figure(figsize=(10, 4))
    stream_ax, weight_ax = fig.subplots(1, 2)
    for norm_first, label, marker in ((False, "post-norm", "o"), (True, "pre-norm", "s")):
        norms = layer_gradient_norms(norm_first)
        layers = np.arange(1, len(norms["stream"]) + 1)
        stream_ax.plot(layers, norms["stream"], marker=marker, label=label)
        weight_ax.plot(layers, norms["weights"], marker=marker, label=label)
    stream_ax.set(title="gradient reaching each layer's input", xlabel="layer (1 = input side)",
                  ylabel="mean over tokens of ‖∂L/∂h‖", yscale="log")
    weight_ax.set(title="gradient of each layer's weight matrices", xlabel="layer (1 = input side)",
                  ylabel="‖∂L/∂W‖ (attention + feed-forward)", yscale="log")
    for ax in (stream_ax, weight_ax):
        ax.set_xticks(layers)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("12 encoder layers at initialisation (d_model 64, 4 heads), one backward")
    fig.tight_layout()
    written.append(_save(fig, img / "residual_gradients.png"))

    table = sinusoidal_table(64, 32)
    fig = Figure(figsize=(10, 3.8))
    heat_ax, wave_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    image = heat_ax.imshow(table.T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1,
                           origin="lower")
    fig.colorbar(image, ax=heat_ax, label="PE value")
    heat_ax.set(xlabel="position", ylabel="dimension", title="sinusoidal table, d_model = 32")
    for dim in (0, 2, 8, 16):
        wave_ax.plot(table[:, dim], label=f"dimension {dim}")
    wave_ax.set(xlabel="position", ylabel="PE[position, dimension]",
                title="four sine dimensions: the wavelength grows")
    wave_ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    written.append(_save(fig, img / "positional_encoding.png"))
    return written


def _save(fig: object, path: Path) -> Path:
    """Save to a temporary file next to ``path``, then rename it over ``path``."""
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as tmp:
        fig.savefig(tmp.name, dpi=100)
    os.replace(tmp.name, path)
    return path
