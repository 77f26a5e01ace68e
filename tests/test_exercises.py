"""The exercises and their checker: stubs are "not implemented yet", reference solutions
pass, planted mistakes fail and are recognised by name, and nothing shows a traceback."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minitransformer import exercises
from minitransformer.cli.main import main
from minitransformer.exercises import EXERCISES
from minitransformer.exercises.checker import load_module, numerical_gradients

ROOT = Path(__file__).resolve().parent.parent
NAMES = [e.name for e in EXERCISES]


def solved(exercise: exercises.Exercise) -> str:
    """The stub with the reference solution appended (its later definitions win)."""
    return exercises.stub_source(exercise) + "\n\n" + exercises.solution_source(exercise)


def write(tmp_path: Path, exercise: exercises.Exercise, text: str) -> Path:
    path = tmp_path / exercise.filename
    path.write_text(text, encoding="utf-8")
    return path


def check_text(tmp_path: Path, name: str, text: str) -> exercises.CheckResult:
    exercise = exercises.find(name)
    return exercises.check_file(exercise, write(tmp_path, exercise, text))


# ----------------------------------------------------------------------------- promises


@pytest.mark.parametrize("name", NAMES)
def test_untouched_stub_is_not_implemented_yet(tmp_path: Path, name: str) -> None:
    exercise = exercises.find(name)
    result = check_text(tmp_path, name, exercises.stub_source(exercise))
    assert result.status == "todo"
    assert "not implemented yet" in result.summary
    assert "Traceback" not in result.summary


@pytest.mark.parametrize("name", NAMES)
def test_reference_solution_passes(tmp_path: Path, name: str) -> None:
    exercise = exercises.find(name)
    result = check_text(tmp_path, name, solved(exercise))
    assert result.passed, (result.summary, result.details)


# Wrappers that turn the reference solution into a planted mistake of one kind.
SCALED = """
_right = {function}
def {function}(*args, **kwargs):
    result = _right(*args, **kwargs)
    return tuple({factor} * g for g in result) if isinstance(result, tuple) else {factor} * result
"""
ADAM_SCALED = """
_right = adam_step
def adam_step(param, *args, **kwargs):
    new, m, v = _right(param, *args, **kwargs)
    return param + {factor} * (new - param), m, v
"""

# The online softmax as a learner writes it, with the updates of l and o, a division of
# each tile's contribution, and the final output as parameters.
ONLINE = """
def forward(Q, K, V, block):
    scale = 1 / np.sqrt(Q.shape[-1])
    m = np.full((*Q.shape[:-1], 1), -np.inf)
    l = np.zeros((*Q.shape[:-1], 1))
    o = np.zeros((*Q.shape[:-1], V.shape[-1]))
    for j in range(0, K.shape[-2], block):
        k, v = K[..., j : j + block, :], V[..., j : j + block, :]
        S = Q @ k.swapaxes(-1, -2) * scale
        m_new = np.maximum(m, S.max(axis=-1, keepdims=True))
        P = np.exp(S - m_new)
        alpha = np.exp(m - m_new)
        l = {l}
        o = {o}{tile}
        m = m_new
    return {end}, m + np.log(l)
"""
RIGHT_L, RIGHT_O = "l * alpha + P.sum(axis=-1, keepdims=True)", "o * alpha + P @ v"
# The typical mistake of each exercise, as a learner would write it.
TYPICAL = {
    "chain_rule": ("missed a path", """
def backward(dout, a, b, c):
    f = np.tanh(a * b + c)
    dd = dout * a * (1 - f**2)
    return dd * b, dd * a, dd
"""),
    "broadcast": ("gradient not summed over a broadcast axis", """
def backward(dout, x, w):
    return dout * w, dout * x
"""),
    "matmul": ("transposed gradient", """
def backward(dC, A, B):
    return dC @ B.swapaxes(-1, -2), dC.swapaxes(-1, -2) @ A
"""),
    "softmax": ("only the diagonal of the Jacobian", """
def backward(dy, x):
    y = forward(x)
    return dy * y * (1 - y)
"""),
    "cross_entropy": ("forgot the 1/N of the mean", """
def backward(dloss, z, t):
    p = np.exp(log_softmax(z))
    p[..., :] -= np.eye(z.shape[-1])[t]
    return p * dloss
"""),
    "layer_norm": ("mean and variance treated as constants", """
def backward(dy, x, gamma, beta):
    mu = x.mean(axis=-1, keepdims=True)
    inv_std = 1 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + EPS)
    rows = tuple(range(x.ndim - 1))
    return dy * gamma * inv_std, (dy * (x - mu) * inv_std).sum(axis=rows), dy.sum(axis=rows)
"""),
    "attention": ("forgotten mask", """
_right = backward
def backward(dZ, Q, K, V, mask):
    return _right(dZ, Q, K, V, None)
"""),
    "heads": ("reshaped without undoing the transpose", """
def split_heads_backward(dout, x, num_heads):
    return dout.reshape(x.shape)
"""),
    "embedding": ("repeated index overwritten instead of added", """
def backward(dout, idx, W):
    dW = np.zeros_like(W)
    dW[idx] += dout
    return dW
