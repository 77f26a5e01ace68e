"""The array backends: NumPy for ``"cpu"``, CuPy for ``"cuda"``.

Every op reaches its array library through :func:`array_module`, so the same op code
runs on both devices. CuPy is imported only when a CUDA tensor is first asked for.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from types import ModuleType
from typing import Any

import numpy as np

from minitransformer.errors import DeviceError

DEVICES = ("cpu", "cuda")
_cupy: ModuleType | None = None


def _load_cupy() -> ModuleType:
    global _cupy
    if _cupy is None:
        try:
            import cupy
        except ImportError as exc:
            raise DeviceError(
                "device 'cuda' needs CuPy, which is not installed; "
                "install the GPU extra: pip install -e '.[gpu]' in a checkout "
                "(pip install 'minitransformer[gpu]' from a package index)"
            ) from exc
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDA driver missing or broken
            raise DeviceError(
                f"CuPy is installed but no CUDA GPU is usable ({exc}); "
                "device 'cuda' needs an NVIDIA GPU and driver (the 'gpu' extra is installed)"
            ) from exc
        if count == 0:
            raise DeviceError("CuPy is installed but found no CUDA GPU; use device='cpu'")
        _cupy = cupy
    return _cupy


def cuda_is_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        _load_cupy()
    except DeviceError:
        return False
    return True


def normalize_device(device: Any) -> str:
    """Map ``"cpu"``, ``"cuda"``, ``"cuda:0"`` (or an object with ``.device``) to a device name."""
    if device is None:
        return default_device()
    name = device_name(device)
    if name is None:
        raise DeviceError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    return name


def device_name(device: Any) -> str | None:
    """``"cpu"`` or ``"cuda"`` for any spelling of them (``"CUDA:1"``), else None."""
    name = str(device).lower()
    if name.startswith("cuda:"):
        name = "cuda"
    return name if name in DEVICES else None


def default_device() -> str:
    """The device for new tensors: ``$MINITRANSFORMER_DEVICE`` or ``"cpu"``."""
    setting = os.environ.get("MINITRANSFORMER_DEVICE", "cpu")
    name = device_name(setting)
    if name is None:
        raise DeviceError(
            f"MINITRANSFORMER_DEVICE={setting!r} is not a device; expected one of "
            f"{', '.join(DEVICES)}"
        )
    return name


def array_module(device: str) -> ModuleType:
    """NumPy or CuPy, for a normalised device name."""
    return np if device == "cpu" else _load_cupy()


_NUMPY_TYPES = (np.ndarray, np.generic)  # a tuple: isinstance with a union type is slower


def device_of(array: Any) -> str:
    """The device an array lives on."""
    return "cpu" if isinstance(array, _NUMPY_TYPES) else "cuda"


def array_module_of(array: Any) -> ModuleType:
    """NumPy or CuPy, whichever holds ``array`` (on every op's forward: one call, no more)."""
    return np if isinstance(array, _NUMPY_TYPES) else _load_cupy()


# NumPy 2 combines an array with a Python number about twice as slowly as with a 0-d array
# of the array's own dtype (0.9 vs 0.5 us for an 8x8 float32 multiply, more in place):
# on small tensors that is the cost of x * 0.5 or 1 - y. Making the 0-d array costs more
# than the multiply, so the ones in use are kept.
_constants: dict[tuple, np.ndarray] = {}


def constant(value: int | float, like: Any) -> Any:
    """``value`` ready to combine with ``like``: a shared read-only 0-d array of ``like``'s
    dtype when ``like`` is a floating NumPy array, else ``value`` itself (a tensor, a CuPy
    array or an integer array combine with Python numbers as they are)."""
    if like.__class__ is not np.ndarray:
        return value
    # Looked up first, checked on a miss only (0.15 -> 0.11 us a call). 1, 1.0 and True
    # share a key, rightly: only floating dtypes are kept, where they are the same value.
    key = (value, like.dtype)
    array = _constants.get(key)
    if array is None:
        if like.dtype.kind != "f":
            return value
        array = np.array(value, dtype=like.dtype)
        array.flags.writeable = False
        # Zero (whose key cannot tell -0.0 from 0.0) and NaN (never equal, so never found)
        # are not kept; the bound stops a loop over many different numbers from growing it.
        if value != 0 and value == value and len(_constants) < 1024:
            _constants[key] = array
    return array


# Sums over the last axis are everywhere in a Transformer step (layer norm's means, the
# softmax's row sums) and sums over rows give every bias its gradient. For the short rows
# of a layer (64 to 1,024 values), NumPy's float reductions are 3 to 8 times slower than
# the same sums written as a product with a vector of ones, which BLAS does: on a
# (2048, 64) float32 array, 74 us against 12 for the row sums, 47 against 16 for the
# column sums (2-core VM, NumPy 2.4 with OpenBLAS; docs/benchmarks.md). float16 has no
# BLAS product, so it keeps the reduction; so do the tensors of create_graph.
def _blas_sums(x: Any) -> bool:
    return x.dtype.kind == "f" and x.dtype.itemsize >= 4 and x.ndim >= 1 and x.size > 0


def sum_along(x: Any, axis: int = -1) -> Any:
    """``x.sum(axis=axis, keepdims=True)`` for an array; along the last axis, as a product
    with ones: (..., n) -> (..., 1)."""
    if not _blas_sums(x) or axis not in (-1, x.ndim - 1):
        return x.sum(axis=axis, keepdims=True)
    ones = array_module_of(x).ones((x.shape[-1], 1), dtype=x.dtype)
    rows = x.reshape(-1, x.shape[-1])  # (..., n) -> (N, n)
    return (rows @ ones).reshape(*x.shape[:-1], 1)  # (N, n) @ (n, 1) -> (..., 1)


def sum_rows(x: Any) -> Any:
    """The sum of the rows of a 2-D array, ``x.sum(axis=0)``, as a product with ones:
    (N, n) -> (n,)."""
    if not _blas_sums(x) or x.ndim != 2:
        return x.sum(axis=0)
    ones = array_module_of(x).ones((1, x.shape[0]), dtype=x.dtype)
    return (ones @ x).reshape(x.shape[1])  # (1, N) @ (N, n) -> (n,)


def to_device(array: Any, device: str) -> Any:
    """Copy ``array`` to ``device`` (no copy if it is already there)."""
    if device_of(array) == device:
        return array
    if device == "cpu":
        return array.get()
    return _load_cupy().asarray(array)


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy array on the host (copied from the GPU if needed)."""
    return np.asarray(array) if device_of(array) == "cpu" else array.get()


def make_read_only(array: Any) -> Any:
    """Forbid writes into ``array`` (NumPy), so that a caller cannot change values a graph
    saved for its backward. CuPy arrays have no such flag: they are returned unchanged."""
    if isinstance(array, np.ndarray):
        array.flags.writeable = False
    return array


def scatter_add(target: Any, index: Any, values: Any) -> None:
    """``target[index] += values`` with repeated indices accumulated, in place."""
    if device_of(target) == "cpu":
        if _adds_rows(target, index, values):
            _add_rows_sorted(target, index, values)
        else:
            np.add.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_add(target, index, values)


def _adds_rows(target: Any, index: Any, values: Any) -> bool:
    """Whether ``target[index] += values`` adds whole rows (one integer array indexing axis
    0, as an embedding's backward does) and is big enough for :func:`_add_rows_sorted`."""
    return (isinstance(index, np.ndarray) and index.dtype.kind in "iu" and target.ndim > 1
            and values.size > 4096 and values.shape == index.shape + target.shape[1:])


def _add_rows_sorted(target: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """``np.add.at(target, index, values)`` for rows: the rows sorted by index, each run of
    one index summed by ``np.add.reduceat``, then added once. np.add.at goes element by
    element: 5.5 ms against 1.1 ms for nanoGPT's token embedding at 4,096 tokens of 128
    (2026-12-02); at 64 values of 8 it is the faster, hence the size test above."""
    rows = index.reshape(-1)
    rows = np.where(rows < 0, rows + target.shape[0], rows)  # NumPy's negative indices
    order = np.argsort(rows, kind="stable")  # (N,)
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_rows[1:] != sorted_rows[:-1])))
    grouped = values.reshape(rows.size, *target.shape[1:])[order]  # (N, ...) in index order
    target[sorted_rows[starts]] += np.add.reduceat(grouped, starts, axis=0)  # unique rows


