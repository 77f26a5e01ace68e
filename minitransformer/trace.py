"""Watch a backward pass: which gradient reaches which node, and what each node sends on.

    trace = mt.trace_backward(loss, model=attention)
    print(trace)            # one row per step of the walk, in the order it happened
    trace                   # in Jupyter: the same as an HTML table

Each :class:`BackwardStep` holds the op, the name and shape of its output, the gradient
that arrived there (norm, min, max, and the values when small), the local rule (the
one-line formula from the op's docstring) and the gradient it sent to each input, by
name. Steps for leaves (parameters, inputs) close the walk: that is where ``.grad`` is
filled in. :attr:`BackwardTrace.forward` lists the same nodes in forward order, with
their values, for the step-through page (``minitransformer explain``).

How it stays free when unused: the engine reads one per-thread variable (its observers,
see ``autograd.observing``) once per backward walk. Only while a trace records does it
wrap each node's ``backward`` (for that walk only), so an ordinary backward runs exactly
the code it always ran, and the gradients a traced backward computes are the very same
arrays (tested).
"""

from __future__ import annotations

import contextlib
import html
import math
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minitransformer import autograd, backend
from minitransformer.tensor import Tensor

SMALL = 16  # gradients with at most this many values keep them all in the step
KEEP = 4096  # values (forward and gradients) up to this size are kept for heatmaps


@dataclass
class Summary:
    """Norm, min and max of an array, and the array itself (a copy) when it is small."""

    shape: tuple[int, ...]
    norm: float
    min: float
    max: float
    values: np.ndarray | None = None  # kept when size <= KEEP

    @classmethod
    def of(cls, array: Any) -> Summary:
        data = np.asarray(_to_numpy(array), dtype=np.float64)
        finite = data[np.isfinite(data)]
        return cls(
            shape=tuple(data.shape),
            norm=float(np.sqrt(np.sum(finite * finite))) if finite.size else math.nan,
            min=float(finite.min()) if finite.size else math.nan,
            max=float(finite.max()) if finite.size else math.nan,
            values=data.copy() if data.size <= KEEP else None,
        )

    def text(self) -> str:
        """``|g|=0.42 [-0.1, 0.3]``, and the values themselves when there are few."""
        base = f"|g|={self.norm:.3g} [{self.min:.3g}, {self.max:.3g}]"
        if self.values is not None and self.values.size <= SMALL:
            shown = np.array2string(self.values.ravel(), precision=3, separator=" ",
                                    max_line_width=10_000)
            base += f" {shown}"
        return base


@dataclass
class Sent:
    """The gradient one step sent to one of its inputs."""

    to: str  # the input's name
    summary: Summary


@dataclass
class BackwardStep:
    """One node of the backward walk: what arrived, the rule, what left."""

    index: int
    op: str  # the Function's name, or "leaf" where a gradient ends in .grad
    name: str  # the name of the node's output (the tensor the gradient arrived at)
    shape: tuple[int, ...]
    grad: Summary  # the upstream gradient that arrived
    rule: str  # the op's local rule, e.g. "dx = s * (g - sum(g * s))"
    sent: list[Sent] = field(default_factory=list)
    is_parameter: bool = False  # a leaf that a model= names as a parameter
    tensor_id: int = 0  # id() of the output tensor, to find the node in a drawing
    op_id: int | None = None  # id() of the Function (None for a leaf)
    generic_rule: str = ""  # the op's rule in its docstring's own letters

    def __str__(self) -> str:
        """The step in a few readable lines (``print(trace.step(3))``)."""
        lines = [f"step {self.index}: {self.op} -> {self.name} {_shape(self.shape)}"]
        lines += _labelled("arrived", f"d{self.name}", self.grad)
        lines += textwrap.wrap(self.rule, 100, initial_indent="  rule     ",
                               subsequent_indent=" " * 11)
        if self.generic_rule and self.generic_rule != self.rule:
            lines += textwrap.wrap(f"(in the op's own letters: {self.generic_rule})", 100,
                                   initial_indent=" " * 11, subsequent_indent=" " * 11)
        for x in self.sent:
            lines += _labelled("sends", f"d{x.to}", x.summary)
        return "\n".join(lines)

    __repr__ = __str__


