"""mt.porting: a PyTorch file runs here with only its import lines changed."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest

import minitransformer as mt
from minitransformer.porting import TORCH_IMPORTS, load_module, ported_source

PYTORCH_FILE = textwrap.dedent("""\
    import torch
    import torch.nn as nn
    from torch.nn import functional as F
    from dataclasses import dataclass

    @dataclass
    class Config:
        width: int = 3

    def forward(x):
        return F.softmax(nn.Linear(Config().width, 2)(x), dim=-1)
""")


def test_the_three_import_lines_become_minitransformers_and_nothing_else() -> None:
    ported = ported_source(PYTORCH_FILE)
    assert ported.splitlines()[:3] == [line.strip() for line in TORCH_IMPORTS.values()]
    assert ported.splitlines()[3:] == PYTORCH_FILE.splitlines()[3:]


def test_a_file_without_one_of_the_lines_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"'import torch.nn as nn' 0 times, not once"):
        ported_source(PYTORCH_FILE.replace("import torch.nn as nn\n", ""))


def test_the_loaded_module_runs_on_minitransformer(tmp_path) -> None:
    path = tmp_path / "model.py"
    path.write_text(PYTORCH_FILE)
    module = load_module(path, "porting_test_model")
    assert module.torch is mt and sys.modules["porting_test_model"] is module
    y = module.forward(mt.randn(4, 3))
    assert isinstance(y, mt.Tensor) and y.shape == (4, 2)


def test_stand_in_modules_are_importable_while_the_file_runs_only(tmp_path) -> None:
    path = tmp_path / "uses_helper.py"
    path.write_text(PYTORCH_FILE + "from helper_pkg import VALUE\n")
    helper = types.ModuleType("helper_pkg")
    helper.VALUE = 7
    module = load_module(path, "porting_test_helper", modules={"helper_pkg": helper})
    assert module.VALUE == 7 and "helper_pkg" not in sys.modules
