"""Fuzz the checkpoint reader: every damaged file must give the one-line CheckpointError.

Starts from a genuine checkpoint (a model's weights, an optimizer's state, a random
generator's state, a nested config) and damages it: single bit flips anywhere, byte
runs overwritten, truncations at every kind of boundary, and targeted edits (an array
header claiming a huge shape, a manifest nested 200,000 deep or of the wrong kind, an
entry stored compressed). ``load`` must either return (a flip can land where nothing
checks it: in a zip comment, an unused header field) or raise ``CheckpointError``;
anything else, or a load slower than a second, is a failure.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    count, failures = fuzz(args.cases, args.seed)
    for failure in failures:
        print(failure)
    print(f"{count} damaged checkpoints, {len(failures)} failures, "
          f"{time.perf_counter() - started:.1f} s")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
