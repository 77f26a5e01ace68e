"""Training the tiny GPT on the story language, with checkpoints, resume and honest metrics.

    from minitransformer.gpt.training import GPTTrainConfig, train_gpt
    result = train_gpt(GPTTrainConfig(seed=0), "runs/gpt")
    result.metrics["val_cross_entropy"], result.metrics["floor"]

A run directory holds ``checkpoint.npz`` (after every epoch, written atomically: model,
optimizer, scheduler, random states, history) and, at the end, ``metrics.json``: the
validation cross-entropy next to the exact floor of the data, a bigram baseline measured
on the same stories, and the accuracy on the tokens that depend on a far-back word.
The optimizer, its schedule, the checkpoints and the atomic writes are the ones both
trainers share (:mod:`minitransformer.runs`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import minitransformer as mt
from minitransformer import backend, optim, runs, tuning
from minitransformer import functional as F
from minitransformer.errors import CheckpointError
from minitransformer.gpt.model import GPT, GPTConfig
from minitransformer.gpt.stories import (
    MAX_TOKENS,
    StoryData,
    bigram_cross_entropy,
    build_vocabulary,
    dependent_accuracy,
    make_stories,
)
from minitransformer.runs import CHECKPOINT_FILE, METRICS_FILE, Run, RunFormat, SavedLists
from minitransformer.tokenizer import PAD_ID, Vocabulary

__all__ = ["GPTHistory", "GPTRun", "GPTTrainConfig", "GPTTrainResult", "evaluate_gpt",
           "load_gpt_run", "resume_gpt", "train_gpt"]


@dataclass(frozen=True)
class GPTTrainConfig:
    """Everything that decides what a run computes. The field names that the coreference
    trainer's :func:`~minitransformer.runs.build_optimizer` reads (lr, weight_decay,
    warmup_epochs, min_lr_fraction, train_size, batch_size, epochs) mean the same here."""

    seed: int = 0
    epochs: int = 8
    train_size: int = 3000
    val_size: int = 500
    batch_size: int = 32
    lr: float = 1e-2
    weight_decay: float = 0.01
    warmup_epochs: float = 0.5
    min_lr_fraction: float = 0.05
    clip_norm: float = 1.0
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    dim_feedforward: int = 64
    dropout: float = 0.0
    tie_weights: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.epochs <= runs.MAX_EPOCHS:
            raise ValueError(f"epochs must be between 1 and {runs.MAX_EPOCHS}, got "
                             f"{self.epochs}")
        if min(self.train_size, self.val_size, self.batch_size) < 1:
            raise ValueError(f"train_size, val_size and batch_size must be >= 1, got "
                             f"{self.train_size}, {self.val_size}, {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> GPTTrainConfig:
        return runs.config_from_dict(cls, state, "training settings")

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, block_size=MAX_TOKENS, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd,
                         dim_feedforward=self.dim_feedforward, dropout=self.dropout,
                         tie_weights=self.tie_weights)


@dataclass
class GPTHistory(SavedLists):
    """What a run has measured so far; saved with every checkpoint."""

    step_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)  # after each epoch
    dependent_accuracy: list[float] = field(default_factory=list)  # after each epoch
    seconds: list[float] = field(default_factory=list)  # training time of each epoch

    @property
    def epochs_done(self) -> int:
        return len(self.val_loss)


GPTRun = Run  # of a GPTTrainConfig, a GPT and a GPTHistory


def expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every entry of a :class:`GPT`'s state_dict and its shape, from its config alone (a
    test checks them against a model built from it)."""
    E, F_ = config.n_embd, config.dim_feedforward
    shapes: dict[str, tuple[int, ...]] = {"token_embedding.weight": (config.vocab_size, E),
                                          "position_embedding.weight": (config.block_size, E)}
    for i in range(config.n_layer):
        shapes.update(runs.encoder_layer_shapes(f"blocks.{i}.", E, F_))
    shapes["norm.weight"] = (E,)
    shapes["norm.bias"] = (E,)
    if not config.tie_weights:
        shapes["lm_head.weight"] = (config.vocab_size, E)
    return shapes


def _history_lengths(config: GPTTrainConfig, history: GPTHistory) -> dict[str, int]:
    done = history.epochs_done
    return {"step_loss": done * runs.steps_per_epoch(config), "dependent_accuracy": done,
            "seconds": done}


