"""Training the coreference model: the loop, its checkpoints, its metrics and its plot.

    from minitransformer.coref.training import TrainConfig, train
    result = train(TrainConfig(seed=0), "runs/coref")
    result.test_accuracy      # on sentences whose noun pairs the model never saw

A run lives in one directory:

    checkpoint.npz   after every epoch, written atomically: model, optimizer, scheduler,
                     vocabulary, config, the random generators' states and the history
    metrics.json     at the end: held-out accuracy (overall, per family, per distance), time
    curves.png       at the end: the loss per step and the accuracies per epoch

Everything random comes from ``config.seed``: the data set, the initial weights
(``mt.manual_seed``), the order of the batches (a NumPy generator whose state is saved with
every checkpoint) and dropout (each layer's generator, saved too). So a run resumed from a
checkpoint takes exactly the steps the uninterrupted run would have taken: same batches,
same weights, bit-identical losses.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

import minitransformer as mt
from minitransformer import backend, files, optim, serialization, tuning
from minitransformer import functional as F
from minitransformer.coref.data import (
    ARTICLE_SENTENCE,
    ARTICLE_SENTENCE_WIDE,
    CorefDataset,
    Example,
    Vocabulary,
    iterate_batches,
    make_dataset,
)
from minitransformer.coref.models.coref import CorefConfig, CorefModel, config_from_dict, resolve
from minitransformer.errors import CheckpointError
from minitransformer.nn import Module, StateDictError

CHECKPOINT_FILE = "checkpoint.npz"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
RUN_KIND = "minitransformer-coref-run"
RUN_VERSION = 1


MAX_DISTRACTORS = 32  # far above what helps (docs use at most 12), far below what hurts


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes (the device does not: it only runs it).

    ``distractors`` K: each sentence gets between 0 and K distractors, drawn uniformly, so
    that a model trained with distractors still reads the plain sentences of the article.
    ``epochs`` None: 8 without distractors, 12 with (see :func:`default_epochs`).
    """

    seed: int = 0
    epochs: int | None = None
    distractors: int = 0
    train_size: int = 2000
    test_size: int = 500
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    min_lr_fraction: float = 0.1
    clip_norm: float = 1.0
    d_model: int = 32
    nhead: int = 2
    num_layers: int = 2
    dim_feedforward: int = 64
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs is None:
            object.__setattr__(self, "epochs", default_epochs(self.distractors))
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not 0 <= self.distractors <= MAX_DISTRACTORS:
            raise ValueError(f"distractors must be between 0 and {MAX_DISTRACTORS}, got "
                             f"{self.distractors} (sentences grow with each one: 1,000 took "
                             "3.6 GB)")
        if self.train_size < 1 or self.test_size < 1 or self.batch_size < 1:
            raise ValueError(f"train_size, test_size and batch_size must be >= 1, got "
                             f"{self.train_size}, {self.test_size}, {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TrainConfig:
        return config_from_dict(cls, state, "training settings")


def default_epochs(distractors: int) -> int:
    """Epochs of the default run: enough for >= 99% held-out accuracy without distractors
    (>= 95% with), with a margin, in well under a minute on a laptop CPU."""
    return 8 if distractors == 0 else 12


class SavedLists:
    """A dataclass of lists of floats that goes into a checkpoint as float64 arrays."""

    def to_dict(self) -> dict[str, np.ndarray]:
        return {name: np.array(values, dtype=np.float64) for name, values in asdict(self).items()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Any:
        return cls(**{f.name: [float(v) for v in state[f.name]] for f in fields(cls)})


@dataclass
class History(SavedLists):
    """What a run has measured so far; saved with every checkpoint."""

    step_loss: list[float] = field(default_factory=list)  # the mean loss of every batch
    epoch_loss: list[float] = field(default_factory=list)  # mean over the epoch's batches
    train_accuracy: list[float] = field(default_factory=list)  # during the epoch
    test_accuracy: list[float] = field(default_factory=list)  # held-out, after the epoch
    seconds: list[float] = field(default_factory=list)  # time spent in each epoch

    @property
    def epochs_done(self) -> int:
        return len(self.epoch_loss)


@dataclass
class Run:
    """A model with everything needed to use it or to train it on."""

    config: TrainConfig
    model: CorefModel
    vocabulary: Vocabulary
    history: History
    path: str = ""

    @property
    def finished(self) -> bool:
        return self.history.epochs_done >= self.config.epochs


@dataclass
class TrainResult:
    """A finished run and what :func:`compute_metrics` measured on it."""

    run: Run
    test_accuracy: float
    train_seconds: float
    metrics: dict[str, Any]


# ----------------------------------------------------------------------------- building


def build_dataset(config: TrainConfig) -> CorefDataset:
    """The run's data: 0 to ``config.distractors`` distractors per sentence."""
    return make_dataset(seed=config.seed, distractors=range(config.distractors + 1),
                        train_size=config.train_size, test_size=config.test_size)


def build_model(config: TrainConfig, vocabulary: Vocabulary, device: str = "cpu") -> CorefModel:
    """A freshly initialised model; its weights depend only on ``config.seed``."""
    mt.manual_seed(config.seed)
    # A template has at most 12 words, a filler clause 7, any other distractor 3 or fewer.
    longest = 12 + 7 + 3 * config.distractors
    model_config = CorefConfig(
        vocab_size=len(vocabulary), d_model=config.d_model, nhead=config.nhead,
        num_layers=config.num_layers, dim_feedforward=config.dim_feedforward,
        dropout=config.dropout, max_len=max(64, longest),
    )
    return CorefModel(model_config, device=device)


def build_optimizer(model: Module, config: TrainConfig) -> tuple[optim.AdamW, optim.WarmupCosine]:
    """AdamW (weight decay on matrices only, not on biases and norms) with a warm-up and
    a cosine decay over the whole run."""
    params = list(model.parameters())
    decayed = [p for p in params if p.ndim >= 2]
    not_decayed = [p for p in params if p.ndim < 2]
    optimizer = optim.AdamW(
        [{"params": decayed, "weight_decay": config.weight_decay},
         {"params": not_decayed, "weight_decay": 0.0}],
        lr=config.lr,
    )
    steps_per_epoch = math.ceil(config.train_size / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = min(total_steps, round(config.warmup_epochs * steps_per_epoch))
    scheduler = optim.WarmupCosine(optimizer, warmup_steps, total_steps,
                                   min_lr=config.lr * config.min_lr_fraction)
    return optimizer, scheduler


# ----------------------------------------------------------------------------- one step


def batch_loss(model: Module, batch: dict[str, np.ndarray]) -> tuple[mt.Tensor, np.ndarray]:
    """Cross-entropy of the pointer head's scores against the antecedent's position.

    Returns the loss and, per sentence, whether the highest weight is on the antecedent.
    """
    scores, _ = model(batch["ids"], batch["pronoun"], batch["padding_mask"])  # (B, T)
    loss = F.cross_entropy(scores, mt.tensor(batch["label"], device=scores.device))
    predicted = backend.to_numpy(scores.data).argmax(axis=-1)  # (B,)
    return loss, predicted == batch["label"]


def train_step(model: Module, batch: dict[str, np.ndarray], optimizer: optim.Optimizer,
               scheduler: optim.LRScheduler, clip_norm: float) -> tuple[float, np.ndarray]:
    """One optimisation step on one batch: loss, backward, clipped gradients, AdamW, the
    schedule. Returns the loss and which sentences the model resolved (before the step).
    The training loop and the comparison (``compare.py``) both take their steps here."""
    loss, correct = batch_loss(model, batch)
    optimizer.zero_grad()
    loss.backward()
    optim.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    scheduler.step()
    return loss.item(), correct


def evaluate(model: CorefModel, examples: Sequence[Example], vocabulary: Vocabulary,
             batch_size: int = 250) -> np.ndarray:
    """Whether the model resolves each example correctly: a bool array (N,)."""
    was_training = model.training
    model.eval()
    correct = []
    with mt.no_grad():
        for batch in iterate_batches(examples, vocabulary, batch_size):
            correct.append(batch_loss(model, batch)[1])
    model.train(was_training)
    return np.concatenate(correct) if correct else np.zeros(0, dtype=bool)


# ----------------------------------------------------------------------------- checkpoints


def dropout_generators(model: Module) -> dict[str, np.random.Generator]:
    """Every random generator inside the model (dropout layers, attention dropout), by name."""
    return {name: module.generator for name, module in model.named_modules()
            if isinstance(getattr(module, "generator", None), np.random.Generator)}


def save_checkpoint(path: str, run: Run, optimizer: optim.Optimizer,
                    scheduler: optim.LRScheduler, batch_rng: np.random.Generator) -> None:
    """Write the whole state of a run to ``path`` in one atomic step."""
    state = {
        "kind": RUN_KIND,
        "version": RUN_VERSION,
        "config": run.config.to_dict(),
        "model_config": run.model.config.to_dict(),
        "model": dict(run.model.state_dict()),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "vocabulary": run.vocabulary.to_dict(),
        "rng": {
            "batches": batch_rng.bit_generator.state,
            "dropout": {name: generator.bit_generator.state
                        for name, generator in dropout_generators(run.model).items()},
        },
        "history": run.history.to_dict(),
    }
    serialization.save(state, path)


def checkpoint_path(path: str | os.PathLike) -> str:
    """The checkpoint file of ``path``: a run directory or the file itself."""
    path = os.fspath(path)
    return os.path.join(path, CHECKPOINT_FILE) if os.path.isdir(path) else path


def _read_checkpoint(path: str) -> dict[str, Any]:
    state = serialization.load(path)
    if not isinstance(state, dict) or state.get("kind") != RUN_KIND:
        raise CheckpointError(f"{path} is not a checkpoint of a coreference run "
                              f"(written by something else)")
    if state.get("version") != RUN_VERSION:
        raise CheckpointError(f"{path} is a run checkpoint of version {state.get('version')!r}; "
                              f"this minitransformer reads version {RUN_VERSION}")
    return state


def load_run(path: str | os.PathLike, device: str = "cpu") -> Run:
    """The model, vocabulary, config and history of the run at ``path`` (directory or file).

    Raises :class:`~minitransformer.errors.CheckpointError` naming the file when it is
    missing, truncated, foreign or does not fit the model it describes.
    """
    return _load(checkpoint_path(path), device)[0]


def _load(path: str, device: str) -> tuple[Run, dict[str, Any]]:
    state = _read_checkpoint(path)
    try:
        config = TrainConfig.from_dict(state["config"])
        model_config = CorefConfig.from_dict(state["model_config"])
        vocabulary = Vocabulary.from_dict(state["vocabulary"])
        history = History.from_dict(state["history"])
        model = CorefModel(model_config, device=device)
        model.load_state_dict(state["model"])
    except StateDictError as exc:
        first_line = str(exc).splitlines()[-1].strip()
        raise CheckpointError(f"{path}: the saved weights do not fit the model ({first_line})"
                              ) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is a damaged run checkpoint "
                              f"({type(exc).__name__}: {exc})") from exc
    return Run(config, model, vocabulary, history, path), state


# ----------------------------------------------------------------------------- the loop


def train(config: TrainConfig, out_dir: str | os.PathLike, device: str = "cpu",
          progress: bool = True, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train a fresh model with ``config``; the run goes to ``out_dir``.

    A checkpoint is written after every epoch (replacing one already there); at the end,
    ``metrics.json`` and ``curves.png``. ``log`` gets a line per epoch (default: stderr).
    """
    data = build_dataset(config)
    device = backend.normalize_device(device)
    model = build_model(config, data.vocabulary, device)
    path = os.path.join(os.fspath(out_dir), CHECKPOINT_FILE)
    run = Run(config, model, data.vocabulary, History(), path)
    optimizer, scheduler = build_optimizer(model, config)
    batch_rng = np.random.default_rng(config.seed)
    return _fit(run, data, optimizer, scheduler, batch_rng, progress, log)


def resume(out_dir: str | os.PathLike, device: str = "cpu", progress: bool = True,
           log: Callable[[str], None] | None = None, epochs: int | None = None) -> TrainResult:
    """Go on training the run in ``out_dir`` from its checkpoint, with its own settings.

    Everything random is restored, so the remaining epochs are exactly those of an
    uninterrupted run. A finished run is not trained further (its metrics and plot are
    written again) unless ``epochs`` asks for more than it has: then the run is extended
    to ``epochs`` in all, and its cosine schedule is stretched to the new length, so the
    learning rate rises again from where the longer schedule has it at this step.
    """
    path = os.path.join(os.fspath(out_dir), CHECKPOINT_FILE)
    run, state = _load(path, backend.normalize_device(device))
    if epochs is not None and epochs != run.config.epochs:
        if epochs < run.history.epochs_done:
            raise ValueError(f"{path} has already trained {run.history.epochs_done} epochs; "
                             f"cannot shorten it to {epochs}")
        run.config = replace(run.config, epochs=epochs)
    data = build_dataset(run.config)
    if data.vocabulary != run.vocabulary:
        raise CheckpointError(f"{path}: its vocabulary differs from the one of this version's "
                              f"data generator")
    optimizer, scheduler = build_optimizer(run.model, run.config)
    batch_rng = np.random.default_rng()
    try:
        optimizer.load_state_dict(state["optimizer"])
        # the step and warm-up as saved, the length of the (possibly extended) run
        scheduler.load_state_dict(dict(state["scheduler"], total_steps=scheduler.total_steps))
        batch_rng.bit_generator.state = state["rng"]["batches"]
        for name, generator in dropout_generators(run.model).items():
            generator.bit_generator.state = state["rng"]["dropout"][name]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be resumed: its optimizer or random state is "
                              f"damaged ({type(exc).__name__}: {exc})") from exc
    (log or _log_to_stderr)(f"resuming {path} after epoch {run.history.epochs_done}/"
                            f"{run.config.epochs}")
    return _fit(run, data, optimizer, scheduler, batch_rng, progress, log)


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _fit(run: Run, data: CorefDataset, optimizer: optim.Optimizer, scheduler: optim.LRScheduler,
         batch_rng: np.random.Generator, progress: bool,
         log: Callable[[str], None] | None) -> TrainResult:
    """The training loop, from the epoch after ``run.history``'s last to the end."""
    log = log or _log_to_stderr
    config, history = run.config, run.history
    out_dir = os.path.dirname(run.path)
    os.makedirs(out_dir or ".", exist_ok=True)

    with tuning.single_threaded_blas():
        for epoch in range(history.epochs_done + 1, config.epochs + 1):
            _train_epoch(run, data, optimizer, scheduler, batch_rng, epoch, progress)
            save_checkpoint(run.path, run, optimizer, scheduler, batch_rng)
            log(f"epoch {epoch:>2}/{config.epochs}  loss {history.epoch_loss[-1]:.4f}  "
                f"train acc {history.train_accuracy[-1]:6.1%}  "
                f"held-out acc {history.test_accuracy[-1]:6.1%}  ({sum(history.seconds):.1f} s)")
        metrics = compute_metrics(run, data)
    write_json(os.path.join(out_dir, METRICS_FILE), metrics)
    from minitransformer.viz import save_figure  # matplotlib and graphviz: only when used

    save_figure(plot_curves(history, title=_describe(config)), os.path.join(out_dir, CURVES_FILE))
    return TrainResult(run, metrics["test_accuracy"], metrics["train_seconds"], metrics)


def _train_epoch(run: Run, data: CorefDataset, optimizer: optim.Optimizer,
                 scheduler: optim.LRScheduler, batch_rng: np.random.Generator, epoch: int,
                 progress: bool) -> None:
    """One pass over the training sentences in a fresh order; appends to ``run.history``."""
    config, model, history = run.config, run.model, run.history
    started = time.perf_counter()
    losses, correct = [], []
    model.train()
    batches = iterate_batches(data.train, data.vocabulary, config.batch_size, rng=batch_rng)
    bar = _progress_bar(batches, config, epoch, enabled=progress)
    for batch in bar:
        loss, batch_correct = train_step(model, batch, optimizer, scheduler, config.clip_norm)
        losses.append(loss)
        correct.append(batch_correct)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{np.concatenate(correct).mean():.1%}",
                        refresh=False)
    bar.close()
    history.step_loss.extend(losses)
    history.epoch_loss.append(float(np.mean(losses)))
    history.train_accuracy.append(float(np.concatenate(correct).mean()))
    history.test_accuracy.append(float(evaluate(model, data.test, data.vocabulary).mean()))
    history.seconds.append(time.perf_counter() - started)


def _progress_bar(batches: Any, config: TrainConfig, epoch: int, enabled: bool) -> Any:
    from minitransformer.progress import progress_bar

    return progress_bar(batches, total=math.ceil(config.train_size / config.batch_size),
                        desc=f"epoch {epoch}/{config.epochs}", enabled=enabled)


def _describe(config: TrainConfig) -> str:
    return (f"seed {config.seed}, {config.distractors} distractors max, "
            f"{config.train_size} sentences, {config.epochs} epochs")


# ----------------------------------------------------------------------------- results


def compute_metrics(run: Run, data: CorefDataset) -> dict[str, Any]:
    """Held-out accuracy overall, per family and per antecedent distance, plus timings and
    the model's answer for the article's sentence and its twin."""
    correct = evaluate(run.model, data.test, data.vocabulary)
    families = sorted({example.family for example in data.test})
    by_family = {
        name: float(correct[[e.family == name for e in data.test]].mean()) for name in families
    }
    distances = np.array([example.distance for example in data.test])
    by_distance = {str(d): float(correct[distances == d].mean()) for d in np.unique(distances)}
    if run.config.distractors > 0:  # the hardest sentences: every one with K distractors
        hardest = make_dataset(seed=run.config.seed, distractors=run.config.distractors,
                               train_size=0, test_size=run.config.test_size).test
        with_all_distractors = float(evaluate(run.model, hardest, data.vocabulary).mean())
    else:
        with_all_distractors = float(correct.mean())
    article = {
        sentence: resolve(run.model, run.vocabulary, sentence).antecedent
        for sentence in (ARTICLE_SENTENCE, ARTICLE_SENTENCE_WIDE)
    }
    return {
        "test_accuracy": float(correct.mean()),
        "test_size": len(data.test),
        "test_accuracy_with_all_distractors": with_all_distractors,
        "test_accuracy_by_family": by_family,
        "test_accuracy_by_distance": by_distance,
        "article": article,
        "article_correct": article == {ARTICLE_SENTENCE: "animal",
                                       ARTICLE_SENTENCE_WIDE: "street"},
        "train_seconds": float(sum(run.history.seconds)),
        "epochs": run.history.epochs_done,
        "final_loss": run.history.epoch_loss[-1],
        "history": {key: list(map(float, values)) for key, values in
                    asdict(run.history).items() if key != "step_loss"},
        "config": run.config.to_dict(),
        "parameters": run.model.num_parameters(),
    }


def write_json(path: str, value: Any) -> None:
    """Write JSON atomically; NaN or infinity, which JSON lacks, become null."""
    files.write_text(path, json.dumps(_finite(value), indent=2, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (valid JSON, always)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def plot_curves(history: History, title: str = "") -> Any:
    """The loss of every step (and its epoch means) beside the accuracies per epoch; returns
    the matplotlib Figure (built without pyplot: the caller's backend is left alone)."""
    from minitransformer.viz.figure import ShownFigure

    steps_per_epoch = len(history.step_loss) / max(1, history.epochs_done)
    epochs = np.arange(1, history.epochs_done + 1)
    fig = ShownFigure(figsize=(11, 4), layout="tight")
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(np.arange(1, len(history.step_loss) + 1) / steps_per_epoch, history.step_loss,
                 alpha=0.35, linewidth=0.8, label="per batch")
    loss_ax.plot(epochs, history.epoch_loss, marker="o", label="epoch mean")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="training loss")
    loss_ax.legend()
    acc_ax.plot(epochs, np.array(history.train_accuracy) * 100, marker="o", label="training")
    acc_ax.plot(epochs, np.array(history.test_accuracy) * 100, marker="s",
                label="held-out pairs")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", ylim=(0, 101), title="accuracy")
    acc_ax.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    return fig
