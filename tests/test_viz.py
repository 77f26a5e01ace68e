"""Graph drawing: what draw_graph puts in the DOT source, and what `dot` makes of it."""

from __future__ import annotations

import importlib
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import nn
from minitransformer.viz import GraphvizNotFoundError, draw_graph, render
from minitransformer.viz.examples import EXAMPLES
from minitransformer.viz.graph import KINDS, LEGEND_TEXT
from tests.conftest import requires_dot

NODE_LINE = re.compile(r'^\t*(\w+) \[label="((?:[^"\\]|\\.)*)" (.*)\]$')
EDGE_LINE = re.compile(r"^\t*(\w+) -> (\w+)(?: \[.*\])?$")
CLUSTER_OPEN = re.compile(r'^\t*subgraph "?cluster_([^"]*)"? \{$')


# ----- reading the DOT source back ------------------------------------------------------------
def parse(graph):
    """nodes {id: (label lines, fillcolor, cluster path or None)}, edges [(tail, head)]."""
    nodes, edges, clusters = {}, [], []
    for line in graph.source.splitlines():
        if m := CLUSTER_OPEN.match(line):
            clusters.append(m.group(1))
        elif line.strip() == "}" and clusters:
            clusters.pop()
        elif m := NODE_LINE.match(line):
            node_id, label, attrs = m.groups()
            fill = re.search(r'fillcolor="([^"]*)"', attrs).group(1)
            nodes[node_id] = (label.split("\\n"), fill, clusters[-1] if clusters else None)
        elif m := EDGE_LINE.match(line):
            edges.append(m.groups())
    return nodes, edges


def drawn(graph):
    """The nodes of the drawing itself, without the legend."""
    nodes, edges = parse(graph)
    return {k: v for k, v in nodes.items() if v[2] != "legend"}, edges


def labels(graph):
    return [label for label, _, _ in drawn(graph)[0].values()]


def node_with(graph, first_line):
    found = [(k, v) for k, v in drawn(graph)[0].items() if v[0][0] == first_line]
    assert len(found) == 1, f"{len(found)} nodes labelled {first_line!r}"
    return found[0]


def small_graph():
    x = mt.tensor(np.arange(6.0).reshape(2, 3) / 10, requires_grad=True)
    x.name = "x"
    w = mt.tensor(np.ones((3, 4)) / 4, requires_grad=True)
    y = ((x @ w).tanh() * 0.5).sum()
    return x, w, y


def encoder(num_layers=2):
    mt.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, nhead=2, batch_first=True, dim_feedforward=16,
                                       dropout=0.0)
    model = nn.TransformerEncoder(layer, num_layers)
    x = mt.randn(1, 4, 8, requires_grad=True)
    return model, x, (model(x) ** 2).mean()


# ----- nodes, labels, colours -----------------------------------------------------------------
def test_nodes_and_edges_of_a_small_graph():
    x, w, y = small_graph()
    graph = draw_graph(y, params={"w": w})
    nodes, edges = drawn(graph)
    ops = sorted(label[0] for label, fill, _ in nodes.values() if fill == KINDS["op"]["fillcolor"])
    assert ops == ["MatMul", "Mul (0.5)", "Sum", "Tanh"]  # the 0.5 is folded into its op
    assert len(nodes) == 4 + 6  # 4 ops; x, w, and their 4 results (the output included)
    # every op has arrows in and out, and the input of MatMul is x then w
    matmul, _ = node_with(graph, "MatMul")
    tails = {nodes[t][0][0] for t, h in edges if h == matmul}
    assert tails == {"x", "w"}
    heads = [h for t, h in edges if t == matmul]
    assert len(heads) == 1 and nodes[heads[0]][0] == ["(2, 4) float64"]


def test_tensor_labels_show_name_shape_dtype_and_kind_colours():
    x, w, y = small_graph()
    graph = draw_graph(y, params={"weight": w})
    _, (label, fill, _) = node_with(graph, "weight")
    assert label == ["weight", "(3, 4) float64"] and fill == KINDS["parameter"]["fillcolor"]
    _, (label, fill, _) = node_with(graph, "x")
    assert label == ["x", "(2, 3) float64"] and fill == KINDS["input"]["fillcolor"]
    _, (label, fill, _) = node_with(graph, "output")
    assert label == ["output", "scalar float64"] and fill == KINDS["output"]["fillcolor"]
    intermediates = [lab for lab, f, _ in drawn(graph)[0].values()
                     if f == KINDS["intermediate"]["fillcolor"]]
    assert sorted(intermediates) == [["(2, 4) float64"]] * 3


