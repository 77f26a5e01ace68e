"""Optimizers, gradient clipping and learning-rate schedules, against PyTorch and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import optim
from tests.conftest import requires_torch, torch

SHAPES = [(3, 4), (5,)]


def loss_grad(x: np.ndarray) -> np.ndarray:
    """The gradient of L(x) = sum(sin(3x) + x^2 / 2): deterministic, bumpy, bounded below."""
    return 3 * np.cos(3 * x) + x


def make_params(dtype=np.float64) -> list[mt.Tensor]:
    rng = np.random.default_rng(42)
    return [mt.tensor(rng.standard_normal(s).astype(dtype), requires_grad=True) for s in SHAPES]


def set_grads(params: list[mt.Tensor]) -> None:
    for p in params:
        p.grad = mt.tensor(loss_grad(p.data))


def run_steps(opt: optim.Optimizer, params: list[mt.Tensor], n: int) -> None:
    for _ in range(n):
        opt.zero_grad()
        set_grads(params)
        opt.step()


def step_both(opt: optim.Optimizer, params: list[mt.Tensor], t_opt: torch.optim.Optimizer,
              t_params: list[torch.Tensor]) -> None:
    """One step of our optimizer and of PyTorch's, on the same loss gradients."""
    run_steps(opt, params, 1)
    t_opt.zero_grad()
    for tp in t_params:
        tp.grad = torch.from_numpy(loss_grad(tp.detach().numpy()))
    t_opt.step()


def assert_same_values(params: list[mt.Tensor], t_params: list[torch.Tensor]) -> None:
    for p, tp in zip(params, t_params):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=0, atol=1e-10)


CONFIGS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.5)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05)),
    ("Adam", dict(lr=0.05)),
    ("Adam", dict(lr=0.05, weight_decay=0.1)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-4)),
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3, betas=(0.85, 0.95))),
]
CONFIG_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in CONFIGS]


@requires_torch
@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=CONFIG_IDS)
def test_ten_steps_match_torch(name, kwargs):
    params = make_params()
    idle = mt.tensor(np.ones(2), requires_grad=True)  # never gets a gradient
    frozen = mt.tensor(np.ones(2))  # does not require grad: accepted, skipped
    opt = getattr(optim, name)([*params, idle, frozen], **kwargs)
    t_params = [torch.tensor(p.data, requires_grad=True) for p in params]
    t_opt = getattr(torch.optim, name)(t_params, **kwargs)
    arrays = [p.data for p in params]

    for _ in range(10):
        step_both(opt, params, t_opt, t_params)
        assert_same_values(params, t_params)

    for p, array in zip(params, arrays):
        assert p.data is array  # updated in place
        assert p.dtype == np.float64 and p.is_leaf and p.requires_grad
    assert np.array_equal(idle.data, np.ones(2)) and idle not in opt.state
    assert np.array_equal(frozen.data, np.ones(2))
    assert not np.allclose(params[0].data, make_params()[0].data)  # it did move


@requires_torch
def test_param_groups_with_their_own_lr_match_torch():
    params = make_params()
    opt = optim.SGD([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.01}],
                    lr=0.1, momentum=0.9)
    t_params = [torch.tensor(p.data, requires_grad=True) for p in params]
    t_opt = torch.optim.SGD([{"params": [t_params[0]]}, {"params": [t_params[1]], "lr": 0.01}],
                            lr=0.1, momentum=0.9)
    for _ in range(5):
        step_both(opt, params, t_opt, t_params)
    assert_same_values(params, t_params)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]


def test_adam_first_step_moves_each_weight_by_lr():
    # On step 1 the bias-corrected m/sqrt(v) is g/|g| = sign(g): every weight moves by lr.
    params = make_params()
    before = [p.data.copy() for p in params]
    opt = optim.Adam(params, lr=0.01, eps=0.0)
    set_grads(params)
    opt.step()
    for p, b in zip(params, before):
        np.testing.assert_allclose(b - p.data, 0.01 * np.sign(loss_grad(b)), rtol=1e-12)


