"""Self-attention against an LSTM and a CNN, measured on this project's own code.

The reference article compares the three on four points: how parallel the computation is,
how well long-range dependencies are captured, how interpretable the weights are, and how
fast they train. :func:`run_comparison` measures each point here:

1. accuracy against distance: three coreference models of about the same size (the
   Transformer encoder of :mod:`minitransformer.coref.models.coref`, a BiLSTM and a stack of
   convolutions, each ending in the same pointer head) are trained on sentences whose
   antecedent-to-pronoun distance is spread by distractors, then scored on held-out noun
   pairs per distance bucket;
2. training speed: seconds per epoch and seconds until 95% held-out accuracy;
3. parallelism: forward and forward+backward time of ONE layer of each kind at equal width
   against sequence length, with the number of steps that must run one after the other;
4. interpretability: how often the pronoun's largest attention weight lands on the
   antecedent, in the pointer head and in the encoder's last self-attention layer;
5. gradient reach: how strongly the pronoun's encoder output depends on the antecedent's
   embedding (the norm of that Jacobian-vector product, relative to the pronoun's own),
   per distance bucket, for the trained encoders.

Everything goes to one directory: ``results.json`` (all numbers), ``results.md`` (tables)
and PNG plots. All timings are wall-clock on whatever machine runs it; they include the
Python overhead of this small engine, which is part of what is being compared.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

import minitransformer as mt
from minitransformer import backend, files, nn
from minitransformer.coref.data import CorefDataset, iterate_batches, make_dataset
from minitransformer.coref.models.baselines import (
    ConvCorefModel,
    EncoderConfig,
    LSTMCorefModel,
    count_parameters,
)
from minitransformer.coref.models.coref import CorefConfig, CorefModel
from minitransformer.coref.training import TrainConfig, evaluate, train_step
from minitransformer.nn.conv import Conv1d
from minitransformer.nn.rnn import LSTM
from minitransformer.runs import build_optimizer, record_written, write_json

__all__ = ["MODELS", "CompareConfig", "benchmark_layers", "run_comparison"]

MODELS = ("self-attention", "LSTM", "CNN")
"""The three coreference models, in the order of every table."""

LAYERS = ("self-attention", "LSTM", "conv")
"""The three single layers of the speed benchmark."""


@dataclass(frozen=True)
class CompareConfig:
    """Everything the experiment depends on. The defaults are the full run."""

    seed: int = 0
    train_size: int = 2000
    test_size: int = 1000
    max_distractors: int = 16  # 0..16 per sentence: antecedent distances 2 to ~50 tokens
    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    target_accuracy: float = 0.95
    d_model: int = 32
    lstm_hidden: int = 27  # per direction: about the Transformer's parameter count
    conv_layers: int = 5
    kernel_size: int = 3
    bucket_edges: tuple[int, ...] = (1, 6, 11, 21, 31)  # buckets [1,5] [6,10] ... [31, inf)
    width: int = 64  # of the single layers timed against length
    lengths: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
    repeats: int = 2  # timings: the best of this many runs
    heads: int = 4  # of the timed self-attention layer

    @classmethod
    def quick(cls, seed: int = 0) -> CompareConfig:
        """A few minutes on a small CPU: less data, fewer epochs, one timing each."""
        return cls(seed=seed, train_size=1200, test_size=500, epochs=6, repeats=1,
                   lengths=(16, 64, 256, 1024))

    @classmethod
    def tiny(cls, seed: int = 0) -> CompareConfig:
        """Seconds: for tests of the pipeline, not for conclusions."""
        return cls(seed=seed, train_size=64, test_size=80, epochs=1, max_distractors=10,
                   batch_size=32, lengths=(8, 16), repeats=1, width=8, heads=2,
                   bucket_edges=(1, 6, 11, 21, 31))

    def buckets(self) -> list[tuple[int, int | None]]:
        """(low, high) inclusive distance ranges; the last is open: (low, None)."""
        edges = self.bucket_edges
        closed = [(lo, hi - 1) for lo, hi in zip(edges[:-1], edges[1:])]
        return closed + [(edges[-1], None)]


def bucket_name(bucket: tuple[int, int | None]) -> str:
    low, high = bucket
    return f"{low}+" if high is None else f"{low}-{high}"


# ----------------------------------------------------------------------------- the models


def build_models(config: CompareConfig, vocab_size: int, max_len: int) -> dict[str, nn.Module]:
    """The three coreference models, each initialised from ``config.seed``."""
    models: dict[str, nn.Module] = {}
    mt.manual_seed(config.seed)
    models["self-attention"] = CorefModel(CorefConfig(vocab_size=vocab_size,
                                                      d_model=config.d_model, max_len=max_len))
    mt.manual_seed(config.seed)
    models["LSTM"] = LSTMCorefModel(EncoderConfig(vocab_size, config.d_model,
                                                  hidden_size=config.lstm_hidden))
    mt.manual_seed(config.seed)
    models["CNN"] = ConvCorefModel(EncoderConfig(vocab_size, config.d_model,
                                                 num_layers=config.conv_layers,
                                                 kernel_size=config.kernel_size))
    return models


def train_model(model: nn.Module, data: CorefDataset, config: CompareConfig,
                log: Callable[[str], None], name: str) -> dict[str, Any]:
    """Train with the project's optimiser set-up and loss; held-out accuracy per epoch.

    The held-out evaluation after each epoch is not counted in the training time.
    """
    train_config = TrainConfig(seed=config.seed, epochs=config.epochs,
                               train_size=len(data.train), test_size=len(data.test),
                               batch_size=config.batch_size, lr=config.lr)
    optimizer, scheduler = build_optimizer(model, train_config)
    batch_rng = np.random.default_rng(config.seed)
    epoch_seconds, test_accuracy = [], []
    for epoch in range(1, config.epochs + 1):
        model.train()
        started = time.perf_counter()
        for batch in iterate_batches(data.train, data.vocabulary, config.batch_size,
                                     rng=batch_rng):
            train_step(model, batch, optimizer, scheduler, train_config.clip_norm)
        epoch_seconds.append(time.perf_counter() - started)
        test_accuracy.append(float(evaluate(model, data.test, data.vocabulary).mean()))
        log(f"  {name:<15} epoch {epoch:>2}/{config.epochs}  held-out {test_accuracy[-1]:6.1%}"
            f"  ({epoch_seconds[-1]:.1f} s)")
    elapsed = np.cumsum(epoch_seconds)
    reached = [i for i, acc in enumerate(test_accuracy) if acc >= config.target_accuracy]
    return {
        "epoch_seconds": epoch_seconds,
        "test_accuracy": test_accuracy,
        # The median: one epoch slowed down by other work on the machine does not move it.
        "seconds_per_epoch": float(np.median(epoch_seconds)),
        "epochs_to_target": reached[0] + 1 if reached else None,
        "seconds_to_target": float(elapsed[reached[0]]) if reached else None,
    }


def accuracy_by_bucket(correct: np.ndarray, distances: np.ndarray,
                       buckets: Sequence[tuple[int, int | None]]) -> dict[str, dict[str, Any]]:
    """Accuracy and count of the examples whose distance falls in each bucket."""
    result = {}
    for bucket in buckets:
        low, high = bucket
        inside = (distances >= low) & (distances <= (high if high is not None else np.inf))
        count = int(inside.sum())
        result[bucket_name(bucket)] = {
            "accuracy": float(correct[inside].mean()) if count else None,
            "count": count,
        }
    return result


# ----------------------------------------------------------------------------- interpretability


def attention_hits(model: CorefModel, data: CorefDataset, batch_size: int = 250
                   ) -> dict[str, Any]:
    """How often the pronoun's largest weight lands on the antecedent.

    ``pointer``: in the pointer head (this is the model's accuracy). ``last_layer_any_head``:
    in the last encoder layer's self-attention, the pronoun's row of at least one head.
    ``last_layer_per_head``: each head on its own. ``chance``: 1 / sentence length, averaged.
    """
    model.eval()
    model.store_attention(True)
    pointer, any_head, per_head, chance = [], [], [], []
    try:
        with mt.no_grad():
            for batch in iterate_batches(data.test, data.vocabulary, batch_size):
                _, weights = model(batch["ids"], batch["pronoun"], batch["padding_mask"])
                rows = np.arange(len(batch["label"]))
                label = batch["label"]
                pointer.append(backend.to_numpy(weights.data).argmax(-1) == label)
                last = model.encoder_attention()[-1]  # (B, nh, T, T)
                pronoun_rows = last[rows, :, batch["pronoun"], :]  # (B, nh, T)
                hits = pronoun_rows.argmax(-1) == label[:, None]  # (B, nh)
                per_head.append(hits)
                any_head.append(hits.any(axis=1))
                chance.append(1.0 / batch["lengths"])
    finally:
        model.store_attention(False)
    return {
        "pointer": float(np.concatenate(pointer).mean()),
        "last_layer_any_head": float(np.concatenate(any_head).mean()),
        "last_layer_per_head": np.concatenate(per_head).mean(axis=0).tolist(),
        "chance": float(np.concatenate(chance).mean()),
    }


# ----------------------------------------------------------------------------- gradient reach


def _encode(name: str, model: nn.Module, x: mt.Tensor, padding_mask: np.ndarray) -> mt.Tensor:
    """Each model's encoder applied to given token vectors ``x`` (B, T, E): (B, T, H)."""
    if name == "self-attention":
        return model.encoder(model.positions(x), src_key_padding_mask=padding_mask)
    if name == "LSTM":
        return model.encoder(x, lengths=(~padding_mask).sum(axis=1))[0]
    keep = mt.tensor(~padding_mask[:, :, None]).to(x.dtype)  # (B, T, 1)
    for block in model.blocks:
        x = block(x, keep)
    return x


def gradient_reach(name: str, model: nn.Module, data: CorefDataset,
                   buckets: Sequence[tuple[int, int | None]], batch_size: int = 250
                   ) -> dict[str, float | None]:
    """Median over held-out sentences of |d(u . h_pronoun) / d x_antecedent| divided by
    |d(u . h_pronoun) / d x_pronoun|, per distance bucket (u: a fixed random direction).

    0 means the antecedent's word cannot influence the pronoun's vector at all (outside a
    convolution stack's receptive field); small values are the vanishing-gradient effect.
    """
    model.eval()
    rng = np.random.default_rng(0)
    ratios, distances = [], []
    for batch in iterate_batches(data.test, data.vocabulary, batch_size):
        rows = np.arange(len(batch["label"]))
        x = model.embedding(batch["ids"]).detach().requires_grad_()  # (B, T, E)
        h = _encode(name, model, x, batch["padding_mask"])  # (B, T, H)
        direction = rng.standard_normal(h.shape[-1]).astype(h.dtype)
        (h[rows, batch["pronoun"]] @ mt.tensor(direction)).sum().backward()
        grads = np.linalg.norm(x.grad.numpy(), axis=-1)  # (B, T)
        own = grads[rows, batch["pronoun"]]
        ratios.append(grads[rows, batch["label"]] / np.maximum(own, 1e-30))
        distances.append(batch["distance"])
    ratios, distances = np.concatenate(ratios), np.concatenate(distances)
    result: dict[str, float | None] = {}
    for bucket in buckets:
        low, high = bucket
        inside = (distances >= low) & (distances <= (high if high is not None else np.inf))
        result[bucket_name(bucket)] = float(np.median(ratios[inside])) if inside.any() else None
    return result


# ----------------------------------------------------------------------------- one layer, timed


def _best_time(fn: Callable[[], Any], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def benchmark_layers(width: int, lengths: Sequence[int], repeats: int = 3, heads: int = 4,
                     kernel_size: int = 3, seed: int = 0,
                     log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Forward and forward+backward seconds for one sequence (batch of 1, float32) through
    one self-attention layer, one LSTM layer and one convolution layer of ``width``.

    ``sequential_steps``: steps that must run one after another (the LSTM's T; 1 for the
    others, whose positions are all computed at once). ``layers_to_span``: layers of that
    kind needed before the last position can depend on the first.
    """
    mt.manual_seed(seed)
    layers: dict[str, tuple[nn.Module, Callable[[mt.Tensor], mt.Tensor]]] = {
        "self-attention": (attention := nn.MultiHeadAttention(width, heads),
                           lambda x: attention(x, need_weights=False)[0]),
        "LSTM": (lstm := LSTM(width, width, batch_first=True), lambda x: lstm(x)[0]),
        "conv": (conv := Conv1d(width, width, kernel_size, padding="same"),
                 lambda x: conv(x.swapaxes(1, 2))),  # (1, T, E) -> (1, E, T)
    }
    rng = np.random.default_rng(seed)
    rows = []
    for length in lengths:
        x = mt.tensor(rng.standard_normal((1, length, width)).astype(np.float32))
        for kind, (module, run) in layers.items():

            def forward(run: Callable = run, x: mt.Tensor = x) -> None:
                with mt.no_grad():
                    run(x)

            def forward_backward(run: Callable = run, module: nn.Module = module,
                                 x: mt.Tensor = x) -> None:
                module.zero_grad()
                run(x).sum().backward()

            forward()  # warm-up
            steps = LSTM.sequential_steps(length) if kind == "LSTM" else 1
            span = conv.layers_to_span(length) if kind == "conv" else 1
            rows.append({
                "layer": kind,
                "length": length,
                "forward_ms": 1000 * _best_time(forward, repeats),
                "forward_backward_ms": 1000 * _best_time(forward_backward, repeats),
                "sequential_steps": steps,
                "layers_to_span": span,
            })
        timings = "  ".join(f"{r['layer']} {r['forward_backward_ms']:.1f} ms"
                            for r in rows[-len(layers):])
        log(f"  T = {length:>4}: forward+backward  {timings}")
    return rows


# ----------------------------------------------------------------------------- the experiment


FIGURE_FILES = ("accuracy_by_distance.png", "gradient_reach.png", "layer_time.png",
                "training.png")
OUTPUT_FILES = ("results.json", "results.md", *FIGURE_FILES)
"""Every file a comparison writes in its directory (``compare`` refuses to replace one
the project did not write there without ``--force``)."""


def run_comparison(config: CompareConfig, out_dir: str | os.PathLike,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every measurement, write results.json, results.md and the plots to ``out_dir``;
    return the numbers."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    started = time.perf_counter()
    data = make_dataset(seed=config.seed, distractors=range(config.max_distractors + 1),
                        train_size=config.train_size, test_size=config.test_size)
    test_distances = np.array([e.distance for e in data.test])
    max_len = max(len(e.tokens) for e in data.train + data.test)
    buckets = config.buckets()
    models = build_models(config, len(data.vocabulary), max_len=max(64, max_len))

    results: dict[str, Any] = {"config": asdict(config), "models": {}}
    for name, model in models.items():
        log(f"training {name} ({count_parameters(model)['total']} parameters)")
        training = train_model(model, data, config, log, name)
        correct = evaluate(model, data.test, data.vocabulary)
        entry = {
            "parameters": count_parameters(model),
            "test_accuracy": float(correct.mean()),
            "accuracy_by_distance": accuracy_by_bucket(correct, test_distances, buckets),
            "training": training,
            "gradient_reach": gradient_reach(name, model, data, buckets),
            "sequential_steps_per_layer": "T" if name == "LSTM" else 1,
        }
        if name == "self-attention":
            entry["attention_hits"] = attention_hits(model, data)
        if name == "CNN":
            entry["receptive_field"] = model.receptive_field
        results["models"][name] = entry

    log(f"timing one layer of each kind, width {config.width}")
    results["layers"] = benchmark_layers(config.width, config.lengths, config.repeats,
                                         config.heads, config.kernel_size, config.seed, log)
    results["data"] = {
        "train_size": len(data.train), "test_size": len(data.test),
        "max_sentence_length": max_len,
        "distance_range": [int(test_distances.min()), int(test_distances.max())],
    }
    results["seconds"] = time.perf_counter() - started
    write_json(os.path.join(out_dir, "results.json"), results)
    record_written(out_dir, "results.json")
    files.write_text(os.path.join(out_dir, "results.md"), results_markdown(results))
    record_written(out_dir, "results.md")
    plot_results(results, out_dir)
    record_written(out_dir, *FIGURE_FILES)
    return results


# ----------------------------------------------------------------------------- reporting


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


def results_markdown(results: dict[str, Any]) -> str:
    """The numbers of :func:`run_comparison` as Markdown tables."""
    config = results["config"]
    models = results["models"]
    names = list(models)
    bucket_names = list(models[names[0]]["accuracy_by_distance"])
    lines = ["# Self-attention vs LSTM vs CNN: measured", ""]
    lines += [f"Data: {results['data']['train_size']} training and "
              f"{results['data']['test_size']} held-out sentences (unseen noun pairs), 0 to "
              f"{config['max_distractors']} distractors each; antecedent distances "
              f"{results['data']['distance_range'][0]} to "
              f"{results['data']['distance_range'][1]} tokens. {config['epochs']} epochs, "
              f"seed {config['seed']}. Total time {results['seconds']:.0f} s.", ""]

    lines += ["## Models", "", "| model | parameters | without embedding | sequential steps "
              "per layer | held-out accuracy |", "|---|---:|---:|---:|---:|"]
    for name in names:
        m = models[name]
        lines.append(f"| {name} | {m['parameters']['total']} | "
                     f"{m['parameters']['without_embedding']} | "
                     f"{m['sequential_steps_per_layer']} | {_percent(m['test_accuracy'])} |")

    lines += _ranking_note(results, names)
    lines += ["", "## Held-out accuracy by antecedent-to-pronoun distance (tokens)", "",
              "| model | " + " | ".join(bucket_names) + " |",
              "|---|" + "---:|" * len(bucket_names)]
    for name in names:
        cells = [_percent(models[name]["accuracy_by_distance"][b]["accuracy"])
                 for b in bucket_names]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = [str(models[names[0]]["accuracy_by_distance"][b]["count"]) for b in bucket_names]
    lines.append("| (sentences) | " + " | ".join(counts) + " |")

    lines += ["", "## Gradient reach: |d h_pronoun / d x_antecedent| relative to "
              "|d h_pronoun / d x_pronoun| (median)", "",
              "| model | " + " | ".join(bucket_names) + " |",
              "|---|" + "---:|" * len(bucket_names)]
    for name in names:
        reach = models[name]["gradient_reach"]
        cells = ["n/a" if reach[b] is None else f"{reach[b]:.3g}" for b in bucket_names]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    lines += ["", "## Training speed", "",
              "Wall-clock on a shared machine: the fastest epoch is the one least slowed down by "
              "other work.", "",
              f"| model | seconds per epoch (median) | fastest epoch | epochs to "
              f"{config['target_accuracy']:.0%} | seconds to {config['target_accuracy']:.0%} |",
              "|---|---:|---:|---:|---:|"]
    for name in names:
        t = models[name]["training"]
        epochs = "not reached" if t["epochs_to_target"] is None else str(t["epochs_to_target"])
        lines.append(f"| {name} | {t['seconds_per_epoch']:.2f} | {min(t['epoch_seconds']):.2f} | "
                     f"{epochs} | "
                     f"{_seconds(t['seconds_to_target'])} |")

    if "attention_hits" in models.get("self-attention", {}):
        hits = models["self-attention"]["attention_hits"]
        heads = ", ".join(_percent(h) for h in hits["last_layer_per_head"])
        lines += ["", "## Interpretability: the pronoun's largest attention weight", "",
                  "| where | lands on the antecedent |", "|---|---:|",
                  f"| pointer head | {_percent(hits['pointer'])} |",
                  f"| last encoder layer, any head | {_percent(hits['last_layer_any_head'])} |",
                  f"| last encoder layer, each head | {heads} |",
                  f"| chance (1 / sentence length) | {_percent(hits['chance'])} |"]

    lines += ["", f"## One layer of width {config['width']}, one sequence (float32): "
              "milliseconds", "",
              "| T | " + " | ".join(f"{k} fwd | {k} fwd+bwd" for k in LAYERS)
              + " | LSTM sequential steps | conv layers to span T |",
              "|---:|" + "---:|" * (2 * len(LAYERS) + 2)]
    for length in config["lengths"]:
        row = {r["layer"]: r for r in results["layers"] if r["length"] == length}
        cells = [f"{row[k]['forward_ms']:.2f} | {row[k]['forward_backward_ms']:.2f}"
                 for k in LAYERS]
        lines.append(f"| {length} | " + " | ".join(cells) + f" | "
                     f"{row['LSTM']['sequential_steps']} | {row['conv']['layers_to_span']} |")
    lines.append("")
    return "\n".join(lines)


def _ranking_note(results: dict[str, Any], names: Sequence[str]) -> list[str]:
    """Why a baseline can beat self-attention here: said on the page, next to the table."""
    models, config = results["models"], results["config"]
    ahead = [name for name in names if name != "self-attention" and
             models[name]["test_accuracy"] > models["self-attention"]["test_accuracy"]]
    if not ahead:
        return []
    window = 1 + config["conv_layers"] * (config["kernel_size"] - 1)
    return ["", f"**Why {' and '.join(ahead)} can beat self-attention in this run.** "
            f"Accuracy here says how far each model got in {config['epochs']} epochs on "
            f"{results['data']['train_size']} sentences, not how far it can reach: all three "
            f"carry the same pointer head, which does the long-range step itself, so an "
            f"encoder only has to mark the candidate nouns locally. A stack of "
            f"{config['conv_layers']} kernel-{config['kernel_size']} convolutions sees a "
            f"{window}-token window, enough for that, and learns it quickly; the attention "
            f"encoder must first learn where to look. With the full settings "
            f"(`minitransformer compare`, see docs/comparison.md) all three reach about 100%, "
            f"and the gradient-reach table below shows the difference the accuracy hides."]


def plot_results(results: dict[str, Any], out_dir: str) -> list[str]:
    """accuracy_by_distance.png, gradient_reach.png, layer_time.png, training.png in
    ``out_dir``; their paths."""
    from minitransformer.viz import save_figure  # matplotlib and graphviz: only when used

    return [save_figure(fig, os.path.join(out_dir, name), dpi=100)
            for name, fig in result_figures(results).items()]


def result_figures(results: dict[str, Any]) -> dict[str, Any]:
    """The four figures of a comparison, by file name (matplotlib Figures, built without
    pyplot: a notebook shows them, the caller's backend is left alone)."""
    from minitransformer.viz.figure import ShownFigure

    models = results["models"]
    figures = {}

    # Every model may sit at 100% in every bucket: draw each line shifted sideways, with its
    # own marker and dash, and the legend below the axes, so that none hides another.
    styles = {"self-attention": ("o", "-"), "LSTM": ("s", "--"), "CNN": ("^", ":")}
    fig = ShownFigure(figsize=(6.5, 4.4), layout="tight")
    ax = fig.subplots()
    first = next(iter(models.values()))["accuracy_by_distance"]
    positions = np.arange(len(first))
    lowest = 100.0
    for offset, (name, m) in zip(np.linspace(-0.12, 0.12, len(models)), models.items()):
        values = np.array([np.nan if b["accuracy"] is None else 100 * b["accuracy"]
                           for b in m["accuracy_by_distance"].values()])
        lowest = min(lowest, np.nanmin(values))
        marker, dash = styles.get(name, ("o", "-"))
        ax.plot(positions + offset, values, marker=marker, linestyle=dash, label=name)
    ax.set_xticks(positions, [f"{bucket}\n({b['count']} sent.)" for bucket, b in first.items()])
    ax.set(xlabel="antecedent-to-pronoun distance (tokens)", ylabel="held-out accuracy (%)",
           ylim=(max(0.0, np.floor(lowest) - 2), 100.5), title="accuracy against distance")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=len(models), frameon=False)
    figures["accuracy_by_distance.png"] = fig

    fig = ShownFigure(figsize=(6.5, 4.4), layout="tight")
    ax = fig.subplots()
    for name, m in models.items():
        reach = np.array([np.nan if v is None else v for v in m["gradient_reach"].values()])
        marker, dash = styles.get(name, ("o", "-"))
        line, = ax.plot(positions, np.where(reach > 0, reach, np.nan), marker=marker,
                        linestyle=dash, label=name)
        for position in positions[reach == 0]:  # log axis: mark the exact zeros at the bottom
            ax.plot(position, 1e-6, marker="x", color=line.get_color(), markersize=8)
    ax.text(positions[-1], 1.6e-6, "x: exactly 0 (outside the\nCNN's receptive field)",
            ha="right", va="bottom", fontsize=8)
    ax.set_xticks(positions, list(first))
    ax.set(yscale="log", ylim=(5e-7, 1), xlabel="antecedent-to-pronoun distance (tokens)",
           ylabel="|∂h_pronoun/∂x_antecedent| / |∂h_pronoun/∂x_pronoun|",
           title="gradient reach against distance (median, held-out)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="lower left")
    figures["gradient_reach.png"] = fig

    fig = ShownFigure(figsize=(11, 4), layout="tight")
    fwd_ax, both_ax = fig.subplots(1, 2, sharey=True)
    for kind in LAYERS:
        rows = [r for r in results["layers"] if r["layer"] == kind]
        lengths = [r["length"] for r in rows]
        fwd_ax.plot(lengths, [r["forward_ms"] for r in rows], marker="o", label=kind)
        both_ax.plot(lengths, [r["forward_backward_ms"] for r in rows], marker="o", label=kind)
    lengths = results["config"]["lengths"]
    for ax, title in ((fwd_ax, "forward"), (both_ax, "forward + backward")):
        ax.set(xscale="log", yscale="log", xlabel="sequence length T", title=title)
        ax.set_xticks(lengths, [str(t) for t in lengths])  # the measured T values
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.legend()
    fwd_ax.set_ylabel("milliseconds per sequence")
    figures["layer_time.png"] = fig

    fig = ShownFigure(figsize=(6.5, 4), layout="tight")
    ax = fig.subplots()
    for name, m in models.items():
        elapsed = np.cumsum(m["training"]["epoch_seconds"])
        ax.plot(elapsed, 100 * np.array(m["training"]["test_accuracy"]), marker="o", label=name)
    target = 100 * results["config"]["target_accuracy"]
    ax.axhline(target, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="training seconds", ylabel="held-out accuracy (%)", ylim=(0, 101),
           title="accuracy against training time")
    ax.legend(loc="lower right")
    figures["training.png"] = fig
    return figures


def quick_or_full(quick: bool, seed: int) -> CompareConfig:
    return CompareConfig.quick(seed) if quick else replace(CompareConfig(), seed=seed)
