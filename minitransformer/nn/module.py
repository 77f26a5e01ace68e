"""Module and Parameter: the bookkeeping that turns functions into trainable layers.

A :class:`Module` is a function with state. Assigning a :class:`Parameter`, another
Module, or (through :meth:`Module.register_buffer`) a plain tensor to an attribute
registers it, in the order of assignment, so that ``model.parameters()`` finds every
trainable tensor of a nested model and ``model.state_dict()`` names each one by its
dotted path, e.g. ``layers.0.self_attn.q_proj.weight``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

import numpy as np

from minitransformer import backend
from minitransformer.autograd import mark_changed, module_scope
from minitransformer.errors import CheckpointError
from minitransformer.tensor import Tensor, as_dtype


class Parameter(Tensor):
    """A tensor that a Module trains: a leaf that requires grad by default.

    Being a distinct type is what lets ``Module.__setattr__`` tell a weight from any other
    tensor kept on a module.
    """

    __slots__ = ()  # adds nothing to Tensor's slots

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


def _name_parameters(name: str, value: Any) -> None:
    """Give a registered parameter (or every parameter of a registered sub-module) its
    dotted path as ``param_path``: ``weight``, then ``q_proj.weight`` once the Linear is
    registered as ``q_proj``, and so on up to the outermost module. Traces and drawings
    use it to name a parameter when no ``model=`` is given."""
    if isinstance(value, Parameter):
        value.__dict__["param_path"] = name
    elif isinstance(value, Module):
        for path, param in value.named_parameters():
            param.__dict__["param_path"] = f"{name}.{path}"


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` could not match (unpacks as a pair)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer and model.

    Subclasses call ``super().__init__()`` first, assign their parameters and sub-modules
    as attributes, and implement ``forward``. Calling the module runs ``forward`` inside
    :func:`~minitransformer.autograd.module_scope`, so every op it records remembers which
    module it belongs to (graph drawings group nodes by module).
    """

    training: bool

    def __init__(self) -> None:
        # object.__setattr__ because our own __setattr__ needs these dicts to exist.
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no forward method")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with module_scope(self):
            return self.forward(*args, **kwargs)

    # ----- registration -----------------------------------------------------------------
    def _registries(self) -> tuple[dict, dict, dict]:
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(
                f"cannot assign to a {type(self).__name__} before Module.__init__() ran; "
                "call super().__init__() first in __init__"
            )
        return d["_parameters"], d["_buffers"], d["_modules"]

    def __setattr__(self, name: str, value: Any) -> None:
        params, buffers, modules = self._registries()
        if isinstance(value, Parameter):
            self._register(params, name, value)
        elif isinstance(value, Module):
            self._register(modules, name, value)
        elif name in buffers and (value is None or isinstance(value, Tensor)):
            buffers[name] = value
        elif name in params and value is None:
            params[name] = None  # e.g. ``self.bias = None``: the slot stays, empty
        elif name in params:
            raise TypeError(
                f"cannot assign a {type(value).__name__} to parameter '{name}' of "
                f"{type(self).__name__}; wrap it in nn.Parameter (or delete the attribute first)"
            )
        else:
            self._forget(name)
            object.__setattr__(self, name, value)

    def _register(self, registry: dict, name: str, value: Any) -> None:
        """Put ``value`` in ``registry``; a name already there keeps its place in the order."""
        if name not in registry:
            self._forget(name)
        registry[name] = value
        _name_parameters(name, value)

    def _forget(self, name: str) -> None:
        """Remove ``name`` from wherever it is registered (before it is re-registered)."""
        for registry in self._registries():
            registry.pop(name, None)
        self.__dict__.pop(name, None)
        self._non_persistent.discard(name)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, i.e. for registered names. Read __dict__
        # directly: during copying this runs on an object whose __init__ never ran.
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        if any(name in registry for registry in self._registries()):
            self._forget(name)
        else:
            object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Keep a tensor that is state but not trained (e.g. a positional-encoding table).

        Buffers move with :meth:`to` and, when ``persistent``, are saved in
        :meth:`state_dict`.
        """
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"buffer '{name}' must be a Tensor or None, got {type(tensor)}")
        if "." in name or not name:
            raise KeyError(f"buffer name must be non-empty and contain no '.', got {name!r}")
        self._register(self._buffers, name, tensor)
        self._non_persistent.discard(name)
        if not persistent:
            self._non_persistent.add(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"parameter '{name}' must be a Parameter or None, got {type(param)}")
        self._register(self._parameters, name, param)

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"'{name}' must be a Module or None, got {type(module)}")
        self._register(self._modules, name, module)

    # ----- traversal ----------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every sub-module, depth first, each once, with dotted names."""
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [
                (f"{name}.{child_name}" if name else child_name, child)
                for child_name, child in module._modules.items()
                if child is not None
            ]
            stack.extend(reversed(children))  # reversed, so they pop in definition order

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry: str) -> Iterator[tuple[str, Tensor]]:
        """Entries of ``registry`` across all sub-modules; a shared tensor appears once."""
        seen: set[int] = set()
        for module_name, module in self.named_modules():
            for name, t in module.__dict__[registry].items():
                if t is None or id(t) in seen:
                    continue
                seen.add(id(t))
                yield (f"{module_name}.{name}" if module_name else name), t

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        yield from self._named_members("_parameters")  # type: ignore[misc]

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self) -> Iterator[tuple[str, Tensor]]:
        yield from self._named_members("_buffers")

    def buffers(self) -> Iterator[Tensor]:
        for _, b in self.named_buffers():
            yield b

    def num_parameters(self, trainable_only: bool = False) -> int:
        """How many numbers the model learns (each shared parameter counted once)."""
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # ----- modes and gradients ------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode (dropout active) on this module and all sub-modules."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Evaluation mode: dropout becomes the identity."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze (True) every parameter."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget accumulated gradients: ``None`` (nothing to add to, no memory), or with
        ``set_to_none=False`` zeros in the existing gradient arrays (as in PyTorch)."""
        for p in self.parameters():
            zero_grad_of(p, set_to_none)

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every sub-module, children first, then on this one (as PyTorch:
        ``model.apply(init_weights)``); returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ----- devices and dtypes ---------------------------------------------------------------
    def to(self, target: Any = None, dtype: Any = None, device: Any = None) -> Module:
        """Move parameters and buffers to ``device`` and/or cast floating ones to ``dtype``.

        Works in place: each Parameter keeps its identity (only its array changes), so an
        optimizer built before the call still holds the right tensors. Returns ``self``.
        """
        if target is not None:
            if isinstance(target, str):
                device = target
            else:
                dtype = target
        dtype = as_dtype(dtype)
        device = backend.normalize_device(device) if device is not None else None
        for t in [*self.parameters(), *self.buffers()]:
            _convert_in_place(t, dtype, device)
            if t.grad is not None:
                _convert_in_place(t.grad, dtype, device)
        return self

    def double(self) -> Module:
        return self.to(np.dtype("float64"))

    def float(self) -> Module:
        return self.to(np.dtype("float32"))

    def cpu(self) -> Module:
        return self.to("cpu")

    def cuda(self) -> Module:
        return self.to("cuda")

    # ----- saving and loading -------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, Tensor]:
        """Every parameter and persistent buffer by dotted name, as detached tensors that
        share their memory (as in PyTorch).

        Sharing, so that ``model.state_dict()[k].copy_(w)`` loads ``w`` into the model (as
        nanoGPT's ``from_pretrained`` does); it also means the values move as training goes
        on. For a snapshot, copy: ``{k: v.clone() for k, v in model.state_dict().items()}``
        (saving with ``mt.save`` writes the values as they are when it runs).
        """
        return OrderedDict(
            (key, Tensor._from_array(t.data, t.device))
            for key, t in self._state_targets().items()
        )

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy values from ``state_dict`` (tensors or arrays) into the parameters and buffers.

        Everything is checked before anything is written: with ``strict`` a missing or an
        unexpected key is an error, and a value whose shape differs is always one; the error
        lists every problem and the model is left untouched. Values are cast to each
        parameter's dtype and copied onto its device. Returns ``(missing, unexpected)``.
        """
        targets = self._state_targets()
        missing = [key for key in targets if key not in state_dict]
        unexpected = [key for key in state_dict if key not in targets]
        mis_shaped = []
        for key, target in targets.items():
            if key in state_dict:
                shape = tuple(np.shape(_array_of(state_dict[key])))
                if shape != target.shape:
                    mis_shaped.append(f"{key}: checkpoint {shape}, model {target.shape}")
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if mis_shaped:
            problems.append("shape mismatches: " + "; ".join(mis_shaped))
        if problems:
            raise StateDictError(
                f"cannot load state_dict into {type(self).__name__} (nothing was loaded):\n  "
                + "\n  ".join(problems)
            )
        for key, target in targets.items():
            if key in state_dict:
                value = backend.to_device(_array_of(state_dict[key]), target.device)
                target.data[...] = value.astype(target.dtype, copy=False)
                mark_changed(target, f"{type(self).__name__}.load_state_dict()")
        return IncompatibleKeys(missing, unexpected)

    def _state_targets(self) -> dict[str, Tensor]:
        """The live tensors that ``state_dict`` keys name, in its order (a tensor reached
        under two names, e.g. a tied weight, is kept under each; a name met twice, once)."""
        targets: dict[str, Tensor] = {}
        for module_name, module in self.named_modules():
            for name, t in [*module._parameters.items(), *module._buffers.items()]:
                if t is not None and name not in module._non_persistent:
                    targets.setdefault(f"{module_name}.{name}" if module_name else name, t)
        return targets

    # ----- printing -----------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The settings shown inside this module's parentheses; override in subclasses."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        children = [
            f"({name}): " + repr(module).replace("\n", "\n  ")
            for name, module in self._modules.items()
        ]
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = ([extra] if extra else []) + children
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