"""),
    "causal_attention": ("gradients of K and V overwritten, not accumulated", """
def backward(dZ, Q, K, V):
    dQ, dK, dV = np.zeros_like(Q), np.zeros_like(K), np.zeros_like(V)
    scale = 1 / np.sqrt(Q.shape[-1])
    for i in range(Q.shape[-2]):
        q, k, v = Q[..., i : i + 1, :], K[..., : i + 1, :], V[..., : i + 1, :]
        s = q @ k.swapaxes(-1, -2) * scale
        a = np.exp(s - s.max(axis=-1, keepdims=True))
        a /= a.sum(axis=-1, keepdims=True)
        dz = dZ[..., i : i + 1, :]
        da = dz @ v.swapaxes(-1, -2)
        ds = a * (da - (da * a).sum(axis=-1, keepdims=True)) * scale
        dQ[..., i : i + 1, :] = ds @ k
        dK[..., : i + 1, :] = ds.swapaxes(-1, -2) @ q
        dV[..., : i + 1, :] = a.swapaxes(-1, -2) @ dz
    return dQ, dK, dV
"""),
    "online_softmax": ("forgot to rescale the running sum l", ONLINE.format(
        l="l + P.sum(axis=-1, keepdims=True)", o="o * alpha + P @ v", tile="", end="o / l")),
    "tiled_backward": ("softmax's row sum taken over one tile", """
def backward(dO, Q, K, V, block):
    O, L = forward_with_stats(Q, K, V, block)
    scale = 1 / np.sqrt(Q.shape[-1])
    dQ, dK, dV = np.zeros_like(Q), np.zeros_like(K), np.zeros_like(V)
    for j in range(0, K.shape[-2], block):
        k, v = K[..., j : j + block, :], V[..., j : j + block, :]
        P = np.exp(Q @ k.swapaxes(-1, -2) * scale - L)
        dV[..., j : j + block, :] = P.swapaxes(-1, -2) @ dO
        dP = dO @ v.swapaxes(-1, -2)
        dS = P * (dP - (dP * P).sum(axis=-1, keepdims=True))
        dQ += dS @ k * scale
        dK[..., j : j + block, :] = dS.swapaxes(-1, -2) @ Q * scale
    return dQ, dK, dV
"""),
    "adam": ("no bias correction", """
def adam_step(param, grad, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    return param - lr * m / (np.sqrt(v) + eps), m, v
"""),
}
# Causal attention with a mask, as a learner writes it: a mask of np.tril(..., k), the
# softmax along ``axis``, and its backward with or without the row sum.
CAUSAL = """
def backward(dZ, Q, K, V):
    T, scale = Q.shape[-2], 1 / np.sqrt(Q.shape[-1])
    S = np.where(np.tril(np.ones((T, T), dtype=bool), k={k}), Q @ K.swapaxes(-1, -2) * scale,
                 -np.inf)
    top = S.max(axis={axis}, keepdims=True)
    A = np.exp(S - np.where(np.isneginf(top), 0, top))
    total = A.sum(axis={axis}, keepdims=True)
    A = A / np.where(total == 0, 1, total)
    dA = dZ @ V.swapaxes(-1, -2)
    dS = A * (dA - (dA * A).sum(axis={axis}, keepdims=True)) if {rowsum} else A * dA
    return dS @ K * scale, dS.swapaxes(-1, -2) @ Q * scale, A.swapaxes(-1, -2) @ dZ
"""
MORE_TYPICAL = [  # more typical mistakes, where an exercise has them
    ("online_softmax", "forgot to rescale the accumulator",
     ONLINE.format(l=RIGHT_L, o="o + P @ v", tile="", end="o / l")),
    ("online_softmax", "divided per tile instead of at the end",
     ONLINE.format(l=RIGHT_L, o="o * alpha + P @ v / l", tile="", end="o")),
    ("online_softmax", "divided per tile instead of at the end",
     ONLINE.format(l=RIGHT_L, o=RIGHT_O, tile=" / P.sum(axis=-1, keepdims=True)", end="o")),
    ("online_softmax", "exp without the running max", """
def forward(Q, K, V, block):
    scale = 1 / np.sqrt(Q.shape[-1])
    l = np.zeros((*Q.shape[:-1], 1))
    o = np.zeros((*Q.shape[:-1], V.shape[-1]))
    for j in range(0, K.shape[-2], block):
        P = np.exp(Q @ K[..., j : j + block, :].swapaxes(-1, -2) * scale)
        l = l + P.sum(axis=-1, keepdims=True)
        o = o + P @ V[..., j : j + block, :]
    return o / l, np.log(l)
"""),
    ("cross_entropy", "forgot the one-hot term", """
def backward(dloss, z, t):
    return np.exp(log_softmax(z)) * dloss / t.size
"""),
    ("layer_norm", "forgot the path through the variance", """
_right = backward
def backward(dy, x, gamma, beta):
    mu = x.mean(axis=-1, keepdims=True)
    inv_std = 1 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + EPS)
    g = dy * gamma
    return ((g - g.mean(axis=-1, keepdims=True)) * inv_std, *_right(dy, x, gamma, beta)[1:])
