"""Reverse-mode automatic differentiation: recording ops, and walking them backwards.

Every differentiable op is a :class:`Function` whose ``forward`` and ``backward`` sit side
by side. Running an op while grad mode is on records a node: the output tensor points at
the Function, which points at its input tensors. :func:`run_backward` walks that graph in
reverse topological order (iteratively, so deep graphs cannot hit Python's recursion
limit), calling each node's ``backward`` once with the sum of the gradients that reached
its output: the multivariate chain rule.

One backward formula, two kinds of values. A plain ``backward()`` hands each formula raw
arrays (NumPy or CuPy), which is fast. With ``create_graph=True`` the same formula gets
tensors instead and runs with recording on, so the backward pass becomes a graph of its
own that can be differentiated again (gradients of gradients).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import operator
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar, Token
from typing import Any, TypeAlias

import numpy as np

from minitransformer import backend
from minitransformer.errors import DeviceError, GraphError, ShapeError, not_a_tensor

# What a backward formula computes with: arrays (NumPy or CuPy) in a plain backward, tensors
# under create_graph=True, where it is recorded (see Function). The formula is the same
# for both, so its signature names both at once.
Value: TypeAlias = Any

# Engine state is per thread, as PyTorch's grad mode is: ``no_grad`` in one thread, or a
# backward running there, must not change what another thread records. Context variables
# are per thread (each thread starts from the defaults) and also per asyncio task, and
# reading one costs little more than reading a global (this is on every op's hot path).
_grad_mode: ContextVar[bool] = ContextVar("minitransformer_grad_mode", default=True)
_grad_enabled = _grad_mode.get  # the hot-path read: _grad_enabled() -> bool
# The innermost Module whose forward is running in this thread; each recorded node
# remembers it, so that graphs can be drawn grouped by module (see minitransformer.viz).
_current_module: ContextVar[Any] = ContextVar("minitransformer_module", default=None)
# What watches this thread's backward walks (a minitransformer.trace.BackwardTrace, the
# explain page's recorder): a tuple read once per walk, empty unless someone is watching.
# Per thread, as grad mode is: a trace in one thread records no other's walks.
_observers: ContextVar[tuple[Any, ...]] = ContextVar("minitransformer_walk_observers",
                                                     default=())


@contextlib.contextmanager
def observing(observer: Any) -> Iterator[Any]:
    """Show ``observer`` every backward walk this thread runs inside the block.

    The engine calls ``observer.watch(order)`` before a walk, with the tensors it will visit
    (topological order), and ``observer.unwatch(order)`` after it, exception or not. That is
    the one hook point for observers (trace.py wraps node backwards for the walk in
    ``watch`` and unwraps them in ``unwatch``); with none installed a walk pays one read.
    """
    token = _observers.set((*_observers.get(), observer))
    try:
        yield observer
    finally:
        _observers.reset(token)


def current_observers() -> tuple[Any, ...]:
    """The observers watching this thread's backward walks (see :func:`observing`)."""
    return _observers.get()


def is_grad_enabled() -> bool:
    """Whether ops record a graph in the calling thread (True unless ``no_grad`` is on)."""
    return _grad_mode.get()


class _GradMode:
    """The one grad-mode switch behind ``no_grad``, ``enable_grad`` and ``set_grad_enabled``.

    A ``with`` block (or a decorated function) runs with grad mode ``self.mode`` in the
    calling thread and restores the previous mode on exit, exception or not. Other threads
    are not affected. One instance may be entered by several threads at once: each thread
    keeps its own way back.
    """

    mode = True

    def __init__(self) -> None:
        self._tokens: dict[int, list[Token]] = {}

    def __enter__(self) -> None:
        token = _grad_mode.set(self.mode)
        self._tokens.setdefault(threading.get_ident(), []).append(token)

    def __exit__(self, *exc: object) -> None:
        tokens = self._tokens[threading.get_ident()]
        _grad_mode.reset(tokens.pop())
        if not tokens:
            del self._tokens[threading.get_ident()]

    def __call__(self, fn: Callable) -> Callable:
        mode = self.mode
        if inspect.isgeneratorfunction(fn):
            return _generator_in_mode(fn, mode)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _grad_mode.set(mode)
            try:
                return fn(*args, **kwargs)
            finally:
                _grad_mode.reset(token)

        return wrapper


