"""minitransformer: a small reverse-mode autograd engine and the attention layers built on it.

    import minitransformer as mt
    x = mt.tensor([[1.0, 2.0]], requires_grad=True)
    y = (x @ x.T).tanh().sum()
    y.backward()
    x.grad
"""

# First: where this process is the command line, Ctrl-C while it starts gives one line.
from minitransformer import _startup  # noqa: F401, I001
from minitransformer import backend, ops
from minitransformer.autograd import (
    Function,
    enable_grad,
    grad,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from minitransformer.backend import cuda_is_available
from minitransformer.errors import (
    AxisError,
    CheckpointError,
    DeviceError,
    DtypeError,
    GradcheckError,
    GraphError,
    ShapeError,
)
from minitransformer.gradcheck import gradcheck, gradgradcheck
from minitransformer.promotion import promote_types, result_type
from minitransformer.tensor import (
    Tensor,
    arange,
    as_tensor,
    bool_,
    default_generator,
    float16,
    float32,
    float64,
    full,
    int32,
    int64,
    manual_seed,
    ones,
    ones_like,
    rand,
    randn,
    randn_like,
    tensor,
    zeros,
    zeros_like,
)

__version__ = "0.1.0"

# mt.exp, mt.sum, mt.cat, ...: every op registered for the top level (minitransformer.ops.registry)
globals().update(ops.registry.public_names())

# The layers, losses, optimizers and checkpoints built on the engine (imported last: they
# use the names above), and the rest of PyTorch's top-level names that real model code
# uses (nanoGPT's model.py runs with ``import minitransformer as torch``; docs/pytorch.md).
from minitransformer import cuda, functional, nn, optim  # noqa: E402
from minitransformer.creation import (  # noqa: E402
    empty,
    eye,
    from_numpy,
    full_like,
    linspace,
    tril,
    triu,
)
from minitransformer.nn import Parameter  # noqa: E402
from minitransformer.random import multinomial, randint  # noqa: E402
from minitransformer.serialization import load, save  # noqa: E402
from minitransformer.sorting import sort, topk, unique  # noqa: E402
from minitransformer.trace import BackwardTrace, trace_backward, tracing  # noqa: E402

# PyTorch's dtype names (torch.long, torch.float, ...), as NumPy dtypes. Last in this file:
# ``float``, ``int`` and ``bool`` shadow the builtins in this namespace.
long, double, half = int64, float64, float16
float, int, bool = float32, int32, bool_  # noqa: A001