"""),
    ("attention", "missing 1/sqrt(d_k)", """
_right = backward
def backward(dZ, Q, K, V, mask):
    dQ, dK, dV = _right(dZ, Q, K, V, mask)
    return dQ * np.sqrt(Q.shape[-1]), dK * np.sqrt(Q.shape[-1]), dV
"""),
    ("matmul", "gradient not summed over a broadcast axis", """
def backward(dC, A, B):
    return dC @ B.swapaxes(-1, -2), A.swapaxes(-1, -2) @ dC
"""),
    ("heads", "reshaped without undoing the transpose", """
def merge_heads_backward(dout, z):
    return dout.reshape(z.shape)
"""),
    ("chain_rule", "missed a path", """
_right = backward
def backward(dout, a, b, c):
    return (dout * np.tanh(a * b + c), *_right(dout, a, b, c)[1:])
"""),
    ("causal_attention", "forgotten causal mask", """
def backward(dZ, Q, K, V):
    S = Q @ K.swapaxes(-1, -2) / np.sqrt(Q.shape[-1])
    A = np.exp(S - S.max(axis=-1, keepdims=True))
    A /= A.sum(axis=-1, keepdims=True)
    dA = dZ @ V.swapaxes(-1, -2)
    dS = A * (dA - (dA * A).sum(axis=-1, keepdims=True)) / np.sqrt(Q.shape[-1])
    return dS @ K, dS.swapaxes(-1, -2) @ Q, A.swapaxes(-1, -2) @ dZ
"""),
    ("tiled_backward", "each tile normalised on its own", """
def backward(dO, Q, K, V, block):
    O, L = forward_with_stats(Q, K, V, block)
    scale = 1 / np.sqrt(Q.shape[-1])
    D = (dO * O).sum(axis=-1, keepdims=True)
    dQ, dK, dV = np.zeros_like(Q), np.zeros_like(K), np.zeros_like(V)
    for j in range(0, K.shape[-2], block):
        k, v = K[..., j : j + block, :], V[..., j : j + block, :]
        S = Q @ k.swapaxes(-1, -2) * scale
        P = np.exp(S - S.max(axis=-1, keepdims=True))
        P /= P.sum(axis=-1, keepdims=True)
        dV[..., j : j + block, :] = P.swapaxes(-1, -2) @ dO
        dS = P * (dO @ v.swapaxes(-1, -2) - D)
        dQ += dS @ k * scale
        dK[..., j : j + block, :] = dS.swapaxes(-1, -2) @ Q * scale
    return dQ, dK, dV
"""),
    ("softmax", "softmax's backward without the row-sum term", """
def backward(dy, x):
    return forward(x) * dy
"""),
    ("softmax", "softmax along the wrong axis", """
def backward(dy, x):
    y = forward(x)
    return y * (dy - (dy * y).sum(axis=0, keepdims=True))
"""),
    ("softmax", "exp without the max shift", """
def backward(dy, x):
    e = np.exp(x)
    y = e / e.sum(axis=-1, keepdims=True)
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
"""),
    ("layer_norm", "forgot gamma in dx", """
_right = backward
def backward(dy, x, gamma, beta):
    return _right(dy, x, np.ones_like(gamma), beta)[0], *_right(dy, x, gamma, beta)[1:]
"""),
    ("layer_norm", "variance with n - 1 (ddof=1)", """
def backward(dy, x, gamma, beta):
    mu = x.mean(axis=-1, keepdims=True)
    inv_std = 1 / np.sqrt(x.var(axis=-1, keepdims=True, ddof=1) + EPS)
    x_hat = (x - mu) * inv_std
    rows = tuple(range(x.ndim - 1))
    g = dy * gamma
    dx = (g - g.mean(axis=-1, keepdims=True)
          - x_hat * (g * x_hat).mean(axis=-1, keepdims=True)) * inv_std
    return dx, (dy * x_hat).sum(axis=rows), dy.sum(axis=rows)
"""),
    ("attention", "softmax's backward without the row-sum term", """
def backward(dZ, Q, K, V, mask):
    A = weights(Q, K, mask)
    scale = 1 / np.sqrt(Q.shape[-1])
    dS = A * (dZ @ V.swapaxes(-1, -2))
    return (unbroadcast(dS @ K * scale, Q.shape),
            unbroadcast(dS.swapaxes(-1, -2) @ Q * scale, K.shape),
            unbroadcast(A.swapaxes(-1, -2) @ dZ, V.shape))
"""),
    ("attention", "a forgotten transpose in dK or dV", """
_right = backward
def backward(dZ, Q, K, V, mask):
    dQ, dK, _ = _right(dZ, Q, K, V, mask)
    return dQ, dK, weights(Q, K, mask) @ dZ
"""),
    ("attention", "a forgotten transpose in dK or dV", """
_right = backward
def backward(dZ, Q, K, V, mask):
    A = weights(Q, K, mask)
    dA = dZ @ V.swapaxes(-1, -2)
    dS = A * (dA - (dA * A).sum(axis=-1, keepdims=True))
    dQ, _, dV = _right(dZ, Q, K, V, mask)
    return dQ, dS @ Q / np.sqrt(Q.shape[-1]), dV
