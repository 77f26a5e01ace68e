"""Checkpoints: bit-identical round trips, atomic writes, and refusing bad or unsafe files."""

from __future__ import annotations

import json
import math
import os
import zipfile

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import optim, serialization
from minitransformer.errors import CheckpointError
from minitransformer.serialization import load, save


def assert_identical(a, b, where="<root>"):
    """Same structure, same types, same bits (NaNs and -0.0 included)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}/{i}")
    elif isinstance(a, mt.Tensor):
        assert b.device == "cpu" and not b.requires_grad and b.is_leaf, where
        assert_identical(a.detach().numpy(), b.numpy(), where)
    elif isinstance(a, np.ndarray | np.generic):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), where
    elif isinstance(a, float):
        assert math.copysign(1, a) == math.copysign(1, b), where
        assert a == b or (math.isnan(a) and math.isnan(b)), where
    else:
        assert a == b, where


def sample_state() -> dict:
    rng = np.random.default_rng(7)
    return {
        "model": {
            "embed.weight": mt.tensor(rng.standard_normal((5, 3)).astype(np.float32)),
            "head.bias": mt.tensor(rng.standard_normal(4), requires_grad=True),
            "positions": mt.arange(6),
            "mask": mt.tensor(np.tril(np.ones((3, 3), bool))),
        },
        "arrays": {
            "f32": rng.standard_normal((2, 3)).astype(np.float32),
            "f64": np.array([np.nan, -0.0, np.inf, 1e-310, 1 / 3]),
            "i64": np.array([-(2**63), 2**63 - 1, 0], np.int64),
            "bool": np.array([True, False, True]),
            "zero_d": np.array(2.5),
            "empty": np.zeros((0, 3), np.float32),
            "non_contiguous": np.arange(12.0).reshape(3, 4)[:, ::2],
            "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
            "unicode": np.array(["naïve", "日本"]),
            "ключ ✓ 🙂": np.ones(1, np.float16),
        },
        "rng": np.random.default_rng(123).bit_generator.state,
        "config": {"d_model": 32, "dropout": 0.1, "name": "coref — «it» ✓ 🙂",
                   "tied": True, "scheduler": None, "betas": (0.9, 0.999)},
        "plain": [0, -1, 2**200, -(2**70), 1.5, -0.0, math.inf, -math.inf, "", [], {}, ()],
        "numpy_scalars": [np.float32(1.25), np.int64(-3), np.bool_(True)],
        "nested": [{"a": ({"b": [np.arange(2)]},)}],
    }


def test_round_trip_is_bit_identical(tmp_path):
    state = sample_state()
    path = tmp_path / "ckpt.npz"
    save(state, path)
    loaded = load(path)
    assert_identical(state, loaded)
    assert math.isnan(loaded["arrays"]["f64"][0])
    assert isinstance(loaded["model"]["embed.weight"], mt.Tensor)
    assert isinstance(loaded["arrays"]["f32"], np.ndarray)
    assert isinstance(loaded["config"]["betas"], tuple)


def test_loaded_rng_state_continues_the_stream(tmp_path):
    rng = np.random.default_rng(2024)
    rng.standard_normal(5)
    save({"rng": rng.bit_generator.state}, tmp_path / "rng")
    expected = rng.standard_normal(4)
    restored = np.random.default_rng()
    restored.bit_generator.state = load(tmp_path / "rng")["rng"]
    assert np.array_equal(restored.standard_normal(4), expected)


@pytest.mark.parametrize("state", [np.arange(3), mt.tensor([1.0]), 7, "x", None, [], (1, 2)])
def test_top_level_leaves_and_containers(tmp_path, state):
    save(state, tmp_path / "c")
    assert_identical(state, load(tmp_path / "c"))


def test_file_is_a_plain_npz_with_key_paths_and_a_manifest(tmp_path):
    path = tmp_path / "ckpt.npz"
    save({"model": {"w": np.ones(2)}, "steps": [np.zeros(1)]}, path)
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["arrays/model/w", "arrays/steps/0", "manifest"]
        manifest = json.loads(npz["manifest"].tobytes())
    assert manifest["format"] == "minitransformer-checkpoint" and manifest["version"] == 1


def test_keys_that_collide_as_paths_stay_apart(tmp_path):
    state = {"a/b": np.array([1]), "a": {"b": np.array([2])}}
    save(state, tmp_path / "c")
    assert_identical(state, load(tmp_path / "c"))


def test_writes_exactly_the_given_path(tmp_path):
    save({"x": 1}, tmp_path / "model.ckpt")
    assert sorted(os.listdir(tmp_path)) == ["model.ckpt"]
    assert load(str(tmp_path / "model.ckpt")) == {"x": 1}


def test_tensors_load_on_the_requested_device_and_stay_put_when_saved(tmp_path, device):
    t = mt.tensor(np.arange(4.0), device=device, requires_grad=True)
    save({"t": t}, tmp_path / "c")
    assert t.device == device and t.requires_grad  # saving moved nothing
    loaded = load(tmp_path / "c", device=device)["t"]
    assert loaded.device == device and not loaded.requires_grad
    assert np.array_equal(loaded.numpy(), np.arange(4.0))


def test_optimizer_state_survives_a_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    params = [mt.tensor(rng.standard_normal(s), requires_grad=True) for s in [(3, 2), (4,)]]
    opt = optim.Adam(params, lr=0.05, weight_decay=0.01)

    def train(opt, params, n):
        for _ in range(n):
            opt.zero_grad()
            for p in params:
                p.grad = mt.tensor(np.cos(3 * p.data) + p.data)
            opt.step()

    train(opt, params, 3)
    save({"params": params, "optimizer": opt.state_dict()}, tmp_path / "c")
    train(opt, params, 4)

    ckpt = load(tmp_path / "c")
    resumed = [t.requires_grad_() for t in ckpt["params"]]
    opt2 = optim.Adam(resumed)
    opt2.load_state_dict(ckpt["optimizer"])
    train(opt2, resumed, 4)
    for p, q in zip(params, resumed):
        assert np.array_equal(p.data, q.data)


# ----- atomic writes ---------------------------------------------------------------------------
def _crash(*args, **kwargs):
    raise OSError("simulated crash")


@pytest.mark.parametrize("crash_point", ["fsync", "replace", "savez"])
def test_crash_mid_save_keeps_the_old_file(tmp_path, monkeypatch, crash_point):
    path = tmp_path / "ckpt.npz"
    save({"version": 1, "w": np.ones(3)}, path)
    old_bytes = path.read_bytes()
    if crash_point == "savez":
        def half_write(f, **arrays):  # dies after writing part of the data
            f.write(old_bytes[: len(old_bytes) // 2])
            raise KeyboardInterrupt
        monkeypatch.setattr(serialization.np, "savez", half_write)
    else:
        monkeypatch.setattr(serialization.os, crash_point, _crash)
    with pytest.raises((OSError, KeyboardInterrupt)):
        save({"version": 2, "w": np.zeros(3)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temporary file left behind
    assert load(path)["version"] == 1


def test_unsaveable_state_touches_no_file(tmp_path):
    with pytest.raises(TypeError):
        save({"ok": np.ones(2), "bad": object()}, tmp_path / "c")
    assert os.listdir(tmp_path) == []


def test_saved_file_is_not_private(tmp_path):
    save({"x": 1}, tmp_path / "c")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o666 & ~umask


# ----- what save refuses -----------------------------------------------------------------------
def test_non_string_keys_are_refused_with_their_path(tmp_path):
    with pytest.raises(TypeError, match=r"strings, got 3 \(int\) in the dict at optimizer/state"):
        save({"optimizer": {"state": {3: np.ones(1)}}}, tmp_path / "c")
    with pytest.raises(TypeError, match=r"got \('a', 1\) \(tuple\)"):
        save({("a", 1): 0}, tmp_path / "c")


@pytest.mark.parametrize("value, name", [({1, 2}, "set"), (b"raw", "bytes"),
                                          (np.array([None, 1], dtype=object), "Python objects")])
def test_unsupported_values_are_refused(tmp_path, value, name):
    with pytest.raises(TypeError, match=f"{name}.* at cfg/0"):
        save({"cfg": [value]}, tmp_path / "c")


# ----- what load refuses -----------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.npz"
    with pytest.raises(CheckpointError, match=f"no checkpoint file at {path}"):
        load(path)
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load(tmp_path)  # a directory


def test_truncated_file(tmp_path):
    full = tmp_path / "full.npz"
    save(sample_state(), full)
    data = full.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        truncated = tmp_path / f"cut{cut}.npz"
        truncated.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"{truncated} is truncated or corrupt"):
            load(truncated)


@pytest.mark.parametrize("content", ["text", "empty", "npy", "foreign_npz"])
def test_foreign_files(tmp_path, content):
    path = tmp_path / "file.npz"
    if content == "text":
        path.write_text("epoch 3, loss 0.25\n")
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "npy":
        with path.open("wb") as f:
            np.save(f, np.arange(3))
    else:
        np.savez(path, weights=np.random.default_rng(0).standard_normal(3))
    with pytest.raises(CheckpointError, match=f"{path} is not a minitransformer checkpoint"):
        load(path)


executed = []


class Payload:
    """Unpickling this object would run code: it calls ``executed.append``."""

    def __reduce__(self):
        return (executed.append, ("pickled code ran",))


def test_pickled_object_arrays_are_refused_not_loaded(tmp_path):
    # A genuine checkpoint whose array entry is swapped for a pickled object array.
    genuine = tmp_path / "genuine.npz"
    save({"w": np.zeros(1)}, genuine)
    with np.load(genuine) as npz:
        manifest = npz["manifest"]
    evil = tmp_path / "evil.npz"
    np.savez(evil, manifest=manifest, **{"arrays/w": np.array([Payload()], dtype=object)})
    with zipfile.ZipFile(evil) as z:  # the crafted file really holds a pickle
        assert b"pickled code ran" in z.read("arrays/w.npy")
    with pytest.raises(CheckpointError, match=f"{evil} holds pickled Python objects"):
        load(evil)
    assert executed == []


def _with_manifest(path, manifest: bytes, **arrays):
    np.savez(path, manifest=np.frombuffer(manifest, np.uint8), **arrays)


@pytest.mark.parametrize("manifest, message", [
    (b"\xff\xfe not json", "unreadable manifest"),
    (b"{not json", "unreadable manifest"),
    (b'{"version": 1, "tree": {"kind": "value", "value": 1}}', "no format marker"),
    (b'{"format": "minitransformer-checkpoint", "version": 99, "tree": {}}', "version 99"),
    (b'{"format": "minitransformer-checkpoint", "version": 1}', "bad manifest"),
    (b'{"format": "minitransformer-checkpoint", "version": 1, "tree": {"kind": "set"}}',
     "unknown node kind 'set'"),
    (b'{"format": "minitransformer-checkpoint", "version": 1, "tree": [1, 2]}', "bad manifest"),
    (b'{"format": "minitransformer-checkpoint", "version": 1, '
     b'"tree": {"kind": "value", "value": [1]}}', "plain value of type list"),
    (b'{"format": "minitransformer-checkpoint", "version": 1, '
     b'"tree": {"kind": "array", "entry": "arrays/x", "dtype": "<f8", "shape": [2]}}',
     "lacks"),
    (b'{"format": "minitransformer-checkpoint", "version": 1, '
     b'"tree": {"kind": "array", "entry": "arrays/w", "dtype": "<f4", "shape": [2]}}',
     "the manifest says <f4"),
])
def test_bad_manifests(tmp_path, manifest, message):
    path = tmp_path / "bad.npz"
    _with_manifest(path, manifest, **{"arrays/w": np.zeros(2)})
    with pytest.raises(CheckpointError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)