def test_adamw_decay_is_decoupled_from_the_gradient():
    # With a zero gradient Adam's step is 0, so AdamW only shrinks: theta * (1 - lr * wd).
    p = mt.tensor(np.array([1.0, -2.0]), requires_grad=True)
    opt = optim.AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = mt.tensor(np.zeros(2))
    opt.step()
    np.testing.assert_allclose(p.data, [0.95, -1.9], rtol=1e-15)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_float32_stays_float32(name):
    params = make_params(np.float32)
    kwargs = {"lr": 0.01, "momentum": 0.9} if name == "SGD" else {"lr": 0.01}
    opt = getattr(optim, name)(params, **kwargs)
    run_steps(opt, params, 3)
    for p in params:
        assert p.dtype == np.float32
        for value in opt.state[p].values():
            assert not isinstance(value, np.ndarray) or value.dtype == np.float32


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=CONFIG_IDS)
def test_state_dict_resume_continues_identically(name, kwargs):
    params = make_params()
    opt = getattr(optim, name)(params, **kwargs)
    run_steps(opt, params, 4)
    snapshot = opt.state_dict()
    saved_params = [p.data.copy() for p in params]
    run_steps(opt, params, 5)  # the uninterrupted run

    resumed = [mt.tensor(a, requires_grad=True) for a in saved_params]
    fresh_kwargs = {**kwargs, "lr": 123.0}  # hyperparameters come from the snapshot
    opt2 = getattr(optim, name)(resumed, **fresh_kwargs)
    opt2.load_state_dict(snapshot)
    run_steps(opt2, resumed, 5)
    for p, q in zip(params, resumed):
        assert np.array_equal(p.data, q.data)
    assert opt2.param_groups[0]["lr"] == kwargs["lr"]


def test_state_dict_is_a_snapshot_with_string_indices():
    params = make_params()
    opt = optim.Adam(params, lr=0.1)
    run_steps(opt, params, 2)
    snapshot = opt.state_dict()
    exp_avg = snapshot["state"]["1"]["exp_avg"].copy()
    run_steps(opt, params, 2)
    assert sorted(snapshot["state"]) == ["0", "1"]
    assert snapshot["state"]["0"]["step"] == 2
    assert np.array_equal(snapshot["state"]["1"]["exp_avg"], exp_avg)
    assert snapshot["param_groups"] == [
        {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "params": [0, 1]}
    ]


def test_load_state_dict_checks_group_sizes():
    params = make_params()
    snapshot = optim.SGD(params, lr=0.1).state_dict()
    with pytest.raises(ValueError, match="has 1 parameters.*has 2"):
        optim.SGD(params[:1], lr=0.1).load_state_dict(snapshot)
    two_groups = optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="1 param groups.*has 2"):
        two_groups.load_state_dict(snapshot)


def test_zero_grad_and_step_record_no_graph():
    params = make_params()
    opt = optim.SGD(params, lr=0.1, momentum=0.5)
    set_grads(params)
    opt.step()
    assert all(p._ctx is None for p in params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_step_with_closure_returns_the_loss():
    x = mt.tensor(np.array([3.0]), requires_grad=True)
    opt = optim.SGD([x], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (x * x).sum()
        loss.backward()
        return loss

    with mt.no_grad():  # the closure still records: step turns grad mode back on
        loss = opt.step(closure)
    assert loss.item() == 9.0
    assert x.data[0] == 3.0 - 0.25 * 6.0


def test_trains_a_tiny_least_squares_model():
    rng = np.random.default_rng(0)
    inputs = mt.tensor(rng.standard_normal((32, 3)))
    true_w = np.array([[1.5], [-2.0], [0.5]])
    targets = mt.tensor(inputs.data @ true_w)
    w = mt.tensor(np.zeros((3, 1)), requires_grad=True)
    opt = optim.Adam([w], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        ((inputs @ w - targets) ** 2).mean().backward()
        opt.step()
    np.testing.assert_allclose(w.data, true_w, atol=1e-3)


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.SGD(p, lr=-0.5), "lr=-0.5"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.25), "momentum=-0.25"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "momentum=0"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     "dampening=0.1"),
    (lambda p: optim.SGD(p, lr=0.1, weight_decay=-1e-3), "weight_decay=-0.001"),
    (lambda p: optim.Adam(p, lr=-1e-3), "lr=-0.001"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.999)), r"betas\[0\]=1.0"),
    (lambda p: optim.AdamW(p, betas=(0.9, -0.5)), r"betas\[1\]=-0.5"),
    (lambda p: optim.Adam(p, eps=-1e-8), "eps=-1e-08"),
    (lambda p: optim.SGD([{"params": p, "lr": -2.0}], lr=0.1), "lr=-2.0"),
])
def test_bad_hyperparameters_name_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make(make_params())