"""),
    ("attention", "softmax along the wrong axis", """
def backward(dZ, Q, K, V, mask):
    A = weights(Q, K, mask)
    scale = 1 / np.sqrt(Q.shape[-1])
    dA = dZ @ V.swapaxes(-1, -2)
    dS = A * (dA - (dA * A).sum(axis=-2, keepdims=True))
    return (unbroadcast(dS @ K * scale, Q.shape),
            unbroadcast(dS.swapaxes(-1, -2) @ Q * scale, K.shape),
            unbroadcast(A.swapaxes(-1, -2) @ dZ, V.shape))
"""),
    ("causal_attention", "a forgotten transpose in dK or dV", """
_right = backward
def backward(dZ, Q, K, V):
    dQ, dK, dV = _right(dZ, Q, K, V)
    T = Q.shape[-2]
    S = np.where(np.tril(np.ones((T, T), dtype=bool)), Q @ K.swapaxes(-1, -2), -np.inf)
    A = np.exp(S / np.sqrt(Q.shape[-1]) - (S / np.sqrt(Q.shape[-1])).max(-1, keepdims=True))
    A /= A.sum(axis=-1, keepdims=True)
    return dQ, dK, A @ dZ
"""),
    ("causal_attention", "causal mask off by one", CAUSAL.format(k=1, axis=-1, rowsum=True)),
    ("causal_attention", "causal mask off by one", CAUSAL.format(k=-1, axis=-1, rowsum=True)),
    ("causal_attention", "softmax along the wrong axis",
     CAUSAL.format(k=0, axis=-2, rowsum=True)),
    ("causal_attention", "softmax's backward without the row-sum term",
     CAUSAL.format(k=0, axis=-1, rowsum=False)),
    ("tiled_backward", "the tiled backward without D = rowsum(dO * O)", """
def backward(dO, Q, K, V, block):
    O, L = forward_with_stats(Q, K, V, block)
    scale = 1 / np.sqrt(Q.shape[-1])
    dQ, dK, dV = np.zeros_like(Q), np.zeros_like(K), np.zeros_like(V)
    for j in range(0, K.shape[-2], block):
        k, v = K[..., j : j + block, :], V[..., j : j + block, :]
        P = np.exp(Q @ k.swapaxes(-1, -2) * scale - L)
        dV[..., j : j + block, :] = P.swapaxes(-1, -2) @ dO
        dS = P * (dO @ v.swapaxes(-1, -2))
        dQ += dS @ k * scale
        dK[..., j : j + block, :] = dS.swapaxes(-1, -2) @ Q * scale
    return dQ, dK, dV
"""),
    ("attention", "skipped the softmax's backward", """
_right = backward
def backward(dZ, Q, K, V, mask):
    A = weights(Q, K, mask)
    dA = dZ @ V.swapaxes(-1, -2)
    scale = 1 / np.sqrt(Q.shape[-1])
    return (unbroadcast(dA @ K * scale, Q.shape),
            unbroadcast(dA.swapaxes(-1, -2) @ Q * scale, K.shape), _right(dZ, Q, K, V, mask)[2])
"""),
]


def planted(name: str, kind: str) -> tuple[str, str]:
    """(the source of a wrong solution of ``kind``, the mistake it must be recognised as)."""
    exercise = exercises.find(name)
    if kind == "typical":
        mistake, code = TYPICAL[name]
    elif kind.startswith("more "):
        _, mistake, code = MORE_TYPICAL[int(kind.split()[1])]
    else:
        factor = -1 if kind == "sign" else 2
        mistake = "wrong sign" if kind == "sign" else "factor off by a constant"
        function = {"heads": "split_heads_backward", "online_softmax": "forward"}.get(
            name, "backward")
        code = (ADAM_SCALED.format(factor=factor) if name == "adam"
                else SCALED.format(function=function, factor=factor))
    return solved(exercise) + "\n" + textwrap.dedent(code), mistake


PLANTED = [(name, kind) for name in NAMES for kind in ("factor", "sign", "typical")] + [
    (name, f"more {i}") for i, (name, _, _) in enumerate(MORE_TYPICAL)]


@pytest.mark.parametrize(("name", "kind"), PLANTED)
def test_planted_mistake_fails_and_is_named(tmp_path: Path, name: str, kind: str) -> None:
    text, mistake = planted(name, kind)
    result = check_text(tmp_path, name, text)
    assert result.status == "fail", result.summary
    assert result.mistake == mistake, (result.summary, result.details)
    assert any(line.startswith(f"recognised: {mistake}") for line in result.details)
    assert any(line.startswith("hint: ") for line in result.details)
    # which gradient, how large the error, and where
    assert re.search(r"(is wrong: largest error [0-9.e+-]+ at index \(|has shape \("
                     r"|holds (nan|inf) at index \()", result.summary), result.summary


def test_every_named_mistake_of_an_exercise_is_planted_in_a_test() -> None:
    tested = {(n, TYPICAL[n][0]) for n in TYPICAL} | {(n, m) for n, m, _ in MORE_TYPICAL}
    for exercise in EXERCISES:
        for mistake in exercise.mistakes:
            assert (exercise.name, mistake.name) in tested, \
                f"{exercise.name}: {mistake.name} is never planted"


def test_an_unrecognised_mistake_still_says_where(tmp_path: Path) -> None:
    text = solved(exercises.find("softmax")) + textwrap.dedent("""
        _right = backward
        def backward(dy, x):
            dx = _right(dy, x)
            dx[..., 0] += 1.0
            return dx
    """)
    result = check_text(tmp_path, "softmax", text)
    assert result.status == "fail" and result.mistake is None
    assert "dx is wrong: largest error 1 at index (0,)" in result.summary
    assert "no common mistake recognised" in result.details[0]


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("name", [n for n in NAMES if n != "adam"])
def test_expected_gradients_match_central_differences(tmp_path: Path, name: str) -> None:
    """The project's ops give the checker's answers; a float64 gradient check of each
    case, on the stub's own forward, confirms them."""
    exercise = exercises.find(name)
    module = load_module(write(tmp_path, exercise, exercises.stub_source(exercise)))
    for case in exercise.cases():
        if case.differentiated is None:  # a forward's case: the next test checks it
            continue
        forward, inputs, wrt, dout = case.differentiated
        numeric = numerical_gradients(getattr(module, forward), inputs, wrt, dout)
        for got, want, label in zip(numeric, case.expected, case.names):
            assert np.allclose(got, want, rtol=1e-5, atol=1e-6), (case.label, label)


