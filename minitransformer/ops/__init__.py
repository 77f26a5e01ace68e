"""Every differentiable op, grouped by kind; each file keeps forward and backward together.

    elementwise.py  arithmetic and math functions      activations.py  nonlinearities, softmax
    reductions.py   sum, mean, var, max, min            shape.py        reshapes, indexing, joins
    matmul.py       the matrix product                  conv.py         unfold / fold (im2col)
    attention.py    fused scaled dot-product attention  norm.py         fused layer norm
    loss.py         fused cross-entropy                 registry.py     the list of ops

Each public op function registers itself (``@register`` in its file, see
:mod:`minitransformer.ops.registry`); this module exports every registered op by name, and
gives :class:`~minitransformer.tensor.Tensor` its methods from the same list. Under
``create_graph=True`` a backward's ``self.xp`` is this module.
"""

from minitransformer.ops import activations, conv, elementwise, matmul, reductions, shape
from minitransformer.ops.registry import OPS, install_tensor_methods
from minitransformer.ops.shape import unbroadcast
from minitransformer.tensor import Tensor

_modules = (activations, conv, elementwise, matmul, reductions, shape)  # each registers its ops
globals().update({n: entry.fn for entry in OPS.values() for n in (entry.name, *entry.aliases)})
__all__ = sorted({n for entry in OPS.values() for n in (entry.name, *entry.aliases)}
                 | {"unbroadcast"})
install_tensor_methods(Tensor)