class StateDictError(CheckpointError, KeyError):
    """A state dict whose keys or shapes do not fit the model.

    A KeyError too (missing and unexpected names), and through CheckpointError a
    RuntimeError.
    """

    def __str__(self) -> str:  # KeyError would print the message as a quoted repr
        return str(self.args[0]) if self.args else ""


def zero_grad_of(p: Tensor, set_to_none: bool = True) -> None:
    """``p.grad = None``, or (``set_to_none=False``) zeros of its shape where it had one. Fresh
    zeros rather than zeroing in place: a gradient array may be shared with another tensor."""
    if set_to_none or p.grad is None:
        p.grad = None
    else:
        p.grad = Tensor._from_array(backend.array_module(p.grad.device).zeros_like(p.grad.data),
                                    p.grad.device)


def _array_of(value: Any) -> Any:
    return value.data if isinstance(value, Tensor) else np.asarray(value)


def _convert_in_place(t: Tensor, dtype: np.dtype | None, device: str | None) -> None:
    """Replace ``t``'s array by one on ``device`` with ``dtype`` (floating tensors only)."""
    data = t.data
    if device is not None and device != t.device:
        data = backend.to_device(data, device)
        t.device = device
    if dtype is not None and data.dtype.kind == "f" and data.dtype != dtype:
        data = data.astype(dtype)
    if data is not t.data:
        t.data = data
        mark_changed(t, "Module.to()")


_Numbered = TypeVar("_Numbered", bound="_NumberedModules")


class _NumberedModules(Module):
    """Sub-modules named "0", "1", ... in order: what Sequential and ModuleList share."""

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self: _Numbered, module: Module) -> _Numbered:
        """Add ``module`` at the end; returns self."""
        self.add_module(str(len(self)), module)
        return self


class Sequential(_NumberedModules):
    """Modules applied one after another: ``Sequential(a, b, c)(x) == c(b(a(x)))``."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for module in modules:
            self.append(module)

    def forward(self, x: Any) -> Any:
        for module in self:
            x = module(x)
        return x

    def __getitem__(self, index: int | slice) -> Module:
        items = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*items[index])
        return items[index]


class ModuleList(_NumberedModules):
    """A list of modules whose parameters are registered (a plain list would hide them)."""

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        self.extend(modules or ())

    def _index(self, index: int) -> str:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for a ModuleList of length {n}")
        return str(index % n)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return self._modules[self._index(index)]

    def __setitem__(self, index: int, module: Module) -> None:
        self.add_module(self._index(index), module)

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for module in modules:
            self.append(module)
        return self