def test_online_softmax_expects_the_plain_softmax() -> None:
    """The forward exercise's answers, against softmax over all the keys at once."""
    for case in exercises.find("online_softmax").cases():
        q, k, v, _ = case.inputs
        scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
        weights /= weights.sum(axis=-1, keepdims=True)
        assert np.allclose(case.expected[0], weights @ v, rtol=1e-10, atol=1e-12), case.label
        assert np.allclose(np.exp(scores - case.expected[1]).sum(axis=-1), 1), case.label


def test_the_online_softmax_must_read_the_keys_tile_by_tile(tmp_path: Path) -> None:
    """Right numbers from all the scores at once are not the exercise."""
    text = exercises.stub_source(exercises.find("online_softmax")) + textwrap.dedent("""
        def forward(Q, K, V, block):
            S = Q @ K.swapaxes(-1, -2) / np.sqrt(Q.shape[-1])
            A = np.exp(S - S.max(axis=-1, keepdims=True))
            return A @ V / A.sum(axis=-1, keepdims=True), None
    """)
    result = check_text(tmp_path, "online_softmax", text)
    assert result.status == "fail" and "K hands out its keys one tile at a time" in \
        result.summary, result.summary
    text = text.replace("K.swapaxes(-1, -2)", "K[..., :, :].swapaxes(-1, -2)")
    assert "this index reads 6 keys, block is 2" in check_text(tmp_path, "online_softmax",
                                                                text).summary
    two_passes = exercises.stub_source(exercises.find("online_softmax")) + textwrap.dedent("""
        def forward(Q, K, V, block):
            scale, tiles = 1 / np.sqrt(Q.shape[-1]), range(0, K.shape[-2], block)
            m = np.full((*Q.shape[:-1], 1), -np.inf)
            for j in tiles:  # pass 1: the max
                m = np.maximum(m, (Q @ K[..., j : j + block, :].swapaxes(-1, -2)).max(
                    axis=-1, keepdims=True) * scale)
            l, o = 0, 0
            for j in tiles:  # pass 2: the sums, against the final max
                P = np.exp(Q @ K[..., j : j + block, :].swapaxes(-1, -2) * scale - m)
                l, o = l + P.sum(axis=-1, keepdims=True), o + P @ V[..., j : j + block, :]
            return o / l, m + np.log(l)
    """)
    result = check_text(tmp_path, "online_softmax", two_passes)
    assert "K gives each key once: key 0 was read before" in result.summary, result.summary


def test_a_file_of_the_old_exercise_12_is_told_where_it_went(tmp_path: Path) -> None:
    old = solved(exercises.find("tiled_backward")).replace("Exercise 13", "Exercise 12")
    result = check_text(tmp_path, "online_softmax", old)
    assert result.status == "fail"
    assert any("rename it to 13_tiled_backward.py" in line for line in result.details)


def test_no_stub_gives_the_online_softmax_away() -> None:
    """Exercise 12's answer (a running max, sums rescaled by exp(m - m_new)) appears in
    no file that `start` writes (exercise 13's forward computes O and L in one piece)."""
    for exercise in EXERCISES:
        stub = exercises.stub_source(exercise)
        assert "np.maximum(" not in stub and not re.search(r"exp\(m\w* - m", stub), \
            exercise.name


def test_cases_cover_the_edge_cases_named_in_the_issue() -> None:
    labels = {e.name: " | ".join(c.label for c in e.cases()) for e in EXERCISES}
    assert "masked" in labels["attention"] and "every key is masked" in labels["attention"]
    assert "repeated index" in labels["embedding"]
    assert "broadcast" in labels["broadcast"] and "shared by the batch" in labels["matmul"]
    for name in ("matmul", "softmax", "layer_norm", "attention", "heads", "embedding"):
        assert "batch size 1" in labels[name], name
    assert all(len(e.cases()) >= 3 for e in EXERCISES)


