"""Draw the graph autograd recorded, as a ``graphviz.Digraph``.

Two kinds of boxes: **tensors** (rectangles: name, shape, dtype) and **ops** (ellipses: the
Function's name, e.g. ``MatMul``). Arrows follow the forward pass, inputs -> op -> output;
the gradient flows back along the same arrows, against their direction.

What makes a Transformer's graph readable:

* ops recorded inside a Module's ``forward`` are grouped into nested clusters named by the
  module's dotted path (``layers.0.self_attn``), and ``collapse=`` draws whole modules as a
  single node with just their inputs and outputs;
* scalar constants (the ``0.5`` in ``x * 0.5``) are written into the op's label instead of
  getting a box of their own;
* ``max_nodes=`` cuts a huge graph with a visible "... N more nodes not drawn" marker.

The graph is walked breadth-first with an explicit queue (no recursion, so a 100,000-op
chain is fine), and the DOT lines are appended to ``graph.body`` directly: building the
Digraph is linear in the size of the graph.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import graphviz

from minitransformer import backend, tuning
from minitransformer.autograd import Function
from minitransformer.tensor import Tensor
from minitransformer.viz.render import DrawnGraph

# ----- colours --------------------------------------------------------------------------------
# Fills from the Okabe-Ito palette, which stays distinguishable with every common form of
# colour blindness; the kinds also differ in outline (parameters doubled, outputs bold), so
# the drawing still reads in greyscale.
KINDS: dict[str, dict[str, str]] = {
    "parameter": {"fillcolor": "#E69F00", "shape": "box", "peripheries": "2"},  # orange
    "input": {"fillcolor": "#56B4E9", "shape": "box"},  # sky blue
    "intermediate": {"fillcolor": "#F2F2F2", "shape": "box"},  # light grey
    "output": {"fillcolor": "#CC79A7", "shape": "box", "penwidth": "2.5"},  # reddish purple
    "op": {"fillcolor": "#FFFFFF", "shape": "ellipse"},
    # the backward pass (drawn with forward=): its ops and the gradients it names (dQ, ...)
    "backward op": {"fillcolor": "#FCE0CC", "shape": "hexagon", "color": "#D55E00"},
    "gradient": {"fillcolor": "#D55E00", "shape": "box", "fontcolor": "#FFFFFF"},  # vermillion
    "module": {"fillcolor": "#009E73", "shape": "box3d", "fontcolor": "#FFFFFF"},  # green
    "more": {"fillcolor": "#F0E442", "shape": "note"},  # yellow
}
LEGEND_TEXT = {
    "parameter": "parameter",
    "input": "input (leaf)",
    "intermediate": "intermediate value",
    "output": "output",
    "op": "op",
    "module": "module (collapsed)",
    "backward op": "backward op",
    "gradient": "gradient (dX)",
}

# Ops that only move or relabel values; compact drawings fold them into the arrows.
SHAPE_OPS = frozenset({"Permute", "Reshape"})

GRAPH_ATTR = {"fontname": "Helvetica", "fontsize": "11", "nodesep": "0.25", "ranksep": "0.35"}
COMPACT_ATTR = {"ranksep": "0.25", "nodesep": "0.2"}
NODE_ATTR = {"style": "filled,rounded", "fontname": "Helvetica", "fontsize": "10", "height": "0.3"}
EDGE_ATTR = {"arrowsize": "0.6", "color": "#555555"}


def draw_graph(
    *outputs: Tensor,
    params: Mapping[str, Tensor] | None = None,
    model: Any = None,
    show_grad: bool = False,
    show_saved: bool = False,
    group_modules: bool = True,
    collapse: Iterable[str] | int | None = None,
    max_nodes: int | None = None,
    rankdir: str = "TB",
    legend: bool = True,
    show_values: bool = False,
    trace: Any = None,
    forward: Tensor | Iterable[Tensor] | None = None,
    compact: bool = False,
) -> graphviz.Digraph:
    """The computation graph that produced ``outputs``, ready to render or show in Jupyter.

    Args:
        outputs: the tensors to draw the history of (e.g. the loss, or ``x.grad`` after
            ``backward(create_graph=True)`` to see the backward pass itself).
        params: ``{name: tensor}`` naming parameters (``dict(model.named_parameters())``).
        model: the root ``nn.Module``: names parameters by their dotted path and groups ops
            into clusters by the module that recorded them.
        show_grad: add the gradient's norm and shape to tensors that have a ``.grad``.
        show_saved: list what each op saved for its backward (or "released" once backward
            has freed it).
        group_modules: draw module clusters: nested and named by dotted path when ``model``
            is given, otherwise one flat cluster per module, named by its class.
        collapse: module paths to draw as one node each, or an int depth: every module whose
            path has that many parts (``2`` collapses ``layers.0`` and ``layers.1``).
        max_nodes: draw at most this many nodes (those nearest the outputs); the rest is
            replaced by one marker node saying how many were left out.
        rankdir: graphviz layout direction, ``"TB"`` (top to bottom) or ``"LR"``.
        legend: add a small cluster explaining the colours.
        show_values: add a summary of each tensor's values: ``[min, max] mean``.
        trace: a :class:`~minitransformer.trace.BackwardTrace` of a backward through this
            graph: every tensor the walk reached shows the norm of the gradient that
            arrived there (not only the leaves, whose ``.grad`` ``show_grad`` shows).
        forward: the forward pass's outputs (the loss) when drawing a backward graph
            (``x.grad`` after ``backward(create_graph=True)``): ops outside their history
            are drawn as backward ops, and the gradients they name (dZ, dA, dS, dQ, dK,
            dV) in a colour of their own.
        compact: draw only named tensors (and parameters, inputs, outputs); the arrows of
            an unnamed intermediate join its ops directly. About halves a large drawing.
    """
    for i, t in enumerate(outputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"draw_graph: output {i} is a {type(t).__name__}, not a Tensor")
    if not outputs:
        raise ValueError("draw_graph needs at least one tensor to draw")
    if max_nodes is not None and max_nodes < 1:
        raise ValueError(f"max_nodes must be at least 1, got {max_nodes}")
    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise ValueError(f"rankdir must be one of TB, LR, BT, RL; got {rankdir!r}")

    named = _named_parameters(params, model)
    names = {id(p): name for name, p in named}
    modules = _ModuleTree(model, collapse)
    # Building allocates a few objects per node; every so many allocations the cycle
    # collector would walk the whole (large, long-lived) graph of tensors again, which made
    # building a 100,000-node drawing several times slower. Nothing built here forms cycles.
    with tuning.cycle_collector_paused():
        walk = _walk(outputs)
        picture = _Picture(walk, names, modules, show_grad, show_saved, group_modules)
        picture.show_values, picture.compact = show_values, compact
        if trace is not None:
            picture.arrived = {step.tensor_id: step.grad.norm for step in trace.steps}
        if forward is not None:
            forward = [forward] if isinstance(forward, Tensor) else list(forward)
            history = _walk(forward)
            picture.backward_ops = {id(fn) for fn in walk.functions} - {
                id(fn) for fn in history.functions}
        picture.name_gradients(named)
        picture.build()
        if max_nodes is not None:
            picture.cut(max_nodes)
        body = picture.dot_lines()

    graph = DrawnGraph(  # a Digraph that explains itself in Jupyter when `dot` is missing
        name="minitransformer",
        graph_attr={**GRAPH_ATTR, "rankdir": rankdir, **(COMPACT_ATTR if compact else {})},
        node_attr=NODE_ATTR,
        edge_attr=EDGE_ATTR,
    )
    graph.body.extend(body)
    if legend:
        graph.body.extend(_legend_lines(with_module=bool(picture.groups),
                                        with_backward=bool(picture.backward_ops)))
    return graph


# ----- naming ---------------------------------------------------------------------------------
def _named_parameters(params: Mapping[str, Tensor] | None, model: Any) -> list[tuple[str, Tensor]]:
    """(name, tensor) pairs from ``model.named_parameters()`` and from ``params``."""
    named: list[tuple[str, Tensor]] = []
    if model is not None:
        named.extend(model.named_parameters())
    if params is not None:
        for name, p in params.items():
            if not isinstance(p, Tensor):
                raise TypeError(f"params[{name!r}] is a {type(p).__name__}, not a Tensor")
            named.append((name, p))
    return named


class _ModuleTree:
    """Dotted module paths (``layers.0.self_attn``) and which of them to collapse."""

    def __init__(self, model: Any, collapse: Iterable[str] | int | None) -> None:
        self.model = model
        self.paths: dict[int, str] = {}  # id(module) -> dotted path; the root is ""
        self.classes: dict[str, str] = {}  # path -> class name
        if model is not None:
            for path, module in model.named_modules():
                self.paths.setdefault(id(module), path)
                self.classes.setdefault(path, type(module).__name__)
        self.collapsed = self._collapsed_paths(collapse)
        self._group_cache: dict[str, str | None] = {}

    def _collapsed_paths(self, collapse: Iterable[str] | int | None) -> set[str]:
        if collapse is None:
            return set()
        if self.model is None:
            raise ValueError("collapse= needs model= (the root Module), to know module paths")
        known = [p for p in self.classes if p]
        if isinstance(collapse, int) and not isinstance(collapse, bool):
            if collapse < 1:
                raise ValueError(f"collapse depth must be at least 1, got {collapse}")
            return {p for p in known if p.count(".") + 1 == collapse}
        if isinstance(collapse, str):
            collapse = [collapse]
        chosen = set(collapse)
        unknown = sorted(chosen - set(known))
        if unknown:
            shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            raise ValueError(f"collapse: no module at path {unknown}; modules are: {shown}")
        return chosen

    def path_of(self, module: Any) -> str | None:
        """The module's dotted path; None when it is not part of ``model``."""
        return self.paths.get(id(module))

    def group_of(self, path: str | None) -> str | None:
        """The collapsed module that ``path`` lies in (itself or an ancestor), if any."""
        if path is None or not self.collapsed:
            return None
        if path not in self._group_cache:
            group = None
            for ancestor in _ancestors(path):  # outermost first: it hides the inner ones
                if ancestor in self.collapsed:
                    group = ancestor
                    break
            self._group_cache[path] = group
        return self._group_cache[path]


