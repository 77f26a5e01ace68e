"""A step-through page: one forward and one backward pass, one node at a time.

    trace = mt.trace_backward(loss, model=attention)
    html = explain_html(trace)                 # a str: one self-contained HTML page
    write_explain("explain.html", trace)       # or write it (atomically)

The page holds everything inline (the graph as SVG drawn by Graphviz's ``dot``, the
CSS, the script and the numbers as JSON), so it opens offline and fetches nothing. It
walks the forward pass in the order the values were computed, then the backward pass
in the order the engine ran it (:mod:`minitransformer.trace`), highlighting the current
node. A side panel shows the formula (the forward expression, or the op's local backward
rule), the node's values as a small heatmap (with the numbers when the matrix is at most
8 x 8), the gradient that arrived and what the node sent to each input. Next/previous
buttons, the arrow keys and a slider move between frames.

:func:`run_example` builds the models ``minitransformer explain --what`` offers, at
d = 4, with attention composed of primitive ops
(:func:`minitransformer.functional.composed_attention`) so that S, S_hat, A and Z each get
a frame of their own. The default, ``sentence``, is the article's sentence ("The animal
didn't cross the street because it was too tired") through one head, with the loss
−log A[it, animal]; every heatmap row and column of that length is labelled by its token.
A gradient shows on a node of the graph only once the backward has reached it, and the
last frame sums up the path from the loss to ``q_proj.weight``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import nn
from minitransformer.trace import BackwardTrace, Summary, trace_backward

WHAT = ("sentence", "attention", "mha", "encoder")  # the command adds "coref"
NUMBERS_UP_TO = 12  # a heatmap shows its numbers when both sides are at most this
CELLS_UP_TO = 16  # larger matrices are cropped to this many rows and columns


class GraphvizMissingError(RuntimeError):
    """The page needs Graphviz's ``dot`` to lay out the graph."""


# ----- the examples ---------------------------------------------------------------------------
def article_tokens() -> list[str]:
    """The article's sentence, as the coreference task tokenizes it (11 tokens)."""
    from minitransformer.tokenizer import ARTICLE_SENTENCE, tokenize

    return tokenize(ARTICLE_SENTENCE)


def run_example(what: str = "sentence", seed: int = 0) -> BackwardTrace:
    """Forward and traced backward of one small model; the trace also holds the loss.

    ``sentence``: the article's 11 tokens, each a fixed random embedding of d = 4 numbers
    (no training: the point is the flow of the gradient), one head of
    :class:`~minitransformer.nn.Attention`, loss −log A[it, animal]. ``mha``: the same
    sentence through two heads of size 2, loss: the output at "it" should point at
    "animal" (a softmax over Z[it] · X[j]). ``encoder``: one post-norm encoder layer,
    d = 4, two heads, the same loss. ``attention``: single head, 4 random tokens, a
    squared-error loss.
    """
    if what not in WHAT:
        raise ValueError(f"unknown example {what!r}; choose one of {', '.join(WHAT)}")
    mt.manual_seed(seed)
    if what != "attention":
        return _sentence_example(what)
    with F.composed_attention():  # every step of attention its own node
        x = mt.randn(1, 4, 4)  # (B, T, E): needs no gradient, so parameters end the walk
        x.name = "X"
        target = mt.randn(1, 4, 4)  # (B, T, E)
        target.name = "target"
        if what == "attention":
            model = nn.Attention(4)
            out, _ = model(x)
        elif what == "mha":
            model = nn.MultiHeadAttention(4, 2)
            out, _ = model(x, need_weights=False)
        else:
            layer = nn.TransformerEncoderLayer(4, nhead=2, dim_feedforward=8, batch_first=True,
                                               dropout=0.0)
            model = nn.TransformerEncoder(layer, 1)
            out = model(x)
        loss = F.mse_loss(out, target)
    loss.name = "loss"
    return trace_backward(loss, model=model)


