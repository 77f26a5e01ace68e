"""In-place operations as in PyTorch: ``a += b``, ``a[i] = v``, ``a.copy_(b)``, ``a.zero_()``...

The rule (PyTorch's):

* The new values are written into the tensor's own memory, so every alias and every view
  of it sees them. The tensor keeps its shape and dtype: ``b`` may be broadcast to ``a``'s
  shape but not the other way, and the result type of ``a op b`` must be castable to
  ``a``'s dtype by category (bool < integer < float < complex), so ``int_tensor += 0.5``
  raises while ``float32_tensor += float64_tensor`` rounds to float32.
* Outside the graph (under ``no_grad``, or when nothing involved requires grad) that is all,
  plus a version bump (:func:`~minitransformer.autograd.mark_changed`): a later backward
  through a node that saved the old values raises instead of using the new ones.
* Inside the graph, a leaf that requires grad (or a view of one) may not be changed: its
  value is what the gradients are about, so PyTorch's error is raised. Any other tensor
  gets the op recorded: its history moves to a stand-in that keeps it, and the tensor
  becomes the output of the new node (PyTorch "rebases" the tensor's ``grad_fn`` the same
  way), so ``y *= w`` sends ``w`` the gradient ``dL/dy_new * y_old``.

One limit, where this engine's graph differs from PyTorch's: nodes point at tensor objects,
not at versions of them. The nodes that computed the new value from the old one
(``y[y > 0] *= 2``) are pointed at the stand-in; any other node that used ``a`` before ``a``
was rebased would send its gradient into the new history, so its backward raises instead
(the version error, naming the in-place op). ``a = a + b`` (out of place) is the line to
write then.

A view ``v = y[index]`` changed in place in the graph changes ``y`` too, so ``y`` is rebased
as well, onto ``y_old with [index] = v_new`` (PyTorch's CopySlices). Other views (reshape,
transpose, a view made without grad) refuse, saying what to write instead.
"""

from __future__ import annotations

import contextlib
import operator
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from minitransformer import autograd, backend
from minitransformer.autograd import Function, Value
from minitransformer.errors import (
    DeviceError,
    DtypeError,
    GraphError,
    ShapeError,
    torch_dtype_name,
)
from minitransformer.ops.shape import GetItem, _array_index, unbroadcast
from minitransformer.tensor import Tensor, as_tensor


class CastError(DtypeError, RuntimeError):
    """An in-place result whose type the tensor cannot hold (``int_tensor += 0.5``).

    A RuntimeError as in PyTorch, and a DtypeError (TypeError) as this project's dtype errors.
    """


LEAF_MESSAGE = "a leaf Variable that requires grad is being used in an in-place operation."
VIEW_OF_LEAF_MESSAGE = ("a view of a leaf Variable that requires grad is being used in an "
                        "in-place operation.")

# Type promotion by category: a result of a higher category does not fit a lower one.
_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}
# The dtype a Python number (or a true division) of each category gives, as in PyTorch.
_DEFAULT = {0: np.dtype(bool), 1: np.dtype("int64"), 2: np.dtype("float32"),
            3: np.dtype("complex64")}
_PYTHON_CATEGORY = {bool: 0, int: 1, float: 2, complex: 3}


def _category_of(value: Any) -> tuple[int, np.dtype]:
    if isinstance(value, Tensor):
        return _CATEGORY[value.dtype.kind], value.dtype
    category = _PYTHON_CATEGORY[type(value)]
    return category, _DEFAULT[category]


def check_castable(target: Tensor, *operands: Any, floating: bool = False) -> None:
    """Raise PyTorch's error if ``target op operands`` has a type ``target`` cannot hold.

    ``floating``: the op gives floats whatever its inputs (true division).
    """
    category, dtype = _CATEGORY[target.dtype.kind], target.dtype
    for operand in operands:
        c, d = _category_of(operand)
        if c > category:
            category, dtype = c, d
    if floating and category < 2:
        category, dtype = 2, _DEFAULT[2]
    if category > _CATEGORY[target.dtype.kind]:
        raise CastError(f"result type {torch_dtype_name(dtype)} can't be "
                        f"cast to the desired output type "
                        f"{torch_dtype_name(target.dtype)}")


def _check_shape(target: Tensor, result_shape: tuple[int, ...]) -> None:
    if tuple(result_shape) != target.shape:
        raise ShapeError(f"output with shape {list(target.shape)} doesn't match the broadcast "
                         f"shape {list(result_shape)}")