def _ancestors(path: str) -> list[str]:
    """``"a.b.c"`` -> ``["a", "a.b", "a.b.c"]``; the root ``""`` has none."""
    if not path:
        return []
    parts = path.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


# ----- walking the recorded graph -------------------------------------------------------------
@dataclass
class _Walk:
    """Everything reachable from the outputs, in breadth-first order.

    ``order`` numbers tensors and Functions together as they are discovered, so that
    "the first N nodes" means the N nearest the outputs.
    """

    outputs: list[Tensor]
    tensors: list[Tensor] = field(default_factory=list)
    functions: list[Function] = field(default_factory=list)
    order: dict[int, int] = field(default_factory=dict)  # id(tensor or Function) -> rank


def _walk(outputs: Iterable[Tensor]) -> _Walk:
    walk = _Walk(outputs=list(outputs))

    def discover(t: Tensor) -> bool:
        if id(t) in walk.order:
            return False
        walk.order[id(t)] = len(walk.order)
        walk.tensors.append(t)
        return True

    queue: deque[Tensor] = deque(t for t in walk.outputs if discover(t))
    while queue:  # an explicit queue instead of recursion: depth is unlimited
        fn = queue.popleft()._ctx
        if fn is None:
            continue
        walk.order[id(fn)] = len(walk.order)
        walk.functions.append(fn)
        for t in fn.inputs:
            if discover(t):
                queue.append(t)
    return walk


