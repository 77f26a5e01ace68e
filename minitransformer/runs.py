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
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

import numpy as np

from minitransformer import backend, files, optim, serialization
from minitransformer.errors import CheckpointError
from minitransformer.nn import Module, StateDictError
from minitransformer.tensor import Tensor

CHECKPOINT_FILE = "checkpoint.npz"
METRICS_FILE = "metrics.json"

WRITTEN_FILE = ".minitransformer-written.json"
"""In a run directory: the names of the files minitransformer wrote there. Any other file
of the same name as one a command would write is the user's: it is not overwritten
without ``--force``."""

MAX_EPOCHS = 10_000
"""The most epochs a run may have (``--epochs``, a checkpoint's ``config.epochs``): far
beyond what either task needs (8 to 12), short of a run that would never end."""

__all__ = ["CHECKPOINT_FILE", "METRICS_FILE", "OptimizerSettings", "Run", "RunFormat",
           "SavedLists", "build_optimizer", "checkpoint_path", "config_from_dict",
           "dropout_generators", "load_checkpoint", "log_to_stderr", "restore_training",
           "time_left_note", "WRITTEN_FILE", "files_written", "foreign_files",
           "record_written",
           "save_checkpoint", "write_json"]


class SavedLists:
    """A dataclass of lists of floats that goes into a checkpoint as float64 arrays."""

    def to_dict(self) -> dict[str, np.ndarray]:
        return {name: np.array(values, dtype=np.float64) for name, values in asdict(self).items()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Any:
        if not isinstance(state, dict):
            raise ValueError(f"history is a {type(state).__name__}, not a dict")
        unknown = sorted(set(state) - {f.name for f in fields(cls)})
        missing = [f.name for f in fields(cls) if f.name not in state]
        if unknown or missing:
            raise ValueError(f"history has unknown {unknown} and lacks {missing}")
        lists = {}
        for f in fields(cls):
            values = state[f.name]
            if (not backend_is_array(values) or values.ndim != 1
                    or values.dtype.kind not in "fiu"):
                raise ValueError(f"history {f.name} is not a 1-d array of numbers")
            lists[f.name] = [float(v) for v in values.tolist()]
        return cls(**lists)


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
    # The content checks of load_checkpoint (all optional):
    limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """``"config.epochs"`` or ``"model_config.d_model"`` -> its (lowest, highest) value."""
    model_config_for: Callable[[Any, Any], Any] | None = None
    """(config, vocabulary) -> the model config a run with them has (no allocation)."""
    expected_shapes: Callable[[Any], dict[str, tuple[int, ...]]] | None = None
    """model config -> every state_dict entry's shape (computed, nothing allocated)."""
    steps_in_history: Callable[[Any, Any], dict[str, int]] | None = None
    """(config, history) -> the length each history list must have."""
    vocabulary_for: Callable[[Any], Any] | None = None
    """config -> the vocabulary this version's data generator has for it."""


def config_from_dict(cls: type, state: dict[str, Any], what: str) -> Any:
    """``cls(**state)`` for a settings dataclass, refusing keys it does not know (a
    checkpoint from another version, or a typo), keys it lacks (a default would stand in
    for the saved value unseen) and values of the wrong type, with a ValueError naming
    the field."""
    if not isinstance(state, dict):
        raise ValueError(f"{what} are a {type(state).__name__}, not a dict")
    unknown = sorted(set(state) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what} {unknown}")
    missing = [f.name for f in fields(cls) if f.name not in state]
    if missing:
        raise ValueError(f"{what} lack {missing} (every setting is saved; no default "
                         "stands in for one)")
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        value = state[f.name]
        if not _fits(value, hints.get(f.name, Any)):
            expected = getattr(hints[f.name], "__name__", None) or str(hints[f.name])
            raise ValueError(f"{what} {f.name} is {value!r:.60} ({type(value).__name__}); "
                             f"it must be {expected}" + (" and finite" if expected == "float"
                                                          else ""))
    return cls(**state)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a saved plain value has the type a settings field is annotated with."""
    if hint is Any:
        return True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value))
    if hint is str:
        return isinstance(value, str)
    return True


def backend_is_array(value: Any) -> bool:
    """A NumPy array, or a CuPy one (a checkpoint's arrays are loaded on the host)."""
    return isinstance(value, np.ndarray) or backend.is_array(value)


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

    Every field is checked before anything is built from it: the settings' types and
    ranges (``fmt.limits``), the model's settings against the run's, the vocabulary's size,
    each weight's name, shape (the one the settings imply, so nothing is allocated for a
    damaged size), dtype (real floating point) and values (finite), and the history's
    lengths against its ``epochs_done``.

    Raises :class:`~minitransformer.errors.CheckpointError` naming the file and the field
    when it is missing, truncated, of another kind or version, or holds wrong content.
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
        missing = [key for key in ("config", "model_config", "model", "vocabulary", "history")
                   if key not in state]
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
        config = _section("config", lambda: fmt.config.from_dict(state["config"]))
        model_config = _section("model_config",
                                lambda: fmt.model_config.from_dict(state["model_config"]))
        _check_limits(fmt, config, model_config)
        vocabulary = _section("vocabulary", lambda: fmt.vocabulary.from_dict(state["vocabulary"]))
        _check_model_settings(fmt, config, model_config, vocabulary)
        weights = _check_weights(fmt, model_config, state["model"])
        history = _section("history", lambda: fmt.history.from_dict(state["history"]))
        _check_history(fmt, config, history)
        model = fmt.model(model_config, device=device)
        model.load_state_dict(weights)
        run = Run(config, model, vocabulary, history, path)
    except StateDictError as exc:
        last_line = str(exc).splitlines()[-1].strip()
        raise CheckpointError(f"{path}: the saved weights do not fit the model ({last_line})"
                              ) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is a damaged run checkpoint "
                              f"({type(exc).__name__}: {exc})") from exc
    return run, state