@dataclass
class ForwardStep:
    """One node in forward order: its op (None for a leaf), its inputs, its value."""

    index: int
    op: str | None
    name: str
    inputs: list[str]
    formula: str
    value: Summary
    is_parameter: bool = False
    tensor_id: int = 0
    op_id: int | None = None
    expression: str = ""  # the forward in the node's own symbols: "S_hat = S / 2"
    constants: list[float | None] = field(default_factory=list)  # per input: a scalar's value


class BackwardTrace:
    """The recorded walk: :attr:`forward` (forward order) and :attr:`steps` (backward)."""

    def __init__(self, names: dict[int, str] | None = None) -> None:
        self.forward: list[ForwardStep] = []
        self.steps: list[BackwardStep] = []
        self._names: dict[int, str] = dict(names or {})  # id(tensor) -> parameter name
        self._parameters = set(self._names)
        self._auto = 0
        self._pending: dict[int, BackwardStep] = {}  # op steps of the walk in progress
        self._arrived: dict[int, np.ndarray] = {}  # id(leaf) -> the sum sent to it so far
        self.root: Tensor | None = None  # the tensor the (last) walk started from
        self.model = None  # the Module whose parameters name the leaves, if given
        self.tokens: list[str] | None = None  # label heatmap axes of this length (explain)

    # ----- naming ---------------------------------------------------------------------------
    def name_of(self, t: Tensor) -> str:
        """A tensor's name: its ``.name``, its parameter name, or a made-up ``MatMul#3``."""
        key = id(t)
        if key in self._names:
            return self._names[key]
        path = t.__dict__.get("param_path") if hasattr(t, "__dict__") else None
        if path is not None and t._ctx is None:  # a parameter named when it was registered
            self._parameters.add(key)
            name = path
        elif t.name is not None:
            name = t.name
        elif _transpose_of(t) is not None:  # K.transpose(-2, -1): "Kᵀ"
            name = _flip(self.name_of(_transpose_of(t)))
        elif t._ctx is not None:
            self._auto += 1
            name = f"{t._ctx.name}#{self._auto}"
        else:
            self._auto += 1
            name = ("input" if t.requires_grad else "constant") + f"#{self._auto}"
        self._names[key] = name
        return name

    # ----- called by the engine (autograd.run_backward), once per walk ----------------------
    def watch(self, order: list[Tensor]) -> None:
        """Before the walk: note the forward order, and wrap each node's backward."""
        if order:
            self.root = order[-1]  # what backward started from (kept, to draw it later)
        for t in order:
            self._record_forward(t)
            fn = t._ctx
            if fn is not None:
                fn.backward = self._wrap(t, fn, fn.backward)  # this instance, this walk only

    def unwatch(self, order: list[Tensor]) -> None:
        """After the walk: unwrap, then lay out the steps in the order the walk took."""
        arrived, self._arrived = self._arrived, {}
        for t in reversed(order):  # the engine's own order: reversed topological
            fn = t._ctx
            if fn is not None:
                fn.__dict__.pop("backward", None)  # gone already if backward released fn
                step = self._pending.pop(id(fn), None)
            elif id(t) in arrived:
                key = id(t)
                name = self.name_of(t)
                step = BackwardStep(
                    index=0, op="leaf", name=name, shape=tuple(t.shape),
                    grad=Summary.of(arrived[key]), rule=f"{name}.grad += d{name}",
                    is_parameter=key in self._parameters, tensor_id=key)
            else:
                step = None
            if step is not None:
                step.index = len(self.steps)
                self.steps.append(step)

    def _record_forward(self, t: Tensor) -> None:
        fn = t._ctx
        self.forward.append(ForwardStep(
            index=len(self.forward),
            op=None if fn is None else fn.name,
            name=self.name_of(t),
            inputs=[] if fn is None else [self.name_of(x) for x in fn.inputs],
            formula="" if fn is None else forward_formula(type(fn)),
            value=Summary.of(t.data),
            is_parameter=id(t) in self._parameters,
            tensor_id=id(t),
            op_id=None if fn is None else id(fn),
            expression=self.forward_formula_of(t),
            constants=[] if fn is None else [_operand(x, self.name_of).constant
                                             for x in fn.inputs],
        ))

    def _wrap(self, t: Tensor, fn: Any, backward: Any) -> Any:
        def traced(grad: Any) -> tuple[Any, ...]:
            input_grads = backward(grad)
            generic = local_rule(type(fn))
            step = BackwardStep(index=0, op=fn.name, name=self.name_of(t),
                                shape=tuple(t.shape), grad=Summary.of(grad),
                                rule=self.rule_of(t, fn, generic), tensor_id=id(t),
                                op_id=id(fn), generic_rule=generic)
            for parent, g in zip(fn.inputs, input_grads):
                if g is None or not parent.requires_grad:
                    continue
                summary = Summary.of(g)
                step.sent.append(Sent(self.name_of(parent), summary))
                if parent._ctx is None:  # a leaf: its step comes when the walk reaches it
                    values = _to_numpy(g)
                    key = id(parent)
                    self._arrived[key] = values + self._arrived[key] if key in self._arrived \
                        else np.array(values, dtype=np.float64)
            self._pending[id(fn)] = step
            return input_grads

        return traced

    def rule_of(self, t: Tensor, fn: Any, generic: str) -> str:
        """The local rule in the node's own symbols (``dS_hat = dA ...``), or ``generic``."""
        return symbolic_rule(fn.name, self.name_of(t),
                             [_operand(x, self.name_of) for x in fn.inputs], generic)

    def forward_formula_of(self, t: Tensor) -> str:
        """The forward expression in the node's own symbols: ``Q = X @ q_proj.weightᵀ + ...``."""
        fn = t._ctx
        if fn is None:
            return ""
        return symbolic_forward(fn.name, self.name_of(t),
                                [_operand(x, self.name_of) for x in fn.inputs],
                                forward_formula(type(fn)))

    # ----- reading ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[BackwardStep]:
        return iter(self.steps)

    def __getitem__(self, index: int) -> BackwardStep:
        return self.steps[index]

    def step(self, name: str | int) -> BackwardStep:
        """The step number ``name`` (an int), or the first step whose output is called ``name``.

        ``print(trace.step(4))`` shows it in a few lines: what arrived, the rule, what left.
        """
        if isinstance(name, int):
            return self.steps[name]
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"no step for a tensor named {name!r}; names in this trace: "
                       f"{[s.name for s in self.steps]}")

    def table(self) -> list[list[str]]:
        """The rows of the HTML table: every column in full."""
        rows = []
        for s in self.steps:
            sent = "; ".join(f"d{x.to} |g|={x.summary.norm:.3g}" for x in s.sent)
            rows.append([str(s.index), s.op, s.name, _shape(s.shape), s.grad.text(), s.rule,
                         sent])
        return rows

    HEADER = ["#", "op", "output", "shape", "gradient arrived", "local rule", "sends"]
    WIDTH = 100  # print(trace) fits this many columns

    def __str__(self) -> str:
        """One line per step, at most :attr:`WIDTH` columns: the op, the output, the norm
        of the gradient that arrived and where it went. ``print(trace.step(i))`` shows a
        step's rule and values."""
        header = ["#", "op", "output", "shape", "|g| in", "sends (|g|)"]
        rows = [header]
        for s in self.steps:
            sent = ", ".join(f"{x.to} {x.summary.norm:.3g}" for x in s.sent)
            if s.op == "leaf":
                sent = f"-> {s.name}.grad"
            rows.append([str(s.index), s.op, s.name, _shape(s.shape), f"{s.grad.norm:.3g}",
                         sent])
        caps = [3, 10, 22, 13, 9]
        widths = [min(max(len(r[i]) for r in rows), cap) for i, cap in enumerate(caps)]
        lines = []
        for r in rows:
            cells = [_clip(c, w).ljust(w) for c, w in zip(r, widths)]
            line = " ".join([*cells, r[-1]]).rstrip()
            lines.append(_clip(line, self.WIDTH))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<BackwardTrace: {len(self.forward)} forward nodes, {len(self.steps)} steps>"

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.HEADER)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
            for r in self.table())
        return (f"<table class='minitransformer-trace'><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>")


