"""Tiled attention: softmax(Q K^T * scale + mask) V without ever holding an n x n matrix.

The FlashAttention idea (Dao et al., 2022) on NumPy and CuPy. The keys and values are cut
into tiles of ``block_k`` rows and the queries into tiles of ``block_q`` rows; only one
(block_q, block_k) tile of scores exists at a time, per worker thread.

Forward (the online softmax). For each query row, walk the key tiles j = 1, 2, ... keeping
three running values: the largest score seen so far m, the sum of exponentials l and the
unnormalised output o:

    S_j   = Q K_j^T * scale (+ mask)             scores of this tile      (bq, bk)
    m_new = max(m, rowmax(S_j))
    P_j   = exp(S_j - m_new)                     each entry <= 1: no overflow
    alpha = exp(m - m_new)                       rescales what was summed against the old max
    l     = l * alpha + rowsum(P_j)
    o     = o * alpha + P_j V_j

After the last tile, O = o / l and the row's log-sum-exp is L = m + log l. Rescaling by
alpha keeps every term of the sums relative to the current maximum: sum_k exp(s_k - m_old)
times exp(m_old - m_new) equals sum_k exp(s_k - m_new). Only O and L are saved.

Backward (recompute). With dO the upstream gradient and D = rowsum(dO * O), each tile's
weights come back from the saved log-sum-exp, P_j = exp(S_j - L), and

    dV_j += P_j^T dO                             (bk, bq) @ (bq, Ev)
    dP_j  = dO V_j^T                             (bq, Ev) @ (Ev, bk)
    dS_j  = P_j * (dP_j - D)                     softmax's backward, with sum(dP * P) = D
    dQ   += dS_j K_j * scale,    dK_j += dS_j^T Q * scale

D replaces the row sums of dP * P over the keys: both are sum_s sum_e dO[e] P[s] V[s, e].

Keeping the weights (``keep_weights=True``): when memory allows, the forward keeps each
tile's exp(S_j - m_j), with the shift m_j it used (the running max at that tile), and
the backward reads it back instead of recomputing Q K_j^T and its exponential: one
product and one exponential per tile fewer, for O(n^2) memory. The tile is the weights
up to a factor per row, P_j = exp(S_j - m_j) * exp(m_j - L), and that factor is folded
into the small arrays it multiplies (dO and D, (..., bq, Ev) and (..., bq, 1)):

    dV_j += exp(S_j - m_j)^T (dO * c),   dS_j = exp(S_j - m_j) * ((dO * c) V_j^T - D * c),
    c = exp(m_j - L)

Shifts inside the products (without mask arrays): [Q * scale, -m] @ [K, 1]^T = S - m,
so P = exp(S - m) is one product and one exponential, with no pass to subtract m; the
forward takes m from each row's score for key 0 instead of from each tile's row maxima
(exact for any shift; see fold_limit for when a tile is redone with its maximum), and the
backward does the same with L, and with D: [dO, -D] @ [V, 1]^T = dP - D.

Threads: query tiles are dealt out to the workers in both passes, each to the next worker
free. With several heads and no mask arrays a tile is one head's (it stays in a core's
L2 cache), and the backward deals out whole heads: a head's dK and dV have one writer.
Otherwise each worker owns its tiles' rows of dQ and keeps a dK and a dV of its own
(every query tile adds to every key tile), summed at the end.

Masks: ``blocked`` (bool, True where a query may NOT attend) and ``bias`` (added to the
scores) broadcast to (..., L, S) and are sliced tile by tile; ``causal`` lets query i see
keys 0..i, and whole tiles above the diagonal are skipped, in both passes. A query with no
allowed key gets zeros (output and gradients), as the fused and composed paths give.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from minitransformer import backend, tuning
from minitransformer.autograd import Function, recorded_gradients
from minitransformer.errors import ShapeError
from minitransformer.ops.attention import attention_reference, mask_array
from minitransformer.ops.registry import register
from minitransformer.ops.shape import unbroadcast
from minitransformer.tensor import Tensor

__all__ = ["TiledAttention", "tiled_attention"]

# One score tile holds at most this many numbers (4 MiB in float32), summed over the batch
# axes: the budget that picks the default tile sizes.
TILE_ELEMENTS = 2**20
MAX_BLOCK_Q, MAX_BLOCK_K, MIN_BLOCK = 256, 512, 16
# Causal, key tiles of 256: at (4, 4, 1,024, 32) (nanoGPT's long config) the 128 x 512
# tiles computed 75% of the scores for the 50% below the diagonal; 256 x 256 tiles compute
# 62.5%. Forward + backward 54 -> 41 ms there (2026-12-02, quiet, 6 rounds alternating);
# at n = 4,096 the two were equal. Without a mask 256 x 512 stays the faster (761 against
# 790 ms at B1 H8 n = 4,096).
MAX_BLOCK_K_CAUSAL = 256


def default_workers() -> int:
    """Worker threads for tiles on the CPU: ``$MINITRANSFORMER_ATTENTION_THREADS`` or up to 2.

    NumPy releases the GIL inside matmul and ufunc loops, so two threads keep two cores
    busy with the exponentials and the tile products; beyond two the Python between them
    becomes the limit (see docs/tiled-attention.md for the measurement)."""
    value = os.environ.get("MINITRANSFORMER_ATTENTION_THREADS")
    if value:
        return max(1, int(value))
    return max(1, min(2, os.cpu_count() or 1))


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _run_parallel(work: Callable[[int, int], None], workers: int) -> None:
    """Call ``work(worker, workers)`` for worker = 0 .. workers - 1, on a shared thread pool.

    Each call handles every ``workers``-th tile, starting at its own index: interleaving
    balances causal attention, whose tiles near the end of the sequence have more to do."""
    global _pool
    if workers == 1:
        work(0, 1)
        return
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers:  # noqa: SLF001 (grow once)
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="minitransformer-tiles")
        pool = _pool
    # The pool is the parallelism: BLAS threads on top of it would fight for the same
    # cores, and waiting BLAS threads spin (measured: 20x slower on a loaded 2-core VM).
    with tuning.single_threaded_blas():
        futures = [pool.submit(work, w, workers) for w in range(workers)]
        for f in futures:
            f.result()  # re-raises a worker's exception here


def block_sizes(batch: int, length: int, source_length: int,
                workers: int = 1, causal: bool = False) -> tuple[int, int]:
    """Tile sizes (block_q, block_k) whose score tile, times the batch, fits TILE_ELEMENTS;
    the query tiles small enough that each of ``workers`` threads gets at least one.
    Causal attention gets key tiles of at most MAX_BLOCK_K_CAUSAL, so that less of each
    tile lies above the diagonal, computed and then masked."""
    most_q = min(length, MAX_BLOCK_Q, max(MIN_BLOCK, -(-length // workers)))
    block_k = min(source_length, MAX_BLOCK_K_CAUSAL if causal else MAX_BLOCK_K)
    block_q = min(most_q, max(MIN_BLOCK, TILE_ELEMENTS // (batch * block_k)))
    block_k = min(block_k, max(MIN_BLOCK, TILE_ELEMENTS // (batch * block_q)))
    return block_q, block_k


def _tiles(size: int, block: int) -> list[tuple[int, int]]:
    return [(start, min(start + block, size)) for start in range(0, size, block)]


class _Scratch:
    """One worker's reusable buffers for tiles and tile products, allocated on first use
    and reused for every tile of the call: a fresh multi-MiB array per tile would cost
    page faults each time (and, with glibc's defaults, a round trip to the OS)."""

    def __init__(self, xp: Any, dtype: Any) -> None:
        self.array_module, self.dtype = xp, dtype
        self.buffers: dict[str, Any] = {}

    def view(self, name: str, shape: tuple[int, ...]) -> Any:
        """A contiguous array of ``shape`` in buffer ``name`` (its first elements)."""
        size = math.prod(shape)
        if name not in self.buffers or self.buffers[name].size < size:
            self.buffers[name] = self.array_module.empty(size, dtype=self.dtype)
        return self.buffers[name][:size].reshape(shape)

    def product(self, name: str, a: Any, b: Any) -> Any:
        """a @ b in buffer ``name``: for products that are added to an accumulator."""
        return self.array_module.matmul(a, b, out=self.view(name, (*a.shape[:-1], b.shape[-1])))

    def zeros(self, name: str, shape: tuple[int, ...]) -> Any:
        """Buffer ``name`` as an array of zeros of ``shape``."""
        buffer = self.view(name, shape)
        buffer.fill(0)
        return buffer

    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers.values())