def test_legend_explains_each_colour_and_colours_are_distinct():
    _, _, y = small_graph()
    nodes, _ = parse(draw_graph(y))
    legend = {v[0][0]: v[1] for v in nodes.values() if v[2] == "legend"}
    kinds = ["parameter", "input", "intermediate", "output", "op"]
    assert legend == {LEGEND_TEXT[k]: KINDS[k]["fillcolor"] for k in kinds}
    fills = [KINDS[k]["fillcolor"] for k in KINDS]
    assert len(set(fills)) == len(fills)
    assert "legend" not in draw_graph(y, legend=False).source


def test_parameter_names_come_from_the_model():
    mt.manual_seed(0)
    attention = nn.Attention(8)
    z, _ = attention(mt.randn(1, 4, 8))
    graph = draw_graph(z.sum(), model=attention)
    params = sorted(lab[0] for lab, fill, _ in drawn(graph)[0].values()
                    if fill == KINDS["parameter"]["fillcolor"])
    assert params == sorted(name for name, _ in attention.named_parameters())
    assert "q_proj.weight" in params
    assert ["Softmax"] in labels(graph) and ["Div (2.828)"] in labels(graph)


def test_scalar_constants_fold_into_their_op():
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    graph = draw_graph(2 * x + 3)
    assert {lab[0] for lab in labels(graph)} >= {"Mul (2)", "Add (3)"}
    assert len(drawn(graph)[0]) == 5  # x, Mul, 2x, Add, output: no boxes for 2 and 3


def test_bad_arguments_are_reported():
    _, _, y = small_graph()
    with pytest.raises(ValueError, match="at least one"):
        draw_graph()
    with pytest.raises(TypeError, match="output 0 is a ndarray"):
        draw_graph(np.ones(2))
    with pytest.raises(TypeError, match=r"params\['w'\] is a list"):
        draw_graph(y, params={"w": [1.0]})
    with pytest.raises(ValueError, match="max_nodes"):
        draw_graph(y, max_nodes=0)
    with pytest.raises(ValueError, match="collapse= needs model="):
        draw_graph(y, collapse=1)


# ----- modules: clusters and collapsing -------------------------------------------------------
def test_ops_are_grouped_in_nested_module_clusters():
    model, _, loss = encoder()
    graph = draw_graph(loss, model=model)
    source = graph.source
    nodes, _ = drawn(graph)
    _, (_, _, cluster) = node_with(graph, "layers.0.self_attn.q_proj.weight")
    assert cluster == "layers.0.self_attn.q_proj"
    linear_clusters = {c for lab, _, c in nodes.values() if lab == ["Linear"]}
    assert "layers.1.linear2" in linear_clusters  # the layer's one fused node, inside it
    # nesting: the q_proj cluster opens inside self_attn, inside layers.0, inside layers
    opens = [m.group(1) for line in source.splitlines() if (m := CLUSTER_OPEN.match(line))]
    depth = {m.group(1): len(line) - len(line.lstrip("\t"))
             for line in source.splitlines() if (m := CLUSTER_OPEN.match(line))}
    chain = ["layers", "layers.0", "layers.0.self_attn", "layers.0.self_attn.q_proj"]
    assert [depth[c] for c in chain] == [1, 2, 3, 4]
    assert opens.index("layers.0") < opens.index("layers.0.self_attn") < opens.index(
        "layers.0.self_attn.q_proj") < opens.index("layers.1")
    assert 'label="layers.0.self_attn (MultiHeadAttention)"' in source
    assert "cluster_\"" not in source and 'cluster_"' not in source  # the root is no cluster
    assert "subgraph" not in draw_graph(loss, model=model, group_modules=False, legend=False).source


def test_without_a_model_each_module_is_a_flat_cluster_by_class_name():
    mt.manual_seed(0)
    attention = nn.Attention(8)
    z, _ = attention(mt.randn(1, 4, 8))
    source = draw_graph(z.sum()).source
    # q_proj, k_proj, v_proj: three clusters, each around its one Linear node
    assert source.count('label="Linear"') == 6
    assert source.count('label="Attention"') == 1


