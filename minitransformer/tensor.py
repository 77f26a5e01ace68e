"""The Tensor: an array (NumPy or CuPy) plus what autograd needs to send gradients back.

A tensor made by an op remembers the :class:`~minitransformer.autograd.Function` that made
it (``_ctx``); following those links from a result back to the leaves is the computation
graph. Operators and methods here are thin: each one calls an op in
:mod:`minitransformer.ops`, where the forward and backward of every op live side by side.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minitransformer import backend
from minitransformer.errors import (
    DeviceError,
    DtypeError,
    GraphError,
    ShapeError,
    is_torch_tensor,
    not_a_tensor,
)

float16, float32, float64 = np.dtype("float16"), np.dtype("float32"), np.dtype("float64")
int32, int64, bool_ = np.dtype("int32"), np.dtype("int64"), np.dtype("bool")

Scalar = int | float | bool


class Size(int):
    """``x.size``: an int (NumPy's element count) that PyTorch code can also call:
    ``x.size()`` is the shape and ``x.size(d)`` the length of axis ``d``."""

    def __new__(cls, count: int, shape: tuple[int, ...]) -> Size:
        size = super().__new__(cls, count)
        size.shape = shape
        return size

    def __call__(self, dim: int | None = None) -> Any:
        if dim is None:
            return self.shape
        if not -len(self.shape) <= dim < len(self.shape):
            raise IndexError(f"size({dim}): dimension out of range for shape {self.shape}")
        return self.shape[dim]


def as_dtype(dtype: Any) -> np.dtype | None:
    """A dtype argument (None, a NumPy dtype or type, a name such as "float32") as a dtype."""
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype == "bool":
        return bool_
    try:
        return np.dtype(dtype)
    except TypeError as exc:
        raise DtypeError(f"unknown dtype {dtype!r}") from exc


def _preview(data: Any) -> str:
    text = repr(data)
    return text if len(text) <= 40 else text[:37] + "..."


def _from_nested_tensors(xp: Any, data: Any, dtype: Any, array: Any) -> Any:
    """``mt.tensor([t0, t1, 2.5])`` with one-element tensors in the (nested) list, as
    ``torch.tensor``: each tensor counts as its value and its dtype (a Python float as
    float32, an int as int64), and the result has the promotion of them all."""
    from minitransformer.promotion import promote_types

    dtypes: list[np.dtype] = []

    def convert(item: Any) -> Any:
        if isinstance(item, list | tuple):
            return [convert(i) for i in item]
        if isinstance(item, Tensor):
            if item.data.size != 1:
                raise ValueError("only one element tensors can be converted to Python scalars "
                                 f"(an element of shape {item.shape}); use mt.stack(list)")
            dtypes.append(item.dtype)
            return item.data.reshape(()).item()
        if isinstance(item, bool | np.bool_):
            dtypes.append(bool_)
        elif isinstance(item, int | np.integer):
            dtypes.append(int64 if isinstance(item, int) else item.dtype)
        elif isinstance(item, float | np.floating):
            dtypes.append(float32 if isinstance(item, float) else item.dtype)
        return item

    converted = convert(data)
    if dtype is None and dtypes:
        dtype = dtypes[0]
        for other in dtypes[1:]:
            dtype = promote_types(dtype, other)
    try:
        return xp.array(converted, dtype=dtype)
    except (TypeError, ValueError):
        return array  # not numbers after all: the caller's error names the data


class Tensor:
    """An n-dimensional array that can record the ops applied to it.

    Attributes:
        data: the backend array (``numpy.ndarray`` on ``"cpu"``, ``cupy.ndarray`` on ``"cuda"``).
        grad: the accumulated gradient (a Tensor) after ``backward``, or None.
        requires_grad: whether gradients flow to (and through) this tensor.
    """

    # Every op makes a tensor, so making one must be cheap: the four attributes every tensor
    # sets are slots; the rarer ones are class defaults, written to the instance's __dict__
    # only by the tensors that get them (a leaf's .grad, a name, a hook).
    __slots__ = ("_data", "device", "requires_grad", "_ctx", "__dict__", "__weakref__")
    _grad: Tensor | None = None  # behind the .grad property, which checks what is assigned
    name: str | None = None
    _hooks: tuple[Callable, ...] | list[Callable] = ()
    _retains_grad = False
    __array_ufunc__ = None  # so that ndarray * Tensor defers to Tensor.__rmul__

    def __init__(
        self,
        data: Any,
        requires_grad: bool = False,
        dtype: Any = None,
        device: Any = None,
    ) -> None:
        dtype = as_dtype(dtype)
        if isinstance(data, Tensor):
            data = data.data
        elif is_torch_tensor(data):  # mt.tensor(torch_tensor): a deliberate conversion
            data = data.detach().cpu().numpy()
        if device is None:
            device = backend.device_of(data) if backend.is_array(data) else backend.default_device()
        device = backend.normalize_device(device)
        xp = backend.array_module(device)
        from_python = not backend.is_array(data) and not isinstance(data, np.generic)
        on_device = backend.to_device(data, device) if backend.is_array(data) else data
        array = xp.array(on_device, dtype=dtype)
        if array.dtype.kind == "O" and isinstance(data, list | tuple):
            array = _from_nested_tensors(xp, data, dtype, array)  # [loss0, loss1]: 0-d tensors
            from_python = False
        if array.dtype.kind not in "biufc":  # str, bytes, Python objects: not numbers
            raise DtypeError(
                f"cannot make a tensor from {type(data).__name__} {_preview(data)} (dtype "
                f"{array.dtype}): tensors hold numbers (bool, int, float, complex)"
            )
        if dtype is None and from_python and array.dtype == float64:
            array = array.astype(float32)  # Python floats become float32, as in PyTorch
        self._data = array
        self.device = device
        self.requires_grad = False
        self._ctx = None
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _from_array(cls, array: Any, device: str) -> Tensor:
        """Wrap an array without copying or checks (the fast path ops use)."""
        t = cls.__new__(cls)
        t._data = array
        t.device = device
        t.requires_grad = False
        t._ctx = None
        return t

    # ----- attributes ---------------------------------------------------------------------
    @property
    def grad(self) -> Tensor | None:
        """The accumulated gradient: a Tensor of this tensor's shape and dtype, or None.
        None, with PyTorch's warning, on a non-leaf tensor without ``retain_grad()``."""
        grad = self._grad
        if grad is None and self._ctx is not None and not self._retains_grad:
            import warnings

            warnings.warn(
                "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. "
                "Its .grad attribute won't be populated during autograd.backward(). If you "
                "indeed want the .grad field to be populated for a non-leaf Tensor, use "
                ".retain_grad() on the non-leaf Tensor. If you access the non-leaf Tensor by "
                "mistake, make sure you access the leaf Tensor instead.", UserWarning,
                stacklevel=2)
        return grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        # As in PyTorch: a gradient of another shape or dtype, or a bare array, would be
        # accumulated into silently by the next backward and then read by the optimizer.
        if value is not None:
            check_grad(self, value, "assigned grad")
        self._grad = value

    @property
    def data(self) -> Any:
        """The backend array. Assigning a new one is an in-place change of the tensor."""
        return self._data

    @data.setter
    def data(self, array: Any) -> None:
        if array is self._data:  # t.data -= x assigns the same array back: not a new one
            return
        self._data = array
        # Nodes recorded before now read the old array in their forward: the next backward
        # must refuse them (see autograd._check_unchanged).
        autograd.note_new_array(self)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def size(self) -> Size:
        """The number of elements, as NumPy's ``x.size``; also callable as PyTorch's
        ``x.size()`` (the shape) and ``x.size(dim)`` (one axis's length)."""
        return Size(self.data.size, self.shape)

    def numel(self) -> int:
        """The number of elements (PyTorch's name for ``size``)."""
        return int(self.data.size)

    def dim(self) -> int:
        """The number of axes (PyTorch's name for ``ndim``)."""
        return self.data.ndim

    @property
    def _version(self) -> int:
        """How many times the values were changed in place through the API (as in PyTorch)."""
        return autograd.version_of(self)

    @property
    def is_leaf(self) -> bool:
        """True for tensors the user made (or that need no grad); False for op results."""
        return self._ctx is None

    @property
    def grad_fn(self) -> Any:
        return self._ctx

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        body = np.array2string(backend.to_numpy(self.data), separator=", ", precision=4,
                               prefix="tensor(")
        extras = [] if self.name is None else [f"name={self.name!r}"]
        if self.dtype not in (float32, int64, bool_):
            extras.append(f"dtype={self.dtype}")
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self._ctx is not None:
            extras.append(f"grad_fn=<{self._ctx.name}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body, *extras]) + ")"

    # ----- conversion ---------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied from the GPU if needed)."""
        if self.requires_grad:
            raise GraphError(
                "can't call numpy() on a tensor that requires grad; use t.detach().numpy()"
            )
        return backend.to_numpy(self.data)

    def item(self) -> Scalar:
        if self.data.size != 1:
            raise ValueError(
                f"item() needs a tensor with exactly one element, got shape {self.shape}"
            )
        return self.data.item()

    def tolist(self) -> Any:
        return backend.to_numpy(self.data).tolist()

    def detach(self) -> Tensor:
        """The same values, cut from the graph (shares memory)."""
        return Tensor._from_array(self.data, self.device)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.dtype.kind not in "fc":
            raise DtypeError(
                f"only floating-point tensors can require gradients, got dtype {self.dtype}"
            )
        if not requires_grad and self._ctx is not None:
            raise GraphError("requires_grad can only be turned off on leaf tensors; use detach()")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        """Keep ``.grad`` on this non-leaf tensor after backward."""
        if not self.requires_grad:
            raise GraphError("retain_grad() on a tensor that does not require grad")
        self._retains_grad = True

    def register_hook(self, hook: Callable[[Tensor], Tensor | None]) -> Callable[[], None]:
        """Call ``hook(grad)`` when this tensor's gradient is computed; it may return a
        replacement. Returns a function that removes the hook."""
        if not self.requires_grad:
            raise GraphError("cannot register a hook on a tensor that does not require grad")
        self._hooks = [*self._hooks, hook]

        def remove() -> None:
            if hook in self._hooks:
                self._hooks.remove(hook)

        return remove

    def to(self, target: Any = None, dtype: Any = None, device: Any = None) -> Tensor:
        """A copy on another device and/or with another dtype (differentiable)."""
        if target is not None:
            if isinstance(target, str):
                device = target
            else:
                dtype = target
        return ops.to(self, dtype=as_dtype(dtype), device=device)

    def double(self) -> Tensor:
        return self.to(float64)

    def float(self) -> Tensor:
        return self.to(float32)

    def _cast(self, dtype: np.dtype) -> Tensor:
        # An integer or bool copy carries no gradient (PyTorch: x.long() is not in the graph).
        return Tensor._from_array(self.data.astype(dtype), self.device)

    def long(self) -> Tensor:
        return self._cast(int64)

    def int(self) -> Tensor:
        return self._cast(int32)

    def bool(self) -> Tensor:
        return self._cast(bool_)

    def half(self) -> Tensor:
        return self.to(float16)

    def contiguous(self) -> Tensor:
        """``self``: the ops here never need a particular memory layout (PyTorch's
        ``view`` does, hence nanoGPT's ``y.transpose(1, 2).contiguous().view(...)``)."""
        return self

    def nelement(self) -> int:
        """The number of elements (PyTorch's other name for ``numel``)."""
        return int(self.data.size)

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self) -> Tensor:
        return self.to("cuda")

    # ----- autograd -----------------------------------------------------------------------
    def backward(
        self, gradient: Any = None, retain_graph: bool = False, create_graph: bool = False
    ) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``."""
        autograd.run_backward([self], [gradient], retain_graph or create_graph, create_graph)

    def zero_grad(self) -> None:
        self.grad = None

    # ----- operators ----------------------------------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return apply_binary(_elementwise.Add, self, other)

    def __radd__(self, other: Any) -> Tensor:
        return apply_binary(_elementwise.Add, other, self)

    def __sub__(self, other: Any) -> Tensor:
        return apply_binary(_elementwise.Sub, self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return apply_binary(_elementwise.Sub, other, self)

    def __mul__(self, other: Any) -> Tensor:
        return apply_binary(_elementwise.Mul, self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return apply_binary(_elementwise.Mul, other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return apply_binary(_elementwise.Div, self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return apply_binary(_elementwise.Div, other, self)

    def __pow__(self, other: Any) -> Tensor:
        return ops.pow(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return ops.pow(other, self)

    def __matmul__(self, other: Any) -> Tensor:
        return ops.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return ops.matmul(other, self)

    def __neg__(self) -> Tensor:
        return ops.neg(self)

    def __getitem__(self, index: Any) -> Tensor:
        return ops.getitem(self, index)

    # ----- in place (as in PyTorch: the memory changes, aliases see it; see inplace.py) -----
    def __setitem__(self, index: Any, value: Any) -> None:
        _inplace.setitem(self, index, value)

    def __iadd__(self, other: Any) -> Tensor:
        return _inplace.binary_(self, "+=", other)

    def __isub__(self, other: Any) -> Tensor:
        return _inplace.binary_(self, "-=", other)

    def __imul__(self, other: Any) -> Tensor:
        return _inplace.binary_(self, "*=", other)

    def __itruediv__(self, other: Any) -> Tensor:
        return _inplace.binary_(self, "/=", other)

    def __ipow__(self, other: Any) -> Tensor:
        return _inplace.binary_(self, "**=", other)

    def __iand__(self, other: Any) -> Tensor:
        return _inplace.binary_(self, "&=", other)

    def __ior__(self, other: Any) -> Tensor:
        return _inplace.binary_(self, "|=", other)

    # No __imatmul__, as in PyTorch (torch.Tensor has none): ``a @= b`` is ``a = a @ b``, a
    # new tensor; aliases of the old ``a`` keep its values, and a leaf may be rebound.

    def add_(self, other: Any, *, alpha: Scalar = 1) -> Tensor:
        """self += alpha * other, in place (``p.add_(p.grad, alpha=-lr)``)."""
        return _inplace.binary_(self, "+=", other if alpha == 1 else other * alpha)

    def sub_(self, other: Any, *, alpha: Scalar = 1) -> Tensor:
        """self -= alpha * other, in place."""
        return _inplace.binary_(self, "-=", other if alpha == 1 else other * alpha)

    def mul_(self, other: Any) -> Tensor:
        return _inplace.binary_(self, "*=", other)

    def div_(self, other: Any) -> Tensor:
        return _inplace.binary_(self, "/=", other)

    def pow_(self, other: Any) -> Tensor:
        return _inplace.binary_(self, "**=", other)

    def copy_(self, src: Any) -> Tensor:
        """Copy ``src`` into this tensor's memory (broadcast, cast to its dtype); returns self."""
        return _inplace.copy_(self, src)

    def fill_(self, value: Any) -> Tensor:
        return _inplace.fill_(self, value)

    def zero_(self) -> Tensor:
        return _inplace.fill_(self, 0)

    def masked_fill_(self, mask: Any, value: Any) -> Tensor:
        return _inplace.masked_fill_(self, mask, value)

    def clamp_(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
        return _inplace.clamp_(self, min, max)

    clip_ = clamp_

    def __floordiv__(self, other: Any) -> Tensor:
        return apply_binary(_elementwise.FloorDiv, self, other)

    def __rfloordiv__(self, other: Any) -> Tensor:
        return apply_binary(_elementwise.FloorDiv, other, self)

    # Comparisons give boolean tensors outside the graph, after promoting the operands as
    # arithmetic does (an int tensor < 2.5 compares as floats).
    def _compare(self, other: Any, op: Callable) -> Tensor:
        if isinstance(other, Tensor | int | float | np.generic) or backend.is_array(other):
            a, b = _elementwise.promote(self, other)
            return Tensor._from_array(op(a.data, b.data), self.device)
        return Tensor._from_array(op(self.data, other), self.device)  # a list, None, ...

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(other, lambda a, b: a == b)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(other, lambda a, b: a != b)

    def __lt__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a >= b)

    def __invert__(self) -> Tensor:
        return Tensor._from_array(~self.data, self.device)

    def __and__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a & b)

    def __or__(self, other: Any) -> Tensor:
        return self._compare(other, lambda a, b: a | b)

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise ValueError(
                f"the truth value of a tensor of shape {self.shape} is ambiguous; "
                "use .any() or .all()"
            )
        return bool(self.data)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def any(self, axis: Any = None, keepdim: bool = False, *, dim: Any = None) -> Tensor:
        """Whether any element is nonzero (along ``dim``): a bool tensor, as ``torch.any``."""
        return self._logical(self.data.any, axis if dim is None else dim, keepdim)

    def all(self, axis: Any = None, keepdim: bool = False, *, dim: Any = None) -> Tensor:
        """Whether every element is nonzero (along ``dim``): a bool tensor, as ``torch.all``."""
        return self._logical(self.data.all, axis if dim is None else dim, keepdim)

    def _logical(self, reduce: Callable, axis: Any, keepdim: bool) -> Tensor:
        axis = tuple(axis) if isinstance(axis, list) else axis
        out = reduce(axis=axis, keepdims=keepdim)
        return Tensor._from_array(backend.array_module(self.device).asarray(out), self.device)

    # ----- methods -----------------------------------------------------------------------
    # x.exp(), x.sum(axis=1), x.reshape(2, 3), ...: every op registered with method=True
    # becomes a method, x.name(*args) == ops.name(x, *args) (minitransformer.ops.registry).
    # Only the methods whose signature differs from their function's are written here.
    def argmax(self, axis: int | None = None, keepdim: bool = False, *,
               dim: int | None = None) -> Tensor:
        """Where the largest value is along ``axis`` (``x.argmax(1)`` is dim 1; None: the
        flat index). On ties the FIRST maximal index, as PyTorch on CPU (NumPy's rule)."""
        return self._arg(self.data.argmax, axis if dim is None else dim, keepdim)

    def argmin(self, axis: int | None = None, keepdim: bool = False, *,
               dim: int | None = None) -> Tensor:
        """Where the smallest value is along ``axis`` (the first one on ties)."""
        return self._arg(self.data.argmin, axis if dim is None else dim, keepdim)

    def _arg(self, find: Callable, axis: int | None, keepdim: bool) -> Tensor:
        where = find(axis=axis, keepdims=keepdim)
        return Tensor._from_array(backend.array_module(self.device).asarray(where), self.device)

    def clone(self) -> Tensor:
        """A copy of the values that stays in the graph: gradients flow back to ``self``."""
        from minitransformer.ops.elementwise import To

        return To.apply(self, dtype=None, device=self.device)

    def view(self, *shape: Any) -> Tensor:
        """The same as ``reshape`` (PyTorch's name)."""
        return ops.reshape(self, *shape)

    @property
    def T(self) -> Tensor:  # noqa: N802
        return ops.transpose(self)

    def t(self) -> Tensor:
        """A 0-, 1- or 2-D tensor transposed, as ``torch.Tensor.t`` (``x.T`` reverses every
        axis; use ``x.transpose(i, j)`` for tensors of more dimensions)."""
        if self.ndim > 2:
            from minitransformer.errors import ShapeError

            raise ShapeError(f"t() expects a tensor with <= 2 dimensions, got {self.ndim}-D "
                             f"of shape {self.shape}; use x.transpose(dim0, dim1)")
        return ops.transpose(self)

    def expand(self, *shape: Any) -> Tensor:
        """The same as ``broadcast_to`` (PyTorch's name)."""
        return ops.broadcast_to(self, *shape)

    # PyTorch's sorting and triangle methods (minitransformer.sorting, .creation)
    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:
        return _sorting.topk(self, k, dim, largest, sorted)

    def sort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Any:
        return _sorting.sort(self, dim, descending, stable)

    def unique(self, sorted: bool = True, return_inverse: bool = False,
               return_counts: bool = False, dim: int | None = None) -> Any:
        return _sorting.unique(self, sorted, return_inverse, return_counts, dim)

    def tril(self, diagonal: int = 0) -> Tensor:
        return _creation.tril(self, diagonal)

    def triu(self, diagonal: int = 0) -> Tensor:
        return _creation.triu(self, diagonal)


