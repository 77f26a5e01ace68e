"""Recurrent layers: the Elman RNN and the LSTM, one time step after another.

They are here to be compared with self-attention. Their defining property is visible in
the code: a Python loop over the time steps, in which step t needs the state that step
t - 1 produced. However wide the machine, a sequence of T tokens takes T steps in order
(``RNN.sequential_steps(T)``), where a self-attention layer takes one.

Parameter names, shapes, gate order and initialisation follow ``torch.nn.RNN`` /
``torch.nn.LSTM``, so a state dict maps one to one:

    weight_ih_l{k}   (G*H, I_k)   input-to-hidden weights of layer k (G = 1 RNN, 4 LSTM)
    weight_hh_l{k}   (G*H, H)     hidden-to-hidden weights
    bias_ih_l{k}     (G*H,)       two biases, as in cuDNN (only their sum matters)
    bias_hh_l{k}     (G*H,)
    ..._reverse                   the same for the backward direction (bidirectional)

with I_0 = input_size and I_k = D * H above (D = 2 directions when bidirectional). Every
value starts uniform in [-1/sqrt(H), 1/sqrt(H)].

Layout. As in PyTorch, ``batch_first=False`` (the default) takes and returns (T, B, I)
sequence first; ``batch_first=True`` takes (B, T, I). Inside, the loop runs batch first.

Padding. ``forward(x, h0=None, lengths=None)``: with ``lengths`` (B,), the real length of
each right-padded sequence, a padded step leaves the state as it was and outputs zeros.
This gives what PyTorch gives for a ``pack_padded_sequence`` input: ``h_n`` is each
sequence's state after its own last token, and the backward direction starts from ``h0``
at each sequence's own last token, not at the padding.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minitransformer import backend
from minitransformer import functional as F
from minitransformer.errors import ShapeError
from minitransformer.nn.layers import new_parameter
from minitransformer.nn.module import Module
from minitransformer.ops import concat, stack, where
from minitransformer.tensor import Tensor, default_generator

__all__ = ["LSTM", "RNN"]


class _RecurrentBase(Module):
    """Parameters, shape checks and the layer/direction loop shared by RNN and LSTM.

    Subclasses set ``gates`` (G) and implement ``_cell``: one time step of one layer and
    direction, from the step's input projection and the previous state to the next state.
    """

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, bidirectional: bool = False,
                 dtype: Any = None, device: Any = None) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(f"input_size, hidden_size and num_layers must be >= 1, got "
                             f"{input_size}, {hidden_size}, {num_layers}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        bound = 1 / math.sqrt(hidden_size)
        rng = default_generator()
        rows = self.gates * hidden_size
        # Registered in PyTorch's order: per layer, per direction, w_ih, w_hh, b_ih, b_hh.
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes(layer):
                shapes = {"weight_ih": (rows, layer_input), "weight_hh": (rows, hidden_size)}
                if bias:
                    shapes.update({"bias_ih": (rows,), "bias_hh": (rows,)})
                for name, shape in shapes.items():
                    values = rng.uniform(-bound, bound, shape)
                    self.register_parameter(name + suffix, new_parameter(values, dtype, device))

    def _suffixes(self, layer: int) -> list[str]:
        return [f"_l{layer}"] + ([f"_l{layer}_reverse"] if self.bidirectional else [])

    @staticmethod
    def sequential_steps(length: int) -> int:
        """How many steps must run one after the other for a sequence of ``length``."""
        return length

    # ----- one time step (subclasses) -------------------------------------------------------
    def _cell(self, projected_input: Tensor, state: Any, weight_hh: Tensor) -> Any:
        raise NotImplementedError

    @staticmethod
    def _hidden(state: Any) -> Tensor:
        """The part of the state that is the step's output (h)."""
        raise NotImplementedError

    # ----- the loops --------------------------------------------------------------------------
    def _run(self, x: Tensor, initial: list[Any], lengths: Any) -> tuple[Tensor, list[Any]]:
        """All layers and directions. ``x`` (B, T, I) batch first; ``initial`` holds the
        starting state of each (layer, direction). Returns the last layer's output
        (B, T, D*H) and the final state of each (layer, direction)."""
        B, T, _ = x.shape
        valid = None  # (T, B, 1) bool: whether step t of sequence b is a real token
        if lengths is not None:
            valid = (np.arange(T)[:, None] < lengths[None, :])[:, :, None]
            valid = backend.to_device(valid, x.device)
        finals = []
        layer_input = x  # (B, T, I_k)
        for layer in range(self.num_layers):
            outputs = []
            for direction, suffix in enumerate(self._suffixes(layer)):
                state = initial[layer * self.num_directions + direction]
                output, state = self._run_direction(layer_input, state, suffix,
                                                    reverse=direction == 1, valid=valid)
                outputs.append(output)  # (B, T, H)
                finals.append(state)
            layer_input = concat(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
        return layer_input, finals  # (B, T, D*H)

    def _run_direction(self, x: Tensor, state: Any, suffix: str, reverse: bool,
                       valid: Any) -> tuple[Tensor, Any]:
        """One layer in one direction: T steps, each needing the previous one's state."""
        weight_ih = getattr(self, "weight_ih" + suffix)
        weight_hh = getattr(self, "weight_hh" + suffix)
        bias = None
        if self.bias:
            bias = getattr(self, "bias_ih" + suffix) + getattr(self, "bias_hh" + suffix)
        # The input's share of every gate does not depend on the state, so it is computed
        # for all time steps at once (one parallel matmul); only the rest is serial.
        projected = F.linear(x, weight_ih, bias)  # (B, T, G*H)
        steps = projected.swapaxes(0, 1)  # (T, B, G*H): steps[t] is time step t
        length = steps.shape[0]
        order = range(length - 1, -1, -1) if reverse else range(length)
        outputs: list[Tensor | None] = [None] * length
        for t in order:  # the serial part: step t needs the state of the step before
            new_state = self._cell(steps[t], state, weight_hh)  # steps[t]: (B, G*H)
            if valid is None:
                state = new_state
                outputs[t] = self._hidden(state)  # (B, H)
            else:  # a padded step keeps the state and outputs zeros
                state = _keep_where(valid[t], new_state, state)
                outputs[t] = self._hidden(state).masked_fill(~valid[t], 0.0)  # (B, H)
        return stack(outputs, axis=1), state  # (B, T, H)

    # ----- input handling ---------------------------------------------------------------------
    def _prepare(self, x: Tensor, lengths: Any) -> tuple[Tensor, Any]:
        """``x`` batch first (B, T, I) and ``lengths`` as a checked NumPy array (or None)."""
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ShapeError(f"{type(self).__name__} expects input of shape {layout} with "
                             f"I = input_size = {self.input_size}, got {x.shape}")
        if not self.batch_first:
            x = x.swapaxes(0, 1)  # (T, B, I) -> (B, T, I)
        if lengths is None:
            return x, None
        if isinstance(lengths, Tensor):
            lengths = lengths.numpy()
        lengths = np.asarray(lengths, dtype=np.int64)
        B, T, _ = x.shape
        if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
            raise ShapeError(f"lengths must be (B,) = ({B},) values in [1, {T}], got shape "
                             f"{lengths.shape} values {lengths.tolist()}")
        return x, lengths

    def _check_state(self, h: Tensor, name: str, batch: int) -> None:
        expected = (self.num_layers * self.num_directions, batch, self.hidden_size)
        if h.shape != expected:
            raise ShapeError(f"{name} must have shape (num_layers * num_directions, B, H) = "
                             f"{expected}, got {h.shape}")

    def _zeros(self, x: Tensor) -> Tensor:
        xp = backend.array_module(x.device)
        return Tensor(xp.zeros((x.shape[0], self.hidden_size), dtype=x.dtype), device=x.device)

    def _finish(self, output: Tensor) -> Tensor:
        return output if self.batch_first else output.swapaxes(0, 1)  # back to (T, B, D*H)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, "
                f"bidirectional={self.bidirectional}")


