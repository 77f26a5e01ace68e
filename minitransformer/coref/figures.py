"""The coreference figures of docs/, for ``make figures`` (scripts/make_figures.py).

Each ``write_*(docs)`` writes its figures under the docs folder and returns their paths.
Every image is drawn in a temporary folder and moved into place, so an interrupted run
leaves the committed figure as it was.

* :func:`write_coref_figures` trains the default model (seed 0, about 10 s) and draws its
  loss curve and the heatmaps of the article's sentence and its "wide" twin;
* :func:`write_comparison_figures` redraws the plots of docs/comparison.md from the
  committed ``docs/comparison/results.json`` (``minitransformer compare`` remeasures it).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def _move_into(files: dict[Path, Path]) -> list[Path]:
    """Move each drawn file (key) over its destination (value); the destinations."""
    for source, target in files.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target.with_suffix(target.suffix + ".tmp"))
        os.replace(target.with_suffix(target.suffix + ".tmp"), target)
    return list(files.values())


def write_coref_figures(docs: Path) -> list[Path]:
    """docs/img/coref_curves.png, coref_attention_tired.png, coref_attention_wide.png."""
    from minitransformer.coref.cli.attend import plot_attention
    from minitransformer.coref.data import ARTICLE_SENTENCE, ARTICLE_SENTENCE_WIDE
    from minitransformer.coref.models.coref import resolve
    from minitransformer.coref.training import CURVES_FILE, TrainConfig, train

    img = Path(docs) / "img"
    with tempfile.TemporaryDirectory() as folder:
        run = train(TrainConfig(), folder, progress=False, log=lambda message: None).run
        drawn = {Path(folder) / CURVES_FILE: img / "coref_curves.png"}
        for sentence in (ARTICLE_SENTENCE, ARTICLE_SENTENCE_WIDE):
            result = resolve(run.model, run.vocabulary, sentence)
            path = Path(folder) / f"coref_attention_{result.tokens[-1]}.png"
            plot_attention(result, str(path))
            drawn[path] = img / path.name
        return _move_into(drawn)


def write_comparison_figures(docs: Path) -> list[Path]:
    """The plots of docs/comparison/, from its results.json."""
    from minitransformer.coref.compare import plot_results

    folder = Path(docs) / "comparison"
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(p) for p in plot_results(results, tmp)]
        return _move_into({p: folder / p.name for p in paths})