def erf(array: Any) -> Any:
    """The error function, elementwise (NumPy has none). float32 and float16 on the CPU:
    :func:`erf_float32`, in float32 arithmetic; float64: SciPy's if present, else
    :func:`erf_numpy`."""
    if device_of(array) != "cpu":
        from cupyx.scipy.special import erf as cupy_erf

        return cupy_erf(array)
    if getattr(array, "dtype", None) in _SINGLE_OR_HALF:
        return erf_float32(array).astype(array.dtype, copy=False)
    try:
        from scipy.special import erf as scipy_erf
    except ImportError:
        return erf_numpy(array)
    return scipy_erf(array)


# erf without SciPy, in whole-array NumPy passes (np.vectorize over math.erf took 120 ms
# for the 524,288 values of one GELU in a small Transformer; this takes a tenth of that).
# Two regions, each where its formula keeps full float64 accuracy:
#   |x| < 1/2:  the Maclaurin series  erf x = 2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1))
#               (13 terms: the next is below 1e-17 of the sum);
#   |x| >= 1/2: erf x = 1 - erfc x with erfc x = t exp(-x^2 + P(t)), t = 2 / (2 + x), where
#               P is a degree-20 Chebyshev fit of log(erfc(x) / t) + x^2 (a smooth function
#               of t), made once from math.erfc at its nodes. Past x = 10, erfc < 1e-44: erf = 1.
# tests/test_edge_cases.py holds it to math.erf within 4e-15 over the whole line.
_ERFC_X_MAX = 10.0
_ERFC_T_RANGE = (2 / (2 + _ERFC_X_MAX), 1.0)  # t for x in [0, 10]
_ERFC_DEGREE = 20