def _labelled(verb: str, name: str, summary: Summary) -> list[str]:
    """``  arrived  dA: |g|=0.6 [-0.09, 0.35]`` and, for a small gradient, its matrix (the
    last two axes of the first batch element and head), indented under it."""
    lines = [f"  {verb:8s} {name}: |g|={summary.norm:.3g}, min {summary.min:.3g}, "
             f"max {summary.max:.3g}"]
    values = summary.values
    if values is not None:
        matrix = values.reshape(-1, *values.shape[-2:])[0] if values.ndim > 2 else values
        if matrix.size <= 64:
            note = "" if values.ndim <= 2 else f"   ([0, ..., :, :] of {values.shape})"
            text = np.array2string(np.atleast_2d(matrix), precision=3, suppress_small=True,
                                   max_line_width=88)
            lines += ["           " + row for row in text.splitlines()]
            lines[-1] += note
    return lines


def _to_numpy(value: Any) -> np.ndarray:
    """A gradient (an array, or a tensor under create_graph) as a NumPy array."""
    return backend.to_numpy(value.data if isinstance(value, Tensor) else value)


def _shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape)) if shape else "scalar"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# ----- rules from docstrings ----------------------------------------------------------------
_GRAD_LINE = re.compile(r"^(d[A-Za-z_]\w*|d\w+/d\w+)\s*=")


