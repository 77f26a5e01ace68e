"""Speed and memory, side by side with the reference (see docs/benchmarks.md).

The benchmarks run as the project's own processes do: OpenBLAS's idle threads stop spinning
soon (``OPENBLAS_THREAD_TIMEOUT``, set here before NumPy loads; see minitransformer/_startup.py).
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before any benchmark imports NumPy
