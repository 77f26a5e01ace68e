"""What attention costs as the sequence grows: time and memory of the n x n score matrix.

For one head (B = 1, head size d = 64, float32) and n = 64 ... 4096 tokens, measures

* the median CPU time and wall time (one BLAS thread) of a forward AND backward pass
  through attention (``Z = softmax(Q K^T / sqrt(d)) V``, then ``Z.backward(dZ)``), and
* the peak memory allocated during that pass, seen by ``tracemalloc`` (NumPy reports its
  array allocations to it), next to the size of one n x n float32 matrix,

for the fused node (``F.scaled_dot_product_attention_with_weights``) and for the same maths composed
of primitive ops (``F.attention_reference``). Then a short sweep over d at n = 1024 shows
the other factor of O(n^2 d). Prints tables and writes docs/img/cost.png.

Run from the repository root (about a minute):

    python benchmarks/attention_cost.py            # or: python -m benchmarks.attention_cost
    python benchmarks/attention_cost.py --quick    # fewer sizes, no plot: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

# One BLAS thread (unless the caller set another count): on a small shared machine, BLAS
# threads that fight other processes for cores make timings swing by 5x; one thread measures
# the algorithm. Set before NumPy loads its BLAS.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a file: make `minitransformer` and `benchmarks` importable
    sys.path.insert(0, str(ROOT))

import minitransformer as mt  # noqa: E402
import minitransformer.functional as F  # noqa: E402
from benchmarks._timing import machine_description  # noqa: E402

HEAD_DIM = 64
LENGTHS = (64, 128, 256, 512, 1024, 2048, 4096)
QUICK_LENGTHS = (64, 256)
HEAD_DIMS = (16, 32, 64, 128, 256)  # the d sweep, at n = SWEEP_LENGTH
SWEEP_LENGTH = 1024
MIB = 2**20

Attention = Callable[[mt.Tensor, mt.Tensor, mt.Tensor], tuple[mt.Tensor, mt.Tensor]]
IMPLEMENTATIONS: dict[str, Attention] = {
    "fused": F.scaled_dot_product_attention_with_weights,  # always the fused node
    "composed": F.attention_reference,
}


def make_step(attention: Attention, n: int, d: int, seed: int = 0) -> Callable[[], None]:
    """One forward + backward pass through attention on fresh (1, n, d) float32 inputs."""
    rng = np.random.default_rng(seed)
    q, k, v = (mt.tensor(rng.standard_normal((1, n, d), dtype=np.float32), requires_grad=True)
               for _ in range(3))
    d_out = rng.standard_normal((1, n, d), dtype=np.float32)  # the upstream gradient dZ

    def step() -> None:
        for t in (q, k, v):
            t.grad = None
        z, _ = attention(q, k, v)  # (1, n, d); the n x n weights live inside
        z.backward(d_out)

    return step


def repeats_for(n: int) -> int:
    """More repeats where one run is short, so that each size takes a similar time."""
    return max(7, min(41, 2**23 // (n * n)))


def median_seconds(step: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time of ``step``. With one thread, the CPU time
    leaves out the waits for a core that other processes cause on a shared machine."""
    step()  # warm-up: first-touch page faults, BLAS buffers
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def peak_bytes(step: Callable[[], None]) -> int:
    """The most memory allocated at once during ``step`` (beyond what existed before)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def measure_lengths(lengths: tuple[int, ...]) -> list[dict[str, float]]:
    rows = []
    for n in lengths:
        row: dict[str, float] = {"n": n, "scores_mib": n * n * 4 / MIB}
        for name, attention in IMPLEMENTATIONS.items():
            step = make_step(attention, n, HEAD_DIM)
            wall, cpu = median_seconds(step, repeats_for(n))
            row[f"{name}_ms"], row[f"{name}_cpu_ms"] = 1e3 * wall, 1e3 * cpu
            row[f"{name}_mib"] = peak_bytes(step) / MIB
        rows.append(row)
        print(f"  n = {n:5d}: fused {row['fused_cpu_ms']:9.2f} ms {row['fused_mib']:8.1f} MiB | "
              f"composed {row['composed_cpu_ms']:9.2f} ms {row['composed_mib']:8.1f} MiB",
              flush=True)
    return rows


def measure_head_dims(n: int, dims: tuple[int, ...]) -> list[dict[str, float]]:
    rows = []
    for d in dims:
        step = make_step(F.scaled_dot_product_attention_with_weights, n, d)
        wall, cpu = median_seconds(step, repeats_for(n))
        rows.append({"d": d, "fused_ms": 1e3 * wall, "fused_cpu_ms": 1e3 * cpu})
    return rows


def print_tables(rows: list[dict[str, float]], dim_rows: list[dict[str, float]]) -> None:
    print(f"\nattention forward + backward, B = 1, one head, d = {HEAD_DIM}, float32; "
          f"medians, {os.environ['OPENBLAS_NUM_THREADS']} BLAS thread(s); peak = tracemalloc")
    print("| n | n×n float32 | fused CPU | fused wall | fused peak | composed CPU "
          "| composed peak | fused CPU / n² |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        per_pair_ns = 1e6 * r["fused_cpu_ms"] / r["n"] ** 2
        print(f"| {r['n']} | {r['scores_mib']:.2f} MiB | {r['fused_cpu_ms']:.2f} ms | "
              f"{r['fused_ms']:.2f} ms | {r['fused_mib']:.1f} MiB | "
              f"{r['composed_cpu_ms']:.2f} ms | {r['composed_mib']:.1f} MiB | "
              f"{per_pair_ns:.1f} ns |")
    if dim_rows:
        print(f"\nfused attention forward + backward at n = {SWEEP_LENGTH}, varying d")
        print("| d | CPU time | wall time | CPU time / d |")
        print("|---:|---:|---:|---:|")
        for r in dim_rows:
            print(f"| {r['d']} | {r['fused_cpu_ms']:.2f} ms | {r['fused_ms']:.2f} ms | "
                  f"{r['fused_cpu_ms'] / r['d']:.3f} ms |")


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["n"] for r in rows], dtype=float)
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    for name, marker in (("fused", "o"), ("composed", "s")):
        ax_time.plot(n, [r[f"{name}_cpu_ms"] for r in rows], marker=marker, label=name)
        ax_mem.plot(n, [r[f"{name}_mib"] for r in rows], marker=marker, label=name)
    # Reference slopes through the largest fused measurement: n^2 is a line of slope 2.
    last = rows[-1]
    ax_time.plot(n, last["fused_cpu_ms"] * (n / n[-1]) ** 2, "k--", lw=1, label="∝ n²")
    ax_mem.plot(n, [r["scores_mib"] for r in rows], "k:", lw=1, label="one n×n float32 matrix")
    ax_time.set(xscale="log", yscale="log", xlabel="sequence length n",
                ylabel="forward + backward, CPU time (ms, median)",
                title=f"time, one head, d = {HEAD_DIM}")
    ax_mem.set(xscale="log", yscale="log", xlabel="sequence length n",
               ylabel="peak allocated (MiB)", title="memory (tracemalloc peak)")
    for ax in (ax_time, ax_mem):
        ax.set_xticks(n, [str(int(v)) for v in n])
        ax.minorticks_off()
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_rows(rows: list[dict[str, float]], path: Path) -> None:
    """The measured rows as JSON, written atomically (a temporary file renamed)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"source": "benchmarks/attention_cost.py", "rows": rows},
                              indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_docs_figures(docs: Path) -> list[Path]:
    """Redraw docs/img/cost.png from docs/img/cost.json (for `make figures`; measuring again
    is this script's job)."""
    rows = json.loads((Path(docs) / "img" / "cost.json").read_text(encoding="utf-8"))["rows"]
    path = Path(docs) / "img" / "cost.png"
    plot(rows, path)
    return [path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small sizes, no plot")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "cost.png",
                        help="where to write the plot (default: docs/img/cost.png)")
    args = parser.parse_args()

    print(f"machine: {machine_description()}")
    lengths = QUICK_LENGTHS if args.quick else LENGTHS
    rows = measure_lengths(lengths)
    dim_rows = [] if args.quick else measure_head_dims(SWEEP_LENGTH, HEAD_DIMS)
    print_tables(rows, dim_rows)
    if not args.quick:
        plot(rows, args.out)
        save_rows(rows, args.out.with_suffix(".json"))  # `make figures` redraws from these
        print(f"\nwrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
