"""In-place changes between a forward and its backward raise instead of giving wrong grads."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.nn as nn
from minitransformer.errors import GraphError
from minitransformer.optim import SGD, Adam


def _linear_and_input() -> tuple[nn.Linear, mt.Tensor]:
    mt.manual_seed(0)
    return nn.Linear(3, 2), mt.randn(4, 3, requires_grad=True)


@pytest.mark.parametrize("optimizer", [SGD, Adam])
def test_an_optimizer_step_between_two_forwards_is_detected(optimizer: type) -> None:
    layer, x = _linear_and_input()
    opt = optimizer(layer.parameters(), lr=0.1)
    first = layer(x).sum()
    first.backward(retain_graph=True)
    opt.step()
    second = layer(x).sum()
    with pytest.raises(GraphError, match=rf"input 1 of Linear, the tensor of shape \(2, 3\), was "
                       rf"changed by {optimizer.__name__}\.step\(\) \(on the tensor of shape "
                       rf"\(2, 3\)\)"):
        (first + second).backward()
    assert layer.weight._version == 1


def test_load_state_dict_and_data_assignment_and_module_to_are_detected() -> None:
    layer, x = _linear_and_input()
    saved = layer.state_dict()
    loss = (layer(x) ** 2).sum()
    layer.load_state_dict(saved)
    with pytest.raises(GraphError, match=r"Linear\.load_state_dict\(\)"):
        loss.backward()

    loss = (layer(x) ** 2).sum()
    layer.weight.data = layer.weight.data * 2
    with pytest.raises(GraphError, match=r"shape \(2, 3\).*assigning its \.data"):
        loss.backward()

    loss = (layer(x) ** 2).sum()
    layer.to(mt.float64)
    with pytest.raises(GraphError, match=r"Module\.to\(\)"):
        loss.backward()


def test_a_change_to_a_value_the_backward_does_not_read_is_allowed() -> None:
    # y = x W^T + b, one Linear node: the bias' gradient needs only its shape (as in PyTorch).
    layer, x = _linear_and_input()
    opt = SGD([layer.bias], lr=0.1)
    loss = layer(x).sum()
    layer.bias.grad = mt.ones(2)
    opt.step()
    loss.backward()
    np.testing.assert_allclose(layer.weight.grad.numpy(), np.tile(x.detach().numpy().sum(0),
                                                                  (2, 1)), rtol=1e-6)


def test_a_backward_then_a_step_is_the_normal_order() -> None:
    layer, x = _linear_and_input()
    opt = SGD(layer.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        layer(x).sum().backward()
        opt.step()
    assert layer.weight._version == 3


def test_attention_weights_returned_or_stored_cannot_change_the_gradients() -> None:
    mt.manual_seed(0)
    attention = nn.Attention(4)
    attention.store_attention = True
    x = mt.randn(1, 3, 4, requires_grad=True)
    z, a = attention(x)
    with pytest.raises(ValueError, match="read-only"):
        a.data[...] = 0  # Z = A V: V's gradient reads A
    attention.last_attention.data[...] = 0  # a copy: the graph does not see it
    z.sum().backward()
    assert np.abs(x.grad.numpy()).sum() > 0

    mha = nn.MultiHeadAttention(4, 2)
    mha.store_attention = True
    out, weights = mha(x, x, x, average_attn_weights=False)
    with pytest.raises(ValueError, match="read-only"):
        weights.data[...] = 0
    assert not np.shares_memory(mha.last_attention.data, weights.data)
