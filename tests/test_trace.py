"""Tensor names and the backward trace."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import nn
from minitransformer.trace import local_rule


def _attention_loss(seed: int = 0, d: int = 4, dtype: str = "float64"):
    mt.manual_seed(seed)
    attention = nn.Attention(d, dtype=dtype)
    x = mt.randn(1, 4, d, dtype=dtype, requires_grad=True)
    z, _ = attention(x)
    loss = F.mse_loss(z, mt.zeros(1, 4, d, dtype=dtype))
    loss.name = "loss"
    return attention, x, z, loss


# ----- names ------------------------------------------------------------------------------------
def test_a_name_shows_in_the_repr_and_names_the_gradient():
    h = mt.tensor([1.0, 2.0], requires_grad=True)
    h.name = "h"
    assert "name='h'" in repr(h)
    (h * h).sum().backward()
    assert h.grad.name == "dh"
    assert "name" not in repr(mt.tensor([1.0]))


def test_attention_names_its_intermediates_with_the_articles_symbols():
    attention = nn.Attention(4)
    x = mt.randn(1, 3, 4)
    z, a = attention(x)
    assert (x.name, z.name, a.name) == ("X", "Z", "A")
    fn = z._ctx  # Z = A @ V
    assert [t.name for t in fn.inputs] == ["A", "V"]
    s_hat = a._ctx.inputs[0]
    assert s_hat.name == "S_hat" and s_hat._ctx.inputs[0].name == "S"
    named = mt.randn(1, 3, 4)
    named.name = "h"
    attention(named)
    assert named.name == "h"  # a name the caller gave is kept


def test_multi_head_attention_names_split_merge_and_projection():
    mha = nn.MultiHeadAttention(8, 2)
    out, weights = mha(mt.randn(1, 3, 8), average_attn_weights=False)
    assert out.name == "output"
    concat = out._ctx.inputs[0]  # output = Linear(concat, W_O, b)
    assert concat.name == "Z_concat" and concat.shape == (1, 3, 8)
    assert weights.name == "A" and weights.shape == (1, 2, 3, 3)
    q_heads = weights._ctx.inputs[0]
    assert q_heads.name == "Q_heads" and q_heads.shape == (1, 2, 3, 4)


def test_the_composed_attention_path_names_scores_and_weights():
    q, k, v = (mt.randn(2, 3, 4, requires_grad=True) for _ in range(3))
    z, a = F.attention_reference(q, k, v)
    assert (z.name, a.name) == ("Z", "A")
    assert [t.name for t in a._ctx.inputs] == ["S_hat"]


def test_backward_graph_gradients_are_named_after_their_tensors():
    attention, x, z, loss = _attention_loss()
    loss.backward(create_graph=True)
    names, stack, seen = set(), [x.grad], set()
    while stack:  # every tensor in the graph of dX
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        names.add(t.name)
        if t._ctx is not None:
            stack.extend(t._ctx.inputs)
    assert {"dZ", "dA", "dS_hat", "dS", "dQ", "dK", "dV"} <= names
    assert x.grad.name == "dX"


# ----- the trace ----------------------------------------------------------------------------------
def test_tracing_leaves_every_gradient_identical():
    grads = []
    for traced in (False, True):
        attention, x, _, loss = _attention_loss()
        if traced:
            mt.trace_backward(loss, model=attention)
        else:
            loss.backward()
        grads.append([x.grad.numpy()] + [p.grad.numpy() for p in attention.parameters()])
    for plain, traced in zip(*grads):
        np.testing.assert_array_equal(plain, traced)


def test_the_trace_follows_the_walk_in_order_with_rules_and_names():
    attention, _, _, loss = _attention_loss()
    trace = mt.trace_backward(loss, model=attention)
    names = [s.name for s in trace]
    assert names[0] == "loss" and trace[0].grad.norm == 1.0
    # attention's backward walks Z, A, S_hat, S, then the projections, in that order
    order = [names.index(n) for n in ("Z", "A", "S_hat", "S")]
    assert order == sorted(order)
    softmax = trace.step("A")
    assert softmax.op == "Softmax" and "s_j (g_j - sum_i g_i s_i)" in softmax.generic_rule
    assert softmax.rule.startswith("dS_hat = A ⊙ (dA − r)")  # in the node's own symbols
    assert [s.to for s in softmax.sent] == ["S_hat"]
    assert {s.to for s in trace.step("Z").sent} == {"A", "V"}
    # the product rule names its operands, and says which one is transposed
    assert trace.step("Z").rule == "dA = dZ @ Vᵀ;  dV = Aᵀ @ dZ"
    assert trace.step("S").rule == "dQ = dS @ K;  dKᵀ = Qᵀ @ dS"
    assert trace.step("S_hat").rule == "dS = dS_hat / 2"  # the scaling, 1/sqrt(d_k) = 1/2
    # each parameter's gradient ends the path to it, and matches .grad
    last = trace[len(trace) - 1]
    assert last.op == "leaf" and last.is_parameter
    w_q = trace.step("q_proj.weight")
    np.testing.assert_allclose(w_q.grad.values, attention.q_proj.weight.grad.numpy())
    assert names.index("q_proj.weight") > names.index("Q")
    # the upstream gradient of a step is what its consumer sent it
    sent_to_a = trace.step("Z").sent[0].summary
    assert sent_to_a.norm == pytest.approx(softmax.grad.norm)


def test_the_trace_prints_as_a_table_and_as_html():
    attention, _, _, loss = _attention_loss()
    trace = mt.trace_backward(loss, model=attention)
    text = str(trace)
    assert text.splitlines()[0].split()[:3] == ["#", "op", "output"]
    assert "-> q_proj.weight.grad" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "<table" in trace._repr_html_() and "S_hat" in trace._repr_html_()
    assert len(text.splitlines()) == len(trace) + 1


def test_one_step_prints_as_a_few_readable_lines():
    attention, _, _, loss = _attention_loss()
    trace = mt.trace_backward(loss, model=attention)
    index = [s.name for s in trace].index("A")
    text = str(trace.step(index))
    assert trace.step(index) is trace.step("A") and repr(trace.step(index)) == text
    lines = text.splitlines()
    assert lines[0] == "step 4: Softmax -> A (1, 4, 4)"
    assert lines[1].startswith("  arrived  dA: |g|=")
    assert any(line.startswith("  rule     dS_hat = A") for line in lines)
    assert any(line.startswith("  sends    dS_hat:") for line in lines)
    assert "Summary(" not in text and "array(" not in text  # not a data dump
    assert max(len(line) for line in lines) <= 100


def test_rules_carry_no_docstring_markup():
    from minitransformer import autograd, ops  # noqa: F401  (every op class registered)

    def every_function(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from every_function(sub)

    for cls in every_function(autograd.Function):
        assert "``" not in local_rule(cls) and ":class:" not in local_rule(cls), cls


def test_parameters_are_named_without_model():
    """A Module names its parameters when they are registered, so a trace (or a drawing)
    needs no model= to call them q_proj.weight rather than input#10."""
    attention, _, _, loss = _attention_loss()
    trace = mt.trace_backward(loss)
    names = [s.name for s in trace]
    assert "q_proj.weight" in names and not any(n.startswith("input#") for n in names)
    assert trace.step("q_proj.weight").is_parameter
    encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(4, 2, batch_first=True, dim_feedforward=8, dropout=0.0), 2)
    for name, param in encoder.named_parameters():
        assert param.param_path == name  # the outermost registration's dotted path


