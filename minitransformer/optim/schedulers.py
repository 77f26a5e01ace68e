"""Learning-rate schedules: set each param group's ``lr`` as a function of the step count.

A scheduler starts at step 0 (its constructor already sets the step-0 learning rate, as
PyTorch's do) and ``scheduler.step()`` moves it one step on; call it once per optimizer
step, after ``optimizer.step()``. Every schedule here is a closed form in the step
:math:`t`, so the learning rate at any step can be recomputed from ``last_step`` alone,
which makes resuming from a checkpoint exact: restore both the optimizer's and the
scheduler's ``state_dict`` (the scheduler's holds the base learning rates).

    opt = AdamW(model.parameters(), lr=3e-4)
    sched = WarmupCosine(opt, warmup_steps=100, total_steps=2000, min_lr=3e-5)
    for batch in data:
        ...; opt.step(); sched.step()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from minitransformer.optim.optimizers import Optimizer


class LRScheduler:
    """Base class: subclasses give the learning rates at a step in :meth:`lr_at`.

    Attributes:
        base_lrs: each group's ``lr`` when the scheduler was made (the peak of a schedule).
        last_step: how many times :meth:`step` was called (PyTorch's ``last_epoch``).
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"expected an Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def lr_at(self, step: int) -> list[float]:
        """The learning rate of every param group at ``step``."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one step and set the optimizer's learning rates."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The learning rates the scheduler set last, one per param group."""
        return list(self._last_lr)

    def _apply(self) -> None:
        self._last_lr = self.lr_at(self.last_step)
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    # Hyperparameters that subclasses save in state_dict besides the step and base lrs.
    _saved: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        """``last_step``, ``base_lrs`` and the schedule's settings (not functions)."""
        state = {"last_step": self.last_step, "base_lrs": list(self.base_lrs)}
        return {**state, **{name: getattr(self, name) for name in self._saved}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` and set the learning rates of the restored step."""
        missing = [k for k in ("last_step", "base_lrs", *self._saved) if k not in state_dict]
        if missing:
            raise ValueError(f"scheduler state_dict lacks {', '.join(missing)}")
        self.last_step = int(state_dict["last_step"])
        self.base_lrs = list(state_dict["base_lrs"])
        for name in self._saved:
            setattr(self, name, state_dict[name])
        self._apply()


class LambdaLR(LRScheduler):
    r"""The base learning rate times a function of the step, as ``torch``'s ``LambdaLR``:

    .. math:: \eta_t = \eta_\text{base}\cdot\lambda(t)

    ``lr_lambda`` is one function for all groups or a list with one per group. The
    functions are not saved by :meth:`state_dict`; pass them again when resuming.
    """

    def __init__(self, optimizer: Optimizer,
                 lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]]) -> None:
        n_groups = len(optimizer.param_groups)
        if callable(lr_lambda):
            self.lr_lambdas = [lr_lambda] * n_groups
        else:
            self.lr_lambdas = list(lr_lambda)
            if len(self.lr_lambdas) != n_groups:
                raise ValueError(
                    f"got {len(self.lr_lambdas)} lr_lambdas for {n_groups} param groups"
                )
        super().__init__(optimizer)

    def lr_at(self, step: int) -> list[float]:
        return [base * fn(step) for base, fn in zip(self.base_lrs, self.lr_lambdas)]


class StepLR(LRScheduler):
    r"""Decay by ``gamma`` every ``step_size`` steps, as ``torch``'s ``StepLR``:

    .. math:: \eta_t = \eta_\text{base}\cdot\gamma^{\lfloor t / \text{step\_size}\rfloor}

    (PyTorch multiplies the previous lr by ``gamma``; the closed form here can differ from
    that product in the last bit.)
    """

    _saved = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: float, gamma: float = 0.1) -> None:
        if step_size <= 0:
            raise ValueError(f"StepLR: step_size must be positive, got {step_size}")
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer)

    def lr_at(self, step: int) -> list[float]:
        return [base * self.gamma ** (step // self.step_size) for base in self.base_lrs]


class _Warmup(LRScheduler):
    """Linear warm-up from 0 to the base lr over ``warmup_steps``, then ``_decay``:
    the shared part of :class:`WarmupCosine` and :class:`WarmupLinear`."""

    _saved = ("warmup_steps", "total_steps")

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int) -> None:
        if not 0 <= warmup_steps <= total_steps or total_steps < 1:
            raise ValueError(
                "need 0 <= warmup_steps <= total_steps and total_steps >= 1, got "
                f"warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        super().__init__(optimizer)

    def lr_at(self, step: int) -> list[float]:
        return [self._lr(base, step) for base in self.base_lrs]

    def _lr(self, base_lr: float, step: int) -> float:
        if step < self.warmup_steps:
            return base_lr * step / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)  # 0 -> 1 over the decay
        return self._decay(base_lr, progress)

    def _decay(self, base_lr: float, progress: float) -> float:
        raise NotImplementedError


class WarmupCosine(_Warmup):
    r"""Linear warm-up from 0 to the base lr, then a cosine decay to ``min_lr``.

    With warm-up length :math:`W`, total length :math:`T` and base lr :math:`\eta`:

    .. math::
        \eta_t = \begin{cases}
            \eta\, t / W & t < W \\
            \eta_\min + \tfrac12(\eta - \eta_\min)\big(1 + \cos(\pi p)\big),
            \quad p = \min\!\big(1, \tfrac{t - W}{T - W}\big) & t \ge W
        \end{cases}

    so :math:`\eta_0 = 0`, :math:`\eta_W = \eta`, halfway through the decay the lr is
    :math:`(\eta + \eta_\min)/2`, and from :math:`t = T` on it stays :math:`\eta_\min`.
    """

    _saved = ("warmup_steps", "total_steps", "min_lr")

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int,
                 min_lr: float = 0.0) -> None:
        self.min_lr = min_lr
        super().__init__(optimizer, warmup_steps, total_steps)

    def _decay(self, base_lr: float, progress: float) -> float:
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupLinear(_Warmup):
    r"""Linear warm-up from 0 to the base lr, then a linear decay to 0 at ``total_steps``.

    .. math::
        \eta_t = \begin{cases}
            \eta\, t / W & t < W \\
            \eta\, \max\!\big(0, \tfrac{T - t}{T - W}\big) & t \ge W
        \end{cases}
    """

    def _decay(self, base_lr: float, progress: float) -> float:
        return base_lr * (1.0 - progress)
