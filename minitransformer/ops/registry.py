"""The one list of ops. Each public op function registers itself where it is defined:

    @register(method=True)
    def sinh(x: Tensor) -> Tensor:
        return Sinh.apply(x)

and the list then drives everything else: ``mt.sinh`` (the package namespace), ``x.sinh()``
(a Tensor method, for ``method=True``), and the tests, which run gradcheck, gradgradcheck,
the PyTorch comparison and the device sweep on every registered op and fail when an op
has no test entry (``tests/op_cases.py``). See ``docs/contributing.md``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OpEntry:
    """One registered op."""

    name: str
    fn: Callable[..., Any]
    method: bool  # also a Tensor method: x.name(*args) == name(x, *args)
    top_level: bool  # also mt.name
    differentiable: bool  # the tests run gradcheck and gradgradcheck on it
    aliases: tuple[str, ...]  # other names for the same function (torch's and NumPy's)


OPS: dict[str, OpEntry] = {}


def register(
    name: str | None = None,
    *,
    method: bool = False,
    top_level: bool = True,
    differentiable: bool = True,
    aliases: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Record the decorated op function under ``name`` (default: the function's name)."""

    def record(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = accept_torch_names(fn)
        key = name or fn.__name__
        taken = {n for entry in OPS.values() for n in (entry.name, *entry.aliases)}
        for n in (key, *aliases):
            if n in taken:
                raise ValueError(f"op {n!r} is registered twice")
        OPS[key] = OpEntry(key, fn, method, top_level, differentiable, tuple(aliases))
        return fn

    return record


# PyTorch's argument names, accepted wherever an op takes NumPy's (``axis``, ``keepdims``).
TORCH_NAMES = {"dim": "axis", "keepdim": "keepdims"}


def accept_torch_names(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` also accepting ``dim=``/``keepdim=`` for its ``axis``/``keepdims`` (unless it
    handles them itself, as ``max`` does); ``fn`` unchanged when it has neither."""
    parameters = inspect.signature(fn).parameters
    renames = {t: n for t, n in TORCH_NAMES.items() if n in parameters and t not in parameters}
    if not renames:
        return fn

    @functools.wraps(fn)
    def op(*args: Any, **kwargs: Any) -> Any:
        if kwargs:  # the common call passes none: nothing to rename
            for torch_name, name in renames.items():
                if torch_name in kwargs:
                    if name in kwargs:
                        raise TypeError(f"{fn.__name__}() got both {name}= and {torch_name}=; "
                                        f"they are the same argument, pass one")
                    kwargs[name] = kwargs.pop(torch_name)
        return fn(*args, **kwargs)

    return op


def public_names() -> dict[str, Callable[..., Any]]:
    """Every name (and alias) that ``minitransformer`` exports, with its function."""
    return {n: entry.fn for entry in OPS.values() if entry.top_level
            for n in (entry.name, *entry.aliases)}


def install_tensor_methods(cls: type) -> None:
    """Give ``cls`` (Tensor) a method for each ``method=True`` op it does not define itself.

    Tensor spells a method out only where its signature differs from the function's
    (``x.to(...)``, ``x.T``); every other method comes from here."""
    for entry in OPS.values():
        if not entry.method:
            continue
        for n in (entry.name, *entry.aliases):
            if n not in cls.__dict__:
                setattr(cls, n, entry.fn)  # a plain function: x.name(a) calls fn(x, a)