def _sentence_example(what: str) -> BackwardTrace:
    tokens = article_tokens()
    n, d = len(tokens), 4
    it, animal = tokens.index("it"), tokens.index("animal")
    x = mt.randn(1, n, d)  # (B, T, E): fixed embeddings; needs no gradient
    x.name = "X"
    with F.composed_attention():
        if what == "sentence":
            model = nn.Attention(d)
            _, weights = model(x[0])  # A (T, T)
            picked = weights[it, animal]
            picked.name = "A[it, animal]"
            log_picked = picked.log()
            log_picked.name = "log A[it, animal]"
            loss = -log_picked
        else:
            if what == "mha":
                model = nn.MultiHeadAttention(d, 2)
                out, _ = model(x, need_weights=False)  # (1, T, E)
            else:
                model = nn.TransformerEncoder(
                    nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=8, batch_first=True,
                                               dropout=0.0), 1)
                out = model(x)  # (1, T, E)
            at_it = out[:, it]  # (1, E)
            at_it.name = "output[it]"
            scores = at_it @ x[0].T  # (1, T): how much the output at "it" looks like each X[j]
            scores.name = "scores"
            loss = F.cross_entropy(scores, np.array([animal]))
    loss.name = "loss"
    trace = trace_backward(loss, model=model)
    trace.tokens = tokens
    return trace


# ----- frames ---------------------------------------------------------------------------------
def _labels(size: int, tokens: list[str] | None) -> list[str]:
    """An axis's labels: the tokens when it is as long as the sentence, else 0, 1, ..."""
    if tokens is not None and size == len(tokens):
        return list(tokens)
    return [str(i) for i in range(size)]


def _cells(values: np.ndarray) -> list[list[float]]:
    finite = np.where(np.isfinite(values), values, 0.0)
    return [[float(f"{v:.4g}") for v in row] for row in finite]


def _heat(summary: Summary | None, tokens: list[str] | None = None,
          heads: int = 0) -> dict[str, Any] | None:
    """A value summary as a small matrix for the page: the last two axes of the first
    batch element, cropped, with a note saying what was left out, and each row and
    column labelled (by its token, where the axis runs over the sentence). With
    ``heads`` > 1 and a (B, heads, ., .) array, one matrix per head (``per_head``)."""
    if summary is None or summary.values is None:
        return None
    values = summary.values
    notes = []
    per_head = None
    if values.ndim == 0:
        values = values.reshape(1, 1)
    elif values.ndim == 1:
        values = values.reshape(1, -1)  # a vector: one row
    elif values.ndim > 2:
        if heads > 1 and values.ndim == 4 and values.shape[1] == heads:
            per_head = values[0]
            notes.append(f"one head of {tuple(values.shape)} (batch, head, ., .)")
        else:
            notes.append(f"[{', '.join('0' for _ in values.shape[:-2])}, :, :] of "
                         f"{tuple(values.shape)}")
        values = values.reshape(-1, *values.shape[-2:])[0]
    rows, cols = values.shape
    row_labels, col_labels = _labels(rows, tokens), _labels(cols, tokens)
    if rows > CELLS_UP_TO or cols > CELLS_UP_TO:
        notes.append(f"first {min(rows, CELLS_UP_TO)} x {min(cols, CELLS_UP_TO)} shown")
        values = values[:CELLS_UP_TO, :CELLS_UP_TO]
        row_labels, col_labels = row_labels[:CELLS_UP_TO], col_labels[:CELLS_UP_TO]
        if per_head is not None:
            per_head = per_head[:, :CELLS_UP_TO, :CELLS_UP_TO]
    every = values if per_head is None else per_head
    scale = float(np.abs(np.where(np.isfinite(every), every, 0.0)).max()) or 1.0
    heat = {
        "cells": _cells(values),
        "rows": row_labels, "cols": col_labels,
        "numbers": rows <= NUMBERS_UP_TO and cols <= NUMBERS_UP_TO,
        "scale": scale,
        "note": "; ".join(notes),
    }
    if per_head is not None:
        heat["heads"] = [_cells(h) for h in per_head]
    return heat


def _display(name: str) -> str:
    """A tensor's name on the page: ``Q_heads`` is Q split into heads, so ``Q_h``."""
    return name[: -len("_heads")] + "_h" if name.endswith("_heads") else \
        name.replace("_headsᵀ", "_hᵀ")


def _stats(summary: Summary) -> str:
    return f"‖·‖ = {summary.norm:.4g}, min {summary.min:.4g}, max {summary.max:.4g}"


def _head_count(trace: BackwardTrace) -> int:
    """The number of heads of the (first) multi-head attention in the model, else 1."""
    model = trace.model
    if model is None or not hasattr(model, "modules"):
        return 1
    for module in model.modules():
        if getattr(module, "num_heads", 1) > 1:
            return int(module.num_heads)
    return 1


