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
d = 4 where that is possible, with attention composed of primitive ops
(:func:`minitransformer.functional.composed_attention`) so that S, S_hat, A and Z each get
a frame of their own.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import nn
from minitransformer.trace import BackwardTrace, Summary, trace_backward

WHAT = ("attention", "mha", "encoder")  # the command adds "coref" (the engine stays apart)
NUMBERS_UP_TO = 8  # a heatmap shows its numbers when both sides are at most this
CELLS_UP_TO = 16  # larger matrices are cropped to this many rows and columns


class GraphvizMissingError(RuntimeError):
    """The page needs Graphviz's ``dot`` to lay out the graph."""


# ----- the examples ---------------------------------------------------------------------------
def run_example(what: str = "attention", seed: int = 0) -> BackwardTrace:
    """Forward and traced backward of one small model; the trace also holds the loss.

    ``attention``: single-head, d = 4, 4 tokens. ``mha``: two heads of size 2, d = 4.
    ``encoder``: one post-norm encoder layer, d = 4, two heads.
    """
    if what not in WHAT:
        raise ValueError(f"unknown example {what!r}; choose one of {', '.join(WHAT)}")
    mt.manual_seed(seed)
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
            layer = nn.TransformerEncoderLayer(4, nhead=2, dim_feedforward=8)
            model = nn.TransformerEncoder(layer, 1)
            out = model(x)
        loss = F.mse_loss(out, target)
    loss.name = "loss"
    return trace_backward(loss, model=model)


# ----- frames ---------------------------------------------------------------------------------
def _heat(summary: Summary | None) -> dict[str, Any] | None:
    """A value summary as a small matrix for the page: the last two axes of the first
    batch element (and head), cropped, with a note saying what was left out."""
    if summary is None or summary.values is None:
        return None
    values = summary.values
    notes = []
    if values.ndim == 0:
        values = values.reshape(1, 1)
    elif values.ndim == 1:
        values = values.reshape(1, -1)  # a vector: one row
    elif values.ndim > 2:
        notes.append(f"[{', '.join('0' for _ in values.shape[:-2])}, :, :] of "
                     f"{tuple(values.shape)}")
        values = values.reshape(-1, *values.shape[-2:])[0]
    rows, cols = values.shape
    if rows > CELLS_UP_TO or cols > CELLS_UP_TO:
        notes.append(f"first {min(rows, CELLS_UP_TO)} x {min(cols, CELLS_UP_TO)} shown")
        values = values[:CELLS_UP_TO, :CELLS_UP_TO]
    finite = np.where(np.isfinite(values), values, 0.0)
    return {
        "cells": [[float(f"{v:.4g}") for v in row] for row in finite],
        "numbers": rows <= NUMBERS_UP_TO and cols <= NUMBERS_UP_TO,
        "scale": float(np.abs(finite).max()) or 1.0,
        "note": "; ".join(notes),
    }


def _stats(summary: Summary) -> str:
    return f"‖·‖ = {summary.norm:.4g}, min {summary.min:.4g}, max {summary.max:.4g}"


def _frames(trace: BackwardTrace, ranks: dict[int, int]) -> list[dict[str, Any]]:
    """Forward frames (one per computed value), then one per backward step."""
    frames: list[dict[str, Any]] = []
    values = {f.tensor_id: f.value for f in trace.forward}
    for f in trace.forward:
        if f.op is None or f.tensor_id not in ranks:
            continue  # leaves are shown where they are used
        frames.append({
            "phase": "forward", "node": f"t{ranks[f.tensor_id]}", "op": f.op, "name": f.name,
            "shape": list(f.value.shape),
            "formula": f"{f.name} = {f.op}({', '.join(f.inputs)})"
                       + (f"   [{f.formula}]" if f.formula else ""),
            "value": _heat(f.value), "value_stats": _stats(f.value),
            "parameter": False,
        })
    for s in trace.steps:
        key = s.op_id if s.op_id is not None else s.tensor_id
        if key not in ranks:
            continue
        frames.append({
            "phase": "backward" if s.op != "leaf" else "leaf",
            "node": f"{'f' if s.op_id is not None else 't'}{ranks[key]}",
            "op": s.op, "name": s.name, "shape": list(s.shape), "formula": s.rule,
            "value": _heat(values.get(s.tensor_id)),
            "value_stats": _stats(values[s.tensor_id]) if s.tensor_id in values else "",
            "grad": _heat(s.grad), "grad_stats": _stats(s.grad),
            "sent": [{"to": x.to, "stats": _stats(x.summary), "heat": _heat(x.summary)}
                     for x in s.sent],
            "parameter": s.is_parameter,
        })
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
    ranks = _walk([trace.root]).order
    frames = _frames(trace, ranks)
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
#graph { flex: 1; overflow: auto; padding: 8px; }
#graph svg { max-width: none; height: auto; }
#panel { width: 400px; overflow: auto; padding: 10px 14px; border-left: 1px solid #ccc;
         background: #fcfcfc; }
