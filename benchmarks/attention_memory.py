"""Time and peak memory of attention as n grows: composed, fused, tiled, and PyTorch's SDPA.

Forward plus backward of ``softmax(Q K^T / sqrt(d)) V`` for B = 1, 8 heads, head size 64,
float32, n = 256 ... 16,384 tokens. Every measurement runs in a process of its own, so that

* the memory is the process's peak resident size growth during the pass (VmHWM, reset just
  before it, minus the resident size before it): every allocation counts, PyTorch's too,
  with the default allocator as users run it, and
* one path's leftovers (freed but cached memory, warm pages) cannot help or hurt the next.

The processes run in rounds, alternating ours and PyTorch's at each n; times are medians
and each ratio is the median over rounds of ours / PyTorch in the same round, because on a
shared machine the speed drifts from minute to minute. Paths whose n x n buffers would not
fit ``--max-gib`` are skipped and reported as such.

    python -m benchmarks.attention_memory               # the sweep (tens of minutes), then the plot
    python -m benchmarks.attention_memory --quick       # n = 256, 512: a smoke test, no files
    python -m benchmarks.attention_memory --plot-only   # redraw the figure from the saved JSON
    # the time targets: what F.scaled_dot_product_attention picks by itself, next to PyTorch
    python -m benchmarks.attention_memory --paths auto torch --lengths 1024 4096 \
        --rounds 5 --no-save

``auto`` is ``F.scaled_dot_product_attention(q, k, v)`` called exactly as in PyTorch (one
tensor back; tiled, keeping its weights up to ``minitransformer.ops.sdpa.TILED_KEEP_MAX_BYTES``);
``fused`` is ``F.scaled_dot_product_attention_with_weights`` (the weights formed); ``tiled`` is the
FlashAttention recompute at every n.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a file: make `minitransformer` and `benchmarks` importable
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "docs" / "img" / "attention_memory.json"
FIGURE = ROOT / "docs" / "img" / "attention_memory.png"
PATHS = ("composed", "fused", "tiled", "torch")  # the figure's curves
CHOICES = (*PATHS, "auto")
LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384)
HEADS, HEAD_DIM = 8, 64
# n x n float32 buffers alive at the peak, per head, measured at n = 4096 (for --max-gib)
SQUARE_BUFFERS = {"composed": 5, "fused": 2, "tiled": 0, "torch": 0, "auto": 0}
MIB = 2**20


# ----- one case, inside its own process --------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident size (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _make_step(path: str, n: int):
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1, HEADS, n, HEAD_DIM), dtype=np.float32) for _ in range(4)]
    if path == "torch":
        import torch

        q, k, v = (torch.tensor(a, requires_grad=True) for a in arrays[:3])
        d_out = torch.tensor(arrays[3])

        def step() -> None:
            for t in (q, k, v):
                t.grad = None
            torch.nn.functional.scaled_dot_product_attention(q, k, v).backward(d_out)

        return step
    import minitransformer as mt
    import minitransformer.functional as F
    from minitransformer.ops.tiled_attention import tiled_attention

    q, k, v = (mt.tensor(a, requires_grad=True) for a in arrays[:3])
    d_out = arrays[3]
    attend = {
        "composed": lambda: F.attention_reference(q, k, v)[0],
        "fused": lambda: F.scaled_dot_product_attention_with_weights(q, k, v)[0],
        "tiled": lambda: tiled_attention(q, k, v),
        "auto": lambda: F.scaled_dot_product_attention(q, k, v),  # PyTorch's call
    }[path]

    def step() -> None:
        for t in (q, k, v):
            t.grad = None
        attend().backward(d_out)

    return step


def run_case(path: str, n: int, repeats: int) -> dict:
    """Peak RSS growth of the first pass, then the median time of ``repeats`` more."""
    step = _make_step(path, n)
    exact = _reset_peak()
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"path": path, "n": n, "seconds": statistics.median(times) if times else first,
            "peak_growth_mib": (peak - before) / 1024, "exact_peak": exact}


# ----- the sweep, from the parent process ------------------------------------------------------
def _repeats(n: int) -> int:
    return max(1, min(9, 2**24 // (n * n)))


def _fits(path: str, n: int, max_gib: float) -> bool:
    return SQUARE_BUFFERS[path] * HEADS * n * n * 4 <= max_gib * 2**30


def _spawn(path: str, n: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.attention_memory", "--case", path, str(n)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{path} at n = {n} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def sweep(lengths: tuple[int, ...], paths: tuple[str, ...], rounds: int,
          max_gib: float) -> list[dict]:
    rows = []
    for n in lengths:
        runs: dict[str, list[dict]] = {p: [] for p in paths}
        for _ in range(rounds):
            for path in paths:  # one process each, ours and PyTorch's alternating
                if _fits(path, n, max_gib):
                    runs[path].append(_spawn(path, n))
        for path in paths:
            row: dict = {"n": n, "path": path, "skipped": not runs[path]}
            if runs[path]:
                row["ms"] = 1e3 * statistics.median(r["seconds"] for r in runs[path])
                row["peak_mib"] = statistics.median(r["peak_growth_mib"] for r in runs[path])
                if "torch" in runs and runs["torch"] and path != "torch":
                    row["time_ratio"] = statistics.median(
                        a["seconds"] / b["seconds"] for a, b in zip(runs[path], runs["torch"]))
                    row["memory_ratio"] = row["peak_mib"] / statistics.median(
                        r["peak_growth_mib"] for r in runs["torch"])
            rows.append(row)
            _print_row(row)
    return rows


def _print_row(row: dict) -> None:
    if row["skipped"]:
        print(f"n = {row['n']:6d} {row['path']:9s} skipped (n x n buffers over --max-gib)")
        return
    ratios = ""
    if "time_ratio" in row:
        ratios = f"  time {row['time_ratio']:.2f}x  memory {row['memory_ratio']:.2f}x PyTorch"
    print(f"n = {row['n']:6d} {row['path']:9s} {row['ms']:10.1f} ms {row['peak_mib']:9.1f} MiB"
          + ratios, flush=True)


def print_table(rows: list[dict]) -> None:
    print("\n| n | path | time | peak RSS growth | time / PyTorch | memory / PyTorch |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        if r["skipped"]:
            print(f"| {r['n']} | {r['path']} | skipped | (would not fit) | | |")
            continue
        ratios = (f"{r['time_ratio']:.2f}x | {r['memory_ratio']:.2f}x" if "time_ratio" in r
                  else " | ")
        print(f"| {r['n']} | {r['path']} | {r['ms']:.1f} ms | {r['peak_mib']:.1f} MiB | "
              f"{ratios} |")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    for name in PATHS:
        rows = [r for r in results["rows"] if r["path"] == name and not r["skipped"]]
        if not rows:
            continue
        label = "PyTorch SDPA" if name == "torch" else name
        ax_time.plot([r["n"] for r in rows], [r["ms"] for r in rows], "o-", label=label)
        ax_mem.plot([r["n"] for r in rows], [max(r["peak_mib"], 0.1) for r in rows], "o-",
                    label=label)
    for ax, title in ((ax_time, "time, forward + backward (ms)"),
                      (ax_mem, "peak resident memory growth (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length n")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_time.legend()
    fig.suptitle(f"attention, B = 1, {HEADS} heads, d = {HEAD_DIM}, float32 "
                 f"({results['date']}, 2 cores)", fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)  # atomic: never a half-written figure
    plt.close(fig)


def write_docs_figures(docs: Path) -> list[Path]:
    """``make figures``: redraw the curve from the recorded measurements (the sweep itself
    takes tens of minutes: run this script to measure again)."""
    figure = docs / "img" / FIGURE.name
    plot(json.loads((docs / "img" / RESULTS.name).read_text()), figure)
    return [figure]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs=2, metavar=("PATH", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="n = 256 and 512 only; no files")
    parser.add_argument("--plot-only", action="store_true", help="redraw from the saved JSON")
    parser.add_argument("--rounds", type=int, default=3, help="processes per path and n")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--max-gib", type=float, default=6.0,
                        help="skip paths whose n x n buffers would exceed this (GiB)")
    parser.add_argument("--paths", nargs="+", choices=CHOICES, default=list(PATHS),
                        help="which implementations (torch: PyTorch's SDPA, the reference)")
    parser.add_argument("--no-save", action="store_true",
                        help="print the table only; keep the recorded JSON and figure")
    args = parser.parse_args(argv)
    if args.case:
        path, n = args.case[0], int(args.case[1])
        print(json.dumps(run_case(path, n, _repeats(n))))
        return 0
    if args.plot_only:
        write_docs_figures(ROOT / "docs")
        print(f"wrote {FIGURE.relative_to(ROOT)}")
        return 0
    from benchmarks._timing import machine_description

    lengths = (256, 512) if args.quick else tuple(args.lengths)
    uptime = os.getloadavg()
    print(f"machine: {machine_description()}; load {uptime[0]:.2f} {uptime[1]:.2f} "
          f"{uptime[2]:.2f}")
    paths = tuple(args.paths)
    try:
        import torch  # noqa: F401
    except ImportError:
        paths = tuple(p for p in paths if p != "torch")
        print("PyTorch is not installed: its column is left out")
    rows = sweep(lengths, paths, 1 if args.quick else args.rounds, args.max_gib)
    print_table(rows)
    if args.quick or args.no_save:
        return 0
    results = {"date": datetime.date.today().isoformat(), "machine": machine_description(),
               "load_before": list(uptime), "load_after": list(os.getloadavg()),
               "rounds": args.rounds, "rows": rows}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, RESULTS)
    plot(results, FIGURE)
    print(f"wrote {RESULTS.relative_to(ROOT)} and {FIGURE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
