"""Shared fixtures: the PyTorch oracle and the devices to run on.

The only skips allowed in this suite are these two: PyTorch missing, GPU missing.
"""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt

try:
    import torch
except ImportError:  # the `oracle` extra is not installed
    torch = None

requires_torch = pytest.mark.skipif(
    torch is None, reason="PyTorch not installed: pip install -e '.[oracle]'"
)
requires_gpu = pytest.mark.skipif(
    not mt.cuda_is_available(), reason="no CUDA GPU with CuPy (the 'gpu' extra)"
)

DEVICES = ["cpu", pytest.param("cuda", marks=[requires_gpu, pytest.mark.gpu])]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """Run a test once per device; the CUDA run skips where there is no GPU."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def randn(rng: np.random.Generator, *shape: int, device: str = "cpu",
          requires_grad: bool = True) -> mt.Tensor:
    """A float64 tensor of standard-normal values, for gradchecks."""
    return mt.tensor(rng.standard_normal(shape), requires_grad=requires_grad, device=device)
