"""Everyday PyTorch lines that used to give another answer here, silently: each test runs the
same line on PyTorch and here and compares value, shape and dtype."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from tests.conftest import requires_torch, torch

pytestmark = requires_torch


def _same(ours, theirs) -> None:
    expected = theirs.detach().numpy()
    got = ours.detach().numpy()
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("args, kwargs", [
    ((5,), {}), ((5.0,), {}), ((0, 1, 0.25), {}), ((1, 10, 2), {}), ((10, 0, -3), {}),
    ((0, 5), {"dtype": "float64"}), ((-1.5, 2), {}), ((0, 1, 0.1), {}),
])
def test_arange_infers_int64_or_the_default_float_as_torch(args, kwargs) -> None:
    tkw = {k: getattr(torch, v) for k, v in kwargs.items()}
    _same(mt.arange(*args, **kwargs), torch.arange(*args, **tkw))


@pytest.mark.parametrize("fill", [7, 7.0, True, -2])
def test_full_takes_the_fill_values_dtype_as_torch(fill) -> None:
    _same(mt.full((2, 3), fill), torch.full((2, 3), fill))
    _same(mt.full((2,), fill, dtype=mt.float64), torch.full((2,), fill, dtype=torch.float64))