def test_bad_params_arguments():
    params = make_params()
    with pytest.raises(TypeError, match=r"single Tensor of shape \(3, 4\)"):
        optim.SGD(params[0], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(TypeError, match="params\\[1\\].*ndarray"):
        optim.Adam([params[0], np.zeros(3)])
    with pytest.raises(ValueError, match="non-leaf.*shape \\(3, 4\\)"):
        optim.Adam([params[0] * 2])
    with pytest.raises(ValueError, match="more than once"):
        optim.Adam([params[0], params[0]])
    opt = optim.Adam([params[0]])
    with pytest.raises(ValueError, match="more than once"):
        opt.add_param_group({"params": [params[0]]})


def test_add_param_group_takes_the_defaults():
    params = make_params()
    opt = optim.AdamW([params[0]], lr=0.01, weight_decay=0.2)
    opt.add_param_group({"params": params[1], "lr": 0.5})
    assert opt.param_groups[1]["params"] == [params[1]]
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["weight_decay"] == 0.2
    set_grads(params)
    opt.step()
    assert opt.state[params[1]]["step"] == 1


# ----- clip_grad_norm_ -------------------------------------------------------------------------
@requires_torch
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    params = make_params()
    set_grads(params)
    t_params = [torch.tensor(p.data, requires_grad=True) for p in params]
    for p, tp in zip(params, t_params):
        tp.grad = torch.tensor(p.grad.data)
    total = optim.clip_grad_norm_(params, max_norm, norm_type)
    t_total = torch.nn.utils.clip_grad_norm_(t_params, max_norm, norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(t_total.item(), rel=1e-12)
    for p, tp in zip(params, t_params):
        np.testing.assert_allclose(p.grad.data, tp.grad.numpy(), rtol=1e-12, atol=0)


def test_clip_grad_norm_scales_to_max_norm():
    a = mt.tensor(np.array([3.0, 0.0]), requires_grad=True)
    b = mt.tensor(np.array([[4.0]]), requires_grad=True)
    none = mt.tensor(np.array([1.0]), requires_grad=True)
    a.grad, b.grad = mt.tensor(np.array([3.0, 0.0])), mt.tensor(np.array([[4.0]]))
    assert optim.clip_grad_norm_([a, b, none], max_norm=1.0) == 5.0
    np.testing.assert_allclose(a.grad.data, [3 / (5 + 1e-6), 0.0], rtol=1e-15)
    np.testing.assert_allclose(b.grad.data, [[4 / (5 + 1e-6)]], rtol=1e-15)
    assert none.grad is None
    assert optim.clip_grad_norm_([none], 1.0) == 0.0


@pytest.mark.parametrize("sharing", ["create_graph", "same_tensor"])
def test_clip_grad_norm_scales_shared_gradients_once(sharing):
    # backward(create_graph=True) hands both inputs of a + b the very same gradient tensor
    # (a read-only broadcast view, after sum); a user may also share one on purpose.
    # Each parameter's gradient must be scaled exactly once, and not fail.
    a = mt.tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = mt.tensor(np.array([3.0, 4.0]), requires_grad=True)
    if sharing == "create_graph":
        ((a + b).sum() * 3.0).backward(create_graph=True)
    else:
        a.grad = b.grad = mt.tensor(np.array([3.0, 3.0]))
    assert a.grad is b.grad  # the situation under test
    norm = optim.clip_grad_norm_([a, b], max_norm=1.0)
    assert norm == pytest.approx(6.0, rel=1e-15)  # sqrt(4 * 3^2)
    for p in (a, b):
        np.testing.assert_allclose(p.grad.data, [3 / (6 + 1e-6)] * 2, rtol=1e-15)


def test_clip_grad_norm_keeps_float32():
    p = mt.tensor(np.ones(4, np.float32), requires_grad=True)
    p.grad = mt.tensor(np.full(4, 10.0, np.float32))
    optim.clip_grad_norm_(p, 1.0)
    assert p.grad.dtype == np.float32
    np.testing.assert_allclose(p.grad.data, np.full(4, 0.5), rtol=1e-6)


# ----- schedulers ------------------------------------------------------------------------------
def lrs_over(scheduler: optim.LRScheduler, n: int) -> list[float]:
    """The first group's lr at steps 0..n-1, checking the optimizer agrees with get_last_lr."""
    lrs = []
    for _ in range(n):
        assert scheduler.optimizer.param_groups[0]["lr"] == scheduler.get_last_lr()[0]
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.step()
    return lrs


def test_warmup_cosine_closed_form():
    opt = optim.SGD(make_params(), lr=1.0)
    sched = optim.lr_scheduler.WarmupCosine(opt, warmup_steps=10, total_steps=50, min_lr=0.1)
    lrs = lrs_over(sched, 60)
    assert lrs[0] == 0.0
    assert lrs[5] == pytest.approx(0.5)  # halfway through the warm-up
    assert lrs[10] == pytest.approx(1.0)  # the peak
    assert lrs[30] == pytest.approx(0.55)  # halfway through the decay: (1 + 0.1) / 2
    assert lrs[50] == pytest.approx(0.1) and lrs[59] == pytest.approx(0.1)  # floor
    for t in (17, 23, 44):
        assert lrs[t] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * (t - 10) / 40)))
    assert all(x >= y for x, y in zip(lrs[10:], lrs[11:]))  # decays monotonically