def _show(text: str) -> str:
    return text.replace("_heads", "_h")


def _column(values: np.ndarray, tokens: list[str] | None, note: str) -> dict[str, Any]:
    """A (rows,) vector drawn as one column, rows labelled."""
    column = values.reshape(-1, 1)
    return {"cells": _cells(column), "rows": _labels(column.shape[0], tokens), "cols": ["r"],
            "numbers": column.shape[0] <= NUMBERS_UP_TO,
            "scale": float(np.abs(column).max()) or 1.0, "note": note}


def _extras(step: Any, forward: dict[int, Any], tokens: list[str] | None,
            heads: int = 1) -> list[dict]:
    """The numbers a rule needs beyond its input and output: the softmax's row sums, the
    scaling's constant, which operand of a product is transposed."""
    extras: list[dict[str, Any]] = []
    f = forward.get(step.tensor_id)
    if step.op in ("Softmax", "MaskedSoftmax") and f is not None \
            and f.value.values is not None and step.grad.values is not None:
        a, g = f.value.values, step.grad.values
        r = np.sum(g * a, axis=-1)  # one number per row
        r2 = r.reshape(-1, r.shape[-1])[0] if r.ndim > 1 else r
        column = _column(r2, tokens, "")
        if heads > 1 and r.ndim == 3 and r.shape[1] == heads:  # (B, heads, T)
            column["heads"] = [_column(h, tokens, "")["cells"] for h in r[0]]
            column["scale"] = float(np.abs(r[0]).max()) or 1.0
        name = _show(step.name)
        extras.append({"text": f"r = Σⱼ d{name}ⱼ {name}ⱼ, the sum of each row of "
                               f"d{name} ⊙ {name}, one number per row:",
                       "heat": column})
    if step.op in ("Div", "Mul") and f is not None and len(f.constants) == 2:
        c = f.constants[1] if f.constants[1] is not None else f.constants[0]
        if c is not None:
            factor = 1 / c if step.op == "Div" else c
            d_k = 1 / factor ** 2 if factor > 0 else float("nan")
            text = f"the scaling: the gradient is multiplied by {factor:.4g}"
            if factor > 0 and abs(d_k - round(d_k)) < 1e-6:
                text += f" = 1/√d_k, d_k = {round(d_k)}"
            extras.append({"text": text + "."})
    if step.op == "MatMul" and f is not None and len(f.inputs) == 2:
        a, b = (_show(x) for x in f.inputs)
        y = _show(step.name)
        extras.append({"text": f"{y} = {a} @ {b}: the gradient of the left operand {a} "
                               f"multiplies d{y} by the right one transposed ({b} becomes "
                               f"{_show(_flip(f.inputs[1]))}); the gradient of {b} "
                               f"multiplies {_show(_flip(f.inputs[0]))}, the left one "
                               f"transposed, by d{y}."})
    return extras


def _flip(name: str) -> str:
    return name[:-1] if name.endswith("ᵀ") else name + "ᵀ"


def _path_to(trace: BackwardTrace, target: str) -> list[str]:
    """The names on one shortest path from the loss down to ``target``, loss first."""
    consumers: dict[str, list[str]] = {}
    for f in trace.forward:
        for x in f.inputs:
            consumers.setdefault(x, []).append(f.name)
    root = trace.steps[0].name if trace.steps else None
    previous: dict[str, str | None] = {target: None}
    queue = [target]
    while queue:
        name = queue.pop(0)
        if name == root:
            break
        for c in consumers.get(name, []):
            if c not in previous:
                previous[c] = name
                queue.append(c)
    if root not in previous:
        return []
    path, name = [], root
    while name is not None:
        path.append(name)
        name = previous[name]
    return path