def _section(key: str, build: Callable[[], Any]) -> Any:
    """``build()``, its errors prefixed with the checkpoint field they are about."""
    try:
        return build()
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{key}: {exc}") from exc


def _check_limits(fmt: RunFormat, config: Any, model_config: Any) -> None:
    settings = {"config": config, "model_config": model_config}
    for name, (low, high) in fmt.limits.items():
        section, field_name = name.split(".")
        value = getattr(settings[section], field_name)
        if value is not None and not low <= value <= high:
            raise ValueError(f"{name} is {value!r}; it must be between {low} and {high}")


def _check_model_settings(fmt: RunFormat, config: Any, model_config: Any,
                          vocabulary: Any) -> None:
    vocab_size = getattr(model_config, "vocab_size", None)
    if vocab_size is not None and vocab_size != len(vocabulary):
        raise ValueError(f"vocabulary has {len(vocabulary)} tokens but model_config.vocab_size "
                         f"is {vocab_size} (a word added or removed shifts every later id)")
    if fmt.vocabulary_for is not None:
        generated = fmt.vocabulary_for(config)
        if generated != vocabulary:
            missing = [w for w in generated.tokens if w not in vocabulary][:5]
            extra = [w for w in vocabulary.tokens if w not in generated][:5]
            how = (f"it lacks {missing} and has {extra}" if missing or extra
                   else "the same words in another order")
            raise ValueError(f"vocabulary differs from the data generator's ({how}): the "
                             "token ids would point at the wrong words")
    if fmt.model_config_for is not None:
        expected = fmt.model_config_for(config, vocabulary)
        if expected != model_config:
            differing = [f"{f.name} {getattr(model_config, f.name)!r} (the run's settings "
                         f"give {getattr(expected, f.name)!r})" for f in fields(model_config)
                         if getattr(model_config, f.name) != getattr(expected, f.name)]
            raise ValueError(f"model_config does not match config: {', '.join(differing)}")


