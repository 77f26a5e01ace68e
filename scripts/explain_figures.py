"""The screenshot of ``minitransformer explain`` shown in the README and the docs.

``make figures`` runs :func:`write_docs_figures`: it writes the attention page, opens it
in headless Chromium (the system's browser and chromedriver, never a downloaded one),
steps to the frame where the gradient leaves the softmax, and saves a screenshot as
docs/img/explain.png. Needs Graphviz's ``dot``, Chromium, chromedriver and Selenium.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from minitransformer.viz.explain import run_example, write_explain

SIZE = (1400, 860)


def screenshot(page: Path, out: Path, frame_name: str = "A", phase: str = "backward") -> Path:
    """Open ``page``, show the first frame of ``frame_name`` in ``phase``, save a PNG."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        raise RuntimeError("needs chromium and chromedriver on PATH")
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
            driver.execute_script(
                "var f = window.explain.frames;"
                "for (var i = 0; i < f.length; i++) {"
                "  if (f[i].name === arguments[0] && f[i].phase === arguments[1]) {"
                "    window.explain.show(i); break; } }", frame_name, phase)
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
    return out


def write_docs_figures(docs: Path) -> list[Path]:
    with tempfile.TemporaryDirectory() as folder:
        page = write_explain(Path(folder) / "explain.html", run_example("attention"),
                             title="minitransformer explain: attention")
        return [screenshot(page, Path(docs) / "img" / "explain.png")]
