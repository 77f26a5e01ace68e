"""Drawing the computation graph: what autograd recorded, and how the gradient flows back.

    from minitransformer.viz import draw_graph, render
    graph = draw_graph(loss, model=model, show_grad=True)
    render(graph, "attention", format="svg")   # or just `graph` as a Jupyter cell's value

and attention heatmaps, as matplotlib Figures (a notebook shows them; save_figure writes):

    from minitransformer.viz import plot_attention, save_figure
    fig = plot_attention(weights[0], tokens)   # (nh, T, T): one panel per head
"""

from minitransformer.viz.attention import plot_attention, plot_resolution, save_figure
from minitransformer.viz.graph import draw_graph
from minitransformer.viz.render import GraphvizNotFoundError, render

__all__ = ["GraphvizNotFoundError", "draw_graph", "plot_attention", "plot_resolution", "render",
           "save_figure"]
