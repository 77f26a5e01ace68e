"""Every ```python block in docs/*.md and README.md runs, so the documentation cannot drift
from the code.

The blocks of one page run in order in one shared namespace (a page reads like a notebook),
with the repository root as the working directory and matplotlib's non-interactive backend.
Blocks fenced as ```text, ```bash or ```console are shown, not run. A failing block is
reported by page and line number.
"""

from __future__ import annotations

import os
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`]*)$")


@dataclass
class CodeBlock:
    page: str
    line: int  # 1-based line of the opening fence
    source: str


def python_blocks(path: Path) -> list[CodeBlock]:
    """The ```python blocks of a Markdown file, in order, with their line numbers."""
    blocks: list[CodeBlock] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    inside, language, start, body = False, "", 0, []
    for number, line in enumerate(lines, start=1):
        fence = FENCE.match(line)
        if fence is None:
            if inside:
                body.append(line)
            continue
        if not inside:
            inside, language, start, body = True, fence["info"].strip().lower(), number, []
        else:
            inside = False
            if language in ("python", "py"):
                blocks.append(CodeBlock(path.name, start, "\n".join(body) + "\n"))
    if inside:
        raise AssertionError(f"{path.name}: the code block opened on line {start} is not closed")
    return blocks


PAGES = sorted(DOCS.glob("*.md"))


def test_docs_exist_and_have_code() -> None:
    names = {page.name for page in PAGES}
    for required in ("index.md", "autograd.md", "softmax.md", "attention.md", "multi-head.md",
                     "cost.md", "graphs.md", "gpu.md"):
        assert required in names, f"docs/{required} is missing"
    for name in ("autograd.md", "softmax.md", "attention.md", "multi-head.md", "cost.md"):
        assert len(python_blocks(DOCS / name)) >= 2, f"docs/{name} has fewer than 2 python blocks"


def test_block_parser_finds_only_python_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "intro\n```python\nx = 1\n```\n```bash\necho not run\n```\n```text\nout\n```\n"
        "```python\ny = x + 1\n```\n",
        encoding="utf-8",
    )
    blocks = python_blocks(page)
    assert [(b.line, b.source) for b in blocks] == [(2, "x = 1\n"), (11, "y = x + 1\n")]


README = ROOT / "README.md"


@pytest.mark.parametrize("page", [*PAGES, README], ids=lambda p: p.name)
def test_python_blocks_run(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(ROOT)
    where = page.relative_to(ROOT).as_posix()
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for block in python_blocks(page):
        # Pad with blank lines so that tracebacks give line numbers in the Markdown file.
        code = compile("\n" * block.line + block.source, where, "exec")
        try:
            exec(code, namespace)  # noqa: S102  (the docs are the project's own code)
        except Exception:
            pytest.fail(
                f"{where}: the python block at line {block.line} failed:\n"
                + traceback.format_exc(limit=-3),
                pytrace=False,
            )
    assert os.getcwd() == str(ROOT)


def test_the_readme_has_python_blocks_to_run() -> None:
    """The README's op (Softmax, forward and backward side by side) is among them."""
    sources = [block.source for block in python_blocks(README)]
    assert len(sources) >= 2 and any("class Softmax(Function)" in s for s in sources)


# Pages that other parts of the project write; links to them are checked once they exist.
PAGES_WRITTEN_ELSEWHERE = {"coref.md", "benchmarks.md", "comparison.md"}
LINK = re.compile(r"\]\((?!https?://|#)(?P<target>[^)#\s]+)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    missing = []
    for match in LINK.finditer(text):
        target = match["target"]
        if (page.parent / target).exists():
            continue
        if target in PAGES_WRITTEN_ELSEWHERE:
            continue
        line = text.count("\n", 0, match.start()) + 1
        missing.append(f"line {line}: {target}")
    assert not missing, f"docs/{page.name} links to missing files: {missing}"