def test_collapse_a_module_by_path():
    model, _, loss = encoder()
    graph = draw_graph(loss, model=model, collapse=["layers.0.self_attn"])
    nodes, edges = drawn(graph)
    node_id, (label, fill, cluster) = node_with(graph, "layers.0.self_attn")
    assert label[:2] == ["layers.0.self_attn", "MultiHeadAttention"]
    assert fill == KINDS["module"]["fillcolor"] and cluster == "layers.0"
    all_labels = [lab[0] for lab in labels(graph)]
    assert not any(name.startswith("layers.0.self_attn.") for name in all_labels)
    assert "layers.1.self_attn.q_proj.weight" in all_labels
    assert [t for t, h in edges if h == node_id] and [h for t, h in edges if t == node_id]
    assert len(nodes) < len(drawn(draw_graph(loss, model=model))[0])


def test_collapse_by_depth_keeps_a_two_layer_encoder_small():
    model, x, loss = encoder()
    x.name = "src"
    graph = draw_graph(loss, model=model, collapse=2)
    nodes, edges = drawn(graph)
    modules = sorted(lab[:2] for lab, fill, _ in nodes.values()
                     if fill == KINDS["module"]["fillcolor"])
    assert modules == [["layers.0", "TransformerEncoderLayer"],
                       ["layers.1", "TransformerEncoderLayer"]]
    # src -> layers.0 -> h -> layers.1 -> h -> Pow -> h -> Mean -> loss
    assert len(nodes) == 9
    layer0, _ = node_with(graph, "layers.0")
    layer1, _ = node_with(graph, "layers.1")
    src, _ = node_with(graph, "src")
    assert (src, layer0) in edges
    between = [h for t, h in edges if t == layer0]
    assert len(between) == 1 and (between[0], layer1) in edges
    with pytest.raises(ValueError, match=r"no module at path \['layers.7'\]"):
        draw_graph(loss, model=model, collapse=["layers.7"])


# ----- gradients, saved values, the backward graph --------------------------------------------
def test_show_grad_adds_norms_after_backward():
    mt.manual_seed(0)
    attention = nn.Attention(8)
    x = mt.randn(1, 4, 8, requires_grad=True)
    z, _ = attention(x)
    loss = (z * z).mean()
    before = draw_graph(loss, model=attention, show_grad=True)
    assert node_with(before, "q_proj.weight")[1][0][-1] == "grad: None"
    loss.backward()
    after = draw_graph(loss, model=attention, show_grad=True)
    weight_grad = attention.q_proj.weight.grad.numpy()
    norm = float(np.sqrt((weight_grad.astype(np.float64) ** 2).sum()))
    assert norm > 0
    label = node_with(after, "q_proj.weight")[1][0]
    assert label[-1] == f"grad ‖·‖={norm:.3g}  (8, 8)"
    assert node_with(after, "X")[1][0][-1].endswith("(1, 4, 8)")  # attention names its input
    assert "grad" not in draw_graph(loss, model=attention).source


def test_show_saved_lists_stashed_arrays_then_released():
    x = mt.tensor([[-1.0, 2.0, 3.0]], requires_grad=True)
    y = (x.relu() ** 2).sum(axis=1)
    graph = draw_graph(y, show_saved=True)
    _, (relu, _, _) = node_with(graph, "Relu")
    assert relu == ["Relu", "saved positive: (1, 3) bool"]
    _, (total, _, _) = node_with(graph, "Sum")
    assert total == ["Sum", "saved axes: (1,)", "saved keepdims: False"]
    y.sum().backward()
    _, (relu, _, _) = node_with(draw_graph(y, show_saved=True), "Relu")
    assert relu == ["Relu", "saved: released"]


