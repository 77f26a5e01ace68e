"""Cross-entropy as one fused node, with its backward derived by hand.

The public wrapper, with PyTorch's layouts and the argument checks, is
:func:`minitransformer.functional.cross_entropy`; it hands this node rows of logits (M, C)
and, for each row, the target weights q (M, C) that every option reduces to.
"""

from __future__ import annotations

from typing import Any

from minitransformer import backend
from minitransformer.autograd import Function, Value


class CrossEntropy(Function):
    """loss_n = -sum_c q_nc log softmax(z_n)_c for each row n of logits z (M, C).

    Every form of PyTorch's cross-entropy is this with some q (a constant):
      * class index t_n: q_nc = (1 - eps) w_{t_n} [c = t_n] + (eps / C) w_c, and q_n = 0
        on the rows whose target is ``ignore_index``;
      * class probabilities y_n: q_nc = w_c ((1 - eps) y_nc + eps / C);
    with class weights w (all 1 by default) and label smoothing eps.

    Derivation. log softmax(z)_c = z_c - logsumexp(z), and d logsumexp(z) / dz_j = p_j
    (p = softmax(z)), so
        d loss_n / dz_j = -q_nj + p_j sum_c q_nc.
    For one-hot q (no weight, no smoothing) that is the familiar p - onehot. The reduction
    divides the sum of the losses by ``denominator`` ("mean": the summed weight of the rows
    that count, as PyTorch; "sum": 1), or keeps each row ("none"). A mean over no row (every
    target ignored) is NaN with zero gradients, as PyTorch's.
    """

    def forward(self, logits: Any, q: Any, denominator: float, reduction: str) -> Any:
        xp = backend.array_module_of(logits)
        self.q, self.reduction, self.denominator = q, reduction, denominator
        self.q_total = q.sum(axis=-1, keepdims=True)  # (M, 1): sum_c q_nc
        shifted = logits - logits.max(axis=-1, keepdims=True)  # (M, C), max is 0: no overflow
        log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))  # (M, C)
        # 0 * log p stays 0 where a logit is -inf (a masked class): p = 0, log p = -inf
        losses = -(q * xp.where(q != 0, log_probs, 0)).sum(axis=-1)  # (M,)
        if reduction == "none":
            return losses
        if denominator == 0:  # a mean over no row (every target ignored): NaN, as PyTorch
            return xp.full((), xp.nan, dtype=losses.dtype)
        return losses.sum() / denominator

    def backward(self, grad: Value) -> tuple[Value]:
        (logits,) = self.args
        probs = self.xp.softmax(logits, axis=-1)  # (M, C)
        d_logits = probs * self.q_total - self.q  # (M, C): d loss_n / dz_n
        if self.reduction == "none":
            return (d_logits * grad.reshape(grad.shape + (1,)),)  # (M,) -> (M, 1)
        if self.denominator == 0:  # no row counts: every gradient is 0, as in PyTorch
            return (d_logits * 0,)
        return (d_logits * (grad / self.denominator),)
