"""Drawing the computation graph: what autograd recorded, and how the gradient flows back.

    from minitransformer.viz import draw_graph, render
    graph = draw_graph(loss, model=model, show_grad=True)
    render(graph, "attention", format="svg")   # or just `graph` as a Jupyter cell's value
"""

from minitransformer.viz.graph import draw_graph
from minitransformer.viz.render import GraphvizNotFoundError, render

__all__ = ["GraphvizNotFoundError", "draw_graph", "render"]
