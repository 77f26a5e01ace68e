"""The GPU check in one go: the GPU tests, then the GPU benchmark, then a compact table.

    make test-gpu        (or: python scripts/gpu_check.py)

Made to fit a 10-minute slot on one NVIDIA GPU with CuPy installed (the `gpu` extra).
Exits non-zero if CuPy or a GPU is missing, or if any test fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    sys.path.insert(0, ROOT)
    import minitransformer as mt

    if not mt.cuda_is_available():
        try:
            mt.backend.array_module("cuda")
        except mt.DeviceError as exc:
            print(f"gpu_check: {exc}")
        return 1
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    runtime = cupy.cuda.runtime.runtimeGetVersion()
    print(f"GPU: {name}, CuPy {cupy.__version__}, CUDA runtime {runtime}")

    start = time.perf_counter()
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT, capture_output=True, text=True,
    )
    test_seconds = time.perf_counter() - start
    print(tests.stdout[-4000:])
    print(tests.stderr[-2000:])
    summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else "no output"
    found = re.findall(r"(\d+) (passed|failed|skipped|error)", summary)
    counts = {kind: int(n) for n, kind in found}

    start = time.perf_counter()
    bench = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_bench"], cwd=ROOT, capture_output=True, text=True
    )
    bench_seconds = time.perf_counter() - start
    print(bench.stdout[-6000:])
    print(bench.stderr[-2000:])

    print("\n==== GPU check summary ====")
    print(f"device            {name}")
    print(f"tests             {counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, "
          f"{counts.get('skipped', 0)} skipped ({test_seconds:.0f} s)")
    print(f"benchmark         exit {bench.returncode} ({bench_seconds:.0f} s)")
    return 0 if tests.returncode == 0 and bench.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