# ----------------------------------------------------------------------------- one line


@pytest.mark.parametrize(("text", "expected"), [
    ("def backward(:\n", "does not import: SyntaxError on line 1"),
    ("import numpy as np\nraise RuntimeError('half-edited')\n",
     "does not import: RuntimeError: half-edited (02_broadcast.py, line 2"),
    ("import numpy_typo\n", "does not import: ModuleNotFoundError: No module named 'numpy_typo'"),
])
def test_a_file_that_does_not_import_gets_one_line(tmp_path: Path, text: str,
                                                   expected: str) -> None:
    result = check_text(tmp_path, "broadcast", text)
    assert result.status == "fail" and expected in result.summary
    assert "\n" not in result.summary and not result.details


@pytest.mark.parametrize(("body", "expected"), [
    ("return dout * w", "returned one ndarray, expected 2 values (dx, dw)"),
    ("return dout * w, dout * x, 0", "returned 3 values, expected 2 (dx, dw)"),
    ("return None, dout.sum(axis=0)", "returned None for dx"),
    ("return dout * w, 'dw'", "dw is a str, not an array of numbers"),
    ("return dout * w, (dout * x).sum(axis=0)[None]",
     "dw has shape (1, 4), expected (4,) (the input's shape) [case: x (3, 4) times w (4,)]"),
    ("return dout * w, np.full(w.shape, np.nan)", "dw holds nan at index (0,)"),
    ("return dout * w, dout[9]", "backward() raised IndexError: index 9 is out of bounds"),
])
def test_wrong_returns_get_one_clear_line(tmp_path: Path, body: str, expected: str) -> None:
    text = exercises.stub_source(exercises.find("broadcast")) + (
        f"\n\ndef backward(dout, x, w):\n    {body}\n")
    result = check_text(tmp_path, "broadcast", text)
    assert result.status == "fail" and expected in result.summary, result.summary


def test_low_precision_is_named(tmp_path: Path) -> None:
    text = solved(exercises.find("softmax")) + textwrap.dedent("""
        _right = backward
        def backward(dy, x):
            return _right(dy, x).astype(np.float16)
    """)
    result = check_text(tmp_path, "softmax", text)
    assert "dx agrees only to float32 precision: compute in float64" in result.summary


def test_an_error_names_the_line_of_the_learners_file(tmp_path: Path) -> None:
    text = exercises.stub_source(exercises.find("softmax")) + (
        "\n\ndef backward(dy, x):\n    y = forward(x)\n    return dy.reshape(3, -1)\n")
    result = check_text(tmp_path, "softmax", text)
    assert "backward() raised ValueError: cannot reshape array" in result.summary
    assert "04_softmax.py, line" in result.summary
    assert result.summary.endswith(": return dy.reshape(3, -1)) [case: a vector of 5]")


def test_an_edited_forward_and_a_renamed_function_are_named(tmp_path: Path) -> None:
    stub = exercises.stub_source(exercises.find("softmax"))
    edited = stub.replace("return e / e.sum(axis=-1, keepdims=True)", "return e")
    result = check_text(tmp_path, "softmax", edited)
    assert "forward() no longer computes what minitransformer.ops.softmax computes" in \
        result.summary
    renamed = stub.replace("def backward(", "def my_backward(")
    assert "has no function backward()" in check_text(tmp_path, "softmax", renamed).summary


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    result = exercises.check_file(exercises.find("adam"), tmp_path / "10_adam.py")
    assert result.status == "missing" and "does not exist" in result.summary