def _broadcast_shape(target: Tensor, operand: Any) -> tuple[int, ...]:
    shape = operand.shape if isinstance(operand, Tensor) else ()
    try:
        return np.broadcast_shapes(target.shape, shape)
    except ValueError:
        raise ShapeError(f"in-place op: shape {shape} does not broadcast to the tensor's "
                         f"shape {target.shape}") from None


def _operand(target: Tensor, value: Any) -> Any:
    """Python numbers stay numbers (their category matters); anything else becomes a tensor."""
    if isinstance(value, Tensor):
        if value.device != target.device:
            raise DeviceError(f"in-place op on a tensor on {target.device} with one on "
                              f"{value.device}; move it with .to('{target.device}')")
        return value
    if type(value) in _PYTHON_CATEGORY:
        return value
    return as_tensor(value, target)


@contextlib.contextmanager
def _writable(what: str) -> Iterator[None]:
    """Turn NumPy's error for writing into read-only memory into one that says what to do."""
    try:
        yield
    except ValueError as exc:
        if "read-only" not in str(exc):
            raise
        raise ValueError(f"{what}: this tensor's memory is read-only (a broadcast view, or "
                         "attention weights the graph still needs); use .clone() "
                         "first") from None


def _records(target: Tensor, *operands: Any) -> bool:
    """Whether the op goes into the graph (grad mode on and something requires grad)."""
    if not autograd.is_grad_enabled():
        return False
    return target.requires_grad or any(isinstance(o, Tensor) and o.requires_grad
                                       for o in operands)


def _view_base(target: Tensor) -> tuple[Tensor, Any] | None:
    """``(y, index)`` when ``target`` is ``y[index]``, whose history must change too; else
    None. Raises PyTorch's errors for a leaf that requires grad (or a view of one), and
    this engine's one for the views it cannot follow (reshape, transpose, a view of a view,
    a view made without grad)."""
    view_of = target.__dict__.get("_view_of")
    if view_of is not None:  # a view changed in place before: still y[index]
        return view_of
    base = autograd._base(target.data)
    if target._ctx is None:
        if target.requires_grad:
            raise GraphError(LEAF_MESSAGE)
        if base is not target.data:  # a view made without grad (buffer[:2] += w)
            _refuse_view("a view of another tensor's memory")
        return None
    if target.__dict__.get("_rebased"):  # the output of an in-place op: it owns its memory
        return None
    for parent in target._ctx.inputs:
        if parent._data is not target._data and autograd._base(parent.data) is base:
            if parent._ctx is None and parent.requires_grad:
                raise GraphError(VIEW_OF_LEAF_MESSAGE)
            if type(target._ctx) is GetItem and _view_base(parent) is None:
                return parent, target._ctx.index
            _refuse_view(f"{target._ctx.name} of another tensor")
    return None


def _refuse_view(what: str) -> None:
    raise GraphError(
        f"an in-place operation on a view ({what}) inside the graph is not supported here: "
        "the tensor it views would need the new history too; write it out of place, e.g. "
        "`y = mt.where(mask, y * w, y)` instead of `y.view(-1)[mask] *= w` (or build the "
        "new tensor with masked_fill or cat)"
    )


def _stand_in(t: Tensor) -> Tensor:
    """A tensor holding ``t``'s memory and history, for the nodes that need its old version."""
    old = Tensor._from_array(t._data, t.device)
    old.requires_grad, old._ctx, old.name = t.requires_grad, t._ctx, t.name
    return old


# How many nodes of the new value's history _rebase looks through for uses of the old
# version: enough for y[mask] *= 2 or y[i] = y[i] + v; a use further back raises at backward.
REDIRECT_BUDGET = 256


def _redirect_uses(new: Tensor, t: Tensor, old: Tensor) -> None:
    """Nodes in ``new``'s history that took ``t`` as an input saw its old version: point
    them at ``old``, the stand-in holding that version (PyTorch's edges point at versions)."""
    stack, seen = [new._ctx], set()
    while stack and len(seen) < REDIRECT_BUDGET:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        if any(x is t for x in fn.inputs):
            fn.inputs = tuple(old if x is t else x for x in fn.inputs)
        stack.extend(x._ctx for x in fn.inputs if x is not old)


