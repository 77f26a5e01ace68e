"""The committed figures are what the current code draws (the stale-figure test).

For every drawing of ``viz.examples.EXAMPLES`` the repository keeps ``NAME.dot`` (the source)
next to ``NAME.svg`` under docs/img/graphs/. This test draws each example again and compares
its structure (nodes, their labels and clusters, edges; not colours, not the measured
gradient norms) with the committed source, then checks that the SVG was rendered from that
source. When it fails, the code draws something else now: run ``make figures`` and commit.
No Graphviz program is needed: drawing a graph only writes DOT text.
"""

from __future__ import annotations

import importlib.util
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from minitransformer.viz.examples import EXAMPLES, NUMBER, dot_structure

ROOT = Path(__file__).resolve().parent.parent
GRAPHS = ROOT / "docs" / "img" / "graphs"
SVG = "{http://www.w3.org/2000/svg}"
HINT = "the committed figure is stale: run `make figures` and commit docs/img/graphs/"


def _svg_structure(path: Path) -> tuple[dict[str, list[str]], set[tuple[str, str]]]:
    """Node id -> its text lines, and the (tail, head) edges, of an SVG that dot wrote."""
    nodes: dict[str, list[str]] = {}
    edges: set[tuple[str, str]] = set()
    for group in ET.parse(path).getroot().iter(f"{SVG}g"):
        title = group.find(f"{SVG}title")
        if title is None or title.text is None:
            continue
        if group.get("class") == "node":
            nodes[title.text] = [t.text or "" for t in group.iter(f"{SVG}text")]
        elif group.get("class") == "edge":
            tail, head = title.text.split("->")
            edges.add((tail, head))
    return nodes, edges


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_committed_graph_matches_the_code(name: str) -> None:
    dot_file = GRAPHS / f"{name}.dot"
    assert dot_file.exists(), f"{dot_file.relative_to(ROOT)} is missing: {HINT}"
    committed = dot_structure(dot_file.read_text(encoding="utf-8"))
    current = dot_structure(EXAMPLES[name]().source)
    assert current[0], f"no nodes parsed from the {name!r} drawing"
    missing_nodes = sorted(set(committed[0]) ^ set(current[0]))
    changed = sorted(k for k in set(committed[0]) & set(current[0])
                     if committed[0][k] != current[0][k])
    changed_edges = sorted(committed[1] ^ current[1])
    assert not (missing_nodes or changed or changed_edges), (
        f"{name}: {HINT}\n  nodes added or removed: {missing_nodes[:10]}\n"
        f"  nodes relabelled or moved: "
        f"{[(k, committed[0][k], current[0][k]) for k in changed[:5]]}\n"
        f"  edges added or removed: {changed_edges[:10]}")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_committed_svg_was_rendered_from_its_dot(name: str) -> None:
    nodes, edges = dot_structure((GRAPHS / f"{name}.dot").read_text(encoding="utf-8"))
    svg_nodes, svg_edges = _svg_structure(GRAPHS / f"{name}.svg")
    assert set(svg_nodes) == set(nodes), f"{name}.svg has other nodes than {name}.dot: {HINT}"
    assert svg_edges == edges, f"{name}.svg has other edges than {name}.dot: {HINT}"
    for node_id, (_, label) in nodes.items():  # dot writes each line of a label as a <text>
        lines = [_words(NUMBER.sub("#", text)) for text in svg_nodes[node_id]]
        expected = [_words(line.replace('\\"', '"')) for line in label.split("\\n")]
        assert lines == expected, f"{name}.svg, node {node_id}: {lines} != {expected}: {HINT}"


def _words(text: str) -> str:
    return " ".join(text.split())  # dot turns a double space into a no-break space


def test_dot_structure_sees_a_changed_drawing() -> None:
    source = EXAMPLES["attention"]().source
    nodes, edges = dot_structure(source)
    assert dot_structure(source.replace("grad ‖·‖=0.", "grad ‖·‖=1.")) == (nodes, edges)
    assert dot_structure(source.replace("Softmax", "Sigmoid"))[0] != nodes
    tail, head = sorted(edges)[0]
    assert dot_structure(source.replace(f"{tail} -> {head}", f"{head} -> {tail}"))[1] != edges


def _make_figures(monkeypatch: pytest.MonkeyPatch) -> Any:
    """scripts/make_figures.py, imported as a module."""
    spec = importlib.util.spec_from_file_location("make_figures",
                                                  ROOT / "scripts" / "make_figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_figures", module)  # dataclasses look it up there
    monkeypatch.syspath_prepend(str(ROOT))  # entries may live in benchmarks/
    spec.loader.exec_module(module)
    return module


def test_make_figures_lists_the_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _make_figures(monkeypatch)
    names = [figure.name for figure in module.FIGURES]
    assert "graphs" in names and len(names) == len(set(names))
    for figure in module.FIGURES:  # every entry points at a function that exists
        assert callable(figure.load()), figure


def test_every_image_under_docs_has_a_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _make_figures(monkeypatch)
    docs = ROOT / "docs"
    claimed = {path for figure in module.FIGURES for pattern in figure.outputs
               for path in docs.glob(pattern)}
    images = {path for ext in ("png", "svg", "jpg", "gif") for path in docs.rglob(f"*.{ext}")}
    orphans = sorted(str(p.relative_to(ROOT)) for p in images - claimed)
    assert not orphans, (f"{orphans}: no entry of scripts/make_figures.py writes these; "
                         "add the function that draws them to FIGURES")
