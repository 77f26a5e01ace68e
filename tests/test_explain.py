"""The step-through page: its frames, the command, and the page itself in a real browser."""

from __future__ import annotations

import json
import re

import pytest

from minitransformer.cli.explain import coref_trace
from minitransformer.cli.main import main
from minitransformer.viz.explain import explain_html, run_example, write_explain
from tests.conftest import CHROMEDRIVER, CHROMIUM, requires_browser, requires_dot

FRAMES = re.compile(r'<script type="application/json" id="frames">(.*?)</script>', re.S)


def frames_of(page: str) -> list[dict]:
    return json.loads(FRAMES.search(page).group(1).replace("<\\/", "</"))["frames"]


@requires_dot
def test_the_page_is_self_contained_and_walks_forward_then_backward(tmp_path):
    page = explain_html(run_example("attention"))
    assert "<svg" in page and "<script>" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched
    assert "http://" not in page.replace("http://www.w3.org", "")
    frames = frames_of(page)
    phases = [f["phase"] for f in frames]
    first_backward = phases.index("backward")
    assert set(phases[:first_backward]) == {"forward"} and "forward" not in phases[first_backward:]
    names = [f["name"] for f in frames[:first_backward]]
    assert names.index("Q") < names.index("S") < names.index("S_hat") < names.index("A") \
        < names.index("Z") < names.index("loss")
    assert all(a["node"] != b["node"] for a, b in zip(frames, frames[1:]))
    softmax = next(f for f in frames if f["phase"] == "backward" and f["name"] == "A")
    assert softmax["op"] == "Softmax" and [s["to"] for s in softmax["sent"]] == ["S_hat"]
    assert softmax["grad"]["numbers"] and len(softmax["grad"]["cells"]) == 4  # d = 4: numbers
    assert frames[-2]["phase"] == "leaf" and frames[-2]["parameter"]
    assert frames[-1]["phase"] == "summary" and frames[-1]["name"] == "q_proj.weight"
    assert any(f["name"] == "q_proj.weight" and f["phase"] == "leaf" for f in frames)


@requires_dot
@pytest.mark.parametrize("what", ["mha", "encoder", "coref"])
def test_every_example_ends_at_a_parameter(what):
    frames = frames_of(explain_html(coref_trace() if what == "coref" else run_example(what)))
    assert frames[-2]["parameter"] and frames[-2]["phase"] == "leaf"
    assert frames[-1]["parameter"] and frames[-1]["phase"] == "summary"
    assert all(a["node"] != b["node"] for a, b in zip(frames, frames[1:-1]))
    a = next(f for f in frames if f["phase"] == "forward" and f["name"] == "A")
    assert "it" in a["value"]["rows"] and "animal" in a["value"]["cols"]  # every example


@requires_dot
def test_the_default_is_the_article_sentence_with_token_labels():
    from minitransformer.viz.explain import article_tokens

    frames = frames_of(explain_html(run_example()))
    tokens = article_tokens()
    assert frames[0]["name"] == "X" and frames[0]["op"] == "input"  # the input is a frame
    assert frames[0]["value"]["rows"] == tokens and frames[0]["value"]["cols"] == list("0123")
    a = next(f for f in frames if f["phase"] == "forward" and f["name"] == "A")
    assert a["value"]["rows"] == tokens and a["value"]["cols"] == tokens
    assert a["value"]["numbers"]  # 11 x 11: the numbers are shown
    assert "it" in tokens and "animal" in tokens


@requires_dot
def test_the_rules_are_in_the_nodes_symbols_with_their_numbers():
    frames = frames_of(explain_html(run_example()))
    backward = {f["name"]: f for f in frames if f["phase"] == "backward"}
    softmax = backward["A"]
    assert softmax["name"] == "A" and softmax["formula"].startswith("dS_hat = A ⊙ (dA − r)")
    (rowsums,) = [e for e in softmax["extras"] if "heat" in e]
    assert rowsums["heat"]["cols"] == ["r"] and len(rowsums["heat"]["cells"]) == 11
    # only the row of "it" has a gradient, and there sum_i g_i s_i = -1 (loss -log A[it, animal])
    column = [row[0] for row in rowsums["heat"]["cells"]]
    assert column[7] == pytest.approx(-1.0, abs=1e-3) and column.count(0.0) == 10
    scale = backward["S_hat"]
    assert scale["formula"] == "dS = dS_hat / 2" and "1/√d_k, d_k = 4" in scale["extras"][0]["text"]
    product = backward["S"]
    assert product["formula"] == "dQ = dS @ K;  dKᵀ = Qᵀ @ dS"
    assert "transposed" in product["extras"][0]["text"]
    for f in frames:  # no docstring markup, no clipped text
        assert "``" not in f["formula"] and "…" not in f["formula"], f["formula"]
    linear = backward["Q"]
    assert linear["formula"] == ("dq_proj.weight = dQᵀ @ X;  dq_proj.bias = dQ summed over "
                                 "its rows (X needs no gradient: not computed)")
    forward_q = next(f for f in frames if f["phase"] == "forward" and f["name"] == "Q")
    assert forward_q["formula"] == "Q = X @ q_proj.weightᵀ + q_proj.bias"