def test_warmup_linear_closed_form():
    params = make_params()
    opt = optim.AdamW([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.2}], lr=2.0)
    sched = optim.schedulers.WarmupLinear(opt, warmup_steps=4, total_steps=20)
    lrs = lrs_over(sched, 25)
    assert lrs[:5] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert lrs[12] == pytest.approx(1.0)  # halfway down
    assert lrs[20:] == [0.0] * 5
    sched.last_step = 13
    sched.step()
    assert sched.get_last_lr() == pytest.approx([2.0 * 6 / 16, 0.2 * 6 / 16])


def test_warmup_without_warmup_steps_starts_at_the_peak():
    opt = optim.SGD(make_params(), lr=0.3)
    sched = optim.WarmupCosine(opt, warmup_steps=0, total_steps=10)
    assert sched.get_last_lr() == [0.3]


@pytest.mark.parametrize("warmup, total", [(-1, 10), (11, 10), (0, 0)])
def test_bad_schedule_lengths(warmup, total):
    opt = optim.SGD(make_params(), lr=0.3)
    with pytest.raises(ValueError, match=f"warmup_steps={warmup}, total_steps={total}"):
        optim.WarmupLinear(opt, warmup, total)


@requires_torch
def test_lambda_lr_matches_torch():
    def decay(step):
        return 0.9**step

    def zigzag(step):
        return 1.0 / (1 + step % 3)

    params = make_params()
    opt = optim.SGD([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.5}], lr=0.1)
    sched = optim.LambdaLR(opt, [decay, zigzag])
    t_params = [torch.zeros(1, requires_grad=True) for _ in range(2)]
    t_opt = torch.optim.SGD([{"params": [t_params[0]]}, {"params": [t_params[1]], "lr": 0.5}],
                            lr=0.1)
    t_sched = torch.optim.lr_scheduler.LambdaLR(t_opt, [decay, zigzag])
    for _ in range(12):
        assert sched.get_last_lr() == pytest.approx(t_sched.get_last_lr(), rel=1e-15)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(
            [g["lr"] for g in t_opt.param_groups], rel=1e-15)
        opt.step()
        t_opt.step()
        sched.step()
        t_sched.step()