# ----- the picture: nodes, clusters and edges, before they become DOT text ---------------------
@dataclass(slots=True)
class _Node:
    id: str
    kind: str  # a key of KINDS
    rank: int  # discovery order: smaller is nearer the outputs
    cluster: str | None  # dotted module path of the cluster it sits in, or None
    subject: Any  # the Tensor, the Function, or the collapsed module's path


class _Picture:
    """The nodes and edges to draw. Labels are written only for the nodes that are kept."""

    def __init__(self, walk: _Walk, names: dict[int, str], modules: _ModuleTree,
                 show_grad: bool, show_saved: bool, group_modules: bool) -> None:
        self.walk = walk
        self.names = names
        self.modules = modules
        self.show_grad = show_grad
        self.show_saved = show_saved
        self.group_modules = group_modules
        self.nodes: dict[str, _Node] = {}  # node id -> node
        self.edges: dict[tuple[str, str], str] = {}  # (tail, head) -> DOT attributes, in order
        self.groups: dict[str, str] = {}  # collapsed module path -> its node id
        self.ops_inside: dict[str, int] = {}  # collapsed module path -> how many ops it hides
        self.cluster_labels: dict[str, str] = {}  # cluster path -> label, when not from model
        self.constants: set[int] = set()  # ids of scalar constants, folded into op labels
        self.gradient_names: dict[int, str] = {}  # id(p.grad) -> "p.grad", for outputs
        self.show_values = False
        self.compact = False  # hide unnamed intermediates
        self.arrived: dict[int, float] = {}  # id(tensor) -> norm of its gradient (a trace)
        self.backward_ops: set[int] = set()  # ids of the Functions of a backward pass

    def name_gradients(self, named: list[tuple[str, Tensor]]) -> None:
        """Call an output that is some tensor's ``.grad`` by that name: ``x.grad``.

        After ``backward(create_graph=True)``, ``draw_graph(x.grad)`` draws how the gradient
        was computed; its result box then reads ``x.grad`` rather than ``output``.
        """
        outputs = {id(t) for t in self.walk.outputs}
        for name, t in [*named, *((t.name, t) for t in self.walk.tensors if t.name)]:
            if t._grad is not None and id(t._grad) in outputs:  # _grad: no non-leaf warning
                self.gradient_names.setdefault(id(t._grad), f"{name}.grad")

    # -- which module, which cluster --
    def _module_path(self, fn: Function) -> str | None:
        module = getattr(fn, "module", None)
        if module is None:
            return None
        path = self.modules.path_of(module)
        if path is None and self.modules.model is None:
            # No model to name it: one flat cluster per module object, by class name.
            path = f"{type(module).__name__} @{id(module):x}"
            self.cluster_labels.setdefault(path, type(module).__name__)
        return path

    def _param_home(self, t: Tensor) -> str | None:
        """The module path a named parameter belongs to (``a.b.weight`` -> ``a.b``)."""
        name = self.names.get(id(t))
        if name is None or self.modules.model is None:
            return None
        return _parent(name)

    def _cluster_for(self, path: str | None) -> str | None:
        """Where a node recorded in module ``path`` is drawn: that module's cluster, or
        for a collapsed module, the cluster around the collapsed node."""
        if path is None or not self.group_modules:
            return None
        group = self.modules.group_of(path)
        if group is not None:
            path = _parent(group)
        return path or None  # the root module is not a cluster

    # -- building --
    def build(self) -> None:
        walk, modules, order = self.walk, self.modules, self.walk.order
        outputs = {id(t) for t in walk.outputs}
        fn_path = {id(fn): self._module_path(fn) for fn in walk.functions}
        fn_group = {key: modules.group_of(path) for key, path in fn_path.items()}
        tensor_kind = self._tensor_kind

        # Where each tensor lives: the module of the op that made it or, for a parameter,
        # the module that owns it.
        tensor_path: dict[int, str | None] = {}
        for t in walk.tensors:
            fn = t._ctx
            tensor_path[id(t)] = fn_path[id(fn)] if fn is not None else self._param_home(t)
            if id(t) not in outputs and _is_scalar_constant(t, self.names):
                self.constants.add(id(t))
        # A handful of distinct module paths: find each one's cluster once.
        cluster = {path: self._cluster_for(path)
                   for path in {*fn_path.values(), *tensor_path.values()}}

        # A tensor inside a collapsed module is drawn only if something outside it uses it.
        hidden: set[int] = set(self.constants)
        if modules.collapsed:
            used_outside: set[int] = set()
            for fn in walk.functions:
                for t in fn.inputs:
                    if modules.group_of(tensor_path[id(t)]) != fn_group[id(fn)]:
                        used_outside.add(id(t))
            hidden.update(id(t) for t in walk.tensors
                          if modules.group_of(tensor_path[id(t)]) is not None
                          and id(t) not in used_outside and id(t) not in outputs)

        if self.compact:  # unnamed intermediates: their ops get joined directly
            hidden.update(id(t) for t in walk.tensors
                          if t._ctx is not None and t.name is None and id(t) not in outputs
                          and id(t) not in self.names)

        # Each Function becomes an op node, or its collapsed module's node; in a compact
        # drawing, shape-only ops (transpose, reshape) become part of the arrows instead.
        fn_node: dict[int, str] = {}
        see_through = {id(fn) for fn in walk.functions
                       if self.compact and fn.name in SHAPE_OPS and fn_group[id(fn)] is None}
        for fn in walk.functions:
            if id(fn) in see_through:
                continue
            rank, group = order[id(fn)], fn_group[id(fn)]
            if group is None:
                node_id = f"f{rank}"
                kind = "backward op" if id(fn) in self.backward_ops else "op"
                self.nodes[node_id] = _Node(node_id, kind, rank, cluster[fn_path[id(fn)]], fn)
            else:
                node_id = self.groups.get(group)
                if node_id is None:
                    node_id = self.groups[group] = f"m{len(self.groups)}"
                    self.nodes[node_id] = _Node(node_id, "module", rank, self._cluster_for(group),
                                                group)
                self.ops_inside[group] = self.ops_inside.get(group, 0) + 1
            fn_node[id(fn)] = node_id

        def source(t: Tensor) -> tuple[str | None, str]:
            """The node an arrow carrying ``t`` starts from, and "T" if it passed a transpose."""
            mark = ""
            while id(t) in hidden or (t._ctx is not None and id(t._ctx) in see_through
                                      and t.name is None and id(t) not in outputs):
                fn = t._ctx
                if fn is None or id(fn) not in see_through:
                    return (None if fn is None else fn_node[id(fn)]), mark
                mark = mark or ("T" if fn.name == "Permute" else "")
                t = fn.inputs[0]
            return f"t{order[id(t)]}", mark

        # Each tensor becomes a node, with arrows from its op and to the ops that use it.
        for t in walk.tensors:
            key = id(t)
            if key in hidden or (t._ctx is not None and id(t._ctx) in see_through
                                 and t.name is None and key not in outputs):
                continue
            node_id = f"t{order[key]}"
            kind = tensor_kind(t, key in outputs)
            self.nodes[node_id] = _Node(node_id, kind, order[key], cluster[tensor_path[key]], t)
            fn = t._ctx
            if fn is not None:
                tail, mark = (fn_node[id(fn)], "") if id(fn) not in see_through \
                    else source(fn.inputs[0])
                if tail is not None:
                    self.edges[(tail, node_id)] = f' [label="{mark}"]' if mark else ""
        for fn in walk.functions:
            if id(fn) in see_through:
                continue
            head = fn_node[id(fn)]
            backward = id(fn) in self.backward_ops
            for t in fn.inputs:
                if id(t) in self.constants:
                    continue
                tail, mark = source(t)
                if tail is None or tail == head:
                    continue
                attrs = f'label="{mark}"' if mark else ""
                if backward and (t._ctx is None or id(t._ctx) not in self.backward_ops):
                    # a backward op reading a forward value: drawn light, and not allowed to
                    # stack the backward column under the forward one
                    attrs += ' constraint=false style=dashed color="#AAAAAA"'
                self.edges.setdefault((tail, head), f" [{attrs.strip()}]" if attrs else "")

    def cut(self, max_nodes: int) -> None:
        """Keep the ``max_nodes`` nodes nearest the outputs; a marker stands for the rest."""
        if len(self.nodes) <= max_nodes:
            return
        ranked = sorted(self.nodes.values(), key=lambda n: n.rank)
        kept = {n.id: n for n in ranked[:max_nodes]}
        marker = "more"
        edges: dict[tuple[str, str], str] = {}
        for (tail, head), attrs in self.edges.items():
            if head in kept:
                # an arrow the cut runs through comes from the marker instead
                edges.setdefault((tail if tail in kept else marker, head),
                                 attrs if tail in kept else "")
        dropped = len(ranked) - max_nodes
        kept[marker] = _Node(marker, "more", len(ranked), None, f"… {dropped} more nodes not drawn")
        self.nodes, self.edges = kept, edges
        self.groups = {g: i for g, i in self.groups.items() if i in kept}

    # -- labels --
    def _tensor_kind(self, t: Tensor, is_output: bool) -> str:
        if t.name is not None and t._ctx is not None and id(t._ctx) in self.backward_ops:
            return "gradient"
        if is_output:
            return "output"
        if id(t) in self.names:
            return "parameter"
        return "input" if t._ctx is None else "intermediate"

    def _label(self, node: _Node) -> list[str]:
        subject = node.subject
        if node.kind in ("op", "backward op"):
            return self._op_label(subject)
        if node.kind == "module":
            count = self.ops_inside.get(subject, 0)
            return [subject, self.modules.classes.get(subject, ""),
                    f"{count} op{'s' if count != 1 else ''} inside"]
        if node.kind == "more":
            return [subject]
        return self._tensor_label(subject, node.kind)

    def _tensor_label(self, t: Tensor, kind: str) -> list[str]:
        name = self.names.get(id(t)) or t.name or self.gradient_names.get(id(t))
        if name is None:
            if kind == "output":
                name = "output" if t._ctx is not None else "leaf"
            elif kind == "input":
                name = "input" if t.requires_grad else "constant"
        lines = [name] if name else []
        lines.append(_describe_array(t.data, t.device))
        if self.show_values:
            lines.append(_value_line(t.data))
        if id(t) in self.arrived:
            lines.append(f"grad ‖·‖={self.arrived[id(t)]:.3g}")
        elif self.show_grad:
            lines.extend(_grad_lines(t))
        return lines

    def _op_label(self, fn: Function) -> list[str]:
        constants = [_format_scalar(t) for t in fn.inputs if id(t) in self.constants]
        lines = [f"{fn.name} ({', '.join(constants)})" if constants else fn.name]
        if self.show_saved:
            lines.extend(_saved_lines(fn))
        return lines

    # -- DOT text --
    def dot_lines(self) -> list[str]:
        by_cluster: dict[str | None, list[str]] = {}
        for node in sorted(self.nodes.values(), key=lambda n: n.rank):
            line = _node_line(node.id, node.kind, self._label(node))
            by_cluster.setdefault(node.cluster, []).append(line)
        lines = by_cluster.pop(None, [])
        lines.extend(self._cluster_lines(by_cluster))
        lines.extend(f"\t{tail} -> {head}{attrs}\n" for (tail, head), attrs in self.edges.items())
        return lines

    def _cluster_lines(self, by_cluster: dict[str, list[str]]) -> list[str]:
        """Nested ``subgraph cluster_...`` blocks, one per module path, ancestors first.

        Paths sorted by their parts put every module right after its parent, so one pass
        with a stack of open clusters nests them (no recursion needed).
        """
        paths: set[str] = set()
        for path in by_cluster:
            if path in self.cluster_labels:  # flat clusters (no model): no ancestors
                paths.add(path)
            else:
                paths.update(_ancestors(path))
        lines: list[str] = []
        open_paths: list[str] = []
        for path in sorted(paths, key=_path_sort_key):
            while open_paths and not _is_inside(path, open_paths[-1]):
                open_paths.pop()
                lines.append("\t" * (len(open_paths) + 1) + "}\n")
            indent = "\t" * (len(open_paths) + 1)
            label = self.cluster_labels.get(path)
            if label is None:
                label = f"{path} ({self.modules.classes.get(path, '?')})"
            lines.append(f'{indent}subgraph "cluster_{_escape(path)}" {{\n')
            lines.append(f'{indent}\tlabel="{_escape(label)}" style="rounded,dashed" '
                         f'color="#777777" fontcolor="#333333" labeljust=l\n')
            lines.extend(indent + line for line in by_cluster.get(path, []))
            open_paths.append(path)
        while open_paths:
            open_paths.pop()
            lines.append("\t" * (len(open_paths) + 1) + "}\n")
        return lines


