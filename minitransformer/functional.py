"""Stateless building blocks of a transformer: losses, normalisation, attention.

    import minitransformer.functional as F
    loss = F.cross_entropy(logits, targets)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # as in PyTorch
    out, weights = F.scaled_dot_product_attention_with_weights(q, k, v, is_causal=True)

Most functions here are compositions of engine ops, so autograd differentiates them with
no new code. Three are fused :class:`~minitransformer.autograd.Function` s with a backward
derived by hand, because they are where learners study backprop and where speed matters:
:class:`CrossEntropy`, :class:`LayerNorm` and :class:`ScaledDotProductAttention`. Each is
checked against finite differences and against PyTorch in the tests, and layer norm and
attention also against :func:`layer_norm_reference` and :func:`attention_reference`, the
same maths built from primitive ops only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minitransformer import backend, ops
from minitransformer.errors import (
    DtypeError,
    DtypeMismatchError,
    ShapeError,
    cpp_dtype_name,
    is_torch_tensor,
    not_a_tensor,
    torch_dtype_name,
)
from minitransformer.ops import sdpa
from minitransformer.ops.attention import AttentionWeights, ScaledDotProductAttention
from minitransformer.ops.loss import CrossEntropy
from minitransformer.ops.matmul import Linear
from minitransformer.ops.norm import LayerNorm
from minitransformer.ops.registry import register
from minitransformer.tensor import Tensor

# The activations and the softmax family are engine ops; they are re-exported here so that
# ``F.<name>`` covers everything a layer needs. ``softmax``, ``log_softmax`` and
# ``logsumexp`` subtract the row maximum before exponentiating, so logits of +-1e4 are fine.
gelu = ops.gelu
dropout = ops.dropout
masked_softmax = ops.masked_softmax
logsumexp = ops.logsumexp
relu = ops.relu
tanh = ops.tanh
sigmoid = ops.sigmoid



def silu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002  (PyTorch's name)
    """SiLU(x) = x * sigmoid(x) (also called swish), as ``torch.nn.functional.silu``;
    dSiLU/dx = s + x s (1 - s) with s = sigmoid(x).

    Composed of two engine ops, so autograd derives that (and the second derivative) itself."""
    if inplace:  # PyTorch's argument: the input itself would change
        raise NotImplementedError("silu(inplace=True) is not supported here; write "
                                  "F.silu(x) (the same output, the input unchanged)")
    if input.dtype.kind not in "fc":  # as torch: no integer SiLU, rather than pick a float type
        kind = {"b": "Bool", "i": "Long" if input.dtype.itemsize == 8 else "Int"}.get(
            input.dtype.kind, str(input.dtype))
        raise DtypeError(f'"silu" not implemented for \'{kind}\': silu needs a floating-point '
                         "tensor (convert first: F.silu(x.float()))")
    return input * ops.sigmoid(input)


def implicit_softmax_dim(name: str, ndim: int) -> int:
    """The dim PyTorch's ``F.softmax(x)`` (no dim) picks, with PyTorch's warning: 0 for a
    0-, 1- or 3-D input, else 1 (NOT the last axis for 3-D and more)."""
    import warnings

    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call "
                  "to include dim=X as an argument.", UserWarning, stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None,
            *, axis: int | None = None) -> Tensor:
    """``torch.nn.functional.softmax``: along ``dim`` (``axis``, NumPy's name); ``dtype``
    casts the input first. Without a dim, PyTorch's deprecated implicit choice, with its
    warning: dim 0 for a 3-D input, not the last axis; pass ``dim=-1``."""
    dim = dim if axis is None else axis
    if dim is None:
        dim = implicit_softmax_dim("softmax", input.ndim)
    return ops.softmax(input if dtype is None else input.to(dtype), dim)


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,
                dtype: Any = None, *, axis: int | None = None) -> Tensor:
    """``torch.nn.functional.log_softmax``; the dim rules of :func:`softmax`."""
    dim = dim if axis is None else axis
    if dim is None:
        dim = implicit_softmax_dim("log_softmax", input.ndim)
    return ops.log_softmax(input if dtype is None else input.to(dtype), dim)


__all__ = [
    "AttentionWeights", "CrossEntropy", "LayerNorm", "Linear", "ScaledDotProductAttention",
    "attention_reference", "composed_attention", "cross_entropy", "dropout", "embedding",
    "gelu", "layer_norm", "layer_norm_reference", "linear", "linear_reference", "log_softmax",
    "masked_softmax",
    "logsumexp", "mse_loss", "relu", "scaled_dot_product_attention",
    "scaled_dot_product_attention_with_weights", "sigmoid", "silu", "softmax",
    "tanh", "one_hot",
]


def _constant(array: Any, device: str) -> Tensor:
    """An array as a tensor outside the graph (masks, one-hot targets, saved values)."""
    return Tensor._from_array(array, device)


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """``out[..., c] = 1 if tensor[...] == c else 0``: int64 indices of any shape to an int64
    tensor with one more (last) axis of ``num_classes``, as ``torch.nn.functional.one_hot``;
    ``num_classes=-1``: ``tensor.max() + 1``. Not differentiable (integers in, integers out).
    """
    if not isinstance(tensor, Tensor):
        raise not_a_tensor(tensor, "one_hot's tensor")
    if tensor.dtype != np.int64:  # torch's rule: int32 indices are refused too
        raise DtypeMismatchError("one_hot is only applicable to index tensor of type "
                                 f"LongTensor, got {torch_dtype_name(tensor.dtype)} "
                                 "(convert first: t.long())")
    xp = backend.array_module(tensor.device)
    indices = tensor.data
    if num_classes == -1:
        if indices.size == 0:
            raise RuntimeError("Can not infer total number of classes from empty tensor.")
        num_classes = int(indices.max()) + 1
    if indices.size and int(indices.min()) < 0:
        raise RuntimeError("Class values must be non-negative.")
    if num_classes < 0 or indices.size and int(indices.max()) >= num_classes:
        raise RuntimeError("Class values must be smaller than num_classes.")
    # compare each index with 0..C-1 along a new last axis: True exactly at its class
    out = (indices[..., None] == xp.arange(num_classes)).astype(np.int64)
    return _constant(out, tensor.device)

def _integer_array(indices: Any, device: str, what: str) -> Any:
    """Integer indices (a Tensor, an array or a list) as a backend array on ``device``."""
    if is_torch_tensor(indices):
        raise not_a_tensor(indices, what)
    data = indices.data if isinstance(indices, Tensor) else indices
    if not backend.is_array(data):
        data = np.asarray(data)
    if data.dtype.kind not in "iu":
        raise DtypeError(f"{what} must hold integers, got dtype {data.dtype}")
    return backend.to_device(data, device)


# ----- layers as functions ---------------------------------------------------------------------
@register(top_level=False)  # a fused node: in the gradient test lists
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, with W of shape (out_features, in_features) as in PyTorch.

    x (..., in) @ W^T (in, out) -> y (..., out); b (out,) broadcasts over the leading axes.
    One fused node (:class:`minitransformer.ops.matmul.Linear`); :func:`linear_reference`
    is the same from ``@`` and ``+``.
    """
    for name, value in (("input", x), ("weight", weight), ("bias", bias)):
        if value is not None and not isinstance(value, Tensor):
            raise not_a_tensor(value, f"linear: {name}")
    if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ShapeError(
            f"linear: input of shape {x.shape} does not fit weight of shape {weight.shape}; "
            "the weight must be (out_features, in_features) with in_features = input.shape[-1]"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ShapeError(
            f"linear: bias of shape {bias.shape} does not fit weight of shape {weight.shape}; "
            f"expected ({weight.shape[0]},)"
        )
    _check_linear_dtypes(x, weight, bias)
    if bias is None:
        return Linear.apply(x, weight)
    return Linear.apply(x, weight, bias)


def _check_linear_dtypes(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """PyTorch's errors for a linear of two dtypes (it never promotes there), with the fix."""
    if x.dtype != weight.dtype:
        raise DtypeMismatchError(
            f"expected m1 and m2 to have the same dtype, but got: {cpp_dtype_name(x.dtype)} "
            f"!= {cpp_dtype_name(weight.dtype)} (linear of an input of {x.dtype} and a weight "
            f"of {weight.dtype}: convert the input, x.to({weight.dtype}), or the layer, "
            f"layer.to({x.dtype}))")
    if bias is not None and bias.dtype != weight.dtype:
        raise DtypeMismatchError(
            f"self and mat2 must have the same dtype, but got {torch_dtype_name(bias.dtype)} and "
            f"{torch_dtype_name(weight.dtype)} (linear with a bias of {bias.dtype} and a weight of "
            f"{weight.dtype}: convert the bias, bias.to({weight.dtype}))")


def linear_reference(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The same as :func:`linear` from primitive ops, for the tests (and for reading)."""
    y = x @ weight.T  # (..., in) @ (in, out) -> (..., out)
    return y if bias is None else y + bias


def embedding(indices: Any, weight: Tensor) -> Tensor:
    """Row ``indices[...]`` of ``weight`` (num_embeddings, dim) -> (*indices.shape, dim).

    Looking up rows is indexing, so the backward is indexing's: the gradient of each output
    row is added to the row it came from, and a row looked up twice gets both gradients.
    """
    if weight.ndim != 2:
        raise ShapeError(f"embedding weight must be (num_embeddings, dim), got {weight.shape}")
    index = _integer_array(indices, weight.device, "embedding indices")
    num_embeddings = weight.shape[0]
    if index.size and (int(index.min()) < 0 or int(index.max()) >= num_embeddings):
        bad = int(index.max()) if int(index.max()) >= num_embeddings else int(index.min())
        raise IndexError(
            f"embedding index {bad} is out of range for {num_embeddings} embeddings "
            f"(valid indices are 0 to {num_embeddings - 1}; max index given {int(index.max())})"
        )
    return weight[index]  # (*indices.shape, dim)


def _normalized_axes(x: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None,
                     bias: Tensor | None) -> tuple[int, ...]:
    """The last ``len(normalized_shape)`` axes of ``x``, after checking the shapes."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or x.shape[x.ndim - len(shape) :] != shape or len(shape) > x.ndim:
        raise ShapeError(
            f"layer_norm: normalized_shape {shape} must match the last axes of the input, "
            f"whose shape is {x.shape}"
        )
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and param.shape != shape:
            raise ShapeError(
                f"layer_norm: {name} has shape {param.shape}, expected normalized_shape {shape}"
            )
    return tuple(range(x.ndim - len(shape), x.ndim))


@register(top_level=False)  # a fused node: in the gradient test lists
def layer_norm(
    x: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise over the last ``len(normalized_shape)`` axes, then scale and shift:

        y = (x - mean) / sqrt(var + eps) * weight + bias

    with the biased variance (divide by n), as in PyTorch. One fused node,
    :class:`LayerNorm`, with its backward derived by hand.
    """
    if x.dtype.kind not in "fc":  # NumPy would compute it and round to integers
        raise DtypeError(f'"LayerNormKernelImpl" not implemented for '
                         f"'{torch_dtype_name(x.dtype)}', as in PyTorch: layer norm of an "
                         "integer tensor; convert first: x.float()")
    axes = _normalized_axes(x, normalized_shape, weight, bias)
    shape = x.shape[axes[0] :]
    xp = backend.array_module_of(x.data)
    if weight is None:  # no scale: gamma = 1, a constant
        weight = _constant(xp.ones(shape, dtype=x.dtype), x.device)
    if bias is None:  # no shift: beta = 0, a constant
        bias = _constant(xp.zeros(shape, dtype=x.dtype), x.device)
    return LayerNorm.apply(x, weight, bias, axes=axes, eps=eps)


def layer_norm_reference(
    x: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """The same as :func:`layer_norm`, composed of primitive engine ops (mean, var, sqrt,
    ...) so that autograd derives its backward. Slower; it exists to check the fused node."""
    axes = _normalized_axes(x, normalized_shape, weight, bias)
    mean = x.mean(axis=axes, keepdims=True)  # (..., 1, ..., 1)
    var = x.var(axis=axes, keepdims=True, correction=0)  # (..., 1, ..., 1), biased
    y = (x - mean) / (var + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


# ----- losses -----------------------------------------------------------------------------------
_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Squared error (input - target)^2, averaged ("mean"), added ("sum") or kept ("none")."""
    _check_reduction(reduction)
    if not isinstance(target, Tensor):
        target = Tensor(target, dtype=input.dtype, device=input.device)
    if input.shape != target.shape:
        raise ShapeError(
            f"mse_loss: input of shape {input.shape} and target of shape {target.shape} differ"
        )
    diff = input - target
    squared = diff * diff
    if reduction == "none":
        return squared
    return squared.mean() if reduction == "mean" else squared.sum()


@register(top_level=False)  # a fused node: in the gradient test lists
def cross_entropy(
    input: Tensor,  # noqa: A002  (PyTorch's name)
    target: Any,
    weight: Any = None,
    ignore_index: int | None = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """PyTorch's cross-entropy, with PyTorch's layout: the classes are axis 1 of ``input``.

    Shapes: ``input`` (N, C), or (N, C, d1, ...), or (C,) for one unbatched example;
    ``target`` either class indices of shape (N,) / (N, d1, ...) / () (an integer dtype), or
    class probabilities of ``input``'s own shape (a floating dtype). For logits with the
    classes LAST, as a language model makes them (B, T, C), flatten first, as nanoGPT does:
    ``F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))``.

    Per example n, with p = softmax(input_n) over the classes, class weights w (``weight``,
    all 1 by default) and label smoothing eps:

        indices:        loss_n = (1 - eps) w_{t_n} (-log p_{t_n}) + (eps / C) sum_c w_c (-log p_c)
        probabilities:  loss_n = -sum_c w_c ((1 - eps) y_nc + eps / C) log p_c

    Examples whose target is ``ignore_index`` count for nothing. ``reduction``: "none" (the
    losses, the target's batch shape), "sum", or "mean": for indices the sum divided by the
    summed weight w_{t_n} of the examples not ignored (their count, without ``weight``), for
    probabilities divided by the number of examples, as PyTorch. One difference: if every
    example is ignored, the mean is 0 with zero gradients where PyTorch gives NaN.
    ``target`` and ``weight`` are constants (no gradient flows to them). One fused node; see
    :class:`CrossEntropy` for the gradient.
    """
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if input.ndim == 0:
        raise ShapeError("cross_entropy: input must have a class axis, (C,), (N, C) or "
                         "(N, C, d1, ...); got a 0-d tensor")
    if input.dtype.kind != "f":
        raise DtypeError(f"cross_entropy: input must be floating-point logits, got {input.dtype}")
    for name, value in (("target", target), ("weight", weight)):
        if is_torch_tensor(value):
            raise not_a_tensor(value, f"cross_entropy: {name}")
        if isinstance(value, Tensor) and value.requires_grad:
            raise NotImplementedError(
                f"cross_entropy: no gradient flows to {name} here; pass {name}.detach()")
    xp = backend.array_module_of(input.data)
    unbatched = input.ndim == 1
    batched = input.reshape(1, -1) if unbatched else input  # (N, C, d1, ...)
    num_classes = batched.shape[1]
    batch_shape = () if unbatched else (input.shape[0], *input.shape[2:])  # (N, d1, ...)
    rows = _classes_last(batched).reshape(-1, num_classes)  # (M, C), M = N * d1 * ...
    class_weight = _class_weight(weight, num_classes, input)  # (C,) or None
    eps = float(label_smoothing)

    target_data = target.data if isinstance(target, Tensor) else target
    if not backend.is_array(target_data):
        target_data = np.asarray(target_data)
    target_data = backend.to_device(target_data, input.device)
    if target_data.dtype.kind == "f":  # class probabilities, input's shape
        if target_data.shape != input.shape:
            raise ShapeError(
                f"cross_entropy: floating-point target (class probabilities) of shape "
                f"{target_data.shape} must have input's shape {input.shape}; for class "
                f"indices pass an integer target of shape {batch_shape}")
        probs = target_data.astype(input.dtype).reshape(batched.shape)
        q = _classes_last_array(probs, xp).reshape(-1, num_classes) * (1 - eps) + eps / num_classes
        if class_weight is not None:
            q = q * class_weight
        denominator = max(rows.shape[0], 1)
    else:
        q, denominator = _index_weights(target_data, batch_shape, input.shape, num_classes,
                                        class_weight, ignore_index, eps, xp, input.dtype)
    if reduction == "sum":
        denominator = 1.0
    loss = CrossEntropy.apply(rows, q=q, denominator=denominator, reduction=reduction)
    return loss.reshape(batch_shape) if reduction == "none" else loss


def _classes_last(x: Tensor) -> Tensor:
    """(N, C, d1, ..., dk) -> (N, d1, ..., dk, C): each example's logits on the last axis."""
    return x if x.ndim == 2 else x.permute(0, *range(2, x.ndim), 1)


def _classes_last_array(x: Any, xp: Any) -> Any:
    return x if x.ndim == 2 else xp.moveaxis(x, 1, -1)


def _class_weight(weight: Any, num_classes: int, input: Tensor) -> Any:  # noqa: A002
    """The optional class weights as an array (C,) of input's dtype on input's device."""
    if weight is None:
        return None
    data = weight.data if isinstance(weight, Tensor) else np.asarray(weight)
    if data.shape != (num_classes,):
        raise ShapeError(f"cross_entropy: weight of shape {data.shape} does not fit input of "
                         f"shape {input.shape}; expected one weight per class, ({num_classes},)")
    return backend.to_device(data, input.device).astype(input.dtype)


def _index_weights(target: Any, batch_shape: tuple[int, ...], input_shape: tuple[int, ...],
                   num_classes: int, class_weight: Any, ignore_index: int | None, eps: float,
                   xp: Any, dtype: Any) -> tuple[Any, float]:
    """q (M, C) and the mean's denominator for integer class targets (see CrossEntropy)."""
    if target.dtype.kind not in "iu":
        raise DtypeError(f"cross_entropy target must hold class indices (integers) or class "
                         f"probabilities (floats), got dtype {target.dtype}")
    if target.shape != batch_shape:
        hint = ""
        if len(input_shape) >= 3 and target.shape == input_shape[:-1]:
            hint = (f"; the classes are axis 1 of input, as in PyTorch: for logits with the "
                    f"classes last, write F.cross_entropy(logits.view(-1, "
                    f"{input_shape[-1]}), target.view(-1))")
        raise ShapeError(
            f"cross_entropy: target of shape {target.shape} does not fit input of shape "
            f"{input_shape}: class indices need shape {batch_shape} (input is (N, C, d1, ...) "
            f"with C = {num_classes} classes on axis 1, target (N, d1, ...)){hint}")
    flat = target.reshape(-1)  # (M,)
    keep = flat != ignore_index if ignore_index is not None else xp.ones(flat.shape, dtype=bool)
    bad = keep & ((flat < 0) | (flat >= num_classes))
    if bad.any():
        value = int(flat[bad][0])
        raise IndexError(
            f"cross_entropy: target value {value} is out of range for {num_classes} classes "
            f"(valid targets are 0 to {num_classes - 1}"
            + (f", or ignore_index={ignore_index})" if ignore_index is not None else ")"))
    safe = xp.where(keep, flat, 0)  # ignored rows pick class 0, with weight 0
    kept = keep.astype(dtype)[:, None]  # (M, 1)
    row_weight = kept if class_weight is None else class_weight[safe][:, None] * kept  # w_{t_n}
    onehot = (xp.arange(num_classes) == safe[:, None]).astype(dtype)  # (M, C)
    q = (1 - eps) * row_weight * onehot
    if eps:
        q = q + (eps / num_classes) * kept * (1 if class_weight is None else class_weight)
    total = float(row_weight.sum())
    return q, total  # 0 when every row is ignored: the mean is NaN, as in PyTorch


# ----- attention -----------------------------------------------------------------------------
@register(top_level=False)  # a fused node: in the gradient test lists
def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    scale: float | None = None,
    enable_gqa: bool = False,
    generator: np.random.Generator | None = None,
    implementation: str = "auto",
    need_weights: Any = None,
) -> Tensor:
    """softmax(Q K^T * scale + mask) V: one tensor, as PyTorch's (same arguments, same order).

    Shapes: query (..., L, E), key (..., S, E), value (..., S, Ev) -> output (..., L, Ev);
    leading axes broadcast, typically (B, nh) for batch and heads. ``scale`` defaults to
    1 / sqrt(E), which keeps the scores' variance near 1. The weights A = softmax(...)
    are not returned: :func:`scaled_dot_product_attention_with_weights` gives them.

    Masks (PyTorch's conventions), broadcast to (..., L, S):
      * a boolean ``attn_mask`` is True where attention is ALLOWED;
      * a floating ``attn_mask`` is ADDED to the scores (use -inf to forbid). It is a
        constant: no gradient flows to it;
      * ``is_causal=True`` lets query i see keys 0..i only (``tril`` of an (L, S) matrix of
        ones). As in PyTorch's documentation it excludes ``attn_mask``: to combine them,
        pass ``nn.causal_mask(L, S) & attn_mask`` (:func:`minitransformer.nn.causal_mask`).

    A query whose every key is masked has no distribution to attend with. Here its
    weights are DEFINED as all zeros, so its output row is zeros and its gradients are
    zero, with no NaN anywhere (PyTorch gives NaN for such a row).

    Dropout with probability ``dropout_p`` is applied to the weights before they multiply
    V (pass 0 in evaluation, as nanoGPT's ``dropout_p=self.dropout if self.training else
    0``); it draws from ``generator``, by default the thread's default generator
    (reseeded by ``manual_seed``, as PyTorch's global one is).

    ``enable_gqa=True``: grouped-query attention, key and value (..., Hkv, S, E) shared by
    groups of Hq / Hkv query heads (..., Hq, L, E), as in PyTorch.

    Without weights to return, large calls run the memory-efficient tiled path
    (FlashAttention's online softmax, O(n) memory), small ones the fused node; the results
    are the same. ``implementation`` ("auto", "fused", "tiled" or "composed", not in
    PyTorch) forces one: see :mod:`minitransformer.ops.sdpa`.

    ``need_weights`` (an earlier API of this library, not PyTorch's) is a TypeError saying
    what to call instead.
    """
    if need_weights is not None:
        _refuse_need_weights(need_weights)
    _check_not_both_masks(attn_mask, is_causal)
    output, _ = sdpa.attention(query, key, value, attn_mask, dropout_p, is_causal, scale,
                               enable_gqa, generator, need_weights=False,
                               implementation=implementation)
    return output


@register(top_level=False)  # a fused node: in the gradient test lists
def scaled_dot_product_attention_with_weights(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    scale: float | None = None,
    enable_gqa: bool = False,
    generator: np.random.Generator | None = None,
    implementation: str = "auto",
) -> tuple[Tensor, Tensor]:
    """:func:`scaled_dot_product_attention` that also returns the weights:
    ``(output (..., L, Ev), weights (..., L, S))`` with weights = softmax(Q K^T * scale +
    mask), each row summing to 1 (0 for a fully masked row). Not in PyTorch, whose
    function returns the output only.

    The weights are the ones BEFORE dropout, for inspection; they are differentiable, so a
    loss may also use them (see :class:`AttentionWeights`). They are (..., L, S) arrays:
    this call runs the fused node (or the composed one), never the tiled path.
    """
    if implementation == "tiled":
        raise ValueError("tiled attention never forms the weights: call "
                         "F.scaled_dot_product_attention(q, k, v) for the output alone, or "
                         "pass implementation='fused'")
    _check_not_both_masks(attn_mask, is_causal)
    output, weights = sdpa.attention(query, key, value, attn_mask, dropout_p, is_causal, scale,
                                     enable_gqa, generator, need_weights=True,
                                     implementation=implementation)
    assert weights is not None  # need_weights=True never takes the tiled path
    return output, weights


def _refuse_need_weights(need_weights: Any) -> None:
    if need_weights is False:
        raise TypeError("scaled_dot_product_attention() takes no need_weights: it returns "
                        "the output alone, as PyTorch's; drop need_weights=False")
    raise TypeError("scaled_dot_product_attention() takes no need_weights: it returns the "
                    "output alone, as PyTorch's; for (output, weights) call "
                    "F.scaled_dot_product_attention_with_weights(q, k, v, ...)")


def _check_not_both_masks(attn_mask: Any, is_causal: bool) -> None:
    if is_causal and attn_mask is not None:
        raise ValueError(
            "scaled_dot_product_attention: pass attn_mask or is_causal=True, not both (an "
            "error in PyTorch's documentation too); to combine them, pass one mask: "
            "attn_mask=nn.causal_mask(L, S) & mask (minitransformer.nn.causal_mask)"
        )


composed_attention = sdpa.composed_attention
attention_reference = sdpa.attention_reference