def _summary_frame(trace: BackwardTrace, ranks: dict[int, int]) -> dict[str, Any] | None:
    """The closing frame: the path from the loss to q_proj.weight, one rule a step."""
    leaves = [s for s in trace.steps if s.op == "leaf" and s.is_parameter]
    if not leaves:
        return None
    target = next((s for s in leaves if s.name.endswith("q_proj.weight")), leaves[-1])
    path = _path_to(trace, target.name)
    by_name = {s.name: s for s in trace.steps}
    rows = []
    for name in path:
        s = by_name.get(name)
        if s is None:
            continue
        rows.append({"name": _show(name), "op": s.op, "norm": f"{s.grad.norm:.3g}",
                     "rule": _show(s.rule)})
    if target.tensor_id not in ranks:
        return None
    chain = " ← ".join(_show(n) for n in path)
    ids = {f.name: f.tensor_id for f in trace.forward}
    path_nodes = [f"t{ranks[ids[n]]}" for n in path if ids.get(n) in ranks]
    path_nodes += [f"f{ranks[by_name[n].op_id]}" for n in path
                   if n in by_name and by_name[n].op_id in ranks]
    return {
        "phase": "summary", "node": f"t{ranks[target.tensor_id]}", "op": "summary",
        "name": _show(target.name), "shape": list(target.shape),
        "formula": f"the path of the gradient: {chain}",
        "path": rows, "path_nodes": path_nodes,
        "grad": _heat(target.grad, trace.tokens), "grad_stats":
        _stats(target.grad), "parameter": True,
        "text": f"d{_show(target.name)} is the chain rule applied once per node of this "
                f"path: each step's rule turns the gradient that arrived into the one it "
                f"sends on. {len(rows)} nodes from the loss to {_show(target.name)}."
    }


def _frames(trace: BackwardTrace, ranks: dict[int, int],
            inputs: list[Any] = ()) -> list[dict[str, Any]]:
    """The named inputs (X), the forward frames (one per computed value), one per backward
    step, then a closing frame that sums up the path from the loss to q_proj.weight."""
    tokens, heads = trace.tokens, _head_count(trace)
    frames: list[dict[str, Any]] = []
    values = {f.tensor_id: f.value for f in trace.forward}
    forward = {f.tensor_id: f for f in trace.forward}
    for t in sorted(inputs, key=lambda t: -ranks.get(id(t), 0)):  # X first
        if id(t) not in ranks:
            continue
        value = Summary.of(t.data)
        frames.append({
            "phase": "forward", "node": f"t{ranks[id(t)]}", "op": "input",
            "name": _show(t.name), "shape": list(value.shape),
            "formula": (f"{t.name}: the input, one row per token (it needs no gradient, so "
                        "the backward stops at the parameters)") if tokens else
                       f"{t.name}: the input",
            "value": _heat(value, tokens, heads), "value_stats": _stats(value),
            "parameter": False, "reached": [],
        })
    for f in trace.forward:
        if f.op is None or f.tensor_id not in ranks:
            continue  # parameters are shown where they are used
        frames.append({
            "phase": "forward", "node": f"t{ranks[f.tensor_id]}", "op": f.op,
            "name": _show(f.name), "shape": list(f.value.shape),
            "formula": _show(f.expression or f"{f.name} = {f.op}({', '.join(f.inputs)})"),
            "value": _heat(f.value, tokens, heads), "value_stats": _stats(f.value),
            "parameter": False, "reached": [],
        })
    for s in trace.steps:
        key = s.op_id if s.op_id is not None else s.tensor_id
        if key not in ranks:
            continue
        reached = [f"t{ranks[s.tensor_id]}"] if s.tensor_id in ranks else []
        frames.append({
            "phase": "backward" if s.op != "leaf" else "leaf",
            "node": f"{'f' if s.op_id is not None else 't'}{ranks[key]}",
            "op": s.op, "name": _show(s.name), "shape": list(s.shape),
            "formula": _show(s.rule),
            "value": _heat(values.get(s.tensor_id), tokens, heads),
            "value_stats": _stats(values[s.tensor_id]) if s.tensor_id in values else "",
            "grad": _heat(s.grad, tokens, heads), "grad_stats": _stats(s.grad),
            "sent": [{"to": _show(x.to), "stats": _stats(x.summary),
                      "heat": _heat(x.summary, tokens, heads)} for x in s.sent],
            "extras": _extras(s, forward, tokens, heads),
            "parameter": s.is_parameter, "reached": reached,
        })
    closing = _summary_frame(trace, ranks)
    if closing is not None and frames and closing["node"] == frames[-1]["node"]:
        frames[-1]["summary_follows"] = True
    if closing is not None:
        closing["reached"] = []
        frames.append(closing)
    return frames


