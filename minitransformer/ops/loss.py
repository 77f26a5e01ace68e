"""Cross-entropy as one fused node, with its backward derived by hand.

The public wrapper, with the argument checks, is :func:`minitransformer.functional.cross_entropy`.
"""

from __future__ import annotations

from typing import Any

from minitransformer import backend
from minitransformer.autograd import Function, Value


class CrossEntropy(Function):
    """loss_n = -log softmax(z_n)[t_n] = logsumexp(z_n) - z_n[t_n] for each row n of logits z.

    Derivation. With p = softmax(z_n) and y the one-hot vector of the target t_n,
        d logsumexp(z_n) / dz_j = e^{z_j} / sum_k e^{z_k} = p_j,    d z_n[t_n] / dz_j = y_j,
    so  d loss_n / dz_j = p_j - y_j.  The reduction scales each row: "sum" by 1, "mean" by
    1 / count (count = the rows not ignored), and rows whose target is ``ignore_index``
    count for nothing, so

        dz = (softmax(z) - onehot(t)) * upstream / count,   and 0 on ignored rows.

    ``forward`` gets the logits array; the targets and options are parameters.
    """

    def forward(self, logits: Any, target: Any, keep: Any, reduction: str) -> Any:
        xp = backend.array_module_of(logits)
        self.target, self.keep, self.reduction = target, keep, reduction
        self.count = max(int(keep.sum()), 1)  # all rows ignored: a mean of nothing is 0
        shifted = logits - logits.max(axis=-1, keepdims=True)  # (..., C), max is 0: no overflow
        picked = xp.take_along_axis(shifted, target[..., None], axis=-1)[..., 0]  # (...)
        log_total = xp.log(xp.exp(shifted).sum(axis=-1))  # (...)
        losses = (log_total - picked) * keep  # (...), 0 on ignored rows
        if reduction == "none":
            return losses
        total = losses.sum()
        return total / self.count if reduction == "mean" else total

    def backward(self, grad: Value) -> tuple[Value]:
        (logits,) = self.args
        probs = self.xp.softmax(logits, axis=-1)  # (..., C)
        classes = backend.array_module_of(self.target).arange(logits.shape[-1])
        onehot = (classes == self.target[..., None]).astype(logits.dtype)  # (..., C)
        row_weight = self.keep[..., None].astype(logits.dtype)  # (..., 1): 0 on ignored rows
        if self.reduction == "mean":
            row_weight = row_weight / self.count
        if self.reduction == "none":
            grad = grad.reshape(grad.shape + (1,))  # (...) -> (..., 1)
        return ((probs - onehot) * (grad * row_weight),)