# ----------------------------------------------------------------------------- command line


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(["exercise", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_start_copies_the_stubs_and_refuses_to_overwrite(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    work = tmp_path / "my-work"
    code, out, _ = run_cli(capsys, "start", str(work))
    assert code == 0 and f"wrote {len(EXERCISES)} exercise files" in out
    assert sorted(p.name for p in work.iterdir()) == sorted(e.filename for e in EXERCISES)
    first = work / EXERCISES[0].filename
    first.write_text("# my work\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "start", str(work))
    assert code == 1 and "refusing to overwrite your work" in err
    assert first.read_text(encoding="utf-8") == "# my work\n"  # untouched


def test_start_never_writes_into_the_project(tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    package = Path(exercises.__file__).parent / "scratch"
    code, _, err = run_cli(capsys, "start", str(package))
    assert code == 1 and "inside minitransformer's own files" in err
    assert not package.exists()


def test_check_and_list_a_workspace(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    work = tmp_path / "w"
    exercises.start(work)
    code, out, _ = run_cli(capsys, "check", "--dir", str(work))
    assert code == 1 and out.count("TODO") == len(EXERCISES)
    assert f"0 of {len(EXERCISES)} pass" in out
    for exercise in EXERCISES[:3]:
        write(work, exercise, solved(exercise))
    code, out, _ = run_cli(capsys, "check", "softmax", "--dir", str(work))
    assert code == 1 and "not implemented yet" in out and "exercise hint 4" in out
    code, out, _ = run_cli(capsys, "check", "2", "--dir", str(work))
    assert code == 0 and out.startswith("PASS  02 broadcast")
    code, out, _ = run_cli(capsys, "list", "--dir", str(work))
    assert code == 0 and f"3 of {len(EXERCISES)} pass" in out
    assert re.search(r"1\s+chain_rule .* passes", out) and re.search(r"4\s+softmax .* not started",
                                                                     out)


def test_check_all_solutions_from_the_command_line(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    for exercise in EXERCISES:
        write(tmp_path, exercise, solved(exercise))
    code, out, _ = run_cli(capsys, "check", "--dir", str(tmp_path))
    assert code == 0 and out.count("PASS") == len(EXERCISES), out


def test_check_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(capsys, "check", "nope", "--dir", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "no exercise called 'nope'" in err
    code, _, err = run_cli(capsys, "check", "--dir", str(tmp_path))
    assert code == 1 and "no exercise files in" in err
    code, out, _ = run_cli(capsys, "list", "--dir", str(tmp_path))
    assert code == 0 and "no exercise files in" in out and "chain_rule" in out


# ----------------------------------------------------------------------------- hostile code

RIGHT_SOFTMAX = "y = forward(x)\n    right = y * (dy - (dy * y).sum(axis=-1, keepdims=True))\n"


def softmax_file(tmp_path: Path, body: str, module_level: str = "") -> Path:
    """04_softmax.py whose backward runs ``body`` (with ``right``, the right answer, at
    hand) before returning what ``body`` leaves in ``right``."""
    exercise = exercises.find("softmax")
    text = (exercises.stub_source(exercise) + "\nimport os, sys, threading, time\n"
            + textwrap.dedent(module_level) + "\n\ndef backward(dy, x):\n    " + RIGHT_SOFTMAX
            + textwrap.indent(textwrap.dedent(body), "    ") + "\n    return right\n")
    return write(tmp_path, exercise, text)


def check_softmax(tmp_path: Path, body: str, timeout: float = 10.0, module_level: str = "",
                  method: str | None = None) -> exercises.CheckResult:
    path = softmax_file(tmp_path, body, module_level)
    return exercises.check_file(exercises.find("softmax"), path, timeout=timeout,
                                method=method)


NEVER_ENDS = ["while True:\n    pass", "time.sleep(600)",
              "t = threading.Thread(target=time.sleep, args=(600,))\nt.start()\nt.join()"]


@pytest.mark.parametrize("body", NEVER_ENDS)
def test_a_file_that_never_finishes_is_stopped_at_the_limit(tmp_path: Path, body: str) -> None:
    import time

    start = time.monotonic()
    result = check_softmax(tmp_path, body, timeout=0.3)
    assert time.monotonic() - start < 5
    assert result.status == "fail" and "stopped after 0.3 s" in result.summary, result.summary


def test_input_does_not_wait(tmp_path: Path) -> None:
    result = check_softmax(tmp_path, "input('press enter')")
    assert "backward() raised EOFError" in result.summary, result.summary


def test_a_loop_in_any_exercise_is_stopped(tmp_path: Path) -> None:
    for exercise in EXERCISES[::6]:  # at import time: the checker runs nothing of its own
        path = write(tmp_path, exercise, "while True:\n    pass\n")
        result = exercises.check_file(exercise, path, timeout=0.3)
        assert "stopped after 0.3 s" in result.summary, (exercise.name, result.summary)


def test_ending_the_process_is_a_failure_not_a_pass(tmp_path: Path) -> None:
    result = check_softmax(tmp_path, "os._exit(0)")
    assert result.status == "fail" and "ended the checker's process" in result.summary
    result = check_softmax(tmp_path, "os.kill(os.getpid(), 9)")
    assert result.status == "fail" and "killed by signal SIGKILL" in result.summary
    result = check_softmax(tmp_path, "sys.exit(0)")
    assert result.status == "fail" and "backward() raised SystemExit" in result.summary


def test_monkeypatching_the_comparison_does_not_pass(tmp_path: Path) -> None:
    """The answers are compared in the checker's own process, with its own NumPy."""
    patch = """
        import minitransformer.exercises.checker as checker
        np.allclose = lambda *args, **kwargs: True
        np.testing.assert_allclose = lambda *args, **kwargs: None
        checker.close = lambda *args, **kwargs: True
        right = 2 * right
    """
    result = check_softmax(tmp_path, patch)
    assert result.status == "fail" and result.mistake == "factor off by a constant", \
        result.summary
    assert np.allclose(np.zeros(2), np.ones(2)) is False  # the parent's NumPy untouched


def test_closing_stdout_printing_and_threads_do_not_break_the_command(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import time

    softmax_file(tmp_path, """
        if not sys.stdout.closed:
            print("debug: dy has shape", dy.shape)
        threading.Thread(target=lambda: time.sleep(600)).start()  # never ends, not a daemon
        sys.stdout.close()
        sys.stderr.close()
    """)
    start = time.monotonic()
    code, out, _ = run_cli(capsys, "check", "softmax", "--dir", str(tmp_path))
    assert time.monotonic() - start < 5
    assert code == 0 and out.startswith("PASS  04 softmax"), out
    assert "your file printed:\n        | debug: dy has shape (5,)" in out


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
def test_processes_the_file_starts_end_with_it(tmp_path: Path) -> None:
    import subprocess
    import time

    pid_file = tmp_path / "pid"
    result = check_softmax(tmp_path, f"""
        import subprocess
        child = subprocess.Popen(["sleep", "600"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(600)
    """, timeout=0.5)
    assert "stopped after 0.5 s" in result.summary
    pid = int(pid_file.read_text())
    for _ in range(100):  # the kill is immediate; the kernel's reaping may take a moment
        state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True,
                               text=True).stdout.strip()
        if not state or state.startswith("Z"):
            break
        time.sleep(0.02)
    assert not state or state.startswith("Z"), state


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="the cap is Linux's")
def test_a_huge_allocation_is_a_memory_error(tmp_path: Path) -> None:
    result = check_softmax(tmp_path, "big = np.ones(2**29)  # 4 GiB, twice the cap")
    assert "backward() raised MemoryError" in result.summary, result.summary


def test_endless_printing_is_stopped(tmp_path: Path) -> None:
    result = check_softmax(tmp_path, "while True:\n    print('x' * 100)")
    assert result.status == "fail" and "printed more than 64 KiB" in result.summary
    assert len(result.output) <= 64 * 1024


@pytest.mark.parametrize(("body", "expected"), [
    ("right = right + 1e-3j", "dx is complex (complex128); a gradient of real inputs is real"),
    ("right = np.round(right).astype(int)", "dx has dtype int64, not a floating-point dtype"),
    ("right = right > 0", "dx has dtype bool, not a floating-point dtype"),
    ("right = right.astype(object)", "dx is a ndarray, not an array of numbers"),
    ("right = np.full_like(right, np.inf)", "dx holds inf at index (0,)"),
])
def test_results_of_the_wrong_kind_are_rejected(tmp_path: Path, body: str,
                                                expected: str) -> None:
    result = check_softmax(tmp_path, body)
    assert result.status == "fail" and expected in result.summary, result.summary


def test_the_spawned_child_where_fork_is_not_used(tmp_path: Path) -> None:
    """The same protection with a fresh interpreter (the default off Linux)."""
    result = check_softmax(tmp_path, "os._exit(0)", method="spawn")
    assert "ended the checker's process" in result.summary
    result = check_softmax(tmp_path, "print('hello')\nright = 2 * right", method="spawn")
    assert result.mistake == "factor off by a constant"
    assert set(result.output.splitlines()) == {"hello"}, result.output


def test_timeout_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    softmax_file(tmp_path, "print('before the sleep')\ntime.sleep(600)")
    code, out, _ = run_cli(capsys, "check", "softmax", "--dir", str(tmp_path),
                           "--timeout", "0.4")
    assert code == 1 and "stopped after 0.4 s" in out
    assert "your file printed:\n        | before the sleep" in out  # what it printed, still
    with pytest.raises(SystemExit) as exit_info:
        main(["exercise", "check", "--timeout", "-1"])
    assert exit_info.value.code == 2
    assert "not a positive number of seconds" in capsys.readouterr().err


# ----------------------------------------------------------------------------- docs


def test_docs_page_has_a_section_and_the_solution_of_every_exercise() -> None:
    page = (ROOT / "docs" / "exercises.md").read_text(encoding="utf-8")
    for exercise in EXERCISES:
        assert re.search(rf"^## {exercise.number}\. ", page, re.M), exercise.name
        solution = "\n".join(line for line in exercises.solution_source(exercise).splitlines()
                             if not line.startswith("# ruff:"))  # the linter's line only
        assert solution.strip() in page, (
            f"docs/exercises.md: the solution of {exercise.name} differs from "
            f"minitransformer/exercises/solutions/{exercise.filename}")
    assert page.count("<details>") == page.count("</details>") >= 3 * len(EXERCISES)


def test_the_package_ships_the_exercises_text() -> None:
    """An installed wheel has no docs/: `exercise hint` reads the package's copy."""
    import tomllib

    shipped = Path(exercises.__file__).parent / "exercises.md"
    assert shipped.read_text(encoding="utf-8") == (ROOT / "docs" / "exercises.md").read_text(
        encoding="utf-8"), "cp docs/exercises.md minitransformer/exercises/exercises.md"
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "exercises.md" in config["tool"]["setuptools"]["package-data"][
        "minitransformer.exercises"]


def test_hint_prints_the_section_without_the_solution(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(capsys, "hint", "softmax")
    assert code == 0 and out.startswith("## 4. Softmax") and "Hint 3:" in out
    assert "<details>" not in out and "Solution" not in out and "## 5." not in out
    assert "exercise hint 4 --solution" in out
    code, out, _ = run_cli(capsys, "hint", "4", "--solution")
    assert code == 0 and exercises.solution_source(exercises.find("softmax")).splitlines()[
        -1].strip() in out
    code, _, err = run_cli(capsys, "hint", "nope")
    assert code == 2 and err.count("\n") == 1 and "no exercise called 'nope'" in err
    for exercise in EXERCISES:  # every message points there, none to a file a wheel lacks
        assert "docs/exercises.md, section" not in exercises.stub_source(exercise)
