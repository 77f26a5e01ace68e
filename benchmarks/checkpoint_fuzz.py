"""Fuzz the checkpoint reader: every damaged file must give the one-line CheckpointError.

Starts from a genuine checkpoint (a model's weights, an optimizer's state, a random
generator's state, a nested config) and damages it: single bit flips anywhere, byte
runs overwritten, truncations at every kind of boundary, and targeted edits (an array
header claiming a huge shape, a manifest nested 200,000 deep or of the wrong kind, an
entry stored compressed). ``load`` must either return (a flip can land where nothing
checks it: in a zip comment, an unused header field) or raise ``CheckpointError``;
anything else, or a load slower than a second, is a failure.

Then the content: a file that parses but holds wrong content (a complex weight, a missing
or mistyped setting, a word removed from the vocabulary, a history longer than the run, NaN
weights, a huge ``d_model`` or ``num_layers``, a missing optimizer state, a negative
scheduler step) must be refused by the run loader with a CheckpointError naming the field
(:func:`content_corruptions`, :func:`check_content`), before any allocation it implies.

The test suite runs a bounded number of cases (tests/test_checkpoint_fuzz.py); this
script runs as many as asked:

    python -m benchmarks.checkpoint_fuzz --cases 5000 --seed 1
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

import minitransformer as mt
from minitransformer.errors import CheckpointError
from minitransformer.serialization import load, save


def genuine_checkpoint(path: str) -> bytes:
    """Write a small but complete checkpoint to ``path`` and return its bytes."""
    mt.manual_seed(0)
    model = mt.nn.Sequential(mt.nn.Linear(4, 3), mt.nn.LayerNorm(3))
    optimizer = mt.optim.Adam(model.parameters(), lr=0.01)
    model(mt.randn(2, 4)).sum().backward()
    optimizer.step()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": np.random.default_rng(1).bit_generator.state,
        "config": {"epochs": 3, "name": "fuzz", "sizes": [1, 2, (3, 4.5)], "none": None},
    }
    save(state, path)
    with open(path, "rb") as f:
        return f.read()


def _rezip(data: bytes, edit: Any) -> bytes:
    """A copy of the zip in ``data`` with ``edit(name, bytes) -> bytes`` applied to each
    entry (CRCs recomputed: the damage is in the content, not caught by the zip layer)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, edit(info.filename, src.read(info.filename)))
    return out.getvalue()


def _huge_header(name: str, content: bytes) -> bytes:
    if not name.startswith("arrays/"):
        return content
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (10**11,)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + content[-8:]


def _manifest(document: Any) -> Any:
    def edit(name: str, content: bytes) -> bytes:
        if name != "manifest.npy":
            return content
        buffer = io.BytesIO()
        raw = document if isinstance(document, bytes) else json.dumps(document).encode()
        np.save(buffer, np.frombuffer(raw, dtype=np.uint8))
        return buffer.getvalue()

    return edit


