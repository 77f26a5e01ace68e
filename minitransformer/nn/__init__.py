"""Layers and models: ``import minitransformer.nn as nn``.

    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8))
    y = model(x)
    model.state_dict()
"""

import sys

from minitransformer import functional
from minitransformer.nn import init, utils
from minitransformer.nn.activation import GELU, ReLU, Sigmoid, SiLU, Tanh
from minitransformer.nn.attention import Attention, MultiHeadAttention, MultiheadAttention
from minitransformer.nn.containers import ModuleDict
from minitransformer.nn.conv import Conv1d
from minitransformer.nn.decoder import (
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    causal_mask,
)
from minitransformer.nn.layers import (
    Dropout,
    Embedding,
    FeedForward,
    Flatten,
    Identity,
    LayerNorm,
    Linear,
    Softmax,
)
from minitransformer.nn.loss import CrossEntropyLoss, MSELoss
from minitransformer.nn.module import (
    IncompatibleKeys,
    Module,
    ModuleList,
    Parameter,
    Sequential,
    StateDictError,
)
from minitransformer.nn.rnn import LSTM, RNN
from minitransformer.nn.transformer import (
    LearnedPositionalEncoding,
    PositionalEncoding,
    TransformerEncoder,
    TransformerEncoderLayer,
    reseed_dropout,
)

__all__ = [
    "Attention", "Conv1d", "Dropout", "Embedding", "FeedForward", "IncompatibleKeys", "LSTM",
    "LayerNorm",
    "LearnedPositionalEncoding", "Linear", "Module", "ModuleList", "MultiHeadAttention",
    "Parameter", "PositionalEncoding", "RNN", "Sequential", "Softmax", "StateDictError",
    "TransformerEncoder", "TransformerEncoderLayer", "reseed_dropout",
    "Transformer", "TransformerDecoder", "TransformerDecoderLayer", "causal_mask",
    "CrossEntropyLoss", "GELU", "ModuleDict", "functional", "init", "utils",
    "MSELoss", "MultiheadAttention", "Flatten", "Identity", "ReLU", "Sigmoid", "SiLU", "Tanh",
]

# PyTorch's path to the functional API, ``torch.nn.functional``: here it is the very module
# minitransformer.functional (one namespace, so a patch of one is a patch of the other), so
# ``import minitransformer.nn.functional as F`` and ``from minitransformer.nn import
# functional as F`` both work.
sys.modules[__name__ + ".functional"] = functional
