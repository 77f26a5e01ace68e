"""Atomic file writes: every artefact the project writes appears whole or not at all.

:func:`atomic_write` calls ``write`` on a temporary file next to the target, flushes and
fsyncs it, then renames it over the target in one step. An error (a full disk, an
exception in ``write``) removes the temporary file and leaves whatever was at the target
before. A process killed mid-write can still leave its temporary file: they are named
``.<target>.<8 characters>.tmp``, and every atomic write of the same target first
deletes those (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO

PathLike = str | os.PathLike


def _temporary_prefix(path: str) -> str:
    return "." + os.path.basename(path) + "."


def atomic_write(path: PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path``.

    Readers see the old file or the new one, never half of one: the bytes are flushed to
    disk before the rename, the rename is made durable, and on any error the temporary
    file is removed and ``path`` is untouched. Used for every file the package writes.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(path)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=_temporary_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp_path, _new_file_mode())  # mkstemp made it private (0o600)
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them live
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise
    _fsync_directory(directory)


def write_text(path: PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_bytes(path: PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def check_writable(directory: PathLike) -> None:
    """Make ``directory`` if needed and prove a file can be created in it (OSError if
    not: a read-only disk, no permission), before long work whose result would be lost."""
    os.makedirs(directory, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe.", suffix=".tmp")
    os.close(fd)
    os.remove(probe)


class UnknownFormatError(ValueError):
    """A file name whose extension names no format the writer knows."""


def check_figure_path(path: PathLike, supported: tuple[str, ...] = ("png", "svg", "pdf")) -> str:
    """The format a figure at ``path`` would be written in, from its extension, or
    :class:`UnknownFormatError` naming the ones there are. Call it before the work."""
    extension = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if extension not in supported:
        given = f"extension '.{extension}'" if extension else "no extension"
        raise UnknownFormatError(
            f"cannot tell the image format of {os.fspath(path)!r} ({given}): end the name "
            "with one of " + ", ".join("." + name for name in supported)
        )
    return extension


def remove_stale_temporaries(path: PathLike) -> list[str]:
    """Delete temporary files an interrupted atomic write of ``path`` left behind.

    Only files named as :func:`atomic_write` names them (``.<name>.<8 characters>.tmp``)
    next to ``path``. Returns the paths removed.
    """
    path = os.fspath(path)
    pattern = os.path.join(glob.escape(os.path.dirname(os.path.abspath(path))),
                           glob.escape(_temporary_prefix(path)) + "?" * 8 + ".tmp")
    removed = []
    for stale in glob.glob(pattern):
        with contextlib.suppress(OSError):
            os.remove(stale)
            removed.append(stale)
    return removed


def _new_file_mode() -> int:
    """The permissions ``open()`` would give a new file (0o666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