def test_backward_graph_with_create_graph():
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    x.name = "x"
    y = (x * x * x).sum()
    y.backward(create_graph=True)
    np.testing.assert_allclose(x.grad.detach().numpy(), [3.0, 12.0])
    graph = draw_graph(x.grad)
    out_id, (label, fill, _) = node_with(graph, "dx")  # x.grad, named after x
    assert label == ["dx", "(2,) float32"] and fill == KINDS["output"]["fillcolor"]
    ops = [lab[0] for lab, f, _ in drawn(graph)[0].values() if f == KINDS["op"]["fillcolor"]]
    assert "Add" in ops and ops.count("Mul") >= 4  # 2 forward + the product rule's terms
    assert node_with(graph, "x")[0]  # the gradient depends on x itself


def test_backward_example_draws_the_gradient_of_attention():
    graph = EXAMPLES["backward"]()
    nodes, _ = drawn(graph)
    for name in ("dx", "dZ", "dA", "dS_hat", "dS", "dQ", "dK", "dV"):
        assert node_with(graph, name)[1][1] == KINDS["gradient"]["fillcolor"], name
    assert node_with(graph, "loss")[1][1] == KINDS["output"]["fillcolor"]
    # the forward ops sit in their module clusters; backward ops (e.g. of Softmax) outside
    assert node_with(graph, "q_proj.weight")[1][2] == "q_proj"
    backward = [lab[0] for lab, fill, c in nodes.values()
                if fill == KINDS["backward op"]["fillcolor"]]
    assert backward.count("MatMul") >= 4 and "Permute" not in backward  # compact
    assert 'shape="hexagon"' in graph.source
    assert " -> " in graph.source and "constraint=false" in graph.source


@requires_dot
def test_the_attention_backward_graph_fits_a_laptop_screen(tmp_path):
    """At most 1,600 px on its longer side at Graphviz's 96 dpi, every gradient labelled."""
    svg = render(EXAMPLES["backward"](), "backward", format="svg", directory=tmp_path)
    root = ET.parse(svg).getroot()
    width, height = (float(root.get(k).removesuffix("pt")) * 96 / 72 for k in ("width", "height"))
    assert max(width, height) <= 1600, (width, height)
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"dZ", "dA", "dS", "dQ", "dK", "dV", "loss"} <= texts


def test_values_and_traced_gradients_on_every_node():
    attention = nn.Attention(4)
    x = mt.randn(1, 3, 4, requires_grad=True)
    z, _ = attention(x)
    loss = (z * z).mean()
    trace = mt.trace_backward(loss, model=attention)
    graph = draw_graph(loss, model=attention, show_values=True, trace=trace)
    label = node_with(graph, "S_hat")[1][0]  # an intermediate: no .grad of its own
    assert label[2].startswith("[") and " mean " in label[2]
    norm = trace.step("S_hat").grad.norm
    assert label[3] == f"grad ‖·‖={norm:.3g}" and norm > 0
    assert node_with(graph, "A")[1][0][3].startswith("grad ‖·‖=")


def test_compact_drawing_hides_unnamed_values_and_shape_ops():
    x = mt.tensor([[1.0, 2.0]], requires_grad=True)
    x.name = "x"
    y = (x.T @ x).reshape(4).sum()
    full, compact = draw_graph(y), draw_graph(y, compact=True)
    assert "Permute" in [lab[0] for lab in labels(full)]
    names = [lab[0] for lab in labels(compact)]
    assert "Permute" not in names and "Reshape" not in names
    assert set(names) == {"x", "MatMul", "Sum", "output"}
    assert '[label="T"]' in compact.source  # the transpose rides on the arrow


# ----- size: cutting, depth, speed ------------------------------------------------------------
def tanh_chain(length):
    x = mt.tensor([0.5], requires_grad=True)
    y = x
    for _ in range(length):
        y = y.tanh()
    return y


def test_max_nodes_cuts_with_a_visible_marker():
    y = tanh_chain(100)  # 100 ops + 101 tensors
    graph = draw_graph(y, max_nodes=10)
    nodes, edges = drawn(graph)
    assert len(nodes) == 11
    marker_id, (label, fill, _) = node_with(graph, "… 191 more nodes not drawn")
    assert fill == KINDS["more"]["fillcolor"]
    assert [h for t, h in edges if t == marker_id]  # it points where the cut was made
    assert node_with(graph, "output")
    assert len(drawn(draw_graph(y, max_nodes=201))[0]) == 201  # no cut needed: no marker
    assert "more nodes" not in draw_graph(y, max_nodes=201).source


