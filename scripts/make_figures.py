"""Regenerate every committed figure under docs/ (``make figures`` runs this).

Each entry of ``FIGURES`` names a function ``write(docs: Path) -> list[Path]`` by its import
path ("module:function"); it writes its figures under ``docs`` and returns their paths.
To add a figure: write such a function next to the code it shows and add one entry here,
with glob patterns of what it writes (tests/test_figures.py fails for an image under docs/
that no entry claims).
Functions are imported only when run, so one entry's missing optional program (Graphviz's
``dot``) does not stop the others.

    python scripts/make_figures.py            # all of them
    python scripts/make_figures.py graphs     # only the named ones
    python scripts/make_figures.py --list
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@dataclass(frozen=True)
class Figure:
    name: str
    target: str  # "package.module:function"
    outputs: tuple[str, ...]  # glob patterns under docs/ of what it writes (the test checks)
    what: str

    def load(self) -> Callable[[Path], list[Path]]:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


FIGURES: list[Figure] = [
    Figure("graphs", "minitransformer.viz.examples:write_docs_figures",
           ("img/graphs/*.svg", "img/graphs/*.dot"),
           "img/graphs/*.svg and *.dot: the computation graphs of docs/graphs.md"),
    Figure("attention_memory", "benchmarks.attention_memory:write_docs_figures",
           ("img/attention_memory.png",),
           "img/attention_memory.png: redrawn from img/attention_memory.json "
           "(benchmarks/attention_memory.py measures)"),
    Figure("block", "minitransformer.viz.block:write_docs_figures",
           ("img/residual_gradients.png", "img/positional_encoding.png"),
           "img/residual_gradients.png, img/positional_encoding.png: the block's pages"),
    Figure("cost", "benchmarks.attention_cost:write_docs_figures", ("img/cost.png",),
           "img/cost.png: redrawn from img/cost.json (benchmarks/attention_cost.py measures)"),
    Figure("coref", "minitransformer.coref.figures:write_coref_figures", ("img/coref_*.png",),
           "img/coref_*.png: trains the default coreference model, draws its curves and heatmaps"),
    Figure("comparison", "minitransformer.coref.figures:write_comparison_figures",
           ("comparison/*.png",),
           "comparison/*.png: redrawn from comparison/results.json"),
    Figure("nanogpt", "scripts.nanogpt_figures:write_docs_figures",
           ("img/nanogpt-chars-loss.png",),
           "img/nanogpt-chars-loss.png: nanoGPT on rhymes.txt, trained here and on PyTorch "
           "(needs PyTorch)"),
    Figure("explain", "scripts.explain_figures:write_docs_figures", ("img/explain-*.png",),
           "img/explain-*.png: screenshots of `minitransformer explain` at 1280 px "
           "(needs Chromium)"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="figures to make (default: all)")
    parser.add_argument("--list", action="store_true", help="list the figures and exit")
    args = parser.parse_args(argv)
    if args.list:
        for figure in FIGURES:
            print(f"{figure.name:12s} {figure.what}")
        return 0
    known = {figure.name: figure for figure in FIGURES}
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(known)}")
    sys.path.insert(0, str(ROOT))  # entries may live in benchmarks/ or scripts/ too
    for figure in [known[name] for name in args.names] or FIGURES:
        start = time.perf_counter()
        paths = figure.load()(DOCS)
        written = ", ".join(str(p.relative_to(ROOT)) for p in paths)
        print(f"{figure.name}: {written} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