def test_lambda_lr_needs_one_function_per_group():
    opt = optim.SGD(make_params(), lr=0.1)
    with pytest.raises(ValueError, match="2 lr_lambdas for 1 param groups"):
        optim.LambdaLR(opt, [lambda s: 1.0, lambda s: 1.0])


def test_scheduler_resume_from_state_dict():
    opt = optim.AdamW(make_params(), lr=1e-2)
    sched = optim.WarmupCosine(opt, warmup_steps=3, total_steps=20, min_lr=1e-4)
    for _ in range(7):
        sched.step()
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    expected = lrs_over(sched, 5)

    opt2 = optim.AdamW(make_params(), lr=1e-2)
    sched2 = optim.WarmupCosine(opt2, warmup_steps=1, total_steps=2)  # settings get restored
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    assert sched_state == {"last_step": 7, "base_lrs": [1e-2], "warmup_steps": 3,
                           "total_steps": 20, "min_lr": 1e-4}
    assert lrs_over(sched2, 5) == expected
    with pytest.raises(ValueError, match="lacks last_step"):
        sched2.load_state_dict({"base_lrs": [1.0]})


def test_scheduled_lr_is_used_by_step():
    p = mt.tensor(np.array([1.0]), requires_grad=True)
    opt = optim.SGD([p], lr=1.0)
    sched = optim.LambdaLR(opt, lambda step: 0.5 ** (step + 1))
    for _ in range(3):
        p.grad = mt.tensor(np.array([1.0]))
        opt.step()
        sched.step()
    np.testing.assert_allclose(p.data, [1.0 - (0.5 + 0.25 + 0.125)], rtol=1e-15)


@pytest.mark.parametrize("name, kwargs", [CONFIGS[5], CONFIGS[7], CONFIGS[10]],
                         ids=[CONFIG_IDS[5], CONFIG_IDS[7], CONFIG_IDS[10]])
def test_on_each_device_matches_the_cpu_run(device, name, kwargs):
    cpu_params = make_params()
    cpu_opt = getattr(optim, name)(cpu_params, **kwargs)
    run_steps(cpu_opt, cpu_params, 3)
    snapshot = cpu_opt.state_dict()
    params = [mt.tensor(p.data, requires_grad=True, device=device) for p in cpu_params]
    run_steps(cpu_opt, cpu_params, 3)

    # Resume on `device` from the CPU snapshot: the state moves to the parameters' device.
    opt = getattr(optim, name)(params, **kwargs)
    opt.load_state_dict(snapshot)
    for _ in range(3):
        opt.zero_grad()
        for p in params:
            p.grad = mt.tensor(loss_grad(p.detach().numpy()), device=device)
        opt.step()
    for p, c in zip(params, cpu_params):
        assert p.device == device and p.dtype == np.float64
        np.testing.assert_allclose(p.detach().numpy(), c.data, rtol=0, atol=1e-12)
    for value in opt.state[params[0]].values():
        assert not mt.backend.is_array(value) or mt.backend.device_of(value) == device


def test_clip_grad_norm_on_each_device(device):
    params = [mt.tensor(p.data, requires_grad=True, device=device) for p in make_params()]
    for p in params:
        p.grad = mt.tensor(loss_grad(p.detach().numpy()), device=device)
    expected = np.sqrt(sum((loss_grad(p.detach().numpy()) ** 2).sum() for p in params))
    assert optim.clip_grad_norm_(params, max_norm=1.0) == pytest.approx(expected, rel=1e-12)
    clipped = np.sqrt(sum((p.grad.numpy() ** 2).sum() for p in params))
    assert clipped == pytest.approx(1.0 / (1 + 1e-6 / expected), rel=1e-12)
    assert all(p.grad.device == device for p in params)