def _rebase(t: Tensor, old: Tensor, new: Tensor, skip_view: Tensor | None = None) -> None:
    """Give ``t`` the history of ``new`` (its values are already in t's memory);
    ``skip_view``: the view being changed, whose history is already the new one."""
    if old._ctx is not None and old._ctx.uses_output:
        old._ctx._output_ref = weakref.ref(old)  # same memory: its version check still fires
    _redirect_uses(new, t, old)
    # Other nodes recorded before now that took `t` as an input must not send their
    # gradients into its new history: their backward raises (see the module docstring).
    autograd.note_new_array(t)
    t._ctx = new._ctx
    t.requires_grad = True
    t._rebased = True
    # Views of t that were changed in place have histories of their own; t's new values
    # are theirs too, so each becomes t[index] again, of t's new version (as PyTorch
    # regenerates a view's grad_fn from its base). Nodes that used the view before: those
    # in new's history get its old version; any other raises at backward (as for t).
    for view in list(t.__dict__.get("_changed_views", {}).values()):
        if view is not skip_view:
            _redirect_uses(new, view, _stand_in(view))  # y[:, 0] = v: SetItem's input v
            autograd.note_new_array(view)
            view._ctx = GetItem.apply(t, index=view._view_of[1])._ctx


def _record(target: Tensor, compute: Callable[[Tensor], Tensor], what: str,
            reads_old: bool) -> Tensor:
    """Record ``target = compute(target)`` in the graph, writing into target's memory.

    ``compute`` gets the old tensor (a stand-in that took over target's history) and returns
    the new value as a recorded tensor; ``reads_old``: its backward reads the old values,
    so it gets a copy of them (the memory is about to be overwritten).

    When target is ``y[index]`` (a view), ``y`` changes too, so it is rebased as well, onto
    ``y_old with [index] = target_new`` (PyTorch's CopySlices), and the indexing node that
    made target now reads ``y_old``.
    """
    view_of = _view_base(target)
    old = _stand_in(target)
    result = compute(old.clone() if reads_old else old)
    if result.dtype != target.dtype:
        result = result.to(target.dtype)
    _check_shape(target, result.shape)  # a @= b whose product has another shape
    with _writable(what):  # the first change to anything: a refused write leaves all as it was
        target._data[...] = result._data
    autograd.mark_changed(target, what)  # the memory: base's too, if target is a view
    _rebase(target, old, result)
    if view_of is not None:
        base, index = view_of
        old_base = _stand_in(base)
        if type(old._ctx) is GetItem and old._ctx.inputs[0] is base:
            old._ctx.inputs = (old_base,)  # the indexing that made target reads the old base
        # target as it is now (a later in-place op on it must not change this node's input)
        _rebase(base, old_base, SetItem.apply(old_base, _stand_in(target), index=index),
                skip_view=target)
        target._view_of = view_of
        # by id: a WeakSet would compare tensors with ==, which is elementwise here
        base.__dict__.setdefault("_changed_views", weakref.WeakValueDictionary())[
            id(target)] = target
    return target


# ----- binary ops: a += b, a.mul_(b), ... ---------------------------------------------------
# symbol -> (the tensor op, the array op that works in place, whether its backward reads the
# old value of the left operand, whether its result is always floating)
_BINARY: dict[str, tuple[Callable, Callable, bool, bool]] = {
    "+=": (operator.add, operator.iadd, False, False),
    "-=": (operator.sub, operator.isub, False, False),
    "*=": (operator.mul, operator.imul, True, False),
    "/=": (operator.truediv, operator.itruediv, True, True),
    "**=": (operator.pow, operator.ipow, True, False),
    "&=": (operator.and_, operator.iand, False, False),  # masks: mask &= other_mask
    "|=": (operator.or_, operator.ior, False, False),
}


def binary_(target: Tensor, symbol: str, other: Any) -> Tensor:
    """``target <symbol> other`` in place (``symbol`` one of ``+= -= *= /= **= &= |=``);
    returns ``target``."""
    op, array_op, reads_old, floating = _BINARY[symbol]
    other = _operand(target, other)
    check_castable(target, other, floating=floating)
    _check_shape(target, _broadcast_shape(target, other))
    if _records(target, other):
        if other is target:  # a *= a: the right operand is the old value too
            return _record(target, lambda old: op(old, old), f"`{symbol}`", reads_old)
        return _record(target, lambda old: op(old, other), f"`{symbol}`", reads_old)
    with _writable(f"`{symbol}`"):
        array_op(target._data, other._data if isinstance(other, Tensor) else other)
    autograd.mark_changed(target, f"`{symbol}`")
    return target


