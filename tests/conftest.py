"""Shared fixtures: the PyTorch oracle, the optional programs, and the devices to run on.

The only skips allowed in this suite are for a missing optional thing: PyTorch, a GPU,
CuPy, Graphviz's `dot`, a browser (Chromium with its driver). Each has its marker here.
"""

from __future__ import annotations

import importlib.util
import shutil

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

requires_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's `dot` not found: apt-get install graphviz (or brew/conda install graphviz)",
)
# The browser tests drive Debian's Chromium through the system chromedriver, never a
# downloaded one.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
requires_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None or importlib.util.find_spec("selenium") is None,
    reason="no browser: apt-get install chromium chromium-driver, and the 'dev' extra (selenium)",
)
requires_cupy = pytest.mark.skipif(
    importlib.util.find_spec("cupy") is None,
    reason="CuPy not installed (it imports without a GPU): pip install -e '.[gpu]'",
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
