"""The notebooks in examples/notebooks/ run top to bottom in a fresh kernel, are stored
without outputs, and display what they promise (figures, graphs or the no-Graphviz note)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "examples" / "notebooks").glob("*.ipynb"))


def execute(path: Path, cwd: Path, **env: str) -> list[dict]:
    """Run the notebook with ``cwd`` as its folder; the outputs of every code cell."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    client.execute(env={**os.environ, **env})
    return [cell.outputs for cell in notebook.cells if cell.cell_type == "code"]


def mime_types(outputs: list[dict]) -> set[str]:
    return {kind for output in outputs for kind in output.get("data", {})}


def test_there_are_notebooks_stored_without_outputs() -> None:
    assert len(NOTEBOOKS) == 4
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (
                    f"{path.name} is stored with outputs: clear them before committing")


def test_first_gradient_to_attention(tmp_path) -> None:
    cells = execute(ROOT / "examples/notebooks/01_first_gradient_to_attention.ipynb", tmp_path)
    assert "the attention backward matches finite differences" in str(cells[-2])
    assert "image/png" in mime_types(cells[-1])  # the Figure shows itself


def test_train_coreference(tmp_path) -> None:
    cells = execute(ROOT / "examples/notebooks/02_train_coreference.ipynb", tmp_path)
    assert (tmp_path / "runs" / "notebook" / "checkpoint.npz").is_file()
    assert "held-out accuracy" in str(cells[0])
    assert "\r" not in str(cells[0])  # no progress-bar frames in the cell's output
    assert "image/png" in mime_types(cells[1]) and "image/png" in mime_types(cells[3])
    assert "it -> " in str(cells[2])


def test_draw_graphs_without_dot_shows_the_message_and_the_source(tmp_path) -> None:
    """Run with no `dot` on PATH: each graph cell shows the install note and its DOT source
    (with `dot`, tests/test_viz.py checks the SVG a graph shows)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    cells = execute(ROOT / "examples/notebooks/03_draw_graphs.ipynb", tmp_path,
                    PATH=str(empty))
    for outputs in (cells[0], cells[2]):
        text = outputs[0]["data"]["text/plain"]
        assert "the Graphviz `dot` executable was not found" in text
        assert "apt-get install graphviz" in text and "digraph minitransformer {" in text
        assert "Traceback" not in text


def test_bigram_to_gpt(tmp_path) -> None:
    """The ladder runs, prints every step beside the floor, and ends with the KV cache."""
    import time

    started = time.perf_counter()
    cells = execute(ROOT / "examples/notebooks/04_bigram_to_gpt.ipynb", tmp_path)
    text = str(cells)
    assert "exact floor" in text and "the generator's own cross-entropy" in text
    for step in ("bigram", "attention", "two heads", "one block", "GPT"):
        assert f"{step} " in text and "from the floor" in text
    assert "<bos> the fox met the farmer" in text  # the cached generation
    assert "image/png" in mime_types(cells[-1])  # the ladder as a bar chart
    assert list(tmp_path.iterdir()) == []  # it writes nothing
    assert time.perf_counter() - started < 60
