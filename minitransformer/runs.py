"""Training runs on disk: the plumbing the coreference and GPT trainers share.

A run is a model with everything needed to use it or to train it on: its settings, its
vocabulary, what it has measured so far (its history) and the path of its checkpoint.
The checkpoint holds the whole state in one file, written atomically after every epoch:

    kind, version         which trainer wrote it, in which format
    config, model_config  the settings (dataclasses, as dicts)
    model                 the state_dict
    optimizer, scheduler  their state_dicts
    vocabulary, history
    rng                   the batch-order generator's state and every dropout generator's

so a run resumed from it takes exactly the steps the uninterrupted run would have taken.
What to train and how to measure it is each task's own (``coref/training.py``,
``gpt/training.py``); this module knows neither, and the engine does not import it.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import numpy as np

from minitransformer import files, optim, serialization
from minitransformer.errors import CheckpointError
from minitransformer.nn import Module, StateDictError

CHECKPOINT_FILE = "checkpoint.npz"
METRICS_FILE = "metrics.json"

__all__ = ["CHECKPOINT_FILE", "METRICS_FILE", "OptimizerSettings", "Run", "RunFormat",
           "SavedLists", "build_optimizer", "checkpoint_path", "config_from_dict",
           "dropout_generators", "load_checkpoint", "log_to_stderr", "restore_training",
           "save_checkpoint", "write_json"]


class SavedLists:
    """A dataclass of lists of floats that goes into a checkpoint as float64 arrays."""

    def to_dict(self) -> dict[str, np.ndarray]:
        return {name: np.array(values, dtype=np.float64) for name, values in asdict(self).items()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Any:
        return cls(**{f.name: [float(v) for v in state[f.name]] for f in fields(cls)})


@dataclass
class Run:
    """A model with everything needed to use it or to train it on. ``history`` has an
    ``epochs_done``; ``config`` an ``epochs``, the length of the whole run."""

    config: Any
    model: Any
    vocabulary: Any
    history: Any
    path: str = ""

    @property
    def finished(self) -> bool:
        return self.history.epochs_done >= self.config.epochs


@dataclass(frozen=True)
class RunFormat:
    """A trainer's checkpoints: the tag and format version they carry, and the classes
    that rebuild a :class:`Run` from one (each with a ``from_dict``; the model is built
    as ``model(model_config, device=...)``)."""

    kind: str  # saved as "kind", e.g. "minitransformer-gpt-run"
    version: int
    description: str  # for errors: "a GPT run"
    config: type
    model_config: type
    model: type
    history: type
    vocabulary: type


def config_from_dict(cls: type, state: dict[str, Any], what: str) -> Any:
    """``cls(**state)`` for a settings dataclass, refusing keys it does not know (a
    checkpoint from another version, or a typo) with a ValueError that names them."""
    unknown = sorted(set(state) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what} {unknown}")
    return cls(**state)


class OptimizerSettings(Protocol):
    """The settings :func:`build_optimizer` reads (both trainers' configs have them)."""

    lr: float
    weight_decay: float
    warmup_epochs: float
    min_lr_fraction: float
    train_size: int
    batch_size: int
    epochs: int


def build_optimizer(model: Module, config: OptimizerSettings
                    ) -> tuple[optim.AdamW, optim.WarmupCosine]:
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


def dropout_generators(model: Module) -> dict[str, np.random.Generator]:
    """Every random generator inside the model (dropout layers, attention dropout), by name."""
    return {name: module.generator for name, module in model.named_modules()
            if isinstance(getattr(module, "generator", None), np.random.Generator)}


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_path(path: str | os.PathLike) -> str:
    """The checkpoint file of ``path``: a run directory or the file itself."""
    path = os.fspath(path)
    return os.path.join(path, CHECKPOINT_FILE) if os.path.isdir(path) else path


def save_checkpoint(run: Run, fmt: RunFormat, optimizer: optim.Optimizer,
                    scheduler: optim.LRScheduler, batch_rng: np.random.Generator) -> None:
    """Write the whole state of ``run`` to ``run.path`` in one atomic step."""
    serialization.save({
        "kind": fmt.kind,
        "version": fmt.version,
        "config": run.config.to_dict(),
        "model_config": run.model.config.to_dict(),
        "model": dict(run.model.state_dict()),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "vocabulary": run.vocabulary.to_dict(),
        "rng": {"batches": batch_rng.bit_generator.state,
                "dropout": {name: g.bit_generator.state
                            for name, g in dropout_generators(run.model).items()}},
        "history": run.history.to_dict(),
    }, run.path)


def load_checkpoint(path: str, fmt: RunFormat, device: str = "cpu"
                    ) -> tuple[Run, dict[str, Any]]:
    """The run saved at ``path`` (its model on ``device``) and the whole saved state.

    Raises :class:`~minitransformer.errors.CheckpointError` naming the file when it is
    missing, truncated, of another kind or version, or does not fit the model it describes.
    """
    state = serialization.load(path)
    if not isinstance(state, dict) or state.get("kind") != fmt.kind:
        raise CheckpointError(f"{path} is not a checkpoint of {fmt.description} (written by "
                              f"something else)")
    if state.get("version") != fmt.version:
        raise CheckpointError(f"{path} is a checkpoint of {fmt.description} of version "
                              f"{state.get('version')!r}; this minitransformer reads version "
                              f"{fmt.version}")
    try:
        model = fmt.model(fmt.model_config.from_dict(state["model_config"]), device=device)
        model.load_state_dict(state["model"])
        run = Run(fmt.config.from_dict(state["config"]), model,
                  fmt.vocabulary.from_dict(state["vocabulary"]),
                  fmt.history.from_dict(state["history"]), path)
    except StateDictError as exc:
        last_line = str(exc).splitlines()[-1].strip()
        raise CheckpointError(f"{path}: the saved weights do not fit the model ({last_line})"
                              ) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is a damaged run checkpoint "
                              f"({type(exc).__name__}: {exc})") from exc
    return run, state


def restore_training(run: Run, state: dict[str, Any], optimizer: optim.Optimizer,
                     scheduler: optim.LRScheduler) -> np.random.Generator:
    """Put the optimizer, the schedule and every dropout generator back as ``state`` saved
    them; returns the batch-order generator, restored too.

    The schedule keeps the step and warm-up it saved but its own length, so a run whose
    ``config.epochs`` was raised goes on along the longer schedule.
    """
    batch_rng = np.random.default_rng()
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(dict(state["scheduler"], total_steps=scheduler.total_steps))
        batch_rng.bit_generator.state = state["rng"]["batches"]
        for name, generator in dropout_generators(run.model).items():
            generator.bit_generator.state = state["rng"]["dropout"][name]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{run.path} cannot be resumed: its optimizer or random state "
                              f"is damaged ({type(exc).__name__}: {exc})") from exc
    return batch_rng


# ----------------------------------------------------------------------------- output


def log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


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