# A thread's scratch outlives the call while it holds at most this much (a few tiles and
# tile products: up to about 10 MiB at the default tile sizes, 2 MiB in tiles of one head).
SCRATCH_KEEP_BYTES = 2**25
_thread_scratch = threading.local()


def _scratch(xp: Any, dtype: Any) -> _Scratch:
    """The calling thread's scratch for ``dtype``, kept from one call to the next (NumPy).

    A fresh 4 MiB buffer per call is fresh pages: with glibc's defaults the backward at
    n = 1,024 took about 4,000 page faults per call (16 MiB), most of them its buffers
    and per-worker gradients (measured with getrusage). CuPy has a memory pool of its own."""
    if xp is not np:
        return _Scratch(xp, dtype)
    kept = getattr(_thread_scratch, "by_dtype", None)
    if kept is None:
        kept = _thread_scratch.by_dtype = {}
    key = np.dtype(dtype)
    if key not in kept:
        kept[key] = _Scratch(xp, dtype)
    return kept[key]


def _done_with(scratch: _Scratch) -> None:
    """Drop the buffers of a scratch that grew past SCRATCH_KEEP_BYTES (large tiles asked)."""
    if scratch.nbytes() > SCRATCH_KEEP_BYTES:
        scratch.buffers.clear()


class _TilePool:
    """Kept tiles handed back when a backward is done, for the next forward to fill again.

    With glibc's default settings every fresh multi-MiB tile is new pages from the OS, one
    page fault per 4 KiB; keeping the weights at n = 1,024 (32 MiB) took about a tenth
    longer in its forward than recomputing for that alone. Holds at most ``limit`` bytes.
    """

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0
        self.free: dict[tuple, list[Any]] = {}
        self.lock = threading.Lock()  # worker threads take, the backward's thread gives

    def take(self, shape: tuple[int, ...], dtype: Any) -> Any:
        with self.lock:
            stack = self.free.get((shape, np.dtype(dtype)))
            if stack:
                tile = stack.pop()
                self.held -= tile.nbytes
                return tile
        return np.empty(shape, dtype=dtype)

    def give(self, tiles: Iterable[Any]) -> None:
        with self.lock:
            for tile in tiles:
                if self.held + tile.nbytes > self.limit:
                    return
                self.free.setdefault((tile.shape, tile.dtype), []).append(tile)
                self.held += tile.nbytes