_SIZE = 1 << 14  # far above any model this task trains, far below an exhausted memory
RUN_LIMITS = {
    "config.epochs": (1, runs.MAX_EPOCHS), "config.seed": (0, 2**63 - 1),
    "config.train_size": (1, 1_000_000), "config.val_size": (1, 1_000_000),
    "config.batch_size": (1, 1_000_000), "config.lr": (0.0, 10.0),
    "config.dropout": (0.0, 0.99), "config.n_layer": (1, 256), "config.n_head": (1, 1024),
    "config.n_embd": (1, _SIZE), "config.dim_feedforward": (1, 4 * _SIZE),
    "model_config.vocab_size": (2, 1_000_000), "model_config.block_size": (1, _SIZE),
}

RUN_FORMAT = RunFormat("minitransformer-gpt-run", 1, "a GPT run", GPTTrainConfig, GPTConfig,
                       GPT, GPTHistory, Vocabulary, limits=RUN_LIMITS,
                       model_config_for=lambda config, vocabulary:
                           config.model_config(len(vocabulary)),
                       expected_shapes=expected_shapes, steps_in_history=_history_lengths,
                       vocabulary_for=lambda config: build_vocabulary())


@dataclass
class GPTTrainResult:
    run: GPTRun
    metrics: dict[str, Any]


# ----------------------------------------------------------------------------- one step


def _trim(ids: np.ndarray) -> np.ndarray:
    """Drop the padding columns that no row of the batch uses."""
    longest = int((ids != PAD_ID).sum(axis=1).max())
    return ids[:, :longest]


def batch_loss(model: GPT, ids: np.ndarray) -> mt.Tensor:
    """Mean next-token cross-entropy of a batch of stories (B, T + 1), padding not scored.

    Teacher forcing: the model reads the true tokens 0..T-1 and is scored on 1..T, all
    positions in one pass, which the causal mask makes legitimate."""
    ids = _trim(ids)
    logits = model(ids[:, :-1])  # (B, T, V)
    # PyTorch's layout: one row of V logits per position, the classes on axis 1
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                           ignore_index=PAD_ID)


