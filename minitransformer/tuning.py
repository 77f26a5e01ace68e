"""Process-wide tuning for speed: glibc's allocator, OpenBLAS's threads, the cycle collector.

Each changes the whole process, so the library applies none on import, nor in the engine:
the entry points that run training opt in. The command line, the trainers
(``coref.training``, ``gpt.training``) and the benchmarks call :func:`tune_for_training`
(glibc keeps freed memory for reuse, unless ``MINITRANSFORMER_MALLOC=default``) and run
their steps inside :func:`single_threaded_blas`. A user's own loop can call them too:
without the allocator setting a small model's loop runs up to twice as slowly
(docs/benchmarks.md). ``backend.py`` stays what it is, NumPy or CuPy for each device.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import os
import sys
import threading
from collections.abc import Callable, Iterator


def retain_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS.

    A training step frees and reallocates the same large arrays every time. By default
    glibc gives blocks above its threshold back to the OS on free, so each step pays
    again for fresh pages; measured on a 2-core VM, that was a quarter of a Transformer
    step (docs/benchmarks.md). This raises the trim threshold to 1 GiB and serves blocks
    below 32 MiB from the reusable heap. Process-wide, so the library does it not on import
    but where an entry point asks (see :func:`tune_for_training`). Returns False where it
    does not apply (not Linux with glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(libc.mallopt(m_trim_threshold, 1 << 30)) and bool(
        libc.mallopt(m_mmap_threshold, 32 << 20)
    )


MALLOC_SETTING = "MINITRANSFORMER_MALLOC"  # "default": leave glibc's allocator alone


def tune_for_training() -> bool:
    """What an entry point that trains applies first: :func:`retain_freed_memory`, unless
    ``$MINITRANSFORMER_MALLOC`` is ``default``. Returns whether the setting is in force."""
    if os.environ.get(MALLOC_SETTING, "").strip().lower() == "default":
        return False
    return retain_freed_memory()


_blas_lock = threading.Lock()
_blas_users = [0, 0]  # [threads inside single_threaded_blas, OpenBLAS's setting before them]


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with OpenBLAS on one thread, then restore its setting.

    For tiny matrices (the coreference model's are 32 x 12 x 32) splitting a product over
    threads costs more than it saves, and on a busy machine a thread that waits for a core
    makes every step several times slower (measured: 8x on a loaded 2-core machine). The
    training loop uses it; a no-op where NumPy does not use OpenBLAS.

    OpenBLAS has one setting for the whole process, not one per thread. So blocks entered
    by several threads at once count their users: the first to enter saves the setting
    and the last to leave restores it (with a plain save/restore, one thread leaving would
    undo the setting while another is still inside, and the last could leave it at 1).
    """
    library = _openblas()
    if library is None:
        yield
        return
    get_threads, set_threads = library
    with _blas_lock:
        if _blas_users[0] == 0:
            _blas_users[1] = get_threads()
            set_threads(1)
        _blas_users[0] += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users[0] -= 1
            if _blas_users[0] == 0:
                set_threads(_blas_users[1])


@functools.cache  # reading /proc/self/maps took ~1 ms: once per process, not per block
def _openblas() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """OpenBLAS's get/set-number-of-threads functions, from the copy NumPy has loaded."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:  # Linux: the loaded libraries
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)  # the already loaded copy, not a second one
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", "")):
            getter = getattr(library, f"{prefix}_get_num_threads{suffix}", None)
            setter = getattr(library, f"{prefix}_set_num_threads{suffix}", None)
            if getter is not None and setter is not None:
                return getter, setter
    return None


@contextlib.contextmanager
def cycle_collector_paused() -> Iterator[None]:
    """Turn Python's cyclic garbage collector off inside the block (then back on, if it was).

    Only reference counting frees objects meanwhile. Building a large graph allocates many
    long-lived objects, and every so many allocations the collector would scan them all
    again; code that makes no cycles loses nothing by pausing it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
