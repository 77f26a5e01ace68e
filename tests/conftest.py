"""Shared fixtures: the PyTorch oracle, the optional programs, and the devices to run on.

The only skips allowed in this suite are for a missing optional thing: PyTorch, a GPU,
CuPy, Graphviz's `dot`, a browser (Chromium with its driver). Each has its marker here.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import minitransformer as mt

try:
    import torch
except ImportError:  # the `oracle` extra is not installed
    torch = None

# ----- the optional groups ------------------------------------------------------------------
# Each group: the skip reason its tests give (the key the end-of-run summary and the CI check
# read back) and how to turn it on. Only the GPU group may skip in CI (MINITRANSFORMER_CI=1).
SKIP_GROUPS: dict[str, tuple[str, str]] = {
    "Graphviz": ("Graphviz's `dot` not found",
                 "apt-get install graphviz (or brew/conda install graphviz)"),
    "PyTorch oracle": ("PyTorch not installed", "pip install -e '.[oracle]'"),
    "browser": ("no browser (Chromium with chromedriver)",
                "apt-get install chromium chromium-driver, and pip install -e '.[dev]'"),
    "GPU": ("no CUDA GPU with CuPy", "a CUDA GPU, and pip install -e '.[gpu]'"),
    # CuPy may fail to install on a CI machine without CUDA: it counts as part of the GPU group.
    "CuPy": ("CuPy not installed", "pip install -e '.[gpu]' (it imports without a GPU)"),
}
MAY_SKIP_IN_CI = {"GPU", "CuPy"}


def _skip_unless(available: bool, group: str) -> pytest.MarkDecorator:
    reason, how = SKIP_GROUPS[group]
    return pytest.mark.skipif(not available, reason=f"{reason}: {how}")


requires_torch = _skip_unless(torch is not None, "PyTorch oracle")
requires_gpu = _skip_unless(mt.cuda_is_available(), "GPU")
requires_dot = _skip_unless(shutil.which("dot") is not None, "Graphviz")
# The browser tests drive Debian's Chromium through the system chromedriver, never a
# downloaded one.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
requires_browser = _skip_unless(
    None not in (CHROMIUM, CHROMEDRIVER) and importlib.util.find_spec("selenium") is not None,
    "browser",
)
requires_cupy = _skip_unless(importlib.util.find_spec("cupy") is not None, "CuPy")

DEVICES = ["cpu", pytest.param("cuda", marks=[requires_gpu, pytest.mark.gpu])]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """Run a test once per device; the CUDA run skips where there is no GPU."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def randn(rng: np.random.Generator, *shape: int, device: str = "cpu",
          requires_grad: bool = True) -> mt.Tensor:
    """A float64 tensor of standard-normal values, for gradchecks."""
    return mt.tensor(rng.standard_normal(shape), requires_grad=requires_grad, device=device)


# ----- end of run: which groups skipped, CI's rule, and a clean checkout --------------------
ROOT = Path(__file__).resolve().parent.parent
# Set by .ci/run: there, every group but the GPU one must run.
IN_CI = os.environ.get("MINITRANSFORMER_CI") == "1"
# What a test run may leave in the checkout: the environment and tool caches.
CACHES = {".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
_CHECKOUT_BEFORE = pytest.StashKey[set[str] | None]()
_PROBLEMS = pytest.StashKey[list[str]]()


def skip_group(report: pytest.TestReport) -> str:
    """The group of a skipped test's report, read back from its reason ('other' if none)."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return next((group for group, (prefix, _) in SKIP_GROUPS.items() if prefix in reason),
                "other")


def checkout_state() -> set[str] | None:
    """`git status --porcelain --ignored` lines outside the environment and caches (None
    when the tests do not run from a git checkout)."""
    try:
        result = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return {line for line in result.stdout.splitlines()
            if not any(part in CACHES or part.endswith(".egg-info")
                       for part in Path(line[3:].strip('"')).parts)}


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")  # xdist workers report to the controller


def pytest_sessionstart(session: pytest.Session) -> None:
    if _is_controller(session.config):
        session.config.stash[_CHECKOUT_BEFORE] = checkout_state()



def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run if it wrote into the checkout, or (in CI) if a group other than the GPU
    one skipped: a broken install step must not pass as a green run."""
    config = session.config
    if not _is_controller(config):
        return
    problems = []
    before = config.stash.get(_CHECKOUT_BEFORE, None)
    after = checkout_state() if before is not None else None
    if after is not None and after - before:
        problems.append("the tests wrote into the checkout (write to tmp_path instead; or were "
                        "these files edited while the tests ran?): "
                        + ", ".join(sorted(line[3:] for line in after - before)))
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    skipped = {skip_group(r) for r in reporter.stats.get("skipped", [])} if reporter else set()
    if IN_CI and skipped - MAY_SKIP_IN_CI:
        problems.append("CI runs every group but the GPU one, and these skipped: "
                        + ", ".join(sorted(skipped - MAY_SKIP_IN_CI)))
    config.stash[_PROBLEMS] = problems
    if problems and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """One line per skipped group, with how to turn it on; then any problem found above."""
    counts: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        counts[skip_group(report)] = counts.get(skip_group(report), 0) + 1
    if counts:
        terminalreporter.section("skipped groups")
    for group, count in counts.items():
        how = SKIP_GROUPS[group][1] if group in SKIP_GROUPS else "not an allowed skip: fix it"
        terminalreporter.write_line(
            f"{group}: {count} test{'s' * (count != 1)} skipped; to run them: {how}")
    for problem in config.stash.get(_PROBLEMS, []):
        terminalreporter.write_line(f"FAILED: {problem}", red=True, bold=True)