# ----- the page -------------------------------------------------------------------------------
def explain_html(trace: BackwardTrace, title: str | None = None) -> str:
    """The page for ``trace`` (from :func:`~minitransformer.trace.trace_backward`)."""
    from minitransformer.viz.graph import _walk, draw_graph

    if trace.root is None:
        raise ValueError("the trace recorded no backward walk: run trace_backward(loss) first")
    if shutil.which("dot") is None:
        from minitransformer.viz.render import INSTALL_HINT

        raise GraphvizMissingError(
            "the page draws its graph with Graphviz's `dot`, which was not found on PATH. "
            + " ".join(INSTALL_HINT.split()))
    graph = draw_graph(trace.root, model=trace.model, trace=trace, legend=False)
    svg = graph.pipe(format="svg").decode("utf-8")
    svg = svg[svg.index("<svg"):]  # drop the XML prologue and doctype: inline SVG
    # Scaled to its pane (the viewBox keeps the proportions); "actual size" undoes it.
    svg = re.sub(r'<svg width="[^"]*" height="[^"]*"', '<svg width="100%" height="100%"',
                 svg, count=1)
    walk = _walk([trace.root])
    ranks = walk.order
    inputs = [t for t in walk.tensors if t._ctx is None and t.name is not None
              and not t.__dict__.get("param_path") and not t.requires_grad]
    frames = _frames(trace, ranks, inputs)
    data = json.dumps({"frames": frames}, separators=(",", ":")).replace("</", "<\\/")
    title = title or f"Follow the gradient: {trace.root.name or 'loss'}"
    return _PAGE.format(title=html.escape(title), svg=svg, data=data, css=_CSS, js=_JS)


def write_explain(path: str | os.PathLike[str], trace: BackwardTrace,
                  title: str | None = None) -> Path:
    """Write :func:`explain_html` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    page = explain_html(trace, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(page)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


_CSS = """
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: #222; display: flex;
       flex-direction: column; height: 100vh; }
