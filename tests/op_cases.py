"""The one test entry per registered op (``minitransformer.ops.registry.OPS``).

``tests/test_contract.py`` runs every entry through gradcheck, gradgradcheck (for every
differentiable op), the PyTorch comparison (where PyTorch has a twin) and the device
sweep, and fails if a registered op has no entry here. Adding an op = one line here:

    "sinh": OpCase([normal(2, 3)]),

An entry gives the inputs (float64 leaves drawn by the makers below), how to call the op
when it needs more than those inputs (``call``), and its PyTorch twin: by default
``torch.<name>`` called the same way, ``torch=None`` where there is none. Inputs stay
away from kinks (|x| at 0, clip bounds), where finite differences straddle the jump.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import minitransformer as mt
import minitransformer.functional as F
from minitransformer.ops.tiled_attention import tiled_attention
from tests.conftest import torch

Maker = Callable[[np.random.Generator], np.ndarray]


def normal(*shape: int) -> Maker:
    return lambda rng: rng.standard_normal(shape)


def positive(*shape: int) -> Maker:
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def nonzero(*shape: int) -> Maker:
    """Values at least 0.3 away from 0 (for abs, relu, division)."""
    return lambda rng: rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 1.5, shape)


def away_from(*kinks: float, shape: tuple[int, ...]) -> Maker:
    """Normal values, each at least 0.05 away from every kink."""

    def make(rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(rng.standard_normal(shape))
        for _ in range(100):
            near = np.zeros(shape, dtype=bool)
            for k in kinks:
                near |= np.abs(x - k) < 0.05
            if not near.any():
                return x
            x[near] = rng.standard_normal(int(near.sum()))
        raise AssertionError("could not draw values away from the kinks")

    return make


SAME = "same"  # the PyTorch twin is torch.<name>, called like ours


@dataclass
class OpCase:
    inputs: list[Maker]
    call: Callable[..., Any] | None = None  # default: the registered function on the inputs
    torch: Callable[..., Any] | str | None = SAME
    tolerances: dict[str, float] = field(default_factory=dict)  # for gradcheck/gradgradcheck


def leaves(rng: np.random.Generator, inputs: list[Maker], device: str = "cpu") -> list[mt.Tensor]:
    return [mt.tensor(np.asarray(make(rng), dtype=np.float64), requires_grad=True, device=device)
            for make in inputs]


# Constant (non-differentiable) arguments, fixed once.
MASK_23 = np.array([[True, False, True], [False, False, True]])
ATTENTION_MASK = np.array([[True, False, True, True], [True, True, False, True],
                           [False, True, True, True]])  # (L=3, S=4), no row fully masked
DEAD_ROW_MASK = np.array([[True, False, True, True], [False, False, False, False],
                          [True, True, True, False]])  # row 1: nothing allowed
TARGETS = np.array([1, 0, 4, 2])


def _tmask(mask: np.ndarray) -> Any:
    return torch.from_numpy(mask)


def _torch_attention(q: Any, k: Any, v: Any) -> tuple[Any, Any]:
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(~_tmask(ATTENTION_MASK), -math.inf), dim=-1)
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=_tmask(ATTENTION_MASK)), weights


OP_CASES: dict[str, OpCase] = {
    # elementwise
    "add": OpCase([normal(2, 3), normal(3)]),
    "sub": OpCase([normal(3, 1), normal(1, 4)]),
    "mul": OpCase([normal(2, 3), normal(2, 1)]),
    "div": OpCase([normal(2, 3), nonzero(3)]),
    "pow": OpCase([positive(2, 3), normal(3)]),
    "maximum": OpCase([normal(2, 3), normal(2, 3)]),
    "minimum": OpCase([normal(2, 3), normal(3)]),
    "neg": OpCase([normal(2, 3)]),
    "exp": OpCase([normal(2, 3)]),
    "log": OpCase([positive(2, 3)]),
    "sqrt": OpCase([positive(2, 3)]),
    "abs": OpCase([nonzero(2, 3)]),
    "sin": OpCase([normal(2, 3)]),
    "cos": OpCase([normal(2, 3)]),
    "erf": OpCase([normal(2, 3)]),
    "clip": OpCase([away_from(-0.5, 0.5, shape=(3, 4))], lambda x: mt.clip(x, -0.5, 0.5),
                   lambda x: torch.clamp(x, -0.5, 0.5)),
    "where": OpCase([normal(2, 3), normal(3)], lambda a, b: mt.where(MASK_23, a, b),
                    lambda a, b: torch.where(_tmask(MASK_23), a, b)),
    "masked_fill": OpCase([normal(2, 3)], lambda x: mt.masked_fill(x, MASK_23, -5.0),
                          lambda x: x.masked_fill(_tmask(MASK_23), -5.0)),
    "to": OpCase([normal(2, 3)], lambda x: mt.ops.to(x, dtype=mt.float32) * 3,
                 lambda x: x.to(torch.float32) * 3, {"eps": 1e-3, "atol": 1e-3, "rtol": 1e-2}),
    # activations
    "tanh": OpCase([normal(2, 3)]),
    "sigmoid": OpCase([normal(2, 3)]),
    "relu": OpCase([nonzero(2, 3)]),
    "gelu": OpCase([normal(2, 3)], torch=lambda x: torch.nn.functional.gelu(x)),
    "softmax": OpCase([normal(2, 4)], lambda x: mt.softmax(x, axis=-1),
                      lambda x: torch.softmax(x, dim=-1)),
    "masked_softmax": OpCase([normal(2, 3, 4)], lambda x: mt.masked_softmax(x, DEAD_ROW_MASK),
                             torch=None),  # torch's softmax gives NaN on the dead row
    "log_softmax": OpCase([normal(2, 4)], lambda x: mt.log_softmax(x, axis=0),
                          lambda x: torch.log_softmax(x, dim=0)),
    "logsumexp": OpCase([normal(2, 4)], lambda x: mt.logsumexp(x, axis=1),
                        lambda x: torch.logsumexp(x, dim=1)),
    "dropout": OpCase([normal(3, 4)], lambda x: mt.dropout(x, 0.5, seed=3), torch=None),
    # matmul and reductions
    "matmul": OpCase([normal(2, 2, 3), normal(3, 4)]),
    "sum": OpCase([normal(2, 3, 4)], lambda x: mt.sum(x, axis=(0, 2)),
                  lambda x: torch.sum(x, dim=(0, 2))),
    "mean": OpCase([normal(2, 3)], lambda x: mt.mean(x, axis=1, keepdims=True),
                   lambda x: torch.mean(x, dim=1, keepdim=True)),
    "var": OpCase([normal(2, 4)], lambda x: mt.var(x, axis=1),
                  lambda x: torch.var(x, dim=1)),
    "std": OpCase([normal(2, 4)], lambda x: mt.std(x, 1, correction=0),
                  lambda x: torch.std(x, 1, correction=0)),
    "max": OpCase([normal(3, 4)], lambda x: mt.max(x, 0).values,
                  lambda x: torch.max(x, 0).values),
    "min": OpCase([normal(3, 4)], lambda x: mt.min(x, dim=1, keepdim=True).values,
                  lambda x: torch.min(x, dim=1, keepdim=True).values),
    "prod": OpCase([normal(2, 3)], lambda x: mt.prod(x, 1), lambda x: torch.prod(x, 1)),
    "amax": OpCase([normal(3, 4)], lambda x: mt.amax(x, axis=0),
                   lambda x: torch.amax(x, dim=0)),
    "amin": OpCase([normal(3, 4)], lambda x: mt.amin(x, axis=(0, 1)),
                   lambda x: torch.amin(x, dim=(0, 1))),
    "cumsum": OpCase([normal(3, 4)], lambda x: mt.cumsum(x, dim=1),
                     lambda x: torch.cumsum(x, dim=1)),
    # shapes, indexing, joins
    "reshape": OpCase([normal(2, 3)], lambda x: mt.reshape(x, (3, 2)),
                      lambda x: torch.reshape(x, (3, 2))),
    "permute": OpCase([normal(2, 3, 4)], lambda x: mt.permute(x, 2, 0, 1),
                      lambda x: torch.permute(x, (2, 0, 1))),
    "transpose": OpCase([normal(2, 3)], lambda x: mt.transpose(x), lambda x: x.T),
    "swapaxes": OpCase([normal(2, 3, 4)], lambda x: mt.swapaxes(x, 0, 2),
                       lambda x: torch.swapaxes(x, 0, 2)),
    "expand_dims": OpCase([normal(2, 3)], lambda x: mt.expand_dims(x, 1),
                          lambda x: torch.unsqueeze(x, 1)),
    "squeeze": OpCase([normal(2, 1, 3)], lambda x: mt.squeeze(x, 1),
                      lambda x: torch.squeeze(x, 1)),
    "broadcast_to": OpCase([normal(3, 1)], lambda x: mt.broadcast_to(x, (2, 3, 4)),
                           lambda x: torch.broadcast_to(x, (2, 3, 4))),
    "flatten": OpCase([normal(2, 3, 4)], lambda x: mt.flatten(x, 1),
                      lambda x: torch.flatten(x, 1)),
    "getitem": OpCase([normal(3, 4)], lambda x: mt.ops.getitem(x, (np.array([0, 2, 0]), 1)),
                      lambda x: x[torch.tensor([0, 2, 0]), 1]),
    "concat": OpCase([normal(2, 3), normal(1, 3)], lambda a, b: mt.concat([a, b], axis=0),
                     lambda a, b: torch.cat([a, b], dim=0)),
    "stack": OpCase([normal(2, 3), normal(2, 3)], lambda a, b: mt.stack([a, b], axis=1),
                    lambda a, b: torch.stack([a, b], dim=1)),
    "split": OpCase([normal(2, 5)], lambda x: mt.split(x, 2, axis=1),
                    lambda x: torch.split(x, 2, dim=1)),
    "chunk": OpCase([normal(2, 7)], lambda x: mt.chunk(x, 3, dim=1),
                    lambda x: torch.chunk(x, 3, dim=1)),
    "unbind": OpCase([normal(2, 3)], lambda x: mt.unbind(x, 1),
                     lambda x: torch.unbind(x, 1)),
    "flip": OpCase([normal(2, 3, 4)], lambda x: mt.flip(x, (0, 2)),
                   lambda x: torch.flip(x, (0, 2))),
    "unfold1d": OpCase([normal(2, 2, 5)],
                       lambda x: mt.ops.unfold1d(x, 3, dilation=1, padding=(1, 1)), torch=None),
    "fold1d": OpCase([normal(2, 2, 3, 5)],
                     lambda c: mt.ops.fold1d(c, 5, 3, dilation=1, padding=(1, 1)), torch=None),
    # fused nodes (minitransformer.functional)
    "cross_entropy": OpCase([normal(4, 5)], lambda z: F.cross_entropy(z, TARGETS),
                            lambda z: torch.nn.functional.cross_entropy(
                                z, torch.from_numpy(TARGETS))),
    "linear": OpCase([normal(2, 3, 4), normal(5, 4), normal(5)],
                     torch=lambda x, w, b: torch.nn.functional.linear(x, w, b)),
    "layer_norm": OpCase([normal(2, 3, 4), normal(4), normal(4)],
                         lambda x, w, b: F.layer_norm(x, 4, w, b),
                         lambda x, w, b: torch.nn.functional.layer_norm(x, (4,), w, b)),
    "scaled_dot_product_attention": OpCase(
        [normal(2, 3, 2), normal(2, 4, 2), normal(2, 4, 3)],
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=ATTENTION_MASK),
        lambda q, k, v: _torch_attention(q, k, v)[0]),
    "scaled_dot_product_attention_with_weights": OpCase(
        [normal(2, 3, 2), normal(2, 4, 2), normal(2, 4, 3)],
        lambda q, k, v: F.scaled_dot_product_attention_with_weights(q, k, v,
                                                                    attn_mask=ATTENTION_MASK),
        _torch_attention),
    "tiled_attention": OpCase(  # 5 queries, 4 keys in tiles of 2 x 3: the online softmax runs
        [normal(2, 5, 2), normal(2, 4, 2), normal(2, 4, 3)],
        lambda q, k, v: tiled_attention(q, k, v, causal=True, block_q=2, block_k=3),
        lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v,
                                                                         is_causal=True)),
}

# Function classes in minitransformer/ops that no entry above records, each with the reason
# (tests/test_contract.py requires every other one to be reached from a case).
NOT_IN_A_CASE: dict[str, str] = {
    "_Select": "the shared base of Maximum and Minimum (both in cases); never recorded itself",
    "FloorDiv": "x // y has no derivative (its backward refuses, as PyTorch's); its values and "
                "dtypes are compared with torch in tests/test_pytorch_semantics.py",
}


# Compositions of several ops, run on every device (tests/test_devices.py): gradcheck there
# and values and gradients equal to the CPU's. (name, function, input shapes); the inputs
# are float64 leaves on the device under test.
DEVICE_COMPOSITIONS: list[tuple[str, Callable[..., Any], list[tuple[int, ...]]]] = [
    ("add-broadcast", lambda a, b: a + b, [(2, 3), (3,)]),
    ("sub-mul-div", lambda a, b: (a - b) * a / (b * b + 1), [(2, 3), (2, 3)]),
    ("pow", lambda a: (a * a + 1) ** 1.5, [(3,)]),
    ("exp-log-sqrt", lambda a: (a.exp() + 1).log() + (a * a + 1).sqrt(), [(2, 3)]),
    ("sin-cos-abs", lambda a: a.sin() * a.cos() + (a + 3).abs(), [(4,)]),
    ("tanh-sigmoid-relu", lambda a: a.tanh() + a.sigmoid() + (a + 5).relu(), [(2, 3)]),
    ("gelu-erf", lambda a: mt.gelu(a) + mt.erf(a), [(3,)]),
    ("clip-max-min", lambda a, b: mt.maximum(a, b) + mt.minimum(a, b).clip(-5, 5),
     [(2, 3), (2, 3)]),
    ("reductions", lambda a: a.sum(axis=0) + a.mean(axis=0) + a.var(axis=0) + a.amax(axis=0),
     [(3, 2)]),
    ("matmul-batched", lambda a, b: a @ b, [(2, 3, 4), (4, 2)]),
    ("matmul-1d", lambda a, b: a @ b, [(4,), (2, 4, 3)]),
    ("shape-ops", lambda a: a.reshape(3, 2).T.unsqueeze(0).permute(2, 0, 1).flatten(), [(2, 3)]),
    ("broadcast_to", lambda a: a.broadcast_to(2, 3, 4), [(3, 1)]),
    ("getitem-repeated", lambda a: a[np.array([0, 0, 2])] * a[1:, ::2].sum(), [(3, 4)]),
    ("getitem-mask", lambda a: a[a.detach() > 0], [(3, 4)]),
    ("concat-stack-split", lambda a, b: mt.stack([*mt.concat([a, b], axis=1).split(2, axis=1)]),
     [(2, 2), (2, 2)]),
    ("softmax-family",
     lambda a: a.softmax(0) + a.log_softmax(-1) + a.logsumexp(1, keepdims=True), [(2, 3)]),
    ("where-masked_fill",
     lambda a, b: mt.where(a.detach() > 0, a, b).masked_fill(b.detach() > 1, 0),
     [(2, 3), (2, 3)]),
    ("dropout", lambda a: mt.dropout(a, 0.5, seed=1), [(4, 4)]),
]