#panel h2 { font-size: 16px; margin: 4px 0; }
.phase { display: inline-block; padding: 1px 8px; border-radius: 8px; color: white;
         font-size: 12px; }
.phase.forward { background: #0072B2; } .phase.backward, .phase.leaf { background: #D55E00; }
code.formula { display: block; white-space: pre-wrap; background: #eef; padding: 6px;
               margin: 6px 0; }
table.heat { border-collapse: collapse; margin: 4px 0 8px; }
table.heat td { width: 42px; height: 20px; text-align: center; font-size: 11px;
                border: 1px solid #fff; }
table.heat.small td { width: 12px; height: 12px; font-size: 0; }
.note, .stats { color: #555; font-size: 12px; }
g.node.current > polygon, g.node.current > ellipse, g.node.current > path {
  stroke: #E60000; stroke-width: 5px; }
g.node.done > polygon, g.node.done > ellipse { stroke: #777; stroke-width: 2px; }
"""

_JS = """
(function () {
  var frames = JSON.parse(document.getElementById('frames').textContent).frames;
  var nodes = {};
  document.querySelectorAll('#graph g.node').forEach(function (g) {
    var t = g.querySelector('title'); if (t) nodes[t.textContent] = g;
  });
  var slider = document.getElementById('slider');
  slider.max = String(frames.length - 1);
  var index = 0;
  function colour(v, scale) {
    var a = Math.min(1, Math.abs(v) / scale);
    var c = v >= 0 ? [213, 94, 0] : [0, 114, 178];
    return 'rgba(' + c[0] + ',' + c[1] + ',' + c[2] + ',' + (0.08 + 0.8 * a).toFixed(3) + ')';
  }
  function heat(h) {
    if (!h) return '<div class="note">(too large to keep)</div>';
    var out = '<table class="heat' + (h.numbers ? '' : ' small') + '">';
    h.cells.forEach(function (row) {
      out += '<tr>' + row.map(function (v) {
        return '<td style="background:' + colour(v, h.scale) + '" title="' + v + '">' +
               (h.numbers ? v.toPrecision(3) : '') + '</td>';
      }).join('') + '</tr>';
    });
    return out + '</table>' + (h.note ? '<div class="note">' + h.note + '</div>' : '');
  }
  function esc(s) {
    return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  }
  function show(i) {
    index = Math.max(0, Math.min(frames.length - 1, i));
    var f = frames[index];
    Object.keys(nodes).forEach(function (k) { nodes[k].classList.remove('current'); });
    frames.forEach(function (g, j) {
      var n = nodes[g.node]; if (n && j < index) n.classList.add('done');
      if (n && j >= index) n.classList.remove('done');
    });
    var node = nodes[f.node];
    if (node) {
      node.classList.remove('done'); node.classList.add('current');
      if (node.scrollIntoView) node.scrollIntoView({block: 'center', inline: 'center'});
    }
    document.body.dataset.frame = String(index);
    document.body.dataset.node = f.node;
    document.body.dataset.phase = f.phase;
    document.body.dataset.parameter = String(f.parameter);
    slider.value = String(index);
    document.getElementById('counter').textContent =
      'frame ' + (index + 1) + ' / ' + frames.length;
    var p = '<span class="phase ' + f.phase + '">' +
            (f.phase === 'forward' ? 'forward' : 'backward') + '</span>' +
            '<h2>' + esc(f.name) + ' <small>(' + f.shape.join(' x ') + ')</small></h2>' +
            '<div>op: <b>' + esc(f.op) + '</b>' +
            (f.parameter ? ' — a parameter: its gradient is complete' : '') + '</div>' +
            '<code class="formula">' + esc(f.formula || '(no formula)') + '</code>';
    if (f.phase === 'forward') {
      p += '<h3>value</h3><div class="stats">' + esc(f.value_stats) + '</div>' + heat(f.value);
    } else {
      p += '<h3>gradient arrived: d' + esc(f.name) + '</h3><div class="stats">' +
           esc(f.grad_stats) + '</div>' + heat(f.grad);
      if (f.sent.length) {
        p += '<h3>sends</h3>';
        f.sent.forEach(function (s) {
          p += '<div>to <b>' + esc(s.to) + '</b> <span class="stats">' + esc(s.stats) +
               '</span></div>' + heat(s.heat);
        });
      }
      if (f.value) p += '<h3>its value (forward)</h3>' + heat(f.value);
    }
    document.getElementById('panel').innerHTML = p;
  }
  document.getElementById('prev').addEventListener('click', function () { show(index - 1); });
  document.getElementById('next').addEventListener('click', function () { show(index + 1); });
  slider.addEventListener('input', function () { show(parseInt(slider.value, 10)); });
  document.addEventListener('keydown', function (e) {
    if (e.key === 'ArrowRight' || e.key === 'ArrowDown') { show(index + 1); e.preventDefault(); }
    if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') { show(index - 1); e.preventDefault(); }
    if (e.key === 'Home') { show(0); e.preventDefault(); }
    if (e.key === 'End') { show(frames.length - 1); e.preventDefault(); }
  });
  window.explain = {frames: frames, show: show, current: function () { return index; }};
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