def evaluate_gpt(model: GPT, data: StoryData, batch_size: int = 250) -> dict[str, float]:
    """Validation cross-entropy (nats per token) and the accuracy on the tokens that depend
    on a far-back word (is the most likely token one the generator could write there?)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    predicted = np.zeros((len(data.val), data.val_ids.shape[1] - 1), dtype=np.int64)
    with mt.no_grad():
        for start in range(0, len(data.val), batch_size):
            ids = _trim(data.val_ids[start : start + batch_size])
            logits = model(ids[:, :-1])  # (B, T, V)
            losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                     ids[:, 1:].reshape(-1), ignore_index=PAD_ID,
                                     reduction="sum")
            total += losses.item()
            count += int((ids[:, 1:] != PAD_ID).sum())
            top = backend.to_numpy(logits.data).argmax(axis=-1)  # (B, T)
            predicted[start : start + len(ids), : top.shape[1]] = top
    model.train(was_training)
    return {"cross_entropy": total / count, **dependent_accuracy(data, predicted)}


# ----------------------------------------------------------------------------- checkpoints


def load_gpt_run(path: str | os.PathLike, device: str = "cpu") -> GPTRun:
    """The trained model, vocabulary and history of the GPT run at ``path`` (a run
    directory or its checkpoint file); CheckpointError naming the file otherwise."""
    return runs.load_checkpoint(runs.checkpoint_path(path), RUN_FORMAT,
                                backend.normalize_device(device))[0]


# ----------------------------------------------------------------------------- the loop


def train_gpt(config: GPTTrainConfig, out_dir: str | os.PathLike, device: str = "cpu",
              progress: bool = True, log: Callable[[str], None] | None = None) -> GPTTrainResult:
    """Train a fresh GPT with ``config`` into ``out_dir`` (its checkpoint is replaced)."""
    data = make_stories(config.seed, config.train_size, config.val_size)
    mt.manual_seed(config.seed)
    model = GPT(config.model_config(len(data.vocabulary)), device=backend.normalize_device(device))
    run = GPTRun(config, model, data.vocabulary, GPTHistory(),
                 os.path.join(os.fspath(out_dir), CHECKPOINT_FILE))
    optimizer, scheduler = runs.build_optimizer(model, config)
    return _fit(run, data, optimizer, scheduler, np.random.default_rng(config.seed), progress,
                log)


def resume_gpt(out_dir: str | os.PathLike, device: str = "cpu", progress: bool = True,
               log: Callable[[str], None] | None = None) -> GPTTrainResult:
    """Go on training the run in ``out_dir`` from its last checkpoint, with its settings;
    the remaining epochs are exactly those of an uninterrupted run."""
    path = os.path.join(os.fspath(out_dir), CHECKPOINT_FILE)
    run, state = runs.load_checkpoint(path, RUN_FORMAT, backend.normalize_device(device))
    data = make_stories(run.config.seed, run.config.train_size, run.config.val_size)
    if data.vocabulary != run.vocabulary:
        raise CheckpointError(f"{path}: its vocabulary differs from this version's stories")
    optimizer, scheduler = runs.build_optimizer(run.model, run.config)
    batch_rng = runs.restore_training(run, state, optimizer, scheduler)
    (log or runs.log_to_stderr)(f"resuming {path} after epoch {run.history.epochs_done}/"
                            f"{run.config.epochs}")
    return _fit(run, data, optimizer, scheduler, batch_rng, progress, log)


def _fit(run: GPTRun, data: StoryData, optimizer: optim.Optimizer,
         scheduler: optim.LRScheduler, batch_rng: np.random.Generator, progress: bool,
         log: Callable[[str], None] | None) -> GPTTrainResult:
    log = log or runs.log_to_stderr
    config, history, model = run.config, run.history, run.model
    out_dir = os.path.dirname(run.path) or "."
    os.makedirs(out_dir, exist_ok=True)
    steps = math.ceil(config.train_size / config.batch_size)
    tuning.tune_for_training()  # process-wide: a trainer is an entry point that opts in
    with tuning.single_threaded_blas():
        first_epoch = history.epochs_done + 1  # of this call (a resumed run: not 1)
        for epoch in range(first_epoch, config.epochs + 1):
            started = time.perf_counter()
            model.train()
            order = batch_rng.permutation(config.train_size)
            bar = _progress_bar(steps, f"epoch {epoch}/{config.epochs}", progress)
            for start in range(0, config.train_size, config.batch_size):
                loss = batch_loss(model, data.train_ids[order[start : start + config.batch_size]])
                optimizer.zero_grad()
                loss.backward()
                optim.clip_grad_norm_(model.parameters(), config.clip_norm)
                optimizer.step()
                scheduler.step()
                history.step_loss.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{history.step_loss[-1]:.3f}", refresh=False)
            bar.close()
            history.seconds.append(time.perf_counter() - started)
            scores = evaluate_gpt(model, data)
            history.val_loss.append(scores["cross_entropy"])
            history.dependent_accuracy.append(scores["dependent_accuracy"])
            runs.save_checkpoint(run, RUN_FORMAT, optimizer, scheduler, batch_rng)
            runs.record_written(out_dir, CHECKPOINT_FILE)
            log(f"epoch {epoch:>2}/{config.epochs}  val loss {scores['cross_entropy']:.4f} "
                f"(floor {data.floor:.4f})  antecedent-dependent tokens "
                f"{scores['dependent_accuracy']:6.1%}  ({sum(history.seconds):.1f} s)"
                + (runs.time_left_note(history.seconds[-1], epoch, config.epochs)
                   if epoch == first_epoch else ""))
    metrics = compute_gpt_metrics(run, data)
    runs.write_json(os.path.join(out_dir, METRICS_FILE), metrics)
    runs.record_written(out_dir, METRICS_FILE)
    return GPTTrainResult(run, metrics)


def _progress_bar(total: int, description: str, enabled: bool) -> Any:
    from minitransformer.progress import progress_bar  # none when stderr is not a terminal

    return progress_bar(total=total, desc=description, enabled=enabled)


def compute_gpt_metrics(run: GPTRun, data: StoryData) -> dict[str, Any]:
    """The model's validation scores beside the floor and the bigram baseline."""
    scores = evaluate_gpt(run.model, data)
    bigram = bigram_cross_entropy(data)
    floor = data.floor
    allowed_gap = max(0.1 * floor, 0.1)  # the target: within 10% or 0.1 nats of the floor
    return {
        "val_cross_entropy": scores["cross_entropy"],
        "floor": floor,
        "oracle_cross_entropy": data.oracle_cross_entropy,
        "gap_to_floor": scores["cross_entropy"] - floor,
        "allowed_gap": allowed_gap,
        "within_target": scores["cross_entropy"] - floor <= allowed_gap,
        "dependent_accuracy": scores["dependent_accuracy"],
        "accuracy_by_kind": {k: v for k, v in scores.items() if k.endswith("_accuracy")
                             and k != "dependent_accuracy"},
        "bigram": bigram,
        "train_seconds": float(sum(run.history.seconds)),
        "epochs": run.history.epochs_done,
        "history": {k: list(map(float, v)) for k, v in asdict(run.history).items()
                    if k != "step_loss"},
        "config": run.config.to_dict(),
        "parameters": run.model.num_parameters(),
    }