def test_a_100000_node_chain_draws_without_recursion():
    y = tanh_chain(50_000)  # 50,000 ops and 50,001 tensors
    graph = draw_graph(y, legend=False)
    assert sum(1 for line in graph.body if "[label=" in line) == 100_001
    assert sum(1 for line in graph.body if " -> " in line) == 100_000


def test_the_benchmark_graph_builds():
    from benchmarks.graph_bench import layered_graph

    output, params = layered_graph(10_000)
    graph = draw_graph(output, params=params, show_grad=True, show_saved=True, legend=False)
    assert sum(1 for line in graph.body if "[label=" in line) == 10_001  # + the input


# ----- rendering with Graphviz's `dot` --------------------------------------------------------
def svg_node_count(path):
    root = ET.parse(path).getroot()  # raises if the SVG is not well-formed XML
    return sum(1 for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "node")


@requires_dot
@pytest.mark.parametrize("what", sorted(EXAMPLES))
def test_examples_render_to_svg(what, tmp_path):
    graph = EXAMPLES[what]()
    path = render(graph, what, format="svg", directory=tmp_path)
    assert path == tmp_path / f"{what}.svg"
    assert svg_node_count(path) == len(parse(graph)[0])
    assert (tmp_path / f"{what}.dot").read_text(encoding="utf-8") == graph.source


@requires_dot
def test_render_png_and_pdf(tmp_path):
    _, _, y = small_graph()
    graph = draw_graph(y)
    assert render(graph, "g.png", format="png", directory=tmp_path).read_bytes()[:4] == (
        b"\x89PNG")
    assert render(graph, "g", format="pdf", directory=tmp_path).read_bytes()[:4] == b"%PDF"


def test_render_rejects_an_unknown_format(tmp_path):
    graph = draw_graph(small_graph()[2])
    with pytest.raises(ValueError, match="format must be one of svg, png, pdf; got 'jpg'"):
        render(graph, "g", format="jpg", directory=tmp_path)


@requires_dot
def test_jupyter_shows_the_graph_as_svg():
    _, _, y = small_graph()
    graph = draw_graph(y)
    svg = graph._repr_mimebundle_()["image/svg+xml"]
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_missing_dot_writes_the_source_and_says_how_to_install(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    _, _, y = small_graph()
    graph = draw_graph(y)
    out = tmp_path / "out"
    with pytest.raises(GraphvizNotFoundError) as info:
        render(graph, "attention", format="svg", directory=out)
    assert isinstance(info.value, RuntimeError)
    source = out / "attention.dot"
    assert source.read_text(encoding="utf-8") == graph.source
    assert not (out / "attention.svg").exists()
    message = str(info.value)
    assert str(source) in message and str(out / "attention.svg") in message
    assert "`dot` executable was not found" in message
    for hint in ("sudo apt-get install graphviz", "brew install graphviz",
                 "conda install -c conda-forge graphviz"):
        assert hint in message
    assert os.environ["PATH"] == str(empty)


def test_drawing_tensors_on_a_device(device):
    x = mt.tensor([[1.0, -2.0]], requires_grad=True, device=device)
    loss = F.mse_loss(x.tanh(), mt.zeros(1, 2, device=device))
    loss.backward()
    graph = draw_graph(loss, show_grad=True)
    norm = float(np.linalg.norm(x.grad.to("cpu").numpy()))
    suffix = "" if device == "cpu" else " cuda"
    assert node_with(graph, "input")[1][0] == [
        "input", f"(1, 2) float32{suffix}", f"grad ‖·‖={norm:.3g}  (1, 2)"]


def test_dot_found_on_path_but_not_runnable_gives_the_same_clear_error(tmp_path, monkeypatch):
    # (the package's `render` attribute is the function; fetch the module itself)
    render_module = importlib.import_module("minitransformer.viz.render")
    monkeypatch.setenv("PATH", str(tmp_path))  # graphviz's own lookup finds nothing ...
    monkeypatch.setattr(render_module.shutil, "which", lambda name: "/usr/bin/dot")  # ... we did
    _, _, y = small_graph()
    with pytest.raises(GraphvizNotFoundError, match="brew install graphviz") as info:
        render(draw_graph(y), "g", directory=tmp_path)
    assert info.value.source_path == tmp_path / "g.dot" and info.value.source_path.exists()