@functools.cache
def _erfc_fit() -> np.ndarray:
    """Chebyshev coefficients of P(t) = log(erfc(x) / t) + x^2 on the t of [0, 10]."""
    lo, hi = _ERFC_T_RANGE
    nodes = np.cos(np.pi * (np.arange(_ERFC_DEGREE + 1) + 0.5) / (_ERFC_DEGREE + 1))
    values = []
    for u in nodes:  # u in [-1, 1] -> t in [lo, hi] -> x
        t = lo + (u + 1) / 2 * (hi - lo)
        x = 2 / t - 2
        values.append(math.log(math.erfc(x) / t) + x * x)
    return np.polynomial.chebyshev.chebfit(nodes, values, _ERFC_DEGREE)


def erf_numpy(array: Any) -> np.ndarray:
    """The error function of a NumPy array, computed in float64, returned in its dtype."""
    x = np.asarray(array, dtype=np.float64)
    out = np.empty_like(x)
    small = np.abs(x) < 0.5
    out[small] = _erf_series(x[small])
    large = ~small
    out[large] = np.copysign(1 - _erfc_fitted(np.abs(x[large])), x[large])
    dtype = array.dtype if isinstance(array, np.ndarray | np.generic) else np.float64
    return out.astype(dtype, copy=False)


def _erf_series(x: np.ndarray) -> np.ndarray:
    """erf for |x| < 1/2 (float64), by the Maclaurin series, updated in place."""
    minus_squares = -(x * x)
    term, total = x.copy(), x.copy()
    for n in range(1, 14):
        term *= minus_squares
        term /= n  # (-1)^n x^(2n+1) / n!
        total += term / (2 * n + 1)
    total *= 2 / math.sqrt(math.pi)
    return np.copysign(total, x, out=total)  # erf is odd: keeps -0.0 for -0.0


def _erfc_fitted(a: np.ndarray) -> np.ndarray:
    """erfc for a >= 1/2 (float64): t exp(P(t) - a^2), P summed by Clenshaw's recurrence in
    place (b_k = c_k + 2u b_(k+1) - b_(k+2); P = c_0 + u b_1 - b_2)."""
    a = np.minimum(a, _ERFC_X_MAX)
    t = 2 / (2 + a)
    lo, hi = _ERFC_T_RANGE
    u = (t - lo) * (2 / (hi - lo)) - 1  # t in [lo, hi] -> u in [-1, 1]
    two_u = 2 * u
    coefficients = _erfc_fit()
    b1, b2, spare = np.zeros_like(u), np.zeros_like(u), np.empty_like(u)  # b_(k+1), b_(k+2)
    for c in coefficients[:0:-1]:  # c_N ... c_1
        np.multiply(two_u, b1, out=spare)
        spare -= b2
        spare += c  # b_k
        b1, b2, spare = spare, b1, b2
    return t * np.exp(coefficients[0] + u * b1 - b2 - a * a)