def _path_sort_key(path: str) -> tuple[tuple[int, int | str], ...]:
    """Sort ``layers.2`` before ``layers.10``, and every path right after its parent."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in path.split("."))


def _is_inside(path: str, ancestor: str) -> bool:
    return path.startswith(ancestor + ".")


# ----- small formatting helpers ---------------------------------------------------------------
def _escape(text: str) -> str:
    """Make ``text`` safe inside a double-quoted DOT string."""
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return text


# The attributes of each kind, written out once (a 10,000-node graph writes them 10,000 times).
_KIND_ATTRS = {kind: " ".join(f'{k}="{v}"' for k, v in attrs.items())
               for kind, attrs in KINDS.items()}


def _node_line(node_id: str, kind: str, label: list[str]) -> str:
    text = "\\n".join(map(_escape, label))  # DOT's own line break, not a newline character
    return f'\t{node_id} [label="{text}" {_KIND_ATTRS[kind]}]\n'


def _legend_lines(with_module: bool, with_backward: bool = False) -> list[str]:
    lines = ["\tsubgraph cluster_legend {\n",
             '\t\tlabel="legend" style="rounded" color="#BBBBBB" fontsize="10"\n']
    kinds = [kind for kind in LEGEND_TEXT
             if (kind != "module" or with_module)
             and (with_backward or kind not in ("backward op", "gradient"))]
    if not with_backward:
        kinds.reverse()  # dot lays a rank out right to left
    ids = [f"legend_{kind.replace(' ', '_')}" for kind in kinds]
    for node_id, kind in zip(ids, kinds):
        lines.append("\t" + _node_line(node_id, kind, [LEGEND_TEXT[kind]]))
    if with_backward:  # a column, beside a tall drawing rather than above it
        lines.extend(f"\t\t{a} -> {b} [style=invis]\n" for a, b in zip(ids, ids[1:]))
    lines.append("\t}\n")
    return lines


def _shape_text(shape: tuple[int, ...]) -> str:
    return str(tuple(shape)) if shape else "scalar"


_dtype_names: dict[Any, str] = {}


def _describe_array(array: Any, device: str | None = None) -> str:
    """``(2, 4, 8) float32``, plus the device when it is not the CPU."""
    dtype = array.dtype
    name = _dtype_names.get(dtype)
    if name is None:  # str(dtype) is slow enough to show up in a 10,000-node graph
        name = _dtype_names[dtype] = str(dtype)
    text = f"{_shape_text(array.shape)} {name}"
    return text if device in (None, "cpu") else f"{text} {device}"


def _grad_lines(t: Tensor) -> list[str]:
    """The gradient's norm and shape, or a note that backward has not reached it."""
    grad = t._grad  # not .grad: no non-leaf warning for a drawing
    if grad is not None:
        return [f"grad ‖·‖={_norm(grad.data):.3g}  {_shape_text(grad.shape)}"]
    if t.requires_grad and (t._ctx is None or t._retains_grad):
        return ["grad: None"]
    return []


