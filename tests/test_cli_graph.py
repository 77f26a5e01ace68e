"""``minitransformer graph``: every kind of drawing, the formats, and Graphviz missing."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from minitransformer.cli import main
from tests.conftest import requires_dot


@requires_dot
@pytest.mark.parametrize("what", ["attention", "mha", "encoder", "coref", "backward"])
def test_graph_writes_a_well_formed_svg(what: str, tmp_path, capsys) -> None:
    out = tmp_path / f"{what}.svg"
    assert main(["graph", "--what", what, "--out", str(out)]) == 0
    root = ET.parse(out).getroot()
    nodes = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "node"]
    assert len(nodes) > 5
    assert (tmp_path / f"{what}.dot").exists()
    assert str(out) in capsys.readouterr().out


@requires_dot
def test_graph_format_follows_the_suffix_and_collapse_shrinks_it(tmp_path) -> None:
    assert main(["graph", "--what", "encoder", "--out", str(tmp_path / "full.pdf"),
                 "--collapse", "1"]) == 0
    assert (tmp_path / "full.pdf").read_bytes().startswith(b"%PDF")
    assert main(["graph", "--what", "encoder", "--out", str(tmp_path / "deep.svg"),
                 "--collapse", "9"]) == 0
    shallow = (tmp_path / "full.dot").read_text()
    deep = (tmp_path / "deep.dot").read_text()
    assert shallow.count("->") < deep.count("->")


def test_graph_without_dot_writes_the_source_and_exits_1(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["graph", "--out", str(tmp_path / "g.svg")]) == 1
    message = capsys.readouterr().err
    assert "dot" in message and "apt-get install graphviz" in message
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    assert not (tmp_path / "g.svg").exists()


def test_graph_rejects_an_unknown_kind() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["graph", "--what", "lstm"])
    assert exit_info.value.code == 2
