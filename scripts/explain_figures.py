"""The screenshot of ``minitransformer explain`` shown in the README and the docs.

``make figures`` runs :func:`write_docs_figures`: it writes the default page (the
article's sentence) and the two-head page, opens them in headless Chromium (the
system's browser and chromedriver, never a downloaded one) at 1280 px width, and saves
three screenshots: docs/img/explain-softmax.png (the gradient leaving the softmax, with
its row sums), docs/img/explain-path.png (the closing frame: the path from the loss to
q_proj.weight) and docs/img/explain-heads.png (two heads, the second selected). Each
time it checks that the graph fits its pane. Needs Graphviz's ``dot``, Chromium,
chromedriver and Selenium.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from minitransformer.viz.explain import run_example, write_explain

SIZE = (1280, 800)


def screenshot(page: Path, shots: list[tuple[Path, str, str, int]]) -> list[Path]:
    """Open ``page``; for each (out, frame name, phase, head) show the first frame of that
    name in that phase, with that head selected, check that the graph fits its pane and
    save a PNG."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        raise RuntimeError("needs chromium and chromedriver on PATH")
    written = []
    with tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                     f"--window-size={SIZE[0]},{SIZE[1]}", f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        try:
            driver.get(page.resolve().as_uri())
            for out, frame_name, phase, head in shots:
                found = driver.execute_script(
                    "var f = window.explain.frames; window.explain.setHead(arguments[2]);"
                    "for (var i = 0; i < f.length; i++) {"
                    "  if (f[i].name === arguments[0] && f[i].phase === arguments[1]) {"
                    "    window.explain.show(i); return true; } } return false;",
                    frame_name, phase, head)
                if not found:
                    raise RuntimeError(f"no {phase} frame named {frame_name!r} in {page}")
                fits = driver.execute_script(
                    "var g = document.querySelector('#graph svg').getBoundingClientRect();"
                    "var p = document.getElementById('graph').getBoundingClientRect();"
                    "return g.left >= p.left - 1 && g.right <= p.right + 1 &&"
                    " g.top >= p.top - 1 && g.bottom <= p.bottom + 1")
                if not fits:
                    raise RuntimeError(f"the graph does not fit its pane in {out.name}")
                out.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(out))
                written.append(out)
        finally:
            driver.quit()
    return written


def write_docs_figures(docs: Path) -> list[Path]:
    img = Path(docs) / "img"
    with tempfile.TemporaryDirectory() as folder:
        sentence = write_explain(Path(folder) / "explain.html", run_example("sentence"),
                                 title="minitransformer explain: the article's sentence")
        heads = write_explain(Path(folder) / "mha.html", run_example("mha"),
                              title="minitransformer explain --what mha")
        written = screenshot(sentence, [(img / "explain-softmax.png", "A", "backward", 0),
                                        (img / "explain-path.png", "q_proj.weight",
                                         "summary", 0)])
        written += screenshot(heads, [(img / "explain-heads.png", "A", "backward", 1)])
    return written