# erf for float32 in float32 arithmetic: erf x = x P(x^2) / Q(x^2) on x clamped to [-4, 4]
# (past 4, erf rounds to +-1 in float32), with P of degree 6 and Q of degree 4 in x^2: the
# rational approximation XLA and Eigen use for float32. Its fit is within 7e-8 of erf; in
# float32 arithmetic the result is within 4.5e-7 of math.erf over the whole line, about 7
# units in the last place near |x| = 3 (tests/test_edge_cases.py). PyTorch's own float32 erf
# is within 1 unit. Why not erf_numpy: it works in float64 with a 13-term series and a
# degree-20 fit, 24 ms for the 524,288 values of one GELU in nanoGPT's small config, against
# 1.2 ms for this (and 1.2 ms for torch.erf): with it, erf was half of nanoGPT's training step.
_SINGLE_OR_HALF = (np.dtype(np.float32), np.dtype(np.float16))
_ERF32_P = np.array([-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
                     -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
                     -1.60960333262415e-02], dtype=np.float32)  # x^12 ... x^0
_ERF32_Q = np.array([-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                     -7.37332916720468e-03, -1.42647390514189e-02], dtype=np.float32)  # x^8 ... x^0


def erf_float32(array: Any) -> np.ndarray:
    """erf of a NumPy array in float32 arithmetic (a new float32 array): x P(x^2) / Q(x^2)."""
    x = np.clip(array, -4, 4, dtype=np.float32)  # a new array; NaN stays NaN
    return _odd_rational(x, _ERF32_P, _ERF32_Q)


