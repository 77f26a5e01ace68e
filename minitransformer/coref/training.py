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

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

import minitransformer as mt
from minitransformer import backend, optim, tuning
from minitransformer import functional as F
from minitransformer.coref.data import (
    ARTICLE_SENTENCE,
    ARTICLE_SENTENCE_WIDE,
    CorefDataset,
    Example,
    Vocabulary,
    build_vocabulary,
    iterate_batches,
    make_dataset,
)
from minitransformer.coref.models.coref import CorefConfig, CorefModel, resolve
from minitransformer.errors import CheckpointError
from minitransformer.nn import Module
from minitransformer.runs import (
    CHECKPOINT_FILE,
    MAX_EPOCHS,
    METRICS_FILE,
    Run,
    RunFormat,
    SavedLists,
    build_optimizer,
    checkpoint_path,
    config_from_dict,
    encoder_layer_shapes,
    load_checkpoint,
    log_to_stderr,
    record_written,
    restore_training,
    save_checkpoint,
    time_left_note,
    write_json,
)

CURVES_FILE = "curves.png"


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
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise ValueError(f"epochs must be between 1 and {MAX_EPOCHS}, got {self.epochs}")
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


def model_config_for(config: TrainConfig, vocabulary: Vocabulary) -> CorefConfig:
    """The model a run with ``config`` and ``vocabulary`` trains (nothing is allocated)."""
    # A template has at most 12 words, a filler clause 7, any other distractor 3 or fewer.
    longest = 12 + 7 + 3 * config.distractors
    return CorefConfig(
        vocab_size=len(vocabulary), d_model=config.d_model, nhead=config.nhead,
        num_layers=config.num_layers, dim_feedforward=config.dim_feedforward,
        dropout=config.dropout, max_len=max(64, longest),
    )


def expected_shapes(config: CorefConfig) -> dict[str, tuple[int, ...]]:
    """Every entry of a :class:`CorefModel`'s state_dict and its shape, from its config
    alone (a test checks them against a model built from it)."""
    E, F_ = config.d_model, config.dim_feedforward
    shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (config.vocab_size, E),
                                          "positions.pe": (config.max_len, E)}
    for i in range(config.num_layers):
        shapes.update(encoder_layer_shapes(f"encoder.layers.{i}.", E, F_))
    shapes["pointer.q_proj.weight"] = (E, E)
    shapes["pointer.k_proj.weight"] = (E, E)
    return shapes


def _history_lengths(config: TrainConfig, history: History) -> dict[str, int]:
    done = history.epochs_done
    return {"step_loss": done * math.ceil(config.train_size / config.batch_size),
            "train_accuracy": done, "test_accuracy": done, "seconds": done}


_SIZE = 1 << 14  # far above any model this task trains, far below an exhausted memory
RUN_LIMITS = {
    "config.epochs": (1, MAX_EPOCHS), "config.seed": (0, 2**63 - 1),
    "config.train_size": (1, 1_000_000), "config.test_size": (1, 1_000_000),
    "config.batch_size": (1, 1_000_000), "config.lr": (0.0, 10.0),
    "config.dropout": (0.0, 0.99), "config.clip_norm": (0.0, 1e9),
    "model_config.vocab_size": (2, 1_000_000), "model_config.d_model": (1, _SIZE),
    "model_config.nhead": (1, 1024), "model_config.num_layers": (1, 256),
    "model_config.dim_feedforward": (1, 4 * _SIZE), "model_config.max_len": (1, _SIZE),
    "model_config.dropout": (0.0, 0.99),
}

RUN_FORMAT = RunFormat("minitransformer-coref-run", 1, "a coreference run", TrainConfig,
                       CorefConfig, CorefModel, History, Vocabulary, limits=RUN_LIMITS,
                       model_config_for=model_config_for, expected_shapes=expected_shapes,
                       steps_in_history=_history_lengths,
                       vocabulary_for=lambda config: build_vocabulary())


@dataclass
class TrainResult:
    """A finished run and what :func:`compute_metrics` measured on it."""

    run: Run  # of a TrainConfig, a CorefModel and a History
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
    return CorefModel(model_config_for(config, vocabulary), device=device)


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


def load_run(path: str | os.PathLike, device: str = "cpu") -> Run:
    """The model, vocabulary, config and history of the run at ``path`` (directory or file).

    Raises :class:`~minitransformer.errors.CheckpointError` naming the file when it is
    missing, truncated, foreign or does not fit the model it describes.
    """
    return load_checkpoint(checkpoint_path(path), RUN_FORMAT, device)[0]


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
    run, state = load_checkpoint(path, RUN_FORMAT, backend.normalize_device(device))
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
    batch_rng = restore_training(run, state, optimizer, scheduler)  # schedule: the new length
    (log or log_to_stderr)(f"resuming {path} after epoch {run.history.epochs_done}/"
                            f"{run.config.epochs}")
    return _fit(run, data, optimizer, scheduler, batch_rng, progress, log)


def _fit(run: Run, data: CorefDataset, optimizer: optim.Optimizer, scheduler: optim.LRScheduler,
         batch_rng: np.random.Generator, progress: bool,
         log: Callable[[str], None] | None) -> TrainResult:
    """The training loop, from the epoch after ``run.history``'s last to the end."""
    log = log or log_to_stderr
    config, history = run.config, run.history
    out_dir = os.path.dirname(run.path)
    os.makedirs(out_dir or ".", exist_ok=True)

    tuning.tune_for_training()  # process-wide: a trainer is an entry point that opts in
    with tuning.single_threaded_blas():
        first_epoch = history.epochs_done + 1  # of this call (a resumed run: not 1)
        for epoch in range(first_epoch, config.epochs + 1):
            _train_epoch(run, data, optimizer, scheduler, batch_rng, epoch, progress)
            save_checkpoint(run, RUN_FORMAT, optimizer, scheduler, batch_rng)
            record_written(out_dir or ".", CHECKPOINT_FILE)
            log(f"epoch {epoch:>2}/{config.epochs}  loss {history.epoch_loss[-1]:.4f}  "
                f"train acc {history.train_accuracy[-1]:6.1%}  "
                f"held-out acc {history.test_accuracy[-1]:6.1%}  ({sum(history.seconds):.1f} s)"
                + (time_left_note(history.seconds[-1], epoch, config.epochs)
                   if epoch == first_epoch else ""))
        metrics = compute_metrics(run, data)
    write_json(os.path.join(out_dir, METRICS_FILE), metrics)
    from minitransformer.viz import save_figure  # matplotlib and graphviz: only when used

    save_figure(plot_curves(history, title=_describe(config)), os.path.join(out_dir, CURVES_FILE))
    record_written(out_dir or ".", METRICS_FILE, CURVES_FILE)
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
