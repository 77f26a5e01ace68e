"""Draw the graph of one attention layer's forward and backward pass, and save it as SVG.

Autograd records every op of the forward pass as a node; ``draw_graph`` walks those nodes
from the loss back to the leaves. Boxes are tensors (orange, doubled: parameters; blue:
inputs; grey: intermediates; purple: the output), ellipses are ops. Passing ``model=``
names parameters by their path in the model (``q_proj.weight``) and groups the ops by
the module that ran them; ``show_grad=True`` writes each gradient's norm and shape onto
the tensors that received one, so the drawing shows where backward put its results.

Turning the DOT text into a picture needs the Graphviz ``dot`` program. Without it the
script still writes the ``.dot`` source and says how to render it later.

Run:  python examples/07_render_graph.py [OUTPUT_DIR]    (default: a new temporary folder)
"""

import re
import sys
import tempfile
from pathlib import Path

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import nn
from minitransformer.viz import GraphvizNotFoundError, draw_graph, render

B, T, E = 1, 3, 4  # small enough that every node stays readable

mt.manual_seed(0)
attention = nn.Attention(E)
x = mt.randn(B, T, E, requires_grad=True)  # (B, T, E)
x.name = "x"  # names show up in the drawing
target = mt.randn(B, T, E)  # (B, T, E): a stand-in training target
target.name = "target"

# ----- forward and backward -------------------------------------------------------------
z, weights = attention(x)  # z (B, T, E), weights (B, T, T)
z.name = "Z"
loss = F.mse_loss(z, target)  # a scalar, so that backward has somewhere to start
loss.name = "loss"
loss.backward()  # fills x.grad and every parameter's .grad

# ----- draw ------------------------------------------------------------------------------
graph = draw_graph(loss, model=attention, show_grad=True)
source = graph.source
operations = len(re.findall(r"^\s*f\d+ \[", source, flags=re.MULTILINE))  # op nodes: f0, f1, ...
print(f"drew the graph of loss = mse(Attention(x), target): {len(source.splitlines())} "
      f"lines of DOT, {operations} op nodes")
for name, p in attention.named_parameters():
    print(f"  {name:15} {str(p.shape):8} grad norm {float((p.grad.numpy() ** 2).sum()) ** 0.5:.2e}")
# k_proj.bias gets (almost exactly) no gradient, and that is right: adding b_K to every key
# adds the same q_i . b_K to all of query i's scores, which the softmax cannot see.
print("k_proj.bias has a ~0 gradient: it shifts a whole row of scores, and softmax ignores shifts")

# ----- render ----------------------------------------------------------------------------
folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="mt-graph-"))
try:
    picture = render(graph, "attention_graph", format="svg", directory=folder)
except GraphvizNotFoundError as error:
    # render wrote the DOT source before looking for `dot`; the message says where.
    print(error)
    print(f"DOT source written: {error.source_path}")
else:
    print(f"DOT source written: {folder / 'attention_graph.dot'}")
    print(f"SVG written: {picture} ({picture.stat().st_size} bytes); open it in a browser")