_kept_tiles = _TilePool(limit=2**26)
# The backward's dK and dV of workers 1, 2, ... (summed into worker 0's): 2 MiB each at
# n = 1,024, fresh pages on every call without the pool.
_gradient_parts = _TilePool(limit=2**26)
# [K, 1] and [V, 1] of the folded tiles (see _with_ones): 2 MiB each at n = 1,024.
_with_ones_pool = _TilePool(limit=2**26)


def _zeros(xp: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """zeros(shape) by malloc and a fill, not calloc: glibc's calloc maps fresh zero pages
    for a large array (a page fault per 4 KiB as it is first written), where malloc can
    hand back the memory of arrays just freed (the last call's gradients, say)."""
    out = xp.empty(shape, dtype=dtype)
    out.fill(0)
    return out


def _gradient_part(xp: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """A zeroed (..., S, E) array for one worker's dK or dV, from the pool (NumPy)."""
    if xp is not np:
        return xp.zeros(shape, dtype=dtype)
    part = _gradient_parts.take(shape, dtype)
    part.fill(0)
    return part


# The folded tiles: exp(S - m) with the shift m inside the product, one pass over the tile
# fewer (a subtraction; in the forward the row maximum too), for a product one column
# wider. [Q * scale, -m] @ [K, 1]^T = Q K^T * scale - m.
#
# Forward: m starts as each row's score for its first key, s_i0 = Q_i K_0^T * scale (one
# small product), and the tiles use it instead of taking their own row maxima: the online
# softmax is exact for any shift, the maximum only keeps exp from overflowing, and with
# m one of the row's own scores the sum l holds exp(0) = 1, so it cannot underflow to 0.
# While every row sum of exp(S - m) stays under fold_limit(dtype) (2^64 in float32, the
# square root of the largest number, so that the sums over all tiles and the products
# with V stay far from overflowing) the tile is used as it is;
# otherwise (a row whose scores exceed its first one by ~44, or a NaN) the tile is done
# again the plain way, with its maximum, which becomes the new m. The log-sum-exp stays
# m + log l. (Causal is fine too: every row sees key 0.)
# Backward: [Q * scale, -L] @ [K, 1]^T gives S - L, and [dO, -D] @ [V, 1]^T gives dP - D.


def fold_limit(dtype: Any) -> float:
    """The largest row sum of a folded tile's weights that is kept: sqrt(finfo.max)."""
    return math.sqrt(float(np.finfo(dtype).max))


def _with_ones(xp: Any, a: Any, fill: bool = True) -> Any:
    """[a, 1]: a (..., S, E) with a column of ones after it, (..., S, E + 1); NumPy's from
    a pool (hand it back with ``_with_ones_pool.give``), for the page faults. With
    ``fill=False`` only the array, for :func:`_fill_with_ones` to fill head by head."""
    shape = (*a.shape[:-1], a.shape[-1] + 1)
    out = _with_ones_pool.take(shape, a.dtype) if xp is np else xp.empty(shape, a.dtype)
    if fill:
        _fill_with_ones(out, a)
    return out


def _fill_with_ones(out: Any, a: Any) -> None:
    out[..., :-1] = a
    out[..., -1] = 1


def _with_column(xp: Any, scratch: _Scratch, name: str, a: Any, column: Any,
                 batch: tuple[int, ...]) -> Any:
    """[a, column] in scratch buffer ``name``: (..., bq, E) and (..., bq, 1) -> (..., bq, E + 1)."""
    out = scratch.view(name, (*batch, a.shape[-2], a.shape[-1] + 1))
    out[..., :-1] = a
    out[..., -1:] = column
    return out


def _work_items(xp: Any, batch: tuple[int, ...], arrays: tuple[Any, ...], folded: bool,
                rows: int, workers: int) -> tuple[list[tuple[Any, int]], tuple[int, ...], bool]:
    """The work items, (head, row tile); the batch shape of one tile; and whether the
    backward deals out whole heads.

    With several heads, no mask arrays and Q, K, V of one batch shape (NumPy), an item is
    one head's row tile, ``head`` its index into the batch axes: a tile of one head, 256 x
    512 in float32, is 512 KiB and stays in a core's L2 cache through its passes, where all
    8 heads' tiles together (4 MiB) do not (measured: a 4,096-token backward's tile loop
    on 2 threads, 8 heads per tile 527 ms, one head 479 ms). When there are at least as
    many heads as workers, the backward deals out whole heads: one worker alone writes a
    head's dK and dV, so there are no per-worker copies to sum, and each head's sums run
    in one order whoever takes it. Otherwise ``head`` is ``()`` and a tile spans the whole
    batch."""
    if (xp is np and folded and math.prod(batch) > 1
            and all(a.shape[:-2] == batch for a in arrays)):
        heads = list(np.ndindex(*batch))
        return [(h, r) for h in heads for r in range(rows)], (), len(heads) >= workers
    return [((), r) for r in range(rows)], batch, False


class _Dealer:
    """Items handed out one at a time to whichever worker asks next: on a machine whose
    other jobs take a core now and then, the worker that runs gets more tiles, where
    fixed shares would leave it waiting for the other at the end."""

    def __init__(self, items: list[Any]) -> None:
        self.items, self.next, self.lock = items, 0, threading.Lock()

    def __iter__(self) -> Iterator[Any]:
        while True:
            with self.lock:
                if self.next >= len(self.items):
                    return
                item = self.items[self.next]
                self.next += 1
            yield item


class TiledAttention(Function):
    """Z = softmax(Q K^T * scale + mask) V, computed tile by tile (see the module docstring).

    Saves Z and the per-row log-sum-exp (..., L, 1) only: memory O(n d) instead of O(n^2).
    Under ``create_graph=True`` the backward is the composed path's, recorded
    (:func:`minitransformer.ops.attention.attention_reference`), so second derivatives exist;
    that path holds the n x n weights.
    """

    fresh_input_gradients = True  # new arrays from every plain backward (see Function)

    def forward(self, q: Any, k: Any, v: Any, scale: float, blocked: Any, bias: Any,
                causal: bool, block_q: int, block_k: int, workers: int,
                keep_weights: bool = False) -> Any:
        xp = backend.array_module(backend.device_of(q))
        self.scale, self.blocked, self.bias, self.causal = scale, blocked, bias, causal
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        length, source_length = q.shape[-2], k.shape[-2]
        # with keep_weights: (head, i0, j0) -> (P_j, m_j), each tile's exp(S - m_j), its shift
        self.kept: dict[tuple[Any, int, int], tuple[Any, Any]] | None = (
            {} if keep_weights else None)
        self.row_tiles = _tiles(length, block_q)
        self.col_tiles = _tiles(source_length, block_k)
        self.workers = workers if xp is np else 1  # CuPy queues its kernels on one stream
        key_t = k.swapaxes(-1, -2)  # (..., E, S)
        # without bias or blocked (causal is fine: every row sees key 0 in its first tile),
        # the shifts go into the tile products (see fold_limit)
        self.folded = bias is None and blocked is None
        out = xp.empty((*batch, length, v.shape[-1]), dtype=q.dtype)  # (..., L, Ev)
        lse = xp.empty((*batch, length, 1), dtype=q.dtype)  # (..., L, 1)
        self.items, self.tile_batch, self.heads_owned = _work_items(
            xp, batch, (q, k, v), self.folded, len(self.row_tiles), self.workers)
        rows = len(self.row_tiles)
        if self.heads_owned:  # whole heads dealt out; each worker prepares its heads'
            scaled_q = xp.empty(q.shape, dtype=q.dtype)  # Q * scale, (..., L, E)
            self.key_ones_t = _with_ones(xp, k, fill=False).swapaxes(-1, -2)  # [K, 1]^T
        else:  # (..., L, E): scaling Q is cheaper than scaling each tile
            scaled_q = q * scale
            self.key_ones_t = _with_ones(xp, k).swapaxes(-1, -2) if self.folded else None
        key_ones_t = self.key_ones_t
        heads = _Dealer(self.items[::rows]) if self.heads_owned else None  # ((h, 0), ...)
        dealer = _Dealer(self.items)  # each row tile's output is its own: any order

        def whole_heads() -> Iterator[tuple[Any, int]]:
            """A head at a time, its Q * scale and [K, 1] made here, in parallel (at
            n = 1,024 about a millisecond in one thread before the tiles)."""
            for h, _ in heads:
                xp.multiply(q[h], scale, out=scaled_q[h])
                _fill_with_ones(key_ones_t[h].swapaxes(-1, -2), k[h])
                for r in range(rows):
                    yield h, r

        def work(worker: int, workers: int) -> None:
            scratch = _scratch(xp, q.dtype)
            for h, r in (whole_heads() if heads is not None else dealer):  # h: head, or ()
                i0, i1 = self.row_tiles[r]
                self._forward_rows(xp, scratch, scaled_q[h], key_t[h], v[h], out[h], lse[h],
                                   None if key_ones_t is None else key_ones_t[h], h, i0, i1,
                                   self.tile_batch)
            _done_with(scratch)

        _run_parallel(work, self.workers)
        # Q * scale is kept for the backward (which needs it, and would otherwise make it
        # again): the same (..., L, E) array, alive from here instead of from the backward
        self.out, self.lse, self.scaled_q = out, lse, scaled_q
        return out

    def _forward_rows(self, xp: Any, scratch: _Scratch, scaled_q: Any, key_t: Any, v: Any,
                      out: Any, lse: Any, key_ones_t: Any, head: Any, i0: int, i1: int,
                      batch: tuple[int, ...]) -> None:
        """The online softmax for query rows i0:i1 (of one head, or all), walking the key
        tiles."""
        dtype = scaled_q.dtype
        q_rows = scaled_q[..., i0:i1, :]  # (..., bq, E)
        row_max = xp.full((*batch, i1 - i0, 1), -xp.inf, dtype=dtype)  # m, (..., bq, 1)
        shift = xp.zeros((*batch, i1 - i0, 1), dtype=dtype)  # m where finite, else 0
        total = xp.zeros((*batch, i1 - i0, 1), dtype=dtype)  # l
        acc = scratch.zeros("acc", (*batch, i1 - i0, v.shape[-1]))  # o, (..., bq, Ev)
        q_shifted = None  # [Q_i * scale, -m], (..., bq, E + 1)
        limit = fold_limit(dtype)
        if self.folded:  # m starts as each row's score for key 0 (see fold_limit)
            row_max = shift = xp.matmul(q_rows, key_t[..., :1])  # (..., bq, E) @ (..., E, 1)
            q_shifted = _with_column(xp, scratch, "q_shifted", q_rows, -shift, batch)
        for j0, j1 in self._key_tiles(i0, i1):
            into = None
            if self.kept is not None:  # a tile of its own, to keep
                shape = (*batch, i1 - i0, j1 - j0)
                into = _kept_tiles.take(shape, dtype) if xp is np else xp.empty(shape, dtype)
            if q_shifted is not None:  # P = exp(S - m), m kept from the tile before
                p, row_sums = self._folded_weights(xp, scratch, q_shifted, key_ones_t, i0, i1,
                                                   j0, j1, into)
                if bool((row_sums < limit).all()):
                    if self.kept is not None:
                        self.kept[head, i0, j0] = p, shift
                    total += row_sums
                    acc += scratch.product("pv", p, v[..., j0:j1, :])
                    continue
            s = self._scores(xp, scratch, q_rows, key_t, i0, i1, j0, j1, batch,
                             into=into)  # (..., bq, bk)
            new_max = xp.maximum(row_max, s.max(axis=-1, keepdims=True))  # (..., bq, 1)
            # a row masked so far has max -inf; shift it by 0 so exp gives 0, not NaN
            new_shift = xp.where(xp.isneginf(new_max), 0, new_max)
            p = xp.exp(xp.subtract(s, new_shift, out=s), out=s)  # P = exp(S - m_new)
            if self.kept is not None:
                self.kept[head, i0, j0] = p, new_shift
            alpha = xp.exp(row_max - new_shift)  # exp(m_old - m_new), 0 while nothing was seen
            total *= alpha
            total += p.sum(axis=-1, keepdims=True)
            acc *= alpha
            acc += scratch.product("pv", p, v[..., j0:j1, :])  # (..., bq, bk) @ (..., bk, Ev)
            row_max, shift = new_max, new_shift
            if self.folded:
                q_shifted = _with_column(xp, scratch, "q_shifted", q_rows, -shift, batch)
        dead = total == 0  # no key allowed: o = 0 already, keep it 0
        safe_total = xp.where(dead, 1, total)
        xp.divide(acc, safe_total, out=out[..., i0:i1, :])
        # L = m + log l; +inf for a dead row, so that exp(S - L) = 0 in the backward
        lse[..., i0:i1, :] = xp.where(dead, xp.inf, shift + xp.log(safe_total))

    def _key_tiles(self, i0: int, i1: int) -> Iterator[tuple[int, int]]:
        """The key tiles that rows i0:i1 can see: with ``causal``, none starting after i1 - 1."""
        for j0, j1 in self.col_tiles:
            if self.causal and j0 >= i1:
                break
            yield j0, j1

    def _folded_weights(self, xp: Any, scratch: _Scratch, q_shifted: Any, key_ones_t: Any,
                        i0: int, i1: int, j0: int, j1: int, into: Any = None,
                        row_sums: bool = True) -> tuple[Any, Any]:
        """exp(S - m) for key tile j0:j1 from [Q * scale, -m] @ [K, 1]^T, causal applied,
        with its row sums (..., bq, 1), or None with ``row_sums=False`` (the backward's
        m = L: no overflow to check, and one pass over the tile fewer)."""
        p = scratch.view("s", (*q_shifted.shape[:-1], j1 - j0)) if into is None else into
        xp.matmul(q_shifted, key_ones_t[..., j0:j1], out=p)  # (..., bq, E+1) @ (..., E+1, bk)
        self._causal_mask(xp, p, i0, i1, j0, j1)
        with np.errstate(over="ignore"):  # an overflow shows in the row sums: tile redone
            xp.exp(p, out=p)
            return p, p.sum(axis=-1, keepdims=True) if row_sums else None

    def _causal_mask(self, xp: Any, s: Any, i0: int, i1: int, j0: int, j1: int) -> None:
        """-inf above the diagonal, where the tile crosses it (``causal``)."""
        if self.causal and j1 - 1 > i0:
            rows = xp.arange(i0, i1)[:, None]  # (bq, 1)
            cols = xp.arange(j0, j1)[None, :]  # (1, bk)
            xp.copyto(s, -xp.inf, where=cols > rows)

    def _scores(self, xp: Any, scratch: _Scratch, q_rows: Any, key_t: Any, i0: int, i1: int,
                j0: int, j1: int, batch: tuple[int, ...], into: Any = None) -> Any:
        """S = Q_i K_j^T * scale with the masks applied, in ``into`` or scratch buffer 0."""
        s = scratch.view("s", (*batch, i1 - i0, j1 - j0)) if into is None else into
        xp.matmul(q_rows, key_t[..., j0:j1], out=s)  # (..., bq, E) @ (..., E, bk)
        if self.bias is not None:
            s += self.bias[..., i0:i1, j0:j1]
        if self.blocked is not None:
            xp.copyto(s, -xp.inf, where=self.blocked[..., i0:i1, j0:j1])
        self._causal_mask(xp, s, i0, i1, j0, j1)
        return s

    def release(self) -> None:
        """Drop what forward saved, handing the kept tiles (NumPy's) back for reuse."""
        tiles = [p for p, _ in (getattr(self, "kept", None) or {}).values()]
        if tiles and isinstance(tiles[0], np.ndarray):  # CuPy has a memory pool of its own
            _kept_tiles.give(tiles)
        key_ones_t = getattr(self, "key_ones_t", None)
        if isinstance(key_ones_t, np.ndarray):
            _with_ones_pool.give([key_ones_t.swapaxes(-1, -2)])
        super().release()

    def backward(self, grad_out: Any) -> tuple[Any, ...]:
        if self.create_graph:  # differentiate the composed path, recorded
            return self._backward_recorded(grad_out)
        return self._backward_tiled(grad_out)

    def _backward_tiled(self, d_out: Any) -> tuple[Any, ...]:
        q, k, v = self.args
        xp = backend.array_module(backend.device_of(q))
        need_q, need_k, need_v = self.needs_input_grad
        batch = self.out.shape[:-2]
        scaled_q = self.scaled_q  # (..., L, E)
        key_t = k.swapaxes(-1, -2)  # (..., E, S)
        value_t = v.swapaxes(-1, -2)  # (..., Ev, S)
        # [V, 1]^T, (..., Ev + 1, S): [dO, -D] @ [V, 1]^T = dP - D in one product
        value_ones_t = (_with_ones(xp, v, fill=not self.heads_owned).swapaxes(-1, -2)
                        if self.folded else None)  # heads_owned: filled head by head below
        # full batch, unbroadcast below; with whole heads dealt out, zeroed head by head
        dq = (xp.empty((*batch, *q.shape[-2:]), dtype=q.dtype) if self.heads_owned
              else _zeros(xp, (*batch, *q.shape[-2:]), q.dtype))
        # Unless each worker has heads of its own, one dK and dV per worker: every query
        # tile adds to every key tile (summed at the end, into worker 0's, which are
        # returned; the others' come from a pool)
        dk_parts: list[Any] = [None] * self.workers
        dv_parts: list[Any] = [None] * self.workers
        rows = len(self.row_tiles)
        heads = _Dealer(self.items[::rows]) if self.heads_owned else None  # ((h, 0), ...)
        if self.heads_owned:
            dk_parts[0] = xp.empty((*batch, *k.shape[-2:]), dtype=q.dtype)
            dv_parts[0] = xp.empty((*batch, *v.shape[-2:]), dtype=q.dtype)

        def whole_heads() -> Iterator[tuple[Any, int]]:
            """A head at a time, its [V, 1] made and its dQ, dK, dV zeroed here, in
            parallel (at n = 1,024 a millisecond or two in one thread before the tiles)."""
            for h, _ in heads:
                _fill_with_ones(value_ones_t[h].swapaxes(-1, -2), v[h])  # this head's [V, 1]
                for gradient in (dq, dk_parts[0], dv_parts[0]):
                    gradient[h].fill(0)
                for r in range(rows):
                    yield h, r

        def work(worker: int, workers: int) -> None:
            scratch = _scratch(xp, q.dtype)
            if self.heads_owned:  # one dK and dV, each head's rows written by one worker
                dk, dv = dk_parts[0], dv_parts[0]
            elif worker == 0:
                dk = _zeros(xp, (*batch, *k.shape[-2:]), q.dtype)
                dv = _zeros(xp, (*batch, *v.shape[-2:]), q.dtype)
            else:  # from a pool, not the thread's scratch: they are read after work returns
                dk = _gradient_part(xp, (*batch, *k.shape[-2:]), q.dtype)
                dv = _gradient_part(xp, (*batch, *v.shape[-2:]), q.dtype)
            dk_parts[worker], dv_parts[worker] = dk, dv
            # whole heads, the next one taken when this one is done; or row tiles in turn
            mine = whole_heads() if heads is not None else self.items[worker::workers]
            for h, r in mine:  # h: a head's index, or () for all
                i0, i1 = self.row_tiles[r]
                self._backward_rows(
                    xp, scratch, h, i0, i1, scaled_q[h], key_t[h], value_t[h], k[h],
                    None if self.key_ones_t is None else self.key_ones_t[h],
                    None if value_ones_t is None else value_ones_t[h],
                    d_out[h], self.out[h], self.lse[h], dq[h], dk[h], dv[h],
                    need_q, need_k)
            _done_with(scratch)

        _run_parallel(work, self.workers)
        dk, dv = dk_parts[0], dv_parts[0]
        parts = [] if self.heads_owned else [*dk_parts[1:], *dv_parts[1:]]
        for dk_part, dv_part in zip(parts[:len(parts) // 2], parts[len(parts) // 2:]):
            dk += dk_part  # in place: worker 0's are returned, the others' go back to the pool
            dv += dv_part
        if xp is np:
            _gradient_parts.give(parts)
            if value_ones_t is not None:
                _with_ones_pool.give([value_ones_t.swapaxes(-1, -2)])
        return (unbroadcast(dq, q.shape) if need_q else None,
                unbroadcast(dk, k.shape) if need_k else None,
                unbroadcast(dv, v.shape) if need_v else None)


    def _backward_rows(self, xp: Any, scratch: _Scratch, head: Any, i0: int, i1: int,
                       scaled_q: Any, key_t: Any, value_t: Any, k: Any, key_ones_t: Any,
                       value_ones_t: Any, d_out: Any, out: Any, lse: Any, dq: Any, dk: Any,
                       dv: Any, need_q: bool, need_k: bool) -> None:
        """Query rows i0:i1 (of one head, or all): their dQ rows, and what they add to dK and
        dV, walking the key tiles."""
        batch = self.tile_batch
        q_rows = scaled_q[..., i0:i1, :]  # Q_i * scale, (..., bq, E)
        d_out_rows = d_out[..., i0:i1, :]  # dO_i, (..., bq, Ev)
        # D_i = rowsum(dO_i * O_i), (..., bq, 1)
        row_dots = xp.multiply(d_out_rows, out[..., i0:i1, :],
                               out=scratch.view("dot", d_out_rows.shape)
                               ).sum(axis=-1, keepdims=True)
        if self.folded and self.kept is None:  # [Q_i * scale, -L_i], (..., bq, E + 1)
            q_shifted = _with_column(xp, scratch, "q_shifted", q_rows,
                                     -lse[..., i0:i1, :], batch)
        d_rows = dots = d_shifted = shift = None  # dO_i and D_i, times exp(m_j - L) if kept
        for j0, j1 in self._key_tiles(i0, i1):
            if self.kept is None and self.folded:  # P = exp(S - L), L in the product
                p, _ = self._folded_weights(xp, scratch, q_shifted, key_ones_t, i0, i1, j0,
                                           j1, row_sums=False)
            elif self.kept is None:  # recomputed: P = exp(S - L)
                s = self._scores(xp, scratch, q_rows, key_t, i0, i1, j0, j1, batch)
                p = xp.exp(xp.subtract(s, lse[..., i0:i1, :], out=s), out=s)
            else:  # kept: exp(S - m_j), and P = exp(S - m_j) * exp(m_j - L)
                p, tile_shift = self.kept[head, i0, j0]
            # the small arrays change only with the shift: once per row tile when
            # recomputing, and when kept only where a tile set a new one (the folded forward
            # keeps a row's first shift for all its tiles, one array)
            if d_rows is None or (self.kept is not None and tile_shift is not shift):
                if self.kept is None:
                    d_rows, dots = d_out_rows, row_dots
                else:
                    shift = tile_shift
                    # <= 1: m_j <= L where the row saw a key; where p = 0 it stays finite
                    factor = xp.exp(xp.minimum(shift - lse[..., i0:i1, :], 0))
                    # the factor goes into the small (..., bq, Ev) arrays, not into P
                    d_rows = xp.multiply(d_out_rows, factor,
                                         out=scratch.view("d_rows", d_out_rows.shape))
                    dots = row_dots * factor
                if self.folded:  # [dO, -D], (..., bq, Ev + 1)
                    d_shifted = _with_column(xp, scratch, "d_shifted", d_rows, -dots, batch)
            # dV_j += P^T dO: (..., bk, bq) @ (..., bq, Ev) -> (..., bk, Ev)
            dv[..., j0:j1, :] += scratch.product("dv", p.swapaxes(-1, -2), d_rows)
            if not (need_q or need_k):
                continue
            ds = scratch.view("ds", p.shape)
            if self.folded:  # dP - D = [dO, -D] @ [V_j, 1]^T, (..., bq, Ev + 1) @ ...
                xp.matmul(d_shifted, value_ones_t[..., j0:j1], out=ds)
            else:
                xp.matmul(d_rows, value_t[..., j0:j1], out=ds)  # dP = dO V_j^T
                ds -= dots
            ds *= p  # dS = P * (dP - D), (..., bq, bk)
            if need_q:
                # (..., bq, bk) @ (..., bk, E) -> (..., bq, E)
                dq[..., i0:i1, :] += scratch.product("dq", ds, k[..., j0:j1, :])
            if need_k:  # (..., bk, bq) @ (..., bq, E) -> (..., bk, E)
                dk[..., j0:j1, :] += scratch.product("dk", ds.swapaxes(-1, -2), q_rows)
        if need_q:  # these rows of dQ are complete: the scale, here while they are in cache
            dq[..., i0:i1, :] *= self.scale

    def _backward_recorded(self, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        """The composed reference's gradients as a recorded graph (n x n memory)."""
        q, k, v = self.inputs
        mask = None
        if self.bias is not None:
            mask = self.bias if self.blocked is None else np.where(self.blocked, -np.inf,
                                                                   self.bias)
        elif self.blocked is not None:
            mask = ~self.blocked  # the reference takes True where attention is allowed
        out, _ = attention_reference(q, k, v, attn_mask=mask, is_causal=self.causal,
                                     scale=self.scale)
        return recorded_gradients(out, (q, k, v), grad_out)


@register(top_level=False)  # a fused node: in the gradient test lists
def tiled_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    blocked: Any = None,
    bias: Any = None,
    causal: bool = False,
    scale: float | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
    workers: int | None = None,
    keep_weights: bool = False,
) -> Tensor:
    """softmax(Q K^T * scale + bias, -inf where ``blocked``) V, tile by tile.

    The low-level entry point: ``F.scaled_dot_product_attention(q, k, v)`` runs it by
    itself for large inputs (see :mod:`minitransformer.ops.sdpa`) and takes PyTorch's mask
    arguments. Here ``blocked`` is a boolean array True where a query may NOT attend,
    ``bias`` a float array added to the scores, both broadcasting to (..., L, S), and
    ``causal`` lets query i see keys 0..i only.
    ``block_q``/``block_k`` set the tile sizes (default: :func:`block_sizes`) and
    ``workers`` the threads on the CPU (default: :func:`default_workers`).

    ``keep_weights=False`` (the default) is FlashAttention: the weights are never held
    whole, and the backward recomputes each tile from the saved log-sum-exp. With
    ``keep_weights=True`` the forward keeps every tile of (unnormalised) weights for the
    backward: O(n^2) memory, one (..., L, S) array's worth, for one matrix product and one
    exponential per tile fewer. Returns the output (..., L, Ev).
    """
    batch = np.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    length, source_length = query.shape[-2], key.shape[-2]
    workers = workers or default_workers()
    default_q, default_k = block_sizes(math.prod(batch), length, source_length, workers,
                                       causal=causal)
    block_q, block_k = block_q or default_q, block_k or default_k
    if block_q < 1 or block_k < 1:
        raise ShapeError(f"tiled attention needs positive tile sizes, got {block_q}, {block_k}")
    if length == 0 or source_length == 0:
        raise ShapeError(
            f"tiled attention needs at least one query and one key, got query {query.shape} "
            f"and key {key.shape}"
        )
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    blocked, bias = (None if m is None else mask_array(m, query) for m in (blocked, bias))
    return TiledAttention.apply(
        query, key, value, scale=scale, blocked=blocked, bias=bias, causal=causal,
        block_q=block_q, block_k=block_k, workers=workers,
        keep_weights=keep_weights,
    )