@requires_dot
def test_a_gradient_shows_on_a_node_only_once_the_backward_reached_it():
    frames = frames_of(explain_html(run_example()))
    first_backward = next(i for i, f in enumerate(frames) if f["phase"] != "forward")
    assert all(not f["reached"] for f in frames[:first_backward])  # the forward shows none
    reached = [n for f in frames[first_backward:] for n in f["reached"]]
    assert len(reached) == len(set(reached))  # each tensor once, when its gradient arrives
    loss_step = frames[first_backward]
    assert loss_step["name"] == "loss" and loss_step["reached"]


@requires_dot
def test_the_closing_frame_sums_up_the_path_to_q_proj_weight():
    closing = frames_of(explain_html(run_example()))[-1]
    names = [row["name"] for row in closing["path"]]
    assert names[0] == "loss" and names[-1] == "q_proj.weight"
    assert names == ["loss", "log A[it, animal]", "A[it, animal]", "A", "S_hat", "S", "Q",
                     "q_proj.weight"]
    assert closing["path_nodes"] and closing["grad"]["cells"]


@requires_dot
def test_multi_head_frames_keep_every_head_and_name_gradients_plainly():
    frames = frames_of(explain_html(run_example("mha")))
    a = next(f for f in frames if f["phase"] == "backward" and f["name"] == "A")
    assert len(a["grad"]["heads"]) == 2 and len(a["grad"]["heads"][0]) == 11
    (rowsums,) = [e for e in a["extras"] if "heat" in e]
    assert len(rowsums["heat"]["heads"]) == 2  # the softmax's row sums, head by head
    names = {f["name"] for f in frames}
    assert "Q_h" in names and not any("_heads" in n for n in names)
    assert not any("_heads" in f["formula"] for f in frames)


@requires_dot
def test_the_command_writes_the_page(tmp_path, capsys):
    out = tmp_path / "sub" / "explain.html"
    assert main(["explain", "--what", "mha", "--out", str(out)]) == 0
    assert "frames" in capsys.readouterr().out
    assert frames_of(out.read_text(encoding="utf-8"))
    assert [p.name for p in out.parent.iterdir()] == ["explain.html"]  # no temporary left


def test_without_dot_the_command_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` anywhere
    out = tmp_path / "explain.html"
    assert main(["explain", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "dot" in err and "graphviz" in err
    assert not out.exists()


def test_a_trace_without_a_walk_is_refused():
    from minitransformer.trace import BackwardTrace

    with pytest.raises(ValueError, match="no backward walk"):
        explain_html(BackwardTrace())


@requires_dot
@requires_browser
def test_the_page_in_a_browser(tmp_path):
    """Step through every frame with the keyboard in headless Chromium (the system's, with
    its own chromedriver: nothing is downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path = write_explain(tmp_path / "explain.html", run_example())
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,900",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(path.as_uri())
        body = driver.find_element(By.TAG_NAME, "body")
        count = driver.execute_script("return window.explain.frames.length")
        assert count == path.read_text().count('"phase":') >= 20  # every frame loaded

        def highlighted():
            return driver.execute_script(
                "var g = document.querySelectorAll('#graph g.node.current');"
                "return [g.length, g.length ? g[0].querySelector('title').textContent : null,"
                " document.body.dataset.frame, document.body.dataset.parameter,"
                " document.body.dataset.phase]")

        seen = [highlighted()]
        assert seen[0][0] == 1 and seen[0][2] == "0"
        for _ in range(count - 1):
            body.send_keys(Keys.ARROW_RIGHT)
            seen.append(highlighted())
        for before, after in zip(seen, seen[1:]):
            assert after[0] == 1 and int(after[2]) == int(before[2]) + 1
        for before, after in zip(seen[:-1], seen[1:-1]):
            assert after[1] != before[1]  # one node, a different one (the summary: repeats)
        assert seen[-2][3] == "true" and seen[-2][4] == "leaf"  # a parameter's gradient
        assert seen[-1][4] == "summary" and "q_proj.weight" in driver.find_element(
            By.ID, "panel").text
        body.send_keys(Keys.ARROW_LEFT)
        assert highlighted()[2] == str(count - 2)
        # the graph fits its pane, and no gradient shows before the backward reaches it
        fits = driver.execute_script(
            "var g = document.querySelector('#graph svg').getBoundingClientRect();"
            "var p = document.getElementById('graph').getBoundingClientRect();"
            "return g.left >= p.left - 1 && g.right <= p.right + 1 && g.top >= p.top - 1"
            " && g.bottom <= p.bottom + 1")
        assert fits
        driver.execute_script("window.explain.show(0)")
        hidden_at_start = driver.execute_script(
            "return [document.querySelectorAll('#graph text.grad-hidden').length,"
            " Array.from(document.querySelectorAll('#graph text')).filter(function (t) {"
            "  return t.textContent.indexOf('grad ') === 0; }).length]")
        assert hidden_at_start[0] == hidden_at_start[1] > 0
        driver.execute_script(f"window.explain.show({count - 1})")
        assert driver.execute_script(
            "return document.querySelectorAll('#graph text.grad-hidden').length") == 0
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert pixels.std() > 10  # not a blank page