def _plain(text: str) -> str:
    """Docstring markup out: ``axis`` -> axis, :class:`Linear` -> Linear."""
    text = re.sub(r":\w+:`~?([^`]*)`", r"\1", text)
    return re.sub(r"``([^`]*)``", r"\1", text)


def local_rule(cls: type) -> str:
    """The backward rule that ``cls``'s docstring states, in one line.

    A class may set ``rule`` itself; otherwise the rule is what follows ``;`` on the first
    line (``y = tanh x;  dy/dx = 1 - y^2``), or the lines that start with a gradient
    (``dM = dY @ N^T``), without their shape comments.
    """
    explicit = getattr(cls, "rule", None)
    if isinstance(explicit, str):
        return _plain(explicit)
    for klass in cls.__mro__:  # a subclass that states no rule inherits its base's
        if klass is autograd.Function:
            break
        rule = _rule_in(klass.__dict__.get("__doc__") or "")
        if rule:
            return _plain(rule)
    return _plain(" ".join((cls.__doc__ or "").strip().split("\n\n")[0].split()))


def _rule_in(doc: str) -> str:
    doc = doc.strip()
    if not doc:
        return ""
    first = doc.splitlines()[0].strip()
    after = first.split(";", 1)[1].strip().rstrip(".") if ";" in first else ""
    if _GRAD_LINE.match(after):  # "y = tanh x;  dy/dx = 1 - y^2"
        return after
    found = []
    for line in doc.splitlines()[1:]:
        line = line.strip()
        if _GRAD_LINE.match(line):
            line = re.split(r"\s{2,}(?=\()", line)[0]  # without a trailing (comment)
            line = " ".join(line.split()).rstrip(".,")
            parts = line.split(" = ")  # "dx = long form = short form": keep the short one
            where = re.search(r",\s*\w+ = ", line)  # "dx = ... / sigma, g_hat = g * gamma"
            found.append(f"{parts[0]} = {parts[-1]}" if len(parts) > 2 and not where else line)
    return "; ".join(found)