def _keep_where(valid: Any, new: Any, old: Any) -> Any:
    """``new`` where ``valid`` (B, 1), else ``old``; for a state or a tuple of states."""
    if isinstance(new, tuple):
        return tuple(_keep_where(valid, n, o) for n, o in zip(new, old))
    return where(valid, new, old)


class RNN(_RecurrentBase):
    """The Elman RNN: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh or relu.

    ``forward(x, h0=None, lengths=None) -> (output, h_n)`` with x (T, B, I), sequence first
    (PyTorch's default ``batch_first=False``; ``batch_first=True`` takes (B, T, I)), h0 and
    h_n (num_layers * D, B, H), output (T, B, D * H) (or (B, T, D * H) batch first): the last
    layer's h_t at every step, forward and backward directions side by side.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 bidirectional: bool = False, dtype: Any = None, device: Any = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first,
                         bidirectional, dtype, device)
        self.nonlinearity = nonlinearity

    def _cell(self, projected_input: Tensor, h: Tensor, weight_hh: Tensor) -> Tensor:
        pre_activation = projected_input + h @ weight_hh.T  # (B, H) + (B, H) @ (H, H)
        return pre_activation.tanh() if self.nonlinearity == "tanh" else pre_activation.relu()

    @staticmethod
    def _hidden(state: Tensor) -> Tensor:
        return state

    def forward(self, x: Tensor, h0: Tensor | None = None,
                lengths: Any = None) -> tuple[Tensor, Tensor]:
        x, lengths = self._prepare(x, lengths)
        count = self.num_layers * self.num_directions
        if h0 is None:
            initial = [self._zeros(x)] * count
        else:
            self._check_state(h0, "h0", x.shape[0])
            initial = [h0[i] for i in range(count)]  # count tensors (B, H)
        output, finals = self._run(x, initial, lengths)
        return self._finish(output), stack(finals, axis=0)  # h_n (count, B, H)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity}"


class LSTM(_RecurrentBase):
    """Long short-term memory (Hochreiter & Schmidhuber, 1997), PyTorch's formulation:

        i = sigmoid(x_t W_ii^T + b_ii + h W_hi^T + b_hi)     input gate
        f = sigmoid(x_t W_if^T + b_if + h W_hf^T + b_hf)     forget gate
        g = tanh(x_t W_ig^T + b_ig + h W_hg^T + b_hg)        candidate cell values
        o = sigmoid(x_t W_io^T + b_io + h W_ho^T + b_ho)     output gate
        c_t = f * c_{t-1} + i * g                            the cell: an additive path
        h_t = o * tanh(c_t)

    The four gates are stacked in ``weight_ih_l{k}`` (4H, I) in the order i, f, g, o.
    ``forward(x, state=None, lengths=None) -> (output, (h_n, c_n))`` with ``state`` an
    ``(h0, c0)`` pair, each (num_layers * D, B, H); shapes as in :class:`RNN`.
    """

    gates = 4

    def _cell(self, projected_input: Tensor, state: tuple[Tensor, Tensor],
              weight_hh: Tensor) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = projected_input + h @ weight_hh.T  # (B, 4H)
        i, f, g, o = gates.split(self.hidden_size, axis=-1)  # four (B, H)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()  # (B, H)
        h = o.sigmoid() * c.tanh()  # (B, H)
        return h, c

    @staticmethod
    def _hidden(state: tuple[Tensor, Tensor]) -> Tensor:
        return state[0]

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None,
                lengths: Any = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        x, lengths = self._prepare(x, lengths)
        count = self.num_layers * self.num_directions
        if state is None:
            zeros = self._zeros(x)
            initial = [(zeros, zeros)] * count
        else:
            h0, c0 = state
            self._check_state(h0, "h0", x.shape[0])
            self._check_state(c0, "c0", x.shape[0])
            initial = [(h0[i], c0[i]) for i in range(count)]  # count pairs of (B, H)
        output, finals = self._run(x, initial, lengths)
        h_n = stack([h for h, _ in finals], axis=0)  # (count, B, H)
        c_n = stack([c for _, c in finals], axis=0)  # (count, B, H)
        return self._finish(output), (h_n, c_n)