def _odd_rational(z: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """z P(z^2) / Q(z^2), a new array: both polynomials by Horner's rule, in place."""
    squares = z * z
    value = _horner(p, squares)
    value *= z
    value /= _horner(q, squares)
    return value


def _horner(coefficients: np.ndarray, u: np.ndarray) -> np.ndarray:
    """sum_i c_i u^(N - i) (the highest power first), a new array updated in place."""
    value = u * coefficients[0]
    value += coefficients[1]
    for c in coefficients[2:]:
        value *= u
        value += c
    return value


def _of_scaled_argument(coefficients: np.ndarray, factor: float) -> np.ndarray:
    """The coefficients (highest power first) of P(factor * u), from those of P(u)."""
    powers = np.arange(len(coefficients) - 1, -1, -1)
    return coefficients.astype(np.float64) * factor**powers


# Phi(x) = (1 + erf(x / sqrt 2)) / 2, GELU's factor, from the same fit with the constants
# folded into the coefficients: with z = x / sqrt 2, (1/2) erf(z) = x Pt(x^2) / Qt(x^2),
# Pt(u) = P(u / 2) / (2 sqrt 2) and Qt(u) = Q(u / 2). Six passes fewer than erf and then
# "+1, *0.5" (26 against 31 per block: 117 against 141 us for 65,536 values), the same
# values to float32 rounding.
_PHI32_P = (_of_scaled_argument(_ERF32_P, 0.5) / (2 * math.sqrt(2))).astype(np.float32)
_PHI32_Q = _of_scaled_argument(_ERF32_Q, 0.5).astype(np.float32)
_PHI32_X_MAX = np.float32(4 * math.sqrt(2))  # z = 4: erf rounds to +-1 beyond


def normal_cdf_float32(x: np.ndarray, out: np.ndarray) -> None:
    """Phi(x), the standard normal CDF, of a float32 array into ``out`` (float32 arithmetic,
    within 2.5e-7 of the exact value, about half erf_float32's bound, and within [0, 1])."""
    z = np.clip(x, -_PHI32_X_MAX, _PHI32_X_MAX)  # a new array; NaN stays NaN
    np.add(_odd_rational(z, _PHI32_P, _PHI32_Q), np.float32(0.5), out=out)  # 1/2 + erf / 2
    np.clip(out, 0, 1, out=out)  # rounding may take 0.5 - 0.5 below 0: GELU's sign flipped


# Elementwise formulas of many steps (GELU's Phi is 26 NumPy passes) run block by block:
# each block of CACHE_BLOCK elements goes through every step while it is in the core's
# cache, instead of every step streaming the whole array through memory, and the blocks
# are dealt out to BLOCK_WORKERS threads (NumPy releases the GIL inside its loops), as
# PyTorch spreads an elementwise kernel over its threads. Measured (2026-12-02, quiet,
# medians of 40 alternating calls, GELU's forward on float32): at (16, 64, 512), blocks
# of 65,536 on 1 thread 0.95-1.06 ms, on 2 threads 0.82-1.06; blocks of 131,072 on 2
# threads 0.66-0.83. At (4, 1,024, 512): 4.2-4.4 ms, 3.4-4.9 ms and 2.7-3.9 ms. Smaller
# blocks leave too little work per thread hand-off. (Whole, erf of those 2M values took
# 11.2 ms, against 4.2 ms in blocks on one thread.)
CACHE_BLOCK = 131072
_BLOCK_THREADS = os.environ.get("MINITRANSFORMER_BLOCK_THREADS", "")  # e.g. 1: no threads
BLOCK_WORKERS = (int(_BLOCK_THREADS) if _BLOCK_THREADS.isdigit() and int(_BLOCK_THREADS) > 0
                 else max(1, min(2, os.cpu_count() or 1)))
_block_pool: Any = None
_block_pool_lock = threading.Lock()


def by_cache_blocks(kernel: Any, inputs: tuple[Any, ...], outputs: tuple[Any, ...]) -> None:
    """Call ``kernel(*input_blocks, *output_blocks)`` on consecutive flat blocks of the
    arrays (all of one size; the outputs C-contiguous, written in place), on up to
    :data:`BLOCK_WORKERS` threads. Inputs that are not C-contiguous (a transpose, a
    broadcast gradient) are copied first. On a GPU, or for a small array, one call on the
    whole arrays. ``kernel`` must write only its own output blocks."""
    size = outputs[0].size
    if (size <= CACHE_BLOCK or not isinstance(outputs[0], np.ndarray)
            or not all(out.flags.c_contiguous for out in outputs)):  # (written through views)
        kernel(*inputs, *outputs)
        return
    flats = [np.ascontiguousarray(a).reshape(-1) for a in inputs]  # views when contiguous
    flats += [a.reshape(-1) for a in outputs]  # views, since the outputs are C-contiguous
    starts = range(0, size, CACHE_BLOCK)

    def work(first: int, step: int) -> None:
        for start in starts[first::step]:
            kernel(*(flat[start:start + CACHE_BLOCK] for flat in flats))

    workers = min(BLOCK_WORKERS, len(starts))
    run_in_parallel([functools.partial(work, w, workers) for w in range(workers)])


def run_in_parallel(functions: list[Any]) -> None:
    """Call each of ``functions`` (at most :data:`BLOCK_WORKERS`), the first in this thread
    and the others on a shared pool; re-raise the first exception. The functions must not
    themselves call this (the pool's threads would wait on each other)."""
    futures = [_blocks_pool().submit(f) for f in functions[1:]]
    try:
        functions[0]()
    finally:
        for future in futures:
            future.result()  # waits for each; re-raises a worker's exception here


def _blocks_pool() -> Any:
    global _block_pool
    with _block_pool_lock:
        if _block_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _block_pool = ThreadPoolExecutor(BLOCK_WORKERS, thread_name_prefix="mt-blocks")
        return _block_pool


def is_array(x: Any) -> bool:
    """A NumPy or CuPy ndarray (not a NumPy scalar)."""
    return isinstance(x, np.ndarray) or type(x).__module__.startswith("cupy")


class _ArrayMath:
    """NumPy or CuPy under the names the tensor ops use, plus ``erf`` and ``softmax``
    (which NumPy lacks).

    Backward formulas call ``self.xp.exp(...)``: this in a plain backward, and
    :mod:`minitransformer.ops` under ``create_graph=True``.
    """

    def __init__(self, xp: ModuleType) -> None:
        self._xp = xp

    def __getattr__(self, name: str) -> Any:
        function = getattr(self._xp, name)
        setattr(self, name, function)  # cache: the next lookup is a plain attribute
        return function

    @staticmethod
    def erf(array: Any) -> Any:
        return erf(array)

    def softmax(self, array: Any, axis: int = -1) -> Any:
        """softmax along ``axis``, shifted by the max so that exp cannot overflow."""
        e = self._xp.exp(array - array.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)


_array_math: dict[str, _ArrayMath] = {}


def array_math(device: str) -> _ArrayMath:
    if device not in _array_math:
        _array_math[device] = _ArrayMath(array_module(device))
    return _array_math[device]