def targeted(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Hand-made damage, each case named."""
    yield "array header claims shape (10**11,)", _rezip(data, _huge_header)
    deep = "[" * 200_000 + "]" * 200_000
    yield "manifest nested 200,000 deep (JSON)", _rezip(data, _manifest(deep.encode()))
    tree = '{"kind": "list", "items": [' * 400 + '{"kind": "value", "value": 1}' + "]}" * 400
    document = '{"format": "minitransformer-checkpoint", "version": 1, "tree": ' + tree + "}"
    yield "manifest tree nested 400 deep", _rezip(data, _manifest(document.encode()))
    yield "manifest of the wrong kind", _rezip(data, _manifest([1, 2, 3]))
    yield "manifest tree of the wrong kind", _rezip(
        data, _manifest({"format": "minitransformer-checkpoint", "version": 1, "tree": [1]}))
    yield "manifest not UTF-8", _rezip(data, _manifest(b"\xff\xfe{"))
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    yield "entries stored compressed", out.getvalue()
    yield "empty file", b""
    yield "zip magic only", data[:4]


def random_damage(data: bytes, rng: np.random.Generator, cases: int) -> Iterator[tuple[str, bytes]]:
    """``cases`` random damages: bit flips, overwritten runs, truncations."""
    for _ in range(cases):
        kind = rng.integers(3)
        damaged = bytearray(data)
        if kind == 0:
            position = int(rng.integers(len(data)))
            damaged[position] ^= 1 << int(rng.integers(8))
            yield f"bit flip at byte {position}", bytes(damaged)
        elif kind == 1:
            position = int(rng.integers(len(data)))
            length = int(rng.integers(1, 17))
            damaged[position:position + length] = rng.bytes(length)[: len(data) - position]
            yield f"{length} random bytes at {position}", bytes(damaged)
        else:
            length = int(rng.integers(len(data)))
            yield f"truncated to {length} bytes", bytes(damaged[:length])


def check(name: str, damaged: bytes, directory: str, slow_seconds: float = 1.0) -> str | None:
    """Load ``damaged``; return a description of the failure, or None if it behaved."""
    path = os.path.join(directory, "damaged.npz")
    with open(path, "wb") as f:
        f.write(damaged)
    started = time.perf_counter()
    try:
        load(path)
    except CheckpointError as exc:
        if "\n" in str(exc):
            return f"{name}: a CheckpointError of several lines: {exc!s:.200}"
    except Exception as exc:  # noqa: BLE001 (this is what the fuzzer looks for)
        return f"{name}: {type(exc).__name__}: {exc!s:.200}"
    seconds = time.perf_counter() - started
    if seconds > slow_seconds:
        return f"{name}: took {seconds:.1f} s"
    return None


def fuzz(cases: int, seed: int) -> tuple[int, list[str]]:
    """Run the targeted cases and ``cases`` random ones; (cases run, failures)."""
    with tempfile.TemporaryDirectory() as directory:
        data = genuine_checkpoint(os.path.join(directory, "genuine.npz"))
        rng = np.random.default_rng(seed)
        failures, count = [], 0
        for name, damaged in [*targeted(data), *random_damage(data, rng, cases)]:
            count += 1
            failure = check(name, damaged, directory)
            if failure is not None:
                failures.append(failure)
    return count, failures


# ----------------------------------------------------------------------------- content


def tiny_runs(directory: str) -> dict[str, str]:
    """A one-epoch coreference run and a one-epoch GPT run, tiny; their checkpoint paths."""
    from minitransformer.coref.training import TrainConfig, train
    from minitransformer.gpt.training import GPTTrainConfig, train_gpt

    def quiet(message: str) -> None:
        pass

    coref_dir, gpt_dir = os.path.join(directory, "coref"), os.path.join(directory, "gpt")
    train(TrainConfig(epochs=1, train_size=32, test_size=8, batch_size=16, d_model=8, nhead=2,
                      num_layers=1, dim_feedforward=8), coref_dir, progress=False, log=quiet)
    train_gpt(GPTTrainConfig(epochs=1, train_size=16, val_size=8, batch_size=8, n_embd=8,
                             dim_feedforward=8, n_layer=1), gpt_dir, progress=False, log=quiet)
    return {"coref": os.path.join(coref_dir, "checkpoint.npz"),
            "gpt": os.path.join(gpt_dir, "checkpoint.npz")}


def _first_weight(state: dict) -> str:
    return next(iter(state["model"]))


def content_corruptions(kind: str) -> Iterator[tuple[str, Any, str, bool]]:
    """(name, edit(state) -> None, what the error must name, whether only a resume
    notices) for a run checkpoint of ``kind`` ("coref" or "gpt")."""
    size, layers = ("d_model", "num_layers") if kind == "coref" else ("n_embd", "n_layer")
    model_size, model_layers = size, layers  # the same names in both settings

    def setting(section: str, key: str, value: Any) -> Any:
        return lambda state: state[section].__setitem__(key, value)

    def weight(transform: Any) -> Any:
        def edit(state: dict) -> None:
            name = _first_weight(state)
            state["model"][name] = transform(mt.Tensor(state["model"][name]).numpy())
        return edit

    def both(key_config: str, key_model: str, value: Any) -> Any:
        def edit(state: dict) -> None:
            state["config"][key_config] = value
            state["model_config"][key_model] = value
        return edit

    def drop(section: str, key: str) -> Any:
        return lambda state: state[section].pop(key)

    def remove_word(state: dict) -> None:
        state["vocabulary"]["tokens"] = [t for i, t in enumerate(state["vocabulary"]["tokens"])
                                         if i != 3]

    def swap_words(state: dict) -> None:
        tokens = list(state["vocabulary"]["tokens"])
        tokens[3], tokens[4] = tokens[4], tokens[3]
        state["vocabulary"]["tokens"] = tokens

    def remove_word_consistently(state: dict) -> None:
        remove_word(state)
        state["model_config"]["vocab_size"] -= 1
        name = _first_weight(state)  # the token embedding: one row per word
        state["model"][name] = mt.Tensor(np.delete(mt.Tensor(state["model"][name]).numpy(),
                                                   3, axis=0))

    def lengthen(key: str, extra: int) -> Any:
        def edit(state: dict) -> None:
            values = state["history"][key]
            state["history"][key] = np.concatenate([values, np.ones(extra)])
        return edit

    def more_epochs_than_the_run(state: dict) -> None:
        for key, values in state["history"].items():
            state["history"][key] = np.concatenate([values] * 3)

    def optimizer_state(state: dict) -> None:
        state["optimizer"]["state"] = {}

    epoch_list = "epoch_loss" if kind == "coref" else "val_loss"
    yield "a complex weight array", weight(lambda a: a.astype(np.complex128)), "dtype", False
    yield "an integer weight array", weight(lambda a: a.astype(np.int64)), "dtype", False
    yield "NaN weights", weight(lambda a: np.full_like(a, np.nan)), "NaN", False
    yield "a weight of the wrong shape", weight(lambda a: a[:-1]), "shape", False
    yield "a config key missing", drop("config", "epochs"), "epochs", False
    yield "a model_config key missing", drop("model_config", model_size), model_size, False
    yield f"{model_size} as a string", setting("model_config", model_size, "32"), \
        model_size, False
    yield "epochs as a float", setting("config", "epochs", 1.5), "epochs", False
    yield "lr NaN", setting("config", "lr", float("nan")), "lr", False
    yield "epochs negative", setting("config", "epochs", -1), "epochs", False
    yield "a word removed from the vocabulary", remove_word, "vocab", False
    yield "two words of the vocabulary swapped", swap_words, "vocabulary", False
    yield "a word removed, vocab_size and embedding trimmed to match", \
        remove_word_consistently, "vocabulary", False
    yield "epochs_done beyond epochs", more_epochs_than_the_run, "epochs", False
    yield "history lists of unequal length", lengthen("seconds", 2), "seconds", False
    yield f"history {epoch_list} longer", lengthen(epoch_list, 1), "history", False
    yield f"a huge {model_size} in the model", setting("model_config", model_size, 10**9), \
        model_size, False
    yield f"a huge {size} everywhere", both(size, model_size, 10**9), size, False
    yield f"a large {size} everywhere (within bounds)", both(size, model_size, 8192), \
        "shape", False
    yield f"{model_layers} = 100000", setting("model_config", model_layers, 100_000), \
        model_layers, False
    yield f"{layers} = 100000 everywhere", both(layers, model_layers, 100_000), layers, False
    yield f"{layers} = 200 everywhere (within bounds)", both(layers, model_layers, 200), \
        "lacks", False
    if kind == "coref":
        yield "a huge max_len", setting("model_config", "max_len", 10**9), "max_len", False
    else:
        yield "a huge block_size", setting("model_config", "block_size", 10**9), \
            "block_size", False
    yield "the optimizer state missing", optimizer_state, "optimizer.state", True
    yield "no optimizer at all", lambda state: state.pop("optimizer"), "optimizer", True
    yield "a negative scheduler step", setting("scheduler", "last_step", -5), "last_step", True
    yield "a scheduler step from another run", setting("scheduler", "last_step", 10**6), \
        "last_step", True


def check_content(kind: str, genuine: str, directory: str,
                  slow_seconds: float = 5.0) -> list[str]:
    """Apply every :func:`content_corruptions` edit to the run checkpoint ``genuine``;
    the failures (a load that passed, another exception, a message not naming the field,
    or slower than ``slow_seconds``)."""
    import copy

    from minitransformer import runs
    from minitransformer.coref.training import RUN_FORMAT as COREF
    from minitransformer.gpt.training import RUN_FORMAT as GPT

    fmt = COREF if kind == "coref" else GPT
    original = load(genuine)
    failures = []
    for name, edit, field_name, on_resume in content_corruptions(kind):
        state = copy.deepcopy(original)
        edit(state)
        path = os.path.join(directory, f"{kind}-content.npz")
        save(state, path)
        started = time.perf_counter()
        try:
            run, loaded = runs.load_checkpoint(path, fmt)
            if on_resume:
                optimizer, scheduler = runs.build_optimizer(run.model, run.config)
                runs.restore_training(run, loaded, optimizer, scheduler)
            failures.append(f"{kind}: {name}: loaded without an error")
            continue
        except CheckpointError as exc:
            message = str(exc)
            if "\n" in message or field_name.lower() not in message.lower():
                failures.append(f"{kind}: {name}: the error does not name {field_name!r}: "
                                f"{message:.300}")
        except Exception as exc:  # noqa: BLE001 (this is what the fuzzer looks for)
            failures.append(f"{kind}: {name}: {type(exc).__name__}: {exc!s:.200}")
        seconds = time.perf_counter() - started
        if seconds > slow_seconds:
            failures.append(f"{kind}: {name}: took {seconds:.1f} s")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    count, failures = fuzz(args.cases, args.seed)
    with tempfile.TemporaryDirectory() as directory:
        for kind, path in tiny_runs(directory).items():
            count += sum(1 for _ in content_corruptions(kind))
            failures += check_content(kind, path, directory)
    for failure in failures:
        print(failure)
    print(f"{count} damaged checkpoints, {len(failures)} failures, "
          f"{time.perf_counter() - started:.1f} s")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
