"""Every differentiable op, grouped by kind; each file keeps forward and backward together."""

from minitransformer.ops.activations import (
    dropout,
    gelu,
    log_softmax,
    logsumexp,
    relu,
    sigmoid,
    softmax,
    tanh,
)
from minitransformer.ops.elementwise import (
    abs,
    add,
    clamp,
    clip,
    cos,
    div,
    erf,
    exp,
    log,
    masked_fill,
    maximum,
    minimum,
    mul,
    neg,
    pow,
    sin,
    sqrt,
    sub,
    to,
    where,
)
from minitransformer.ops.matmul import matmul
from minitransformer.ops.reductions import max, mean, min, sum, var
from minitransformer.ops.shape import (
    broadcast_to,
    cat,
    concat,
    expand_dims,
    flatten,
    getitem,
    permute,
    reshape,
    split,
    squeeze,
    stack,
    swapaxes,
    transpose,
    unbroadcast,
    unsqueeze,
)

__all__ = [
    "abs", "add", "broadcast_to", "cat", "clamp", "clip", "concat", "cos", "div", "dropout",
    "erf", "exp", "expand_dims", "flatten", "gelu", "getitem", "log", "log_softmax", "logsumexp",
    "masked_fill", "matmul", "max", "maximum", "mean", "min", "minimum", "mul", "neg", "permute",
    "pow", "relu", "reshape", "sigmoid", "sin", "softmax", "split", "sqrt", "squeeze", "stack",
    "sub", "sum", "swapaxes", "tanh", "to", "transpose", "unbroadcast", "unsqueeze", "var",
    "where",
]