def _value_line(array: Any) -> str:
    """``[-0.53, 0.31] mean 0.02``: the range and mean of a tensor's values."""
    if array.size == 0:
        return "empty"
    data = backend.to_numpy(array).astype("float64")
    if data.size == 1:
        return f"value {data.item():.4g}"
    return f"[{data.min():.3g}, {data.max():.3g}] mean {data.mean():.3g}"


def _norm(array: Any) -> float:
    """The Euclidean (Frobenius) norm, computed on the array's own device."""
    xp = backend.array_module(backend.device_of(array))
    return math.sqrt(float(xp.sum(xp.square(array.astype("float64")))))


def _is_scalar_constant(t: Tensor, names: dict[int, str]) -> bool:
    """A one-element, unnamed leaf that needs no gradient: the ``2`` in ``x * 2``."""
    return (t._ctx is None and not t.requires_grad and t.data.size == 1
            and t.name is None and id(t) not in names)


def _format_scalar(t: Tensor) -> str:
    value = t.data.item()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _saved_lines(fn: Function) -> list[str]:
    """What ``fn`` stashed on itself for its backward, one line per value."""
    if fn.released:
        return ["saved: released"]
    lines = []
    for key, value in vars(fn).items():
        if key in ("inputs", "module", "released") or key.startswith("_"):
            continue
        lines.append(f"saved {key}: {_describe_value(value)}")
    return lines


def _describe_value(value: Any) -> str:
    if isinstance(value, Tensor):
        return _describe_array(value.data, value.device)
    if backend.is_array(value):
        return _describe_array(value)
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