# ----- randomness ----------------------------------------------------------------------------
# One default generator per thread, so that threads that each call manual_seed draw the
# same numbers they would alone (a shared one would interleave their draws).
_thread_state = threading.local()


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the calling thread's default generator (behind ``randn``, ``rand``, layer
    initialisation and new dropout generators).

    Each thread has its own default generator: ``manual_seed`` in one thread does not
    change the numbers another thread draws. A thread that never calls it draws from a
    generator seeded from the operating system's entropy, so to make a worker thread
    reproducible, call ``manual_seed`` in that thread (or pass ``generator=``).
    """
    _thread_state.generator = np.random.default_rng(seed)
    return _thread_state.generator


def default_generator() -> np.random.Generator:
    """The calling thread's default generator (reseeded by :func:`manual_seed`)."""
    try:
        return _thread_state.generator
    except AttributeError:
        _thread_state.generator = np.random.default_rng()
        return _thread_state.generator


# ----- constructors ---------------------------------------------------------------------------
def check_grad(expected: Tensor, value: Any, what: str) -> None:
    """Raise unless ``value`` is a Tensor of ``expected``'s shape, dtype and device: what a
    gradient of ``expected`` must be. ``what`` names the value in the message ("assigned
    grad", "the value hook 'clip' returned")."""
    if not isinstance(value, Tensor):
        raise DtypeError(
            f"{what} must be a Tensor or None, not {type(value).__name__}; wrap it: "
            f"mt.tensor(value, dtype={expected.dtype}, device={expected.device!r})"
        )
    if value.shape != expected.shape:
        raise ShapeError(
            f"{what} has data of a different size: shape {value.shape} where shape "
            f"{expected.shape} was expected"
        )
    if value.dtype != expected.dtype:
        raise DtypeError(
            f"{what} has data of a different type: {value.dtype} where {expected.dtype} was "
            f"expected; cast it with .to({expected.dtype})"
        )
    if value.device != expected.device:
        raise DeviceError(
            f"{what} is on {value.device} where {expected.device} was expected; move it "
            f"with .to({expected.device!r})"
        )


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None, device: Any = None) -> Tensor:
    """A new leaf tensor holding a copy of ``data`` (Python floats become float32)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def _filled(fill: Callable, shape: tuple, dtype: Any, device: Any, requires_grad: bool) -> Tensor:
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        shape = tuple(shape[0])
    device = backend.normalize_device(device)
    xp = backend.array_module(device)
    array = fill(xp, shape, as_dtype(dtype) or float32)
    return Tensor._from_array(array, device).requires_grad_(requires_grad)


def zeros(
    *shape: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    return _filled(lambda xp, s, d: xp.zeros(s, d), shape, dtype, device, requires_grad)


def ones(*shape: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    return _filled(lambda xp, s, d: xp.ones(s, d), shape, dtype, device, requires_grad)


def _number_dtype(*values: Any) -> np.dtype:
    """PyTorch's dtype for Python numbers: float32 if any is a float, else int64; bool if all
    are bools."""
    values = [v.item() if isinstance(v, np.generic | Tensor) else v for v in values]
    if all(isinstance(v, bool) for v in values):
        return bool_
    return float32 if any(isinstance(v, float) for v in values) else int64


def full(shape: Sequence[int], fill_value: float, dtype: Any = None, device: Any = None,
         requires_grad: bool = False) -> Tensor:
    """As ``torch.full``: without ``dtype``, the fill value's (7 gives int64, 7.0 float32,
    True bool)."""
    dtype = dtype if dtype is not None else _number_dtype(fill_value)
    return _filled(lambda xp, s, d: xp.full(s, fill_value, d), (tuple(shape),), dtype, device,
                   requires_grad)


def randn(*shape: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False,
          generator: np.random.Generator | None = None) -> Tensor:
    """Standard-normal samples, drawn on the host from ``generator`` (or the default one)."""
    rng = generator if generator is not None else default_generator()
    target = backend.normalize_device(device)  # drawn on the host, then moved there
    return _filled(lambda xp, s, d: backend.to_device(rng.standard_normal(s).astype(d), target),
                   shape, dtype, device, requires_grad)


def rand(*shape: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False,
         generator: np.random.Generator | None = None) -> Tensor:
    rng = generator if generator is not None else default_generator()
    target = backend.normalize_device(device)
    return _filled(lambda xp, s, d: backend.to_device(rng.random(s).astype(d), target),
                   shape, dtype, device, requires_grad)


def arange(start: float, stop: float | None = None, step: float = 1, dtype: Any = None,
           device: Any = None, requires_grad: bool = False) -> Tensor:
    """As ``torch.arange``: without ``dtype``, int64 for integer bounds and step, float32
    (the default float) if any is a float."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        dtype = _number_dtype(start, stop, step, 0)  # the 0: bools count as integers
    device = backend.normalize_device(device)
    array = backend.array_module(device).arange(start, stop, step, dtype=as_dtype(dtype))
    return Tensor._from_array(array, device).requires_grad_(requires_grad)


