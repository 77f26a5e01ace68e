"""Reverse-mode automatic differentiation: recording ops, and walking them backwards.

Every differentiable op is a :class:`Function` with a ``forward`` on raw arrays and a
``backward`` on tensors, written side by side. Running an op while grad mode is on
records a node: the output tensor points at the Function, which points at its inputs.
:func:`backward` walks that graph in reverse topological order (iteratively, so deep
graphs cannot hit Python's recursion limit), calling each node's ``backward`` once with
the sum of the gradients that reached its output (the multivariate chain rule).

Backward rules are written with tensor ops, so with ``create_graph=True`` the backward
pass is itself recorded and can be differentiated again.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from minitransformer import backend
from minitransformer.errors import DeviceError, GraphError, ShapeError

_grad_enabled = True
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
    """One differentiable op: ``forward`` on arrays, ``backward`` on tensors.

    Subclasses implement::

        def forward(self, *arrays, **params) -> array      # may stash values on self
        def backward(self, grad) -> tuple of Tensor|None   # one entry per input

    Inside ``backward``, ``self.inputs`` are the input tensors and, when the class sets
    ``uses_output = True``, ``self.output()`` is the output tensor (held weakly, so that
    a node never keeps its own output alive).
    """

    uses_output = False
    changes_device = False  # only To: its output lives on another device than its input

    inputs: tuple[Tensor, ...]
    module: Any  # the innermost Module running when this node was recorded, or None
    released: bool = False

    @classmethod
    def apply(cls, *inputs: Tensor, **params: Any) -> Tensor:
        """Run the op on ``inputs`` and, if any needs a gradient, record it."""
        device = inputs[0].device
        for t in inputs:
            if t.device is not device and t.device != device:
                raise DeviceError(
                    f"{cls.__name__} got tensors on different devices: "
                    f"{', '.join(x.device for x in inputs)}; move them with .to(device)"
                )
        fn = cls()
        data = fn.forward(*[t.data for t in inputs], **params)
        out = _wrap(data, backend.device_of(data) if cls.changes_device else device)
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

    def output(self) -> Tensor:
        return self._output_ref()

    def forward(self, *arrays: Any, **params: Any) -> Any:
        raise NotImplementedError

    def backward(self, grad: Tensor) -> tuple[Tensor | None, ...]:
        raise NotImplementedError

    def release(self) -> None:
        """Drop what ``forward`` saved; the graph's structure stays for drawing."""
        saved = self.__dict__
        inputs, module = saved["inputs"], saved["module"]
        saved.clear()
        saved.update(inputs=inputs, module=module, released=True)

    @property
    def name(self) -> str:
        return type(self).__name__


def _wrap(data: Any, device: str) -> Tensor:
    if isinstance(data, np.generic):  # NumPy returns scalars from 0-d ops; keep arrays
        data = np.asarray(data)
    return Tensor._from_array(data, device)


def _topological_order(roots: Sequence[Tensor]) -> list[Tensor]:
    """Tensors that need gradients, each after everything it depends on (iterative DFS)."""
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
        if tensor._ctx is not None:
            for parent in tensor._ctx.inputs:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order


def _check_root_gradient(root: Tensor, gradient: Any) -> Tensor:
    from minitransformer.tensor import Tensor, ones_like

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
        return ones_like(root)
    if not isinstance(gradient, Tensor):
        gradient = Tensor(gradient, dtype=root.dtype, device=root.device)
    if gradient.shape != root.shape:
        raise ShapeError(
            f"gradient has shape {gradient.shape} but the tensor it is for has shape {root.shape}"
        )
    return gradient


def run_backward(
    roots: Sequence[Tensor],
    root_grads: Sequence[Any],
    retain_graph: bool = False,
    create_graph: bool = False,
    capture: Sequence[Tensor] | None = None,
) -> list[Tensor | None] | None:
    """The engine behind ``Tensor.backward`` and :func:`grad`.

    Gradients of leaves are accumulated into ``.grad`` unless ``capture`` is given, in
    which case the gradients of those tensors are returned and no ``.grad`` is touched.
    """
    grads: dict[int, Tensor] = {}
    for root, gradient in zip(roots, root_grads):
        g = _check_root_gradient(root, gradient)
        if not create_graph:
            g = g.detach()
        grads[id(root)] = grads[id(root)] + g if id(root) in grads else g

    order = _topological_order(roots)
    captured: dict[int, Tensor | None] = {}
    if capture is not None:
        captured = {id(t): None for t in capture}

    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, bool(create_graph)
    try:
        for tensor in reversed(order):
            g = grads.pop(id(tensor), None)
            if g is None:
                continue
            for hook in tensor._hooks:
                replaced = hook(g)
                if replaced is not None:
                    g = replaced
            if capture is not None:
                if id(tensor) in captured:
                    captured[id(tensor)] = g
            elif tensor._ctx is None or tensor._retains_grad:
                tensor.grad = g if tensor.grad is None else tensor.grad + g
            fn = tensor._ctx
            if fn is None:
                continue
            if fn.released:
                raise GraphError(
                    f"trying to backward through the graph a second time: the values saved "
                    f"by {fn.name} were freed after the first backward; call backward with "
                    "retain_graph=True the first time if you need to backward twice"
                )
            input_grads = fn.backward(g)
            if not retain_graph:
                fn.release()
            for parent, pg in zip(fn.inputs, input_grads):
                if pg is None or not parent.requires_grad:
                    continue
                key = id(parent)
                grads[key] = grads[key] + pg if key in grads else pg
    finally:
        _grad_enabled = previous

    if capture is None:
        return None
    return [captured[id(t)] for t in capture]


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
    from minitransformer.tensor import Tensor

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


from minitransformer.tensor import Tensor  # noqa: E402  (tensor.py imports this module)
