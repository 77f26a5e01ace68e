"""Run a PyTorch file on minitransformer with only its import lines changed.

PyTorch's usual three imports become minitransformer's::

    import torch                          ->  import minitransformer as torch
    import torch.nn as nn                 ->  import minitransformer.nn as nn
    from torch.nn import functional as F  ->  from minitransformer.nn import functional as F

and nothing else in the file is touched. ``load_module("model.py")`` does that and runs the
result as a module (nanoGPT's and minGPT's ``model.py`` run so, and match PyTorch:
tests/test_nanogpt.py, tests/test_mingpt.py); ``load_module("model.py", on_torch=True)``
runs the file as it is, on PyTorch, for a side-by-side comparison.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

TORCH_IMPORTS: dict[str, str] = {
    "import torch\n": "import minitransformer as torch\n",
    "import torch.nn as nn\n": "import minitransformer.nn as nn\n",
    "from torch.nn import functional as F\n": "from minitransformer.nn import functional as F\n",
}


def ported_source(source: str, imports: Mapping[str, str] = TORCH_IMPORTS) -> str:
    """``source`` with each PyTorch import line replaced by minitransformer's.

    Each line of ``imports`` must occur exactly once: a file that imports torch otherwise
    would run half on PyTorch, so it is refused, naming the line."""
    for theirs, ours in imports.items():
        count = source.count(theirs)
        if count != 1:
            raise ValueError(f"the file has the line {theirs.strip()!r} {count} times, not once: "
                             "change its imports by hand")
        source = source.replace(theirs, ours)
    return source


def load_module(path: str | Path, name: str | None = None, *, on_torch: bool = False,
                modules: Mapping[str, types.ModuleType] | None = None) -> types.ModuleType:
    """The Python file ``path`` run as a module on minitransformer (``on_torch``: as it is).

    ``name`` (default: the file's stem, with ``_on_torch`` or ``_on_minitransformer``) is
    registered in ``sys.modules``, where ``@dataclass`` looks its module up. ``modules``:
    stand-ins importable while the file runs (e.g. minGPT's ``mingpt.utils``), removed after."""
    path = Path(path)
    source = path.read_text(encoding="utf-8")
    if not on_torch:
        source = ported_source(source)
    name = name or f"{path.stem}_on_{'torch' if on_torch else 'minitransformer'}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    with _importable(modules or {}):
        exec(compile(source, str(path), "exec"), module.__dict__)
    return module


@contextmanager
def _importable(modules: Mapping[str, types.ModuleType]) -> Iterator[None]:
    """``modules`` in ``sys.modules`` for the block; what was there before comes back."""
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
