"""Claims the docs make about PyTorch, checked against the pinned PyTorch.

docs/attention.md, "A fully masked row": which PyTorch calls return NaN for a query that may
look at no key, and which return zeros, as this project does.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import requires_torch, torch

ALLOWED = np.array([[True, True, False],
                    [False, False, False],  # query 1: every key masked
                    [True, True, True]])


def _qkv() -> tuple:
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, 1, 3, 4, generator=generator, requires_grad=True)
                 for _ in range(3))


@requires_torch
def test_torch_softmax_of_a_masked_row_is_nan() -> None:
    assert torch.softmax(torch.full((3,), -float("inf")), dim=-1).isnan().all()


@requires_torch
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_torch_sdpa_gives_zeros_for_a_masked_row(kind: str) -> None:
    q, k, v = _qkv()
    mask = torch.tensor(ALLOWED)
    if kind == "float":
        mask = torch.zeros(3, 3).masked_fill(~mask, -float("inf"))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out.sum().backward()
    assert torch.equal(out[0, 0, 1], torch.zeros(4))
    assert torch.equal(q.grad[0, 0, 1], torch.zeros(4))
    assert all(t.grad.isfinite().all() for t in (q, k, v))


@requires_torch
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("mask", ["attn_mask", "key_padding_mask"])
def test_torch_multihead_attention_nan_only_with_weights(need_weights: bool, mask: str) -> None:
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(4, 1, batch_first=True)
    x = torch.randn(1, 3, 4, requires_grad=True)
    if mask == "attn_mask":  # PyTorch's boolean attn_mask: True = blocked
        kwargs = {"attn_mask": torch.tensor(~ALLOWED)}
        row = 1
    else:  # the whole sequence is padding: every query's row is masked
        kwargs = {"key_padding_mask": torch.tensor([[True, True, True]])}
        row = 0
    out, weights = mha(x, x, x, need_weights=need_weights, **kwargs)
    out.sum().backward()
    if need_weights:
        assert out[0, row].isnan().all() and weights[0, row].isnan().all()
        assert x.grad.isnan().any()
    else:
        assert weights is None
        assert torch.allclose(out[0, row], mha.out_proj.bias)  # zero row, then the bias
        assert x.grad.isfinite().all()


def test_readme_taste_runs_and_its_gradients_are_visible() -> None:
    """README.md, "A taste": the first block runs, and x.grad is what its comment says."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## A taste"):]
    block = section[section.index("```python\n") + 10:section.index("```\n", 10)]
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    x = namespace["x"]
    assert np.allclose(x.grad.numpy(), [[-0.0526, 0.5051, 0.024]], atol=1e-4)
    assert np.abs(x.grad.numpy()).max() > 0.1  # not a saturated tanh