def encoder_layer_shapes(prefix: str, d_model: int, dim_feedforward: int
                         ) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes of one encoder-style layer (self-attention with biases, the
    feed-forward pair, two layer norms) under ``prefix``: what a checkpoint of a coreference
    model or a GPT must hold for each layer, computed before anything is allocated."""
    E, F_ = d_model, dim_feedforward
    shapes: dict[str, tuple[int, ...]] = {}
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        shapes[f"{prefix}self_attn.{proj}.weight"] = (E, E)
        shapes[f"{prefix}self_attn.{proj}.bias"] = (E,)
    shapes.update({f"{prefix}linear1.weight": (F_, E), f"{prefix}linear1.bias": (F_,),
                   f"{prefix}linear2.weight": (E, F_), f"{prefix}linear2.bias": (E,)})
    for norm in ("norm1", "norm2"):
        shapes[f"{prefix}{norm}.weight"] = (E,)
        shapes[f"{prefix}{norm}.bias"] = (E,)
    return shapes


def _check_weights(fmt: RunFormat, model_config: Any, saved: Any) -> dict[str, Any]:
    """The saved state_dict, each entry checked for shape, dtype and finite values."""
    if not isinstance(saved, dict):
        raise ValueError(f"model is a {type(saved).__name__}, not a dict of weights")
    if fmt.expected_shapes is not None:
        expected = fmt.expected_shapes(model_config)
        missing = [name for name in expected if name not in saved]
        unknown = [name for name in saved if name not in expected]
        if missing or unknown:
            raise ValueError(f"model lacks {missing[:5]} and has unexpected {unknown[:5]} "
                             "for the model its model_config describes")
    for name, value in saved.items():
        array = value.data if isinstance(value, Tensor) else value
        if not backend_is_array(array):
            raise ValueError(f"model.{name} is a {type(value).__name__}, not an array")
        if array.dtype.kind != "f":
            raise ValueError(f"model.{name} has dtype {array.dtype}; weights are real floating "
                             "point")
        if fmt.expected_shapes is not None and tuple(array.shape) != tuple(expected[name]):
            raise ValueError(f"model.{name} has shape {tuple(array.shape)}; model_config "
                             f"implies {tuple(expected[name])}")
        if not np.isfinite(array).all():
            raise ValueError(f"model.{name} holds NaN or infinite values (training diverged "
                             "or the file was damaged)")
    return saved


def _check_history(fmt: RunFormat, config: Any, history: Any) -> None:
    done = history.epochs_done
    epochs = getattr(config, "epochs", None)
    if epochs is not None and done > epochs:
        raise ValueError(f"history records {done} epochs done, beyond config.epochs {epochs}")
    if fmt.steps_in_history is not None:
        for name, length in fmt.steps_in_history(config, history).items():
            actual = len(getattr(history, name))
            if actual != length:
                raise ValueError(f"history {name} has {actual} entries; {done} epochs done "
                                 f"make {length}")


def steps_per_epoch(config: OptimizerSettings) -> int:
    return math.ceil(config.train_size / config.batch_size)


def restore_training(run: Run, state: dict[str, Any], optimizer: optim.Optimizer,
                     scheduler: optim.LRScheduler) -> np.random.Generator:
    """Put the optimizer, the schedule and every dropout generator back as ``state`` saved
    them; returns the batch-order generator, restored too.

    The schedule keeps the step and warm-up it saved but its own length, so a run whose
    ``config.epochs`` was raised goes on along the longer schedule. The saved step must be
    the one ``epochs_done`` epochs make, and every parameter must have its optimizer state
    once a step was taken (a fresh state would silently restart the moments).
    """
    batch_rng = np.random.default_rng()
    try:
        missing = [key for key in ("optimizer", "scheduler", "rng") if key not in state]
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
        steps = run.history.epochs_done * steps_per_epoch(run.config)
        saved_step = state["scheduler"].get("last_step") if isinstance(state["scheduler"], dict) \
            else None
        if not isinstance(saved_step, int) or isinstance(saved_step, bool) or saved_step != steps:
            raise ValueError(f"scheduler.last_step is {saved_step!r}; {run.history.epochs_done} "
                             f"epochs done make {steps}")
        saved_state = state["optimizer"].get("state") if isinstance(state["optimizer"], dict) \
            else None
        if not isinstance(saved_state, dict):
            raise ValueError("optimizer.state is missing")
        n_params = sum(len(group["params"]) for group in optimizer.param_groups)
        lacking = [i for i in range(n_params) if str(i) not in saved_state and i not in saved_state]
        if steps > 0 and lacking:
            raise ValueError(f"optimizer.state lacks the state of parameters {lacking[:5]} "
                             f"after {steps} steps")
        for key, entry in saved_state.items():
            for name, value in (entry.items() if isinstance(entry, dict) else ()):
                if backend_is_array(value) and not np.isfinite(value).all():
                    raise ValueError(f"optimizer.state.{key}.{name} holds NaN or infinite "
                                     "values")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(dict(state["scheduler"], total_steps=scheduler.total_steps))
        batch_rng.bit_generator.state = state["rng"]["batches"]
        for name, generator in dropout_generators(run.model).items():
            generator.bit_generator.state = state["rng"]["dropout"][name]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{run.path} cannot be resumed: its optimizer or random state "
                              f"is damaged ({type(exc).__name__}: {exc})") from exc
    return batch_rng


# ----------------------------------------------------------------------------- output


def time_left_note(epoch_seconds: float, epochs_done: int, epochs: int) -> str:
    """After the first epoch a command trains (``epoch_seconds`` long), how long the rest
    will take, when that is more than a minute (else ""): a long run says so up front."""
    left = epoch_seconds * (epochs - epochs_done)
    if left < 60:
        return ""
    hours, minutes = divmod(round(left / 60), 60)
    spent = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return (f"  (the {epochs - epochs_done} epochs left take about {spent} at this pace; "
            "Ctrl-C stops, --resume goes on)")


def files_written(directory: str | os.PathLike) -> set[str]:
    """The names of the files minitransformer wrote in ``directory`` (its
    :data:`WRITTEN_FILE`). A run directory from before that record (a checkpoint, no
    record) counts the files a run writes as written by it."""
    record = os.path.join(os.fspath(directory), WRITTEN_FILE)
    try:
        with open(record, encoding="utf-8") as f:
            names = json.load(f).get("files", [])
        return {name for name in names if isinstance(name, str)}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, AttributeError):
        return set()  # an unreadable record vouches for nothing
    if os.path.isfile(os.path.join(os.fspath(directory), CHECKPOINT_FILE)):
        return set(_RUN_FOLDER_FILES)
    return set()


# Every name the commands write into a run directory (train, demo, gpt train, gpt attend).
_RUN_FOLDER_FILES = (CHECKPOINT_FILE, METRICS_FILE, "curves.png", "attention.png",
                     "attention_tired.png", "attention_wide.png", "attention_graph.dot",
                     "attention_graph.svg")


def foreign_files(directory: str | os.PathLike, names: list[str]) -> list[str]:
    """Those of ``names`` that exist in ``directory`` but minitransformer did not write."""
    ours = files_written(directory)
    return [name for name in names
            if os.path.lexists(os.path.join(os.fspath(directory), name)) and name not in ours]


def record_written(directory: str | os.PathLike, *names: str) -> None:
    """Add ``names`` to the record of what minitransformer wrote in ``directory``."""
    ours = files_written(directory)
    if set(names) <= ours and os.path.exists(os.path.join(os.fspath(directory), WRITTEN_FILE)):
        return
    files.write_text(os.path.join(os.fspath(directory), WRITTEN_FILE),
                     json.dumps({"written_by": "minitransformer",
                                 "files": sorted(ours | set(names))}, indent=2) + "\n")


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
