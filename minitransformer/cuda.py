"""``torch.cuda``'s questions: ``mt.cuda.is_available()``, ``mt.cuda.device_count()``.

A "cuda" device here is CuPy on an NVIDIA GPU: it is available when CuPy imports and
sees at least one device.
"""

from __future__ import annotations

from minitransformer import backend


def is_available() -> bool:
    """True when CuPy is installed and finds a CUDA device."""
    return backend.cuda_is_available()


def device_count() -> int:
    """The number of CUDA devices CuPy sees (0 without CuPy or a GPU)."""
    if not backend.cuda_is_available():
        return 0
    return int(backend.array_module("cuda").cuda.runtime.getDeviceCount())