def test_tracing_is_off_outside_the_block_and_does_not_nest():
    from minitransformer import autograd

    with mt.tracing() as trace:
        with pytest.raises(RuntimeError, match="already recording"):
            with mt.tracing():
                pass
        (mt.tensor([2.0], requires_grad=True) ** 2).sum().backward()
    assert not autograd.current_observers()
    assert [s.op for s in trace] == ["Sum", "Pow", "leaf"]


def test_a_trace_records_only_its_own_threads_walks():
    """Tracing is per thread, as grad mode is: a backward run by another thread while a
    trace records is neither recorded nor wrapped, and its gradients are plain."""
    import threading

    other_started, other_done = threading.Event(), threading.Event()
    results = {}

    def other_thread() -> None:
        other_started.wait()
        x = mt.tensor([3.0], requires_grad=True)
        (x * x).sum().backward()
        results["grad"] = x.grad.numpy()
        other_done.set()

    worker = threading.Thread(target=other_thread)
    worker.start()
    with mt.tracing() as trace:
        other_started.set()
        assert other_done.wait(timeout=30)
        (mt.tensor([2.0], requires_grad=True) ** 2).sum().backward()
    worker.join()
    assert [s.op for s in trace] == ["Sum", "Pow", "leaf"]  # the other walk is not in it
    np.testing.assert_allclose(results["grad"], [6.0])


def test_local_rules_come_from_the_docstrings():
    from minitransformer.ops.activations import Tanh
    from minitransformer.ops.matmul import MatMul

    assert local_rule(Tanh) == "dy/dx = 1 - y^2"
    assert local_rule(MatMul) == "dM = dY @ N^T; dN = M^T @ dY"  # not attention's A and Z
    from minitransformer.ops.norm import LayerNorm

    # each gradient line whole: "dbeta  = sum(g)   (comment)" is not cut at its spaces
    assert local_rule(LayerNorm).startswith("dbeta = sum(g); dgamma = sum(g * x_hat); dx = (")
    assert local_rule(LayerNorm).endswith("/ sigma, g_hat = g * gamma")


def test_a_subclass_without_a_rule_uses_its_base_rule():
    from minitransformer.ops.activations import MaskedSoftmax, Softmax

    assert local_rule(MaskedSoftmax) == local_rule(Softmax) != ""