def forward_formula(cls: type) -> str:
    """The forward half of the docstring's first line: ``y = tanh x``."""
    doc = (cls.__doc__ or "").strip()
    summary = " ".join(doc.split("\n\n")[0].split()) if doc else ""  # the whole first paragraph
    return _plain(summary.split(";", 1)[0].strip().rstrip("."))


# ----- rules in the node's own symbols ---------------------------------------------------------
@dataclass
class _Operand:
    name: str
    constant: float | None  # the value of a one-element constant (the 2 in S / 2)
    needs_grad: bool = True


def _operand(t: Tensor, name_of: Any) -> _Operand:
    constant = None
    if t._ctx is None and not t.requires_grad and t.data.size == 1:
        constant = float(_to_numpy(t.data).reshape(()))
    return _Operand(name_of(t), constant, bool(t.requires_grad))


def _terms(terms: list[tuple[_Operand, str]]) -> str:
    """``dQ = ...;  dKᵀ = ...``, leaving out inputs that need no gradient (said once)."""
    kept = [text for operand, text in terms if operand.needs_grad]
    skipped = [operand.name for operand, _ in terms if not operand.needs_grad]
    rule = ";  ".join(kept)
    if skipped:
        rule += f"{' ' if rule else ''}({', '.join(skipped)} needs no gradient: not computed)"
    return rule


def _transpose_of(t: Tensor) -> Tensor | None:
    """The input of ``t`` when ``t`` is it with its last two axes swapped, else None."""
    fn = t._ctx
    if fn is None or fn.name not in ("Permute", "Transpose") or len(fn.inputs) != 1:
        return None
    axes = getattr(fn, "axes", None)
    n = len(t.shape)
    if axes is None or n < 2:
        return None
    axes = tuple(a % n for a in axes)
    swapped = tuple(range(n - 2)) + (n - 1, n - 2)
    source = fn.inputs[0]
    return source if axes == swapped and (source.name or source._ctx is None) else None


def _flip(name: str) -> str:
    return name[:-1] if name.endswith("ᵀ") else name + "ᵀ"


def _number(value: float) -> str:
    return f"{value:.4g}"


def symbolic_rule(op: str, y: str, xs: list[_Operand], generic: str) -> str:
    """``op``'s backward rule written with the names of its output ``y`` and inputs ``xs``.

    A product says which operand is transposed (``dQ = dS @ K``, ``dKᵀ = Qᵀ @ dS``), a
    scaling by a constant shows the constant. Ops without a rule here keep ``generic``.
    """
    names = [x.name for x in xs]
    if op == "MatMul" and len(xs) == 2:
        a, b = names
        return _terms([(xs[0], f"d{a} = d{y} @ {_flip(b)}"),
                       (xs[1], f"d{b} = {_flip(a)} @ d{y}")])
    if op == "Linear" and len(xs) >= 2:
        x, w = names[:2]
        terms = [(xs[0], f"d{x} = d{y} @ {w}"), (xs[1], f"d{w} = d{y}ᵀ @ {x}")]
        if len(xs) > 2:
            terms.append((xs[2], f"d{names[2]} = d{y} summed over its rows"))
        return _terms(terms)
    if op in ("Softmax", "MaskedSoftmax"):
        return f"d{names[0]} = {y} ⊙ (d{y} − r),  r = Σⱼ d{y}ⱼ {y}ⱼ in each row"
    if op == "Div" and len(xs) == 2 and xs[1].constant is not None:
        return f"d{names[0]} = d{y} / {_number(xs[1].constant)}"
    if op == "Mul" and len(xs) == 2:
        for i, j in ((0, 1), (1, 0)):
            if xs[j].constant is not None:
                return f"d{names[i]} = {_number(xs[j].constant)} · d{y}"
        return f"d{names[0]} = d{y} ⊙ {names[1]};  d{names[1]} = d{y} ⊙ {names[0]}"
    if op == "Add" and len(xs) == 2:
        return f"d{names[0]} = d{y};  d{names[1]} = d{y} (summed over broadcast axes)"
    if op == "Sub" and len(xs) == 2:
        return f"d{names[0]} = d{y};  d{names[1]} = −d{y}"
    if op == "Neg":
        return f"d{names[0]} = −d{y}"
    if op == "Log":
        return f"d{names[0]} = d{y} / {names[0]}"
    if op == "Exp":
        return f"d{names[0]} = d{y} ⊙ {y}"
    if op == "Mean":
        return f"d{names[0]} = d{y} / n, spread over the n averaged entries"
    if op == "Sum":
        return f"d{names[0]} = d{y}, copied to every summed entry"
    if op == "GetItem":
        return f"d{names[0]} = zeros, with d{y} at the picked entries"
    if op in ("Permute", "Transpose"):
        return f"d{names[0]} = d{y} with the axes put back"
    if op == "CrossEntropy":
        return f"d{names[0]} = (softmax({names[0]}) − onehot(target)) · d{y} / count"
    if op == "LayerNorm" and len(xs) == 3:
        x, gamma, beta = names
        return (f"d{beta} = Σ d{y};  d{gamma} = Σ d{y} ⊙ x̂;  d{x} = (ĝ − mean(ĝ) − x̂ "
                f"mean(ĝ ⊙ x̂)) / σ,  ĝ = d{y} ⊙ {gamma}")
    return generic