def zeros_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def ones_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def randn_like(t: Tensor, dtype: Any = None, requires_grad: bool = False,
               generator: np.random.Generator | None = None) -> Tensor:
    return randn(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad,
                 generator=generator)


def as_tensor(x: Any, like: Tensor) -> Tensor:
    """``x`` as a tensor next to ``like``: scalars take ``like``'s float dtype and device."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (int, float)) and like.dtype.kind == "f":
        if like.device == "cpu":  # x * 0.5 is a hot path: see backend.constant
            return Tensor._from_array(backend.constant(x, like._data), "cpu")
        # A NumPy scalar of like's dtype: CuPy arrays combine with it (not with NumPy arrays).
        return Tensor._from_array(like.dtype.type(x), like.device)
    if is_torch_tensor(x):  # x + torch_tensor would otherwise convert it silently
        raise not_a_tensor(x, "an operand")
    return Tensor(x, device=like.device)


from minitransformer import autograd, ops  # noqa: E402  (ops need Tensor defined first)
from minitransformer import creation as _creation  # noqa: E402
from minitransformer import inplace as _inplace  # noqa: E402
from minitransformer import sorting as _sorting  # noqa: E402
from minitransformer.ops import elementwise as _elementwise  # noqa: E402
from minitransformer.ops.elementwise import apply_binary  # noqa: E402