def _generator_in_mode(fn: Callable, mode: bool) -> Callable:
    """``fn`` (a generator function) with grad mode ``mode`` whenever its body runs.

    A plain wrapper would only cover the call that makes the generator, which runs none of
    its body: the body runs later, at each ``next``, in whatever mode the caller is in. So,
    as PyTorch's decorators do, switch the mode around each resumption (``next``, ``send``,
    ``throw``, ``close``) and give the caller's mode back at each ``yield``.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        gen = fn(*args, **kwargs)
        resume, value = gen.send, None
        while True:
            token = _grad_mode.set(mode)
            try:
                item = resume(value)
            except StopIteration as stop:
                return stop.value
            finally:
                _grad_mode.reset(token)
            try:
                value = yield item
                resume = gen.send
            except GeneratorExit:
                token = _grad_mode.set(mode)
                try:
                    gen.close()
                finally:
                    _grad_mode.reset(token)
                raise
            except BaseException as error:  # thrown in by the caller: on into fn's body
                resume, value = gen.throw, error

    return wrapper


class no_grad(_GradMode):  # noqa: N801 (named like torch.no_grad)
    """Record nothing: no graph, no saved values. Context manager or decorator."""

    mode = False


class enable_grad(_GradMode):  # noqa: N801
    """Record again inside a ``no_grad`` block."""

    mode = True


class set_grad_enabled(_GradMode):  # noqa: N801
    """Grad mode on or off, like ``torch.set_grad_enabled``.

    As a ``with`` block it applies inside the block only; called on its own
    (``mt.set_grad_enabled(False)``) it switches the calling thread's mode until changed.
    """

    def __init__(self, mode: bool) -> None:
        super().__init__()
        self.mode = bool(mode)
        # Switch now, so that a bare call takes effect; a with block restores on exit.
        self._previous = _grad_mode.set(self.mode)

    def __enter__(self) -> None:
        pass  # __init__ already switched

    def __exit__(self, *exc: object) -> None:
        _grad_mode.reset(self._previous)

    def __call__(self, fn: Callable) -> Callable:
        _grad_mode.reset(self._previous)  # as a decorator it switches only around calls
        return super().__call__(fn)


@contextlib.contextmanager
def module_scope(module: Any) -> Iterator[None]:
    """Tag the nodes recorded inside the block with ``module`` (used by ``Module.__call__``)."""
    token = _current_module.set(module)
    try:
        yield
    finally:
        _current_module.reset(token)


# ----- in-place changes -----------------------------------------------------------------------
# A node's backward reads its inputs' arrays as they are when the backward runs. If an
# input changed in between (an optimizer step, load_state_dict, Module.to, a new .data),
# the gradient would be silently wrong. So each recorded node keeps the "epoch" at which
# it was recorded, and every in-place change made through the project's API calls
# mark_changed, which starts a new epoch and notes, per block of memory, when and by what
# it was last changed (a tensor given a new array is noted per tensor, note_new_array).
# Views share their base's memory, so a change to a weight is seen through weight.T too
# (PyTorch shares a version counter between views the same way). The backward looks at
# a node's inputs only if the epoch moved on since the node was recorded.
# Not detectable: writes into an array by hand (t.data[...] = x, NumPy's out=), since no
# code of ours runs when they happen; see docs/autograd.md.
_epoch = [0]  # bumped by every mark_changed; a list so that readers need no global
_epoch_lock = threading.Lock()
# id(base array) -> (count, epoch, what, weak reference to the base or None). Keying by id
# is sound for the check: a node keeps its input arrays (and so their bases) alive, so a
# record made after the node was recorded under the same id is about that same memory.
_changes: dict[int, tuple[int, int, str, Any]] = {}
# id(tensor) -> (epoch, weak reference to the tensor): when a tensor was last given a new
# array (t.data = a, Module.to). Nodes keep no copy of their input arrays to compare with:
# that would be one more object per op for the cyclic garbage collector to walk.
_new_arrays: dict[int, tuple[int, Any]] = {}


def _base(array: Any) -> Any:
    """The array that owns the memory ``array`` looks at (itself unless it is a view)."""
    while getattr(array, "base", None) is not None and backend.is_array(array.base):
        array = array.base
    return array


def mark_changed(tensor: Tensor, what: str) -> None:
    """Record that ``tensor``'s values were changed in place by ``what`` (e.g. "SGD.step()").

    Every in-place change through the project's API calls this, so that a backward through
    a graph recorded before the change raises instead of giving wrong gradients.
    """
    base = _base(tensor.data)
    key = id(base)
    with _epoch_lock:
        _epoch[0] += 1
        record = _record_of(base)
        count = record[0] + 1 if record is not None else 1
        ref = record[3] if record is not None else _weak_ref(base, key, _changes)
        shape = f"shape {tensor.shape}" + (f", '{tensor.name}'" if tensor.name else "")
        _changes[key] = (count, _epoch[0], f"{what} (on the tensor of {shape})", ref)


def note_new_array(tensor: Tensor) -> None:
    """Record that ``tensor`` was given a new array (``t.data = a``), in a new epoch."""
    key = id(tensor)
    with _epoch_lock:
        _epoch[0] += 1
        entry = _new_arrays.get(key)
        alive = entry is not None and entry[1]() is tensor
        ref = entry[1] if alive else _weak_ref(tensor, key, _new_arrays)
        _new_arrays[key] = (_epoch[0], ref)


def _weak_ref(obj: Any, key: int, table: dict[int, tuple]) -> Any:
    """A weak reference to ``obj`` that deletes ``table[key]`` when ``obj`` dies (if the
    entry still holds this reference: the id may have been reused meanwhile)."""
    def forget(ref: weakref.ref) -> None:
        if key in table and table[key][-1] is ref:
            del table[key]

    try:
        return weakref.ref(obj, forget)
    except TypeError:  # CuPy arrays take no weak references: the record stays (a few bytes)
        return None


def _record_of(base: Any) -> tuple[int, int, str, Any] | None:
    record = _changes.get(id(base))
    if record is not None and record[3] is not None and record[3]() is not base:
        return None  # another array that once had this id
    return record


def version_of(tensor: Tensor) -> int:
    """How many in-place changes the memory of ``tensor`` has had through the API."""
    record = _record_of(_base(tensor.data))
    return 0 if record is None else record[0]


def _check_unchanged(fn: Function) -> None:
    """Raise, naming the input and what changed it, if an input of ``fn`` changed since
    ``fn`` was recorded. Called only for nodes recorded before the latest epoch: until
    something changes in place, no node needs looking at."""
    epoch = fn._epoch
    for position, t in enumerate(fn.inputs):
        new_array = _new_arrays.get(id(t))
        if new_array is not None and new_array[0] > epoch and new_array[1]() is t:
            # a new array (Module.to, or a user's .data = ...): even a shape-only backward
            # may now get a wrong shape or dtype
            record = _record_of(_base(t.data))
            what = record[2] if record is not None and record[1] > epoch else "assigning its .data"
        else:
            reads = fn.uses_input_values
            reads = reads if reads.__class__ is bool else reads[position]  # per input
            record = _record_of(_base(t.data)) if reads else None
            if record is None or record[1] <= epoch:
                continue
            what = record[2]
        _raise_modified(f"input {position}", fn, t, what)
    if fn.uses_output:  # y = x.exp(); y *= 2: Exp's backward would read the new y
        out = fn._output_ref()
        record = _record_of(_base(out.data)) if out is not None else None
        if record is not None and record[1] > epoch:
            _raise_modified("output 0", fn, out, record[2])


def _raise_modified(which: str, fn: Function, t: Tensor, what: str) -> None:
    name = f" '{t.name}'" if t.name else ""
    raise GraphError(
        f"a tensor needed for gradient computation was modified in place: {which} of "
        f"{fn.name}, the tensor{name} of shape {t.shape}, was changed by {what} after the "
        "forward pass; run the forward again after changing it (e.g. call optimizer.step() "
        "after backward, not between forward and backward; or write `a = a + b`, out of "
        "place, instead of `a += b`)"
    )


class Function:
    """One differentiable op: ``forward`` on arrays, ``backward`` on arrays or tensors.

    Subclasses implement::

        def forward(self, *arrays, **params) -> array   # may stash arrays on self
        def backward(self, grad) -> tuple                # one gradient (or None) per input

    Inside ``backward``, read the inputs as ``self.args`` and the output as
    ``self.output()`` (for classes with ``uses_output = True``), and take math functions
    from ``self.xp``. The engine sets ``self.create_graph`` on each node before calling its
    backward. When it is False (a plain ``backward()``) ``grad``, ``self.args`` and
    ``self.output()`` are arrays and ``self.xp`` is NumPy/CuPy; when it is True
    (``create_graph=True``) they are tensors and ``self.xp`` is :mod:`minitransformer.ops`,
    with recording on, so the backward becomes a graph that can be differentiated again.
    Either way the formula reads the same. Three rules make that work:

    1. Every ``self.xp.<name>`` a backward uses must exist, with the same meaning, in
       NumPy, in CuPy and in :mod:`minitransformer.ops` (``tests/test_contract.py``
       checks). ``self.xp.cosh`` would pass a plain backward and fail under create_graph.
    2. Whatever ``forward`` stores on ``self`` is a CONSTANT under create_graph: right for
       a mask, indices or a shape; silently wrong for a value that depends on the inputs
       (a ``Sinh`` that stores ``cosh(x)`` gets first derivatives right and second ones
       wrong). Recompute such values from ``self.args`` / ``self.output()`` in backward,
       or use the saved copy only when ``not self.create_graph``.
    (``Value``, the type in every backward's signature, names both kinds at once.)

    3. A backward branches on ``self.create_graph`` and on nothing else (not on the
       global grad mode, not on ``isinstance(grad, Tensor)``), and under create_graph it
       builds every gradient from tensors with recorded ops.

    ``gradgradcheck`` runs on every registered op (``tests/test_contract.py``), which is
    what catches a broken rule 2; the same test holds each op's first derivative under
    create_graph equal to the plain one (a create_graph path of its own, with a sign error,
    would pass gradgradcheck). ``docs/contributing.md`` walks through adding an op.
    """

    # What the engine records on every node are slots (cheaper to write than a dict, and
    # one node is made per op); what an op's forward stashes goes to the instance's __dict__.
    __slots__ = ("inputs", "module", "_epoch", "__dict__", "__weakref__")

    create_graph = False  # set by the engine on each node, just before its backward
    uses_output = False  # keep a weak reference to the output for backward
    changes_device = False  # only To: its output lives on another device than its input
    # False where backward reads only the inputs' shapes (Add, Sum, Reshape...): then an
    # in-place change of an input's values between forward and backward is harmless. A
    # tuple says it input by input (Linear reads x and W, not b).
    uses_input_values: bool | tuple[bool, ...] = True

    inputs: tuple[Tensor, ...]  # the input tensors: the graph's edges
    module: Any  # the innermost Module running when this node was recorded, or None
    released = False  # set once backward has freed what forward saved
    # True for a node whose plain backward only places its gradient into a part of its one
    # input's (indexing: GetItem). The walk then calls ``add_gradient_into(buffer, grad)``
    # to add it into the input's summed gradient directly (see run_backward), instead of
    # ``backward`` making an input-sized array of zeros for every piece.
    adds_into_input_gradient = False
    # True where a plain backward always returns new arrays, one per input, that nothing
    # else holds (matrix products, the fused ops): the walk may then add into them and keep
    # them as a leaf's .grad without a copy. Not for formulas that pass ``grad`` on (Add).
    fresh_input_gradients = False

    @classmethod
    def apply(cls, *inputs: Tensor, **params: Any) -> Tensor:
        """Run the op on ``inputs`` and, if any needs a gradient, record it."""
        fn = cls()
        try:
            device = inputs[0].device
            for t in inputs:
                if t.device != device:
                    raise DeviceError(
                        f"{cls.__name__} got tensors on different devices: "
                        f"{', '.join(x.device for x in inputs)}; move them with .to(device)"
                    )
            # The common calls spelled out: unpacking *arrays and an empty **params into
            # the call costs 0.4 us an op, a third of the engine's own time on 8x8 x * y.
            if params:
                data = fn.forward(*map(_data_of, inputs), **params)
            elif len(inputs) == 2:
                data = fn.forward(inputs[0]._data, inputs[1]._data)
            elif len(inputs) == 1:
                data = fn.forward(inputs[0]._data)
            else:
                data = fn.forward(*map(_data_of, inputs))
        except (AttributeError, TypeError):  # not all Tensors: say which (free when they are)
            for t in inputs:
                if not isinstance(t, Tensor):
                    raise not_a_tensor(t, f"{cls.__name__}: an input") from None
            raise  # all Tensors: the op's own error, as it was
        if cls.changes_device:
            device = backend.device_of(data)
        elif data.__class__ in _NUMPY_SCALARS:  # NumPy returns scalars from 0-d ops
            data = np.asarray(data)
        out = _new_tensor(Tensor)  # Tensor._from_array, without its call (0.1 us an op)
        out._data = data
        out.device = device
        out.requires_grad = False
        out._ctx = None
        if _grad_enabled():
            for t in inputs:
                if t.requires_grad:
                    _record(fn, inputs, out)
                    break
        return out

    @classmethod
    def apply_pair(cls, x: Tensor, y: Tensor) -> Tensor:
        """:meth:`apply` for two tensors and no parameters (``x * y``, ``x + y``; not for
        ops that change device): the same steps, spelled out for the commonest call (an
        8x8 ``x * y`` takes 0.95 us instead of 1.15)."""
        device = x.device
        if y.device != device:
            return cls.apply(x, y)  # which raises, saying so
        fn = cls()
        data = fn.forward(x._data, y._data)
        if data.__class__ in _NUMPY_SCALARS:  # NumPy returns scalars from 0-d ops
            data = np.asarray(data)
        out = _new_tensor(Tensor)
        out._data = data
        out.device = device
        out.requires_grad = False
        out._ctx = None
        if _grad_enabled() and (x.requires_grad or y.requires_grad):
            _record(fn, (x, y), out)
        return out

    @property
    def args(self) -> tuple[Value, ...]:
        """The inputs, as arrays in a plain backward and as tensors under create_graph."""
        inputs = self.inputs
        if self.create_graph:
            return inputs
        if len(inputs) == 2:  # spelled out for binary ops: 0.05 us, tuple(map(...)) 0.16
            return inputs[0]._data, inputs[1]._data
        return tuple(map(_data_of, inputs))

    def output(self) -> Value:
        """The output, as an array or a tensor like :attr:`args`."""
        out = self._output_ref()
        return out if self.create_graph else out._data  # (not the .data property: 0.04 us)

    @property
    def xp(self) -> Any:
        """Math functions for :attr:`args`: NumPy/CuPy, or the tensor ops under create_graph."""
        if self.create_graph:
            return ops
        return backend.array_math(self.inputs[0].device)

    @property
    def needs_input_grad(self) -> tuple[bool, ...]:
        """For each input, whether it wants a gradient (a backward may skip the others)."""
        inputs = self.inputs
        if len(inputs) == 2:  # spelled out, as in args
            return inputs[0].requires_grad, inputs[1].requires_grad
        return tuple(map(_requires_grad_of, inputs))

    def forward(self, *arrays: Any, **params: Any) -> Any:
        raise NotImplementedError

    def backward(self, grad: Value) -> tuple[Value | None, ...]:
        raise NotImplementedError

    def release(self) -> None:
        """Drop what ``forward`` saved; the graph's structure stays for drawing."""
        self.__dict__ = {"released": True}  # inputs and module (slots) stay

    @property
    def name(self) -> str:
        return type(self).__name__


def _record(fn: Function, inputs: tuple[Tensor, ...], out: Tensor) -> None:
    """Make ``fn`` the node that computed ``out`` from ``inputs`` (a graph edge per input)."""
    fn.inputs = inputs
    fn.module = _current_module.get()
    fn._epoch = _epoch[0]  # see _check_unchanged
    out.requires_grad = True
    out._ctx = fn
    if fn.uses_output:
        fn._output_ref = weakref.ref(out)


# attrgetter in map() runs without a Python frame per item (these are on every node's path).
_data_of = operator.attrgetter("_data")  # Tensor.data without the property call
_requires_grad_of = operator.attrgetter("requires_grad")
_new_tensor = object.__new__  # a bare Tensor, its slots set by the caller
_NUMPY_SCALARS = frozenset(
    {np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8,
     np.bool_, np.complex64, np.complex128}
)


def _topological_order(roots: Sequence[Tensor]) -> list[Tensor]:
    """Tensors that need gradients, each after everything it depends on (iterative DFS).

    Also fails, before any ``.grad`` changes, if the walk reaches a node whose saved values
    an earlier backward released: better no gradients than half of them.
    """
    order: list[Tensor] = []
    visited: set[Tensor] = set()  # tensors as keys: see run_backward's grads
    stack: list[tuple[Tensor, bool]] = [(r, False) for r in roots]
    while stack:
        tensor, children_done = stack.pop()
        if children_done:
            order.append(tensor)
            continue
        if tensor in visited:
            continue
        visited.add(tensor)
        stack.append((tensor, True))
        fn = tensor._ctx
        if fn is not None:
            if fn.released:
                raise GraphError(
                    f"trying to backward through the graph a second time: the values saved "
                    f"by {fn.name} were freed after the first backward; call backward with "
                    "retain_graph=True the first time if you need to backward twice"
                )
            for parent in fn.inputs:
                if parent.requires_grad and parent not in visited:
                    stack.append((parent, False))
    return order


def _root_gradient(root: Tensor, gradient: Any) -> Tensor:
    """The gradient to start from: ones for a scalar, else the caller's, checked."""
    if not root.requires_grad:
        raise GraphError(
            f"backward on a tensor that does not require grad (shape {root.shape}); "
            "create the inputs with requires_grad=True"
        )
    if gradient is None:
        if root.data.size != 1:
            raise GraphError(
                f"backward on a non-scalar tensor of shape {root.shape} needs a `gradient` "
                "argument of that shape (grad can be implicitly created only for scalars)"
            )
        return Tensor._from_array(backend.array_module(root.device).ones_like(root.data),
                                  root.device)
    if not isinstance(gradient, Tensor):
        gradient = Tensor(gradient, dtype=root.dtype, device=root.device)
    if gradient.shape != root.shape:
        raise ShapeError(
            f"gradient has shape {gradient.shape} but the tensor it is for has shape {root.shape}"
        )
    return gradient


# Held while a gradient is added into a .grad: two threads running backward into one
# shared leaf would otherwise both read the old .grad and one sum would be lost.
_accumulate_lock = threading.Lock()


def _in_dtype_of(tensor: Tensor, g: Any, create_graph: bool) -> Any:
    """``g`` cast to ``tensor``'s dtype, where it differs (mixed-dtype expressions)."""
    dtype = tensor._data.dtype
    if g.dtype is not dtype and g.dtype != dtype:  # NumPy's dtypes are shared: `is` first
        return ops.to(g, dtype=dtype) if create_graph else g.astype(dtype)
    return g


def _accumulate_into(tensor: Tensor, g: Any, create_graph: bool, copy: bool = True) -> None:
    """``tensor.grad += g``, in ``tensor``'s dtype (a float32 weight used in a float64
    expression still gets a float32 .grad, as in PyTorch). Plain gradients get memory of
    their own first (``copy``), since one array may have been handed to several tensors
    (``x + y`` passes ``grad`` to both); the walk says when the array is its own."""
    g = _in_dtype_of(tensor, g, create_graph)
    with _accumulate_lock:
        old = tensor._grad
        if create_graph:
            new = g if old is None else old + g
        else:
            first = g.copy() if copy else g
            new = Tensor._from_array(first if old is None else old.data + g, tensor.device)
        if tensor.name is not None and new.name is None:
            new.name = "d" + tensor.name  # the gradient of Q is dQ
        tensor._grad = new  # checked already: the engine's own sum has the right shape


def run_backward(
    roots: Sequence[Tensor],
    root_grads: Sequence[Any],
    retain_graph: bool = False,
    create_graph: bool = False,
    capture: Sequence[Tensor] | None = None,
) -> list[Tensor | None] | None:
    """The engine behind ``Tensor.backward`` and :func:`grad`.

    micrograd's walk: visit the tensors in reverse topological order; at each, call its
    node's ``backward`` with the gradient that reached it, dL/d(output), and add what comes
    back into each input's gradient (the chain rule, summed where paths meet). What a tensor
    engine adds: gradients are arrays (or tensors under create_graph, recorded), hooks may
    replace one, saved values are released after use, an input changed in place since the
    forward is refused, and observers (:func:`observing`) see the walk.

    Gradients of leaves (and of tensors that called ``retain_grad``) are accumulated into
    ``.grad``, unless ``capture`` is given: then the gradients of those tensors are
    returned and no ``.grad`` is touched.
    """
    # Gradients travel as arrays in a plain backward and as tensors under create_graph.
    # Keyed by the tensor itself: Tensor hashes by identity (object.__hash__), and a dict
    # compares keys by identity before equality, so Tensor's elementwise == never runs;
    # this is faster than keying by id(tensor).
    create_graph = bool(create_graph)  # compared by identity on every node below
    grads: dict[Tensor, Any] = {}
    for root, gradient in zip(roots, root_grads):
        g = _root_gradient(root, gradient)
        g = g if create_graph else g.data
        grads[root] = grads[root] + g if root in grads else g

    order = _topological_order(roots)
    # ids of gradient arrays in ``grads`` that this walk made and nobody else holds (sums,
    # and the buffers of _add_into_input_gradient): only those may be added into in place
    owned: set[int] = set()
    observers = _observers.get()
    for observer in observers:  # e.g. a trace, which wraps node backwards for this walk
        observer.watch(order)
    captured: dict[Tensor, Any] = {} if capture is None else {t: None for t in capture}
    mode = _grad_mode.set(bool(create_graph))  # a plain backward records nothing
    try:
        for tensor in reversed(order):
            g = grads.pop(tensor, None)
            if g is None:
                continue
            mine = bool(owned) and id(g) in owned  # an array this walk made: no copy needed
            if mine:
                owned.remove(id(g))  # handed on now: never written into again
            if tensor._hooks:
                g = _run_hooks(tensor, g, create_graph)
                mine = False  # a hook may have kept it
            if create_graph and tensor.name is not None and g.name is None:
                g.name = "d" + tensor.name  # label the backward graph: dZ, dA, dS, dQ, ...
            fn = tensor._ctx
            if capture is not None:
                if tensor in captured:
                    captured[tensor] = _in_dtype_of(tensor, g, create_graph)
            elif fn is None or tensor._retains_grad:
                _accumulate_into(tensor, g, create_graph, copy=not mine)
            if fn is None:
                continue
            if fn._epoch != _epoch[0]:
                _check_unchanged(fn)  # something changed in place since the forward: an input?
            if fn.adds_into_input_gradient and not create_graph and not observers:
                _add_into_input_gradient(fn, g, grads, owned)
                if not retain_graph:
                    fn.release()
                continue
            if fn.create_graph is not create_graph:  # the mode this backward runs in
                fn.create_graph = create_graph  # (written only if new: it gives fn a __dict__)
            input_grads = fn.backward(g)
            if not retain_graph:
                fn.release()
            fresh = fn.fresh_input_gradients and not create_graph
            for parent, pg in zip(fn.inputs, input_grads):
                if pg is None or not parent.requires_grad:
                    continue
                if not create_graph and pg.__class__ is Tensor:
                    pg = pg.data  # a formula that built a tensor from a saved constant
                earlier = grads.get(parent)  # the parent feeds several nodes: sum (chain rule)
                if earlier is None:
                    grads[parent] = pg
                    if fresh and backend.is_array(pg):
                        owned.add(id(pg))
                elif id(earlier) in owned and earlier.dtype == pg.dtype:
                    earlier += pg  # into the walk's own array (never a NumPy scalar)
                else:
                    grads[parent] = summed = earlier + pg
                    if not create_graph:
                        owned.discard(id(earlier))  # dropped: its id may be reused
                        if backend.is_array(summed):  # (0-d sums are NumPy scalars)
                            owned.add(id(summed))  # a new array the walk alone holds
    finally:
        _grad_mode.reset(mode)
        for observer in reversed(observers):
            observer.unwatch(order)

    if capture is None:
        return None
    return [_as_tensor_grad(captured[t], t) for t in capture]


def _add_into_input_gradient(fn: Function, g: Any, grads: dict[Tensor, Any],
                             owned: set[int]) -> None:
    """An indexing node's plain backward, done in the walk: ``g`` is added at the node's
    index into its input's summed gradient, which is made (zeros) or copied first unless
    it is an array this walk owns. For q, k, v = x.split(n, dim=-1) that is one input-sized
    array instead of one per piece plus two sums."""
    (parent,) = fn.inputs
    if not parent.requires_grad:
        return
    buffer = grads.get(parent)
    if buffer is None or id(buffer) not in owned or buffer.dtype != g.dtype:
        fresh = backend.array_module(parent.device).zeros(parent.shape, dtype=g.dtype)
        if buffer is not None:
            fresh += buffer  # what the other nodes sent so far
            owned.discard(id(buffer))  # dropped: its id may be reused
        grads[parent] = buffer = fresh
        owned.add(id(buffer))
    fn.add_gradient_into(buffer, g)


def _run_hooks(tensor: Tensor, g: Any, create_graph: bool) -> Any:
    """Hooks see (and may replace) the gradient as a tensor; a replacement must be a tensor
    of the same shape, dtype and device (as in PyTorch), or the walk would go on wrong."""
    as_tensor = g if create_graph else Tensor._from_array(g, tensor.device)
    for hook in tensor._hooks:
        replaced = hook(as_tensor)
        if replaced is not None:
            check_grad(as_tensor, replaced, f"the value hook {_name_of(hook)} returned")
            as_tensor = replaced
    return as_tensor if create_graph else as_tensor.data


def _name_of(hook: Callable) -> str:
    return repr(getattr(hook, "__qualname__", None) or type(hook).__name__)


def _as_tensor_grad(g: Any, like: Tensor) -> Tensor | None:
    if g is None or isinstance(g, Tensor):
        return g
    return Tensor._from_array(g, like.device)


def grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Any | Sequence[Any] | None = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool = False,
) -> tuple[Tensor | None, ...]:
    """Gradients of ``outputs`` with respect to ``inputs``, returned (``.grad`` untouched).

    Like ``torch.autograd.grad``: ``retain_graph`` defaults to ``create_graph``.
    """
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs]
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"got {len(grad_outputs)} grad_outputs for {len(outputs)} outputs")
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise GraphError(f"input {i} (shape {t.shape}) does not require grad")
    if retain_graph is None:
        retain_graph = create_graph
    result = run_backward(outputs, grad_outputs, retain_graph, create_graph, capture=inputs)
    for i, g in enumerate(result):
        if g is None and not allow_unused:
            raise GraphError(
                f"input {i} (shape {inputs[i].shape}) was not used to compute the outputs; "
                "pass allow_unused=True to get None for it"
            )
    return tuple(result)


def recorded_gradients(output: Tensor, inputs: tuple[Tensor, ...],
                       grad_output: Tensor) -> tuple[Tensor | None, ...]:
    """d(output . grad_output) / d(input) for each input that requires grad (None for the
    others), recorded: how a fused op's create_graph branch differentiates its readable
    reference composition (one formula for second derivatives; see Function)."""
    wanted = [t for t in inputs if t.requires_grad]
    found = iter(grad(output, wanted, grad_outputs=grad_output, create_graph=True,
                      allow_unused=True))
    return tuple(next(found) if t.requires_grad else None for t in inputs)


from minitransformer import ops  # noqa: E402  (ops and tensor import this module)
from minitransformer.tensor import Tensor, check_grad  # noqa: E402