# ----- writes: a[i] = v, copy_, fill_, zero_, masked_fill_, clamp_ -------------------------
class SetItem(Function):
    """y = x with y[index] = v (v broadcast to the indexed part).

    dy/dx: the incoming gradient with 0 where ``index`` overwrote x;
    dy/dv: the incoming gradient at ``index``, summed back to v's shape.
    """

    uses_input_values = False  # only shapes, and the index (a constant)

    def forward(self, x: Any, v: Any, index: Any) -> Any:
        self.index = index
        out = x.copy()
        out[index] = v
        return out

    def backward(self, grad: Value) -> tuple[Value | None, Value | None]:
        x, v = self.inputs
        need_x, need_v = self.needs_input_grad
        dx = dv = None
        if need_x:
            keep = backend.array_module(x.device).ones(x.shape, dtype=grad.dtype)
            keep[self.index] = 0  # a constant mask: the overwritten entries get no gradient
            dx = grad * keep
        if need_v:
            dv = unbroadcast(grad[self.index], v.shape)
        return dx, dv


def _value_tensor(target: Tensor, value: Any) -> Tensor:
    """The value to write, as a tensor on target's device (numbers: target's dtype)."""
    if isinstance(value, Tensor):
        if value.device != target.device:
            return value.to(device=target.device)
        return value
    if type(value) in _PYTHON_CATEGORY and target.dtype.kind not in "fc":
        return Tensor(np.asarray(value).astype(target.dtype), device=target.device)
    return as_tensor(value, target)


def write_(target: Tensor, index: Any, value: Any, what: str) -> Tensor:
    """``target[index] = value``, cast to target's dtype as PyTorch's copy does."""
    value = _value_tensor(target, value)
    if _records(target, value):
        if value.dtype != target.dtype:
            value = value.to(target.dtype)
        source = value
        return _record(target, lambda old: SetItem.apply(old, old if source is target
                                                         else source, index=index),
                       what, reads_old=False)
    with _writable(what):
        target._data[index] = value._data
    autograd.mark_changed(target, what)
    return target


def setitem(target: Tensor, index: Any, value: Any) -> None:
    """``target[index] = value`` (``Tensor.__setitem__``)."""
    parts = index if isinstance(index, tuple) else (index,)
    if (target.requires_grad and target._ctx is None and autograd.is_grad_enabled()
            and any(p is None or isinstance(p, int | slice) for p in parts)):
        raise GraphError(VIEW_OF_LEAF_MESSAGE)  # PyTorch writes through a view x[0] of x
    write_(target, _array_index(index, target.device), value, "item assignment")


def copy_(target: Tensor, src: Any) -> Tensor:
    """Copy ``src``'s values into ``target`` (broadcast to its shape, cast to its dtype)."""
    src = src if isinstance(src, Tensor) else Tensor(src, device=target.device)
    _check_shape(target, _broadcast_shape(target, src))
    return write_(target, Ellipsis, src, "copy_()")


def fill_(target: Tensor, value: Any) -> Tensor:
    """Every entry set to ``value`` (a number or a one-element tensor)."""
    if isinstance(value, Tensor) and value.ndim != 0:
        raise ValueError(f"fill_ only supports 0-dimension value tensor but got tensor with "
                         f"{value.ndim} dimensions.")
    return write_(target, Ellipsis, value, "fill_()")


def masked_fill_(target: Tensor, mask: Any, value: Any) -> Tensor:
    """``value`` wherever ``mask`` (broadcast to target's shape) is True."""
    from minitransformer.ops.elementwise import check_bool_mask

    check_bool_mask(mask)
    mask = mask.data if isinstance(mask, Tensor) else backend.to_device(
        np.asarray(mask), target.device)
    _check_shape(target, np.broadcast_shapes(target.shape, mask.shape))
    xp = backend.array_module(target.device)
    index = xp.broadcast_to(mask.astype(bool), target.shape)
    return write_(target, index, value, "masked_fill_()")


def clamp_(target: Tensor, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
    """Entries below ``min`` set to ``min``, above ``max`` to ``max``."""
    if min is None and max is None:
        raise ValueError("clamp_ needs at least one of min and max")
    check_castable(target, *(b for b in (min, max) if b is not None))
    # tensor bounds are constants here (no gradient reaches them)
    min, max = (b.data if isinstance(b, Tensor) else b for b in (min, max))  # noqa: A001
    if _records(target):
        return _record(target, lambda old: old.clip(min, max), "clamp_()", reads_old=True)
    xp = backend.array_module(target.device)
    with _writable("clamp_()"):
        xp.clip(target._data, min, max, out=target._data)
    autograd.mark_changed(target, "clamp_()")
    return target