def symbolic_forward(op: str, y: str, xs: list[_Operand], generic: str) -> str:
    """``op``'s forward expression with the names of its output and inputs."""
    names = [x.name if x.constant is None else _number(x.constant) for x in xs]
    if op == "MatMul" and len(xs) == 2:
        return f"{y} = {names[0]} @ {names[1]}"
    if op == "Linear" and len(xs) >= 2:
        return f"{y} = {names[0]} @ {names[1]}ᵀ" + (f" + {names[2]}" if len(xs) > 2 else "")
    if op in ("Softmax", "MaskedSoftmax"):
        return f"{y} = softmax({names[0]}) along each row"
    symbols = {"Div": "/", "Mul": "·", "Add": "+", "Sub": "−"}
    if op in symbols and len(xs) == 2:
        return f"{y} = {names[0]} {symbols[op]} {names[1]}"
    if op in ("Permute", "Transpose") and len(xs) == 1 and y == _flip(names[0]):
        return f"{y} = {names[0]} transposed (its last two axes swapped)"
    inside = ", ".join(names)
    return f"{y} = {op}({inside})" + (f"   [{generic}]" if generic else "")


def _check_tensor(loss: Any) -> None:
    if not isinstance(loss, Tensor):
        raise TypeError(f"trace_backward needs a Tensor, got {type(loss).__name__}")


# ----- the public entry points --------------------------------------------------------------
@contextlib.contextmanager
def tracing(model: Any = None, params: dict[str, Tensor] | None = None
            ) -> Iterator[BackwardTrace]:
    """Record every backward walk run inside the block into one :class:`BackwardTrace`.

    ``model`` (a Module) and ``params`` name the parameters, as in ``draw_graph``.
    """
    names = {}
    if model is not None:
        names.update({id(p): n for n, p in model.named_parameters()})
    names.update({id(p): n for n, p in (params or {}).items()})
    trace = BackwardTrace(names)
    trace.model = model
    if any(isinstance(o, BackwardTrace) for o in autograd.current_observers()):
        raise RuntimeError("a backward trace is already recording; traces do not nest")
    with autograd.observing(trace):  # this thread's walks only
        yield trace


def trace_backward(loss: Tensor, gradient: Any = None, model: Any = None,
                   params: dict[str, Tensor] | None = None, retain_graph: bool = False,
                   create_graph: bool = False) -> BackwardTrace:
    """``loss.backward(...)``, recorded: returns the :class:`BackwardTrace` of the walk.

    The gradients it leaves in ``.grad`` are exactly those of a plain ``backward``.
    """
    _check_tensor(loss)
    with tracing(model=model, params=params) as trace:
        loss.backward(gradient, retain_graph=retain_graph, create_graph=create_graph)
    return trace
