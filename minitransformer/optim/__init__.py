"""Optimizers, learning-rate schedules and gradient clipping.

    from minitransformer import optim
    opt = optim.AdamW(model.parameters(), lr=3e-4)
    sched = optim.lr_scheduler.WarmupCosine(opt, warmup_steps=100, total_steps=2000)
"""

from minitransformer.optim import schedulers
from minitransformer.optim import schedulers as lr_scheduler  # PyTorch's name for the module
from minitransformer.optim.clip_grad import clip_grad_norm_
from minitransformer.optim.optimizers import SGD, Adam, AdamW, Optimizer
from minitransformer.optim.schedulers import (
    LambdaLR,
    LRScheduler,
    StepLR,
    WarmupCosine,
    WarmupLinear,
)

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "LRScheduler",
    "LambdaLR",
    "Optimizer",
    "StepLR",
    "WarmupCosine",
    "WarmupLinear",
    "clip_grad_norm_",
    "lr_scheduler",
    "schedulers",
]