header { padding: 6px 12px; background: #f4f4f4; border-bottom: 1px solid #ccc;
         display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
header h1 { font-size: 15px; margin: 0 10px 0 0; }
#slider { flex: 1; min-width: 160px; }
main { flex: 1; display: flex; min-height: 0; }
#graph { flex: 1; overflow: hidden; padding: 8px; min-width: 0; }
#graph.actual { overflow: auto; }
#graph.actual svg { width: auto; height: auto; }
#panel { width: 520px; overflow: auto; padding: 10px 14px; border-left: 1px solid #ccc;
         background: #fcfcfc; }
#panel h2 { font-size: 16px; margin: 4px 0; }
#panel h3 { font-size: 14px; margin: 10px 0 2px; }
.phase { display: inline-block; padding: 1px 8px; border-radius: 8px; color: white;
         font-size: 12px; }
.phase.forward { background: #0072B2; } .phase.backward, .phase.leaf { background: #D55E00; }
.phase.summary { background: #009E73; }
code.formula { display: block; white-space: pre-wrap; overflow-wrap: anywhere;
               background: #eef; padding: 6px; margin: 6px 0; }
table.heat { border-collapse: collapse; margin: 4px 0 8px; }
table.heat td { width: 36px; height: 20px; text-align: center; font-size: 10px;
                border: 1px solid #fff; }
table.heat th { font-size: 10px; font-weight: normal; color: #444; padding: 0 3px;
                white-space: nowrap; }
table.heat thead th { height: 44px; vertical-align: bottom; }
table.heat thead th span { display: inline-block; transform: rotate(-60deg);
                           transform-origin: left bottom; width: 14px; }
table.heat tbody th { text-align: right; }
table.heat.small td { width: 12px; height: 12px; font-size: 0; }
table.path { border-collapse: collapse; font-size: 12px; }
table.path td { border-top: 1px solid #ddd; padding: 2px 4px; vertical-align: top; }
.note, .stats { color: #555; font-size: 12px; }
.extra { background: #fff7e6; padding: 4px 6px; margin: 6px 0; font-size: 13px; }
g.node.current > polygon, g.node.current > ellipse, g.node.current > path {
  stroke: #E60000; stroke-width: 5px; }
g.node.done > polygon, g.node.done > ellipse { stroke: #777; stroke-width: 2px; }
g.node.onpath > polygon, g.node.onpath > ellipse, g.node.onpath > path {
  stroke: #009E73; stroke-width: 4px; }
g.node text.grad-hidden { visibility: hidden; }
"""

_JS = """
(function () {
  var frames = JSON.parse(document.getElementById('frames').textContent).frames;
  var nodes = {};
  document.querySelectorAll('#graph g.node').forEach(function (g) {
    var t = g.querySelector('title'); if (t) nodes[t.textContent] = g;
  });
  // A node's gradient line shows from the frame where the backward reaches it on.
  var reachedAt = {};
  frames.forEach(function (f, j) {
    (f.reached || []).forEach(function (n) { if (!(n in reachedAt)) reachedAt[n] = j; });
  });
  var gradTexts = {};
  Object.keys(nodes).forEach(function (k) {
    nodes[k].querySelectorAll('text').forEach(function (t) {
      if (t.textContent.indexOf('grad ') === 0) (gradTexts[k] = gradTexts[k] || []).push(t);
    });
  });
  var slider = document.getElementById('slider');
  slider.max = String(frames.length - 1);
  var headSelect = document.getElementById('head');
  var heads = 0;
  frames.forEach(function (f) {
    [f.value, f.grad].concat((f.sent || []).map(function (s) { return s.heat; }))
      .forEach(function (h) { if (h && h.heads) heads = Math.max(heads, h.heads.length); });
  });
  if (heads > 1) {
    for (var h = 0; h < heads; h++) {
      var o = document.createElement('option'); o.value = String(h);
      o.textContent = 'head ' + (h + 1); headSelect.appendChild(o);
    }
    document.getElementById('headbox').style.display = '';
  }
  var head = 0;
  var index = 0;
  function colour(v, scale) {
    var a = Math.min(1, Math.abs(v) / scale);
    var c = v >= 0 ? [213, 94, 0] : [0, 114, 178];
    return 'rgba(' + c[0] + ',' + c[1] + ',' + c[2] + ',' + (0.08 + 0.8 * a).toFixed(3) + ')';
  }
  function heat(h) {
    if (!h) return '<div class="note">(too large to keep)</div>';
    var cells = h.heads ? h.heads[Math.min(head, h.heads.length - 1)] : h.cells;
    var out = '<table class="heat' + (h.numbers ? '' : ' small') + '"><thead><tr><th></th>';
    (h.cols || []).forEach(function (c) { out += '<th><span>' + esc(c) + '</span></th>'; });
    out += '</tr></thead><tbody>';
    cells.forEach(function (row, r) {
      out += '<tr><th>' + esc(h.rows ? h.rows[r] : r) + '</th>' + row.map(function (v) {
        return '<td style="background:' + colour(v, h.scale) + '" title="' + v + '">' +
               (h.numbers ? v.toPrecision(3) : '') + '</td>';
      }).join('') + '</tr>';
    });
    var note = h.heads ? 'head ' + (head + 1) + ' of ' + h.heads.length +
                         (h.note ? '; ' + h.note : '') : h.note;
    return out + '</tbody></table>' + (note ? '<div class="note">' + esc(note) + '</div>' : '');
  }
  function esc(s) {
    return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  }
  function show(i) {
    index = Math.max(0, Math.min(frames.length - 1, i));
    var f = frames[index];
    Object.keys(nodes).forEach(function (k) {
      nodes[k].classList.remove('current'); nodes[k].classList.remove('onpath');
      var visible = (k in reachedAt) && reachedAt[k] <= index;
      (gradTexts[k] || []).forEach(function (t) {
        if (visible) t.classList.remove('grad-hidden'); else t.classList.add('grad-hidden');
      });
    });
    frames.forEach(function (g, j) {
      var n = nodes[g.node]; if (n && j < index) n.classList.add('done');
      if (n && j >= index) n.classList.remove('done');
    });
    (f.path_nodes || []).forEach(function (k) { if (nodes[k]) nodes[k].classList.add('onpath'); });
    var node = nodes[f.node];
    if (node) {
      node.classList.remove('done'); node.classList.add('current');
      if (node.scrollIntoView && graphPane.classList.contains('actual'))
        node.scrollIntoView({block: 'center', inline: 'center'});
    }
    document.body.dataset.frame = String(index);
    document.body.dataset.node = f.node;
    document.body.dataset.phase = f.phase;
    document.body.dataset.parameter = String(f.parameter);
    slider.value = String(index);
    document.getElementById('counter').textContent =
      'frame ' + (index + 1) + ' / ' + frames.length;
    var label = {forward: 'forward', backward: 'backward', leaf: 'backward',
                 summary: 'the whole path'}[f.phase];
    var p = '<span class="phase ' + f.phase + '">' + label + '</span>' +
            '<h2>' + esc(f.phase === 'forward' ? f.name : 'd' + f.name) +
            ' <small>(' + f.shape.join(' x ') + ')</small></h2>' +
            '<div>op: <b>' + esc(f.op) + '</b>' +
            (f.parameter ? ' — a parameter: its gradient is complete' : '') + '</div>' +
            '<code class="formula">' + esc(f.formula || '(no formula)') + '</code>';
    (f.extras || []).forEach(function (e) {
      p += '<div class="extra">' + esc(e.text) + (e.heat ? heat(e.heat) : '') + '</div>';
    });
    if (f.phase === 'forward') {
      p += '<h3>value</h3><div class="stats">' + esc(f.value_stats) + '</div>' + heat(f.value);
    } else if (f.phase === 'summary') {
      p += '<div>' + esc(f.text) + '</div><table class="path"><tr><td>node</td><td>op</td>' +
           '<td>|grad|</td><td>rule</td></tr>';
      f.path.forEach(function (r) {
        p += '<tr><td><b>' + esc(r.name) + '</b></td><td>' + esc(r.op) + '</td><td>' +
             esc(r.norm) + '</td><td>' + esc(r.rule) + '</td></tr>';
      });
      p += '</table><h3>d' + esc(f.name) + '</h3><div class="stats">' + esc(f.grad_stats) +
           '</div>' + heat(f.grad);
    } else {
      p += '<h3>gradient arrived: d' + esc(f.name) + '</h3><div class="stats">' +
           esc(f.grad_stats) + '</div>' + heat(f.grad);
      if (f.sent.length) {
        p += '<h3>sends</h3>';
        f.sent.forEach(function (s) {
          p += '<div>d<b>' + esc(s.to) + '</b> <span class="stats">' + esc(s.stats) +
               '</span></div>' + heat(s.heat);
        });
      }
      if (f.value) p += '<h3>its value (forward): ' + esc(f.name) + '</h3>' + heat(f.value);
    }
    document.getElementById('panel').innerHTML = p;
  }
  var graphPane = document.getElementById('graph');
  document.getElementById('zoom').addEventListener('click', function () {
    graphPane.classList.toggle('actual');
    this.textContent = graphPane.classList.contains('actual') ? 'fit the graph' : 'actual size';
    show(index);
  });
  headSelect.addEventListener('change', function () {
    head = parseInt(headSelect.value, 10); show(index);
  });
  document.getElementById('prev').addEventListener('click', function () { show(index - 1); });
  document.getElementById('next').addEventListener('click', function () { show(index + 1); });
  slider.addEventListener('input', function () { show(parseInt(slider.value, 10)); });
  document.addEventListener('keydown', function (e) {
    if (e.target === headSelect) return;
    if (e.key === 'ArrowRight' || e.key === 'ArrowDown') { show(index + 1); e.preventDefault(); }
    if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') { show(index - 1); e.preventDefault(); }
    if (e.key === 'Home') { show(0); e.preventDefault(); }
    if (e.key === 'End') { show(frames.length - 1); e.preventDefault(); }
  });
  window.explain = {frames: frames, show: show, current: function () { return index; },
                    setHead: function (h) { head = h; headSelect.value = String(h); show(index); }};
  show(0);
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>
  <h1>{title}</h1>
  <button id="prev" type="button" title="previous (left arrow)">&larr; prev</button>
  <button id="next" type="button" title="next (right arrow)">next &rarr;</button>
  <input id="slider" type="range" min="0" max="0" value="0" aria-label="frame">
  <span id="counter"></span>
  <span id="headbox" style="display:none"><label for="head">heads:</label>
    <select id="head" aria-label="head"></select></span>
  <button id="zoom" type="button" title="the graph at its own size, scrolled">actual size</button>
</header>
<main>
  <div id="graph">{svg}</div>
  <aside id="panel"></aside>
</main>
<script type="application/json" id="frames">{data}</script>
<script>{js}</script>
</body>
</html>
"""
