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
import operator
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeAlias

import numpy as np

from minitransformer import backend
from minitransformer.errors import DeviceError, GraphError, ShapeError

# What a backward formula computes with: arrays (NumPy or CuPy) in a plain backward, tensors
# under create_graph=True, where it is recorded (see Function). The formula is the same
# for both, so its signature names both at once.
Value: TypeAlias = Any

_grad_enabled = True
# A minitransformer.trace.BackwardTrace while one records, else None: read once per walk.
_backward_tracer: Any = None
# The Modules whose forward is running, innermost last; each recorded node remembers the
# innermost one, so that graphs can be drawn grouped by module (see minitransformer.viz).
_module_stack: list[Any] = []


def is_grad_enabled() -> bool:
    return _grad_enabled


@contextlib.contextmanager
def set_grad_enabled(mode: bool) -> Iterator[None]:
    """Turn recording on or off inside a ``with`` block."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, bool(mode)
    try:
        yield
    finally:
        _grad_enabled = previous


class _GradModeContext:
    """Base of ``no_grad`` / ``enable_grad``: usable as ``with`` block and as decorator."""

    mode = True

    def __enter__(self) -> None:
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = self.mode

    def __exit__(self, *exc: object) -> None:
        global _grad_enabled
        _grad_enabled = self._previous

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.__class__():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradModeContext):  # noqa: N801 (named like torch.no_grad)
    """Record nothing: no graph, no saved values. Context manager or decorator."""

    mode = False


class enable_grad(_GradModeContext):  # noqa: N801
    """Record again inside a ``no_grad`` block."""

    mode = True


@contextlib.contextmanager
def module_scope(module: Any) -> Iterator[None]:
    """Tag the nodes recorded inside the block with ``module`` (used by ``Module.__call__``)."""
    _module_stack.append(module)
    try:
        yield
    finally:
        _module_stack.pop()


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
    what catches a broken rule 2. ``docs/contributing.md`` walks through adding an op.
    """

    create_graph = False  # set by the engine on each node, just before its backward
    uses_output = False  # keep a weak reference to the output for backward
    changes_device = False  # only To: its output lives on another device than its input

    inputs: tuple[Tensor, ...]  # the input tensors: the graph's edges
    module: Any  # the innermost Module running when this node was recorded, or None
    released = False  # set once backward has freed what forward saved

    @classmethod
    def apply(cls, *inputs: Tensor, **params: Any) -> Tensor:
        """Run the op on ``inputs`` and, if any needs a gradient, record it."""
        device = inputs[0].device
        for t in inputs:
            if t.device != device:
                raise DeviceError(
                    f"{cls.__name__} got tensors on different devices: "
                    f"{', '.join(x.device for x in inputs)}; move them with .to(device)"
                )
        fn = cls()
        data = fn.forward(*map(_data_of, inputs), **params)
        if cls.changes_device:
            device = backend.device_of(data)
        elif data.__class__ in _NUMPY_SCALARS:  # NumPy returns scalars from 0-d ops
            data = np.asarray(data)
        out = Tensor._from_array(data, device)
        if _grad_enabled:
            for t in inputs:
                if t.requires_grad:
                    fn.inputs = inputs
                    fn.module = _module_stack[-1] if _module_stack else None
                    out.requires_grad = True
                    out._ctx = fn
                    if cls.uses_output:
                        fn._output_ref = weakref.ref(out)
                    break
        return out

    @property
    def args(self) -> tuple[Value, ...]:
        """The inputs, as arrays in a plain backward and as tensors under create_graph."""
        if self.create_graph:
            return self.inputs
        return tuple(map(_data_of, self.inputs))

    def output(self) -> Value:
        """The output, as an array or a tensor like :attr:`args`."""
        out = self._output_ref()
        return out if self.create_graph else out.data

    @property
    def xp(self) -> Any:
        """Math functions for :attr:`args`: NumPy/CuPy, or the tensor ops under create_graph."""
        if self.create_graph:
            return ops
        return backend.array_math(self.inputs[0].device)

    @property
    def needs_input_grad(self) -> tuple[bool, ...]:
        return tuple([t.requires_grad for t in self.inputs])

    def forward(self, *arrays: Any, **params: Any) -> Any:
        raise NotImplementedError

    def backward(self, grad: Value) -> tuple[Value | None, ...]:
        raise NotImplementedError

    def release(self) -> None:
        """Drop what ``forward`` saved; the graph's structure stays for drawing."""
        self.__dict__ = {"inputs": self.inputs, "module": self.module, "released": True}

    @property
    def name(self) -> str:
        return type(self).__name__


