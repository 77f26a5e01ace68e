"""Checkpoints: save nested dicts of arrays, Tensors and plain values to one ``.npz`` file.

What can be saved: dicts with string keys, lists and tuples, nested freely, whose leaves
are NumPy or CuPy arrays, Tensors, NumPy scalars and the plain values ``int`` (of any
size, e.g. a random generator's state), ``float``, ``str``, ``bool`` and ``None``: a model's
``state_dict()``, an optimizer's ``state_dict()``, a config dict, an RNG state.

The file is an ordinary ``.npz`` (a zip of ``.npy`` files) holding

* one entry per array leaf, named by its key path: ``arrays/model/layer.weight``,
  ``arrays/optimizer/state/0/exp_avg`` (list items by their index);
* an entry ``manifest``: UTF-8 JSON (as a uint8 array) with a format marker and version
  and the tree itself: each node is a dict, list or tuple, a plain value written inline,
  or an array / Tensor leaf naming its entry, dtype and shape.

Loading uses ``np.load(..., allow_pickle=False)``, so a checkpoint can never run code:
an entry holding pickled Python objects is refused.

The write is atomic: the data goes to a temporary file in the same directory, is flushed
to disk, then renamed over ``path`` in one step. A crash mid-save leaves the previous
checkpoint intact and no temporary file behind.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

from minitransformer import backend
from minitransformer.errors import CheckpointError
from minitransformer.files import atomic_write  # the one atomic writer (re-exported here)
from minitransformer.tensor import Tensor

FORMAT = "minitransformer-checkpoint"
VERSION = 1
MANIFEST = "manifest"
_PLAIN = (bool, int, float, str, type(None))

PathLike = str | os.PathLike


# ----- save -----------------------------------------------------------------------------------
def save(state: Any, path: PathLike) -> None:
    """Write ``state`` to ``path`` atomically, as one ``.npz`` file.

    The file is written exactly at ``path`` (no ``.npz`` is appended). Tensors on the GPU
    are copied to the host for writing; the tensors themselves stay where they are.

    Raises:
        TypeError: a dict key that is not a string, a value of an unsupported type, or an
            array of Python objects (which could only be stored by pickling).
    """
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(state, [], arrays)  # checks everything before the disk is touched
    manifest = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree})
    arrays[MANIFEST] = np.frombuffer(manifest.encode("utf-8"), dtype=np.uint8)

    # A file object, not a name: np.savez would append ".npz" to a name.
    atomic_write(path, lambda f: np.savez(f, allow_pickle=False, **arrays))


def _encode(value: Any, key_path: list[str], arrays: dict[str, np.ndarray]) -> Any:
    """The manifest node for ``value``; its arrays are added to ``arrays``."""
    where = "/".join(key_path) or "<root>"
    if isinstance(value, Tensor):
        return {"kind": "tensor", **_add_array(backend.to_numpy(value.data), key_path, arrays)}
    if backend.is_array(value):
        return {"kind": "array", **_add_array(backend.to_numpy(value), key_path, arrays)}
    if isinstance(value, np.generic):
        return {"kind": "scalar", **_add_array(np.asarray(value), key_path, arrays)}
    if isinstance(value, _PLAIN):
        return {"kind": "value", "value": value}
    if isinstance(value, dict):
        items = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"checkpoint dict keys must be strings, got {key!r} "
                    f"({type(key).__name__}) in the dict at {where}"
                )
            items[key] = _encode(item, [*key_path, key], arrays)
        return {"kind": "dict", "items": items}
    if isinstance(value, list | tuple):
        items = [_encode(item, [*key_path, str(i)], arrays) for i, item in enumerate(value)]
        return {"kind": type(value).__name__, "items": items}
    raise TypeError(
        f"cannot save a {type(value).__name__} at {where}: a checkpoint holds dicts, lists, "
        "tuples, arrays, Tensors, int, float, str, bool and None"
    )


def _add_array(array: np.ndarray, key_path: list[str], arrays: dict[str, np.ndarray]) -> dict:
    where = "/".join(key_path) or "<root>"
    if array.dtype.hasobject:
        raise TypeError(
            f"cannot save the array of Python objects at {where} (dtype {array.dtype}): "
            "it could only be stored by pickling; convert it to a numeric array"
        )
    entry = "/".join(["arrays", *key_path])
    unique, n = entry, 1
    while unique in arrays:  # keys with "/" in them could collide with a nested path
        unique, n = f"{entry}~{n}", n + 1
    arrays[unique] = array
    return {"entry": unique, "dtype": array.dtype.str, "shape": list(array.shape)}


# ----- load -----------------------------------------------------------------------------------
def load(path: PathLike, device: str = "cpu") -> Any:
    """Read a checkpoint written by :func:`save`: the same nested structure, bit for bit.

    Tensors come back as Tensors on ``device`` (not requiring grad), arrays as NumPy
    arrays, tuples as tuples.

    Raises:
        CheckpointError: the file is missing, truncated, not a checkpoint, has a bad
            manifest, or holds pickled objects (which are never loaded).
    """
    path = os.fspath(path)
    device = backend.normalize_device(device)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint file at {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic not in _ZIP_MAGICS:
        raise CheckpointError(
            f"{path} is not a minitransformer checkpoint (not an .npz file: it starts with "
            f"{magic!r})"
        )
    try:
        _check_zip(path)
        with np.load(path, allow_pickle=False) as npz:
            return _decode_file(npz, path, device)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc})") from exc
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise CheckpointError(
                f"{path} holds pickled Python objects, which are not loaded (they could run "
                "code); a minitransformer checkpoint never contains any"
            ) from exc
        raise CheckpointError(f"{path} has an unreadable entry ({exc})") from exc
    except Exception as exc:  # any other damage the checks above did not foresee
        raise CheckpointError(
            f"{path} is damaged ({type(exc).__name__}: {_one_line(exc)})"
        ) from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


# Bounds that no checkpoint this project writes comes near, so that a damaged or hostile
# file cannot make loading recurse without end or allocate without end.
MAX_MANIFEST_BYTES = 64 << 20
MAX_DEPTH = 64
MAX_ENTRIES = 100_000


def _check_zip(path: str) -> None:
    """Check the zip's directory against the file before NumPy reads anything.

    Every entry must be stored uncompressed (``np.savez`` never compresses: a compressed
    entry is damage, or a zip bomb), lie inside the file, and the manifest must be of a
    sane size. The arrays' own headers are checked later, entry by entry (_read_array).
    """
    size = os.path.getsize(path)
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            raise CheckpointError(f"{path} has {len(infos)} entries (at most {MAX_ENTRIES})")
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                raise CheckpointError(
                    f"{path} is corrupt: entry {info.filename!r} is compressed "
                    f"(method {info.compress_type}); checkpoints store their entries as they are"
                )
            if info.header_offset + info.compress_size > size:
                raise CheckpointError(
                    f"{path} is truncated: entry {info.filename!r} would end past the file's "
                    f"{size} bytes"
                )
            if info.filename == MANIFEST + ".npy" and info.file_size > MAX_MANIFEST_BYTES:
                raise CheckpointError(
                    f"{path} has a manifest of {info.file_size} bytes "
                    f"(at most {MAX_MANIFEST_BYTES})"
                )


_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip


def _decode_file(npz: Any, path: str, device: str) -> Any:
    if MANIFEST not in npz.files:
        raise CheckpointError(
            f"{path} is not a minitransformer checkpoint (an .npz without a '{MANIFEST}' entry)"
        )
    try:
        raw = _read_array({"entry": MANIFEST, "dtype": "|u1", "shape": None}, npz)
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(
            f"{path} has an unreadable manifest ({type(exc).__name__}: {_one_line(exc)})"
        ) from exc
    except _BadNode as exc:
        raise CheckpointError(f"{path} has a bad manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a minitransformer checkpoint (no format marker)")
    if manifest.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {manifest.get('version')!r}; "
            f"this minitransformer reads version {VERSION}"
        )
    try:
        return _decode(manifest["tree"], npz, device, 0)
    except (KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise CheckpointError(f"{path} has a bad manifest ({type(exc).__name__}: {exc})") from exc
    except _BadNode as exc:
        raise CheckpointError(f"{path} has a bad manifest: {exc}") from exc


class _BadNode(Exception):
    """A manifest node that does not describe a value."""


def _decode(node: dict, npz: Any, device: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise _BadNode(f"it nests deeper than {MAX_DEPTH} levels")
    kind = node["kind"]
    if kind == "value":
        value = node["value"]
        if not isinstance(value, _PLAIN):
            raise _BadNode(f"a plain value of type {type(value).__name__}")
        return value
    if kind == "dict":
        return {key: _decode(item, npz, device, depth + 1) for key, item in node["items"].items()}
    if kind in ("list", "tuple"):
        items = [_decode(item, npz, device, depth + 1) for item in node["items"]]
        return items if kind == "list" else tuple(items)
    if kind in ("array", "tensor", "scalar"):
        array = _read_array(node, npz)
        if kind == "array":
            return array
        if kind == "scalar":
            return array[()]
        return Tensor._from_array(backend.to_device(array, device), device)
    raise _BadNode(f"unknown node kind {kind!r}")


def _read_array(node: dict, npz: Any) -> np.ndarray:
    """The array an entry holds, after its .npy header was checked against the manifest
    (``shape`` None: any 1-d shape) and against the entry's size in the file."""
    entry = node["entry"]
    if not isinstance(entry, str) or entry not in npz.files:
        raise _BadNode(f"it names an entry {entry!r} that the file lacks")
    name = entry + ".npy"
    entry_bytes = npz.zip.getinfo(name).file_size  # np.load keeps the zip open for us
    with npz.zip.open(name) as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise _BadNode(f"entry {entry!r} has .npy format version {version}")
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, _, dtype = reader(member, max_header_size=10_000)
        data_bytes = entry_bytes - member.tell()
    expected_shape = node["shape"]
    if dtype.hasobject:
        raise CheckpointError(
            f"{npz.zip.filename} holds pickled Python objects (entry {entry!r}), which are not "
            "loaded (they could run code); a minitransformer checkpoint never contains any"
        )
    if dtype.str != node["dtype"] or (expected_shape is not None
                                     and list(shape) != expected_shape):
        raise _BadNode(
            f"entry {entry!r} has dtype {dtype.str} and shape {list(shape)}, "
            f"the manifest says {node['dtype']} and {expected_shape}"
        )
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if needed != data_bytes:
        raise _BadNode(
            f"entry {entry!r} claims shape {list(shape)} ({needed} bytes) but holds "
            f"{data_bytes} bytes"
        )
    return npz[entry]
