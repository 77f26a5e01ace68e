"""The test run itself: the end-of-run summary of skipped groups, CI's rule that only the GPU
group may skip, and the check that a run writes nothing into the checkout.

Each case runs pytest on a tiny suite in a fresh git repository, with this suite's conftest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SUITE = '''
from tests.conftest import _skip_unless, ROOT

@_skip_unless(False, "Graphviz")
def test_draws(): pass

@_skip_unless(False, "GPU")
def test_on_gpu(): pass

@_skip_unless(False, "CuPy")
def test_cupy_names(): pass

def test_writes():
    {write}
'''

WRITE = '(ROOT / "runs").mkdir(); (ROOT / "runs" / "x").touch()'


def run_suite(repo: Path, *, ci: bool, graphviz: bool = True, write: bool = False):
    """pytest on the tiny suite in `repo` (a git repository); (exit code, output)."""
    if not (repo / ".git").exists():
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        (repo / "tests").mkdir()
        for name in ("__init__.py", "conftest.py"):
            shutil.copy(ROOT / "tests" / name, repo / "tests" / name)
    source = SUITE.format(write=WRITE if write else "pass")
    if not graphviz:
        source = source.replace('@_skip_unless(False, "Graphviz")', "")
    (repo / "tests" / "test_tiny.py").write_text(source)
    env = {**os.environ, "MINITRANSFORMER_CI": "1" if ci else "0"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_tiny.py"], cwd=repo, env=env, capture_output=True,
                            text=True, timeout=120)
    return result.returncode, result.stdout


def test_summary_ci_rule_and_clean_checkout_check(tmp_path) -> None:
    code, out = run_suite(tmp_path, ci=True, write=True)
    assert code == 1, out
    assert "Graphviz: 1 test skipped; to run them: apt-get install graphviz" in out
    assert "GPU: 1 test skipped; to run them: a CUDA GPU, and pip install -e '.[gpu]'" in out
    assert "CuPy: 1 test skipped; to run them: pip install -e '.[gpu]'" in out
    assert "CI runs every group but the GPU one, and these skipped: Graphviz" in out
    assert "the tests wrote into the checkout" in out and "?): runs/" in out

    code, out = run_suite(tmp_path, ci=True, graphviz=False)  # GPU and CuPy skips only
    assert code == 0, out
    assert "FAILED" not in out