_data_of = operator.attrgetter("data")
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
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(r, False) for r in roots]
    while stack:
        tensor, children_done = stack.pop()
        if children_done:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
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
                if parent.requires_grad and id(parent) not in visited:
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


def _accumulate_into(tensor: Tensor, g: Any, create_graph: bool) -> None:
    """Add ``g`` to ``tensor.grad``; plain gradients get memory of their own first, since
    one array may have been handed to several tensors (``x + y`` passes ``grad`` to both)."""
    if create_graph:
        tensor.grad = g if tensor.grad is None else tensor.grad + g
    elif tensor.grad is None:
        tensor.grad = Tensor._from_array(g.copy(), tensor.device)
    else:
        tensor.grad = Tensor._from_array(tensor.grad.data + g, tensor.device)
    if tensor.name is not None and tensor.grad.name is None:
        tensor.grad.name = "d" + tensor.name  # the gradient of Q is dQ


def run_backward(
    roots: Sequence[Tensor],
    root_grads: Sequence[Any],
    retain_graph: bool = False,
    create_graph: bool = False,
    capture: Sequence[Tensor] | None = None,
) -> list[Tensor | None] | None:
    """The engine behind ``Tensor.backward`` and :func:`grad`.

    Gradients of leaves (and of tensors that called ``retain_grad``) are accumulated into
    ``.grad``, unless ``capture`` is given: then the gradients of those tensors are
    returned and no ``.grad`` is touched.
    """
    # Gradients travel as arrays in a plain backward and as tensors under create_graph.
    grads: dict[int, Any] = {}
    for root, gradient in zip(roots, root_grads):
        g = _root_gradient(root, gradient)
        g = g if create_graph else g.data
        grads[id(root)] = grads[id(root)] + g if id(root) in grads else g

    order = _topological_order(roots)
    tracer = _backward_tracer
    if tracer is not None:  # wraps each node's backward for this walk (see trace.py)
        tracer.watch(order)
    captured: dict[int, Any] = {} if capture is None else {id(t): None for t in capture}
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, bool(create_graph)
    try:
        for tensor in reversed(order):
            key = id(tensor)
            g = grads.pop(key, None)
            if g is None:
                continue
            if tensor._hooks:
                g = _run_hooks(tensor, g, create_graph)
            if create_graph and tensor.name is not None and g.name is None:
                g.name = "d" + tensor.name  # label the backward graph: dZ, dA, dS, dQ, ...
            fn = tensor._ctx
            if capture is not None:
                if key in captured:
                    captured[key] = g
            elif fn is None or tensor._retains_grad:
                _accumulate_into(tensor, g, create_graph)
            if fn is None:
                continue
            fn.create_graph = create_graph  # the mode this backward runs in (see Function)
            input_grads = fn.backward(g)
            if not retain_graph:
                fn.release()
            for parent, pg in zip(fn.inputs, input_grads):
                if pg is None or not parent.requires_grad:
                    continue
                if not create_graph and pg.__class__ is Tensor:
                    pg = pg.data  # a formula that built a tensor from a saved constant
                key = id(parent)
                grads[key] = grads[key] + pg if key in grads else pg
    finally:
        _grad_enabled = previous
        if tracer is not None:
            tracer.unwatch(order)

    if capture is None:
        return None
    return [_as_tensor_grad(captured[id(t)], t) for t in capture]


def _run_hooks(tensor: Tensor, g: Any, create_graph: bool) -> Any:
    """Hooks see (and may replace) the gradient as a tensor."""
    as_tensor = g if create_graph else Tensor._from_array(g, tensor.device)
    for hook in tensor._hooks:
        replaced = hook(as_tensor)
        if replaced is not None:
            as_tensor = replaced
    return as_tensor if create_graph else as_tensor.data


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


from minitransformer import ops  # noqa: E402  (ops and tensor import this module)
from minitransformer.tensor import Tensor  # noqa: E402
