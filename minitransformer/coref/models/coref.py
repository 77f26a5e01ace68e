"""The coreference model: a small Transformer encoder and a pointer head over positions.

    the animal didn't cross the street because it was too tired
                                                 ^^ "it" points at "animal"

The encoder turns every token into a vector that has looked at the whole sentence. The
pointer head then asks one question, with one attention head: *which position does the
pronoun attend to?* Its softmax weights are the model's prediction, a probability for
every position of the sentence, so the weights printed by ``minitransformer attend`` are
the model's answer itself, not an inspection of some hidden layer.

    ids (B, T) -> Embedding -> + PositionalEncoding -> TransformerEncoder -> h (B, T, E)
    q = W_q h[pronoun]    k_j = W_k h_j    score_j = q . k_j / sqrt(E)    (padding masked)
    weights = softmax(scores)             loss = cross-entropy(scores, antecedent position)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from minitransformer import backend, nn
from minitransformer import functional as F
from minitransformer.autograd import no_grad
from minitransformer.coref.data import Vocabulary, find_pronouns, tokenize
from minitransformer.runs import config_from_dict
from minitransformer.tensor import Tensor

__all__ = [
    "CorefConfig", "CorefModel", "PointerHead", "PronounError", "Resolution", "SentenceError",
    "choose_pronoun", "resolve",
]


@dataclass(frozen=True)
class CorefConfig:
    """The model's size. The defaults train to >= 99% held-out accuracy in seconds."""

    vocab_size: int
    d_model: int = 32
    nhead: int = 2
    num_layers: int = 2
    dim_feedforward: int = 64
    dropout: float = 0.0
    max_len: int = 64

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> CorefConfig:
        return config_from_dict(cls, state, "model settings")


class PointerHead(nn.Module):
    """One attention head whose single query is the pronoun: it *points* at a position.

        q = W_q h_p                 (E,)     the pronoun's question
        k_j = W_k h_j               (E,)     what each position offers
        score_j = q . k_j / sqrt(E)          (padding positions: -inf)
        weight_j = softmax(score)_j          a distribution over the sentence's positions

    ``forward(h, pronoun, padding_mask)`` with h (B, T, E), the pronoun's position (B,) and
    padding_mask (B, T) True at padding, returns ``(scores, weights)``, both (B, T).
    """

    def __init__(self, d_model: int, dtype: Any = None, device: Any = None) -> None:
        super().__init__()
        self.d_model = d_model
        self.q_proj = nn.Linear(d_model, d_model, bias=False, dtype=dtype, device=device)
        self.k_proj = nn.Linear(d_model, d_model, bias=False, dtype=dtype, device=device)

    def forward(self, h: Tensor, pronoun: Any, padding_mask: Any) -> tuple[Tensor, Tensor]:
        B, T, E = h.shape
        rows = Tensor(np.arange(B), device=h.device)
        pronoun = on_device(pronoun, h.device)
        h_pronoun = h[rows, pronoun]  # (B, E): each sentence's pronoun vector
        q = self.q_proj(h_pronoun)  # (B, E)
        k = self.k_proj(h)  # (B, T, E)
        scores = (k @ q.reshape(B, E, 1)).reshape(B, T)  # (B, T, E) @ (B, E, 1) -> (B, T)
        scores = scores / math.sqrt(E)
        # padding is no candidate: -inf, so that it has weight 0 here and no part in the
        # loss's logsumexp (cross-entropy of these scores)
        scores = scores.masked_fill(on_device(padding_mask, h.device), -math.inf)
        weights = F.masked_softmax(scores, axis=-1)  # (B, T), each row sums to 1
        return scores, weights

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}"


class CorefModel(nn.Module):
    """Embedding + sinusoidal positions + Transformer encoder + :class:`PointerHead`.

    ``forward(ids, pronoun, padding_mask)``: token ids (B, T), pronoun positions (B,),
    padding mask (B, T) True at padding -> ``(scores, weights)`` over positions, (B, T).
    After a forward with ``store_attention(True)``, every encoder head's weights are in
    ``encoder.layers[i].self_attn.last_attention`` (B, nh, T, T).
    """

    def __init__(self, config: CorefConfig, device: Any = None) -> None:
        super().__init__()
        self.config = config
        kw = {"device": device}
        self.embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=0, **kw)
        self.positions = nn.PositionalEncoding(config.d_model, config.max_len,
                                               dropout=config.dropout, **kw)
        layer = nn.TransformerEncoderLayer(config.d_model, config.nhead, config.dim_feedforward,
                                           dropout=config.dropout, batch_first=True, **kw)
        self.encoder = nn.TransformerEncoder(layer, config.num_layers)
        self.pointer = PointerHead(config.d_model, **kw)

    def forward(self, ids: Any, pronoun: Any, padding_mask: Any) -> tuple[Tensor, Tensor]:
        device = self.embedding.weight.device
        padding_mask = on_device(padding_mask, device)
        x = self.positions(self.embedding(on_device(ids, device)))  # (B, T, E)
        h = self.encoder(x, src_key_padding_mask=padding_mask)  # (B, T, E)
        return self.pointer(h, pronoun, padding_mask)  # (B, T), (B, T)

    def store_attention(self, store: bool = True) -> None:
        """Keep (or stop keeping) each encoder head's latest attention weights."""
        for layer in self.encoder.layers:
            layer.self_attn.store_attention = store
            if not store:
                layer.self_attn.last_attention = None

    def encoder_attention(self) -> list[np.ndarray]:
        """The weights kept by the last forward: one (B, nh, T, T) array per layer."""
        maps = []
        for layer in self.encoder.layers:
            if layer.self_attn.last_attention is None:
                raise RuntimeError("no attention was kept; call store_attention(True) and "
                                   "run a forward first")
            maps.append(backend.to_numpy(layer.self_attn.last_attention.data))
        return maps


def on_device(values: Any, device: str) -> Tensor:
    """A NumPy array (ids, positions, masks) as a constant tensor on ``device``."""
    if isinstance(values, Tensor):
        return values if values.device == device else values.to(device=device)
    return Tensor(np.asarray(values), device=device)


# ----------------------------------------------------------------------------- one sentence


class SentenceError(ValueError):
    """A sentence the model cannot be asked about (too long, no clear pronoun)."""


class PronounError(SentenceError):
    """A sentence without a pronoun, with several, or a --pronoun/--position that misses."""


def choose_pronoun(tokens: list[str], pronoun: str | None = None,
                   position: int | None = None) -> int:
    """The position of the pronoun to resolve in ``tokens``.

    With neither ``pronoun`` nor ``position`` the sentence must hold exactly one pronoun
    (it, they, he, she). ``pronoun`` picks a word (it must occur once), ``position`` a
    token index (any word: the pointer head can ask about every position).
    """
    if not tokens:
        raise PronounError("the sentence has no words")
    listing = " ".join(f"{i}:{word}" for i, word in enumerate(tokens))
    if position is not None:
        if pronoun is not None:
            raise PronounError("give --pronoun or --position, not both")
        if not 0 <= position < len(tokens):
            raise PronounError(f"position {position} is outside the sentence "
                               f"({len(tokens)} tokens: {listing})")
        return position
    if pronoun is not None:
        matches = [i for i, word in enumerate(tokens) if word == pronoun.lower()]
        if not matches:
            raise PronounError(f"{pronoun!r} does not occur in the sentence ({listing})")
        if len(matches) > 1:
            raise PronounError(f"{pronoun!r} occurs {len(matches)} times (positions "
                               f"{matches}); choose one with --position")
        return matches[0]
    found = find_pronouns(tokens)
    if not found:
        raise PronounError(f"the sentence has no pronoun (it, they, he, she); choose a token "
                           f"with --position N ({listing})")
    if len(found) > 1:
        words = ", ".join(f"{tokens[i]!r} at {i}" for i in found)
        raise PronounError(f"the sentence has {len(found)} pronouns ({words}); choose one "
                           f"with --pronoun WORD or --position N")
    return found[0]


@dataclass
class Resolution:
    """What the model says about one pronoun of one sentence.

    ``scores`` and ``weights`` are the pointer head's raw scores and softmax weights,
    one per token; ``encoder_attention`` holds one (nh, T, T) array per encoder layer.
    """

    tokens: list[str]
    pronoun_position: int
    scores: np.ndarray
    weights: np.ndarray
    encoder_attention: list[np.ndarray]

    @property
    def pronoun(self) -> str:
        return self.tokens[self.pronoun_position]

    @property
    def antecedent_position(self) -> int:
        return int(np.argmax(self.weights))

    @property
    def antecedent(self) -> str:
        return self.tokens[self.antecedent_position]

    def to_dict(self) -> dict[str, Any]:
        """The numbers as plain JSON values (what ``attend --json`` prints)."""
        return {
            "pronoun": self.pronoun,
            "pronoun_position": self.pronoun_position,
            "antecedent": self.antecedent,
            "antecedent_position": self.antecedent_position,
            "tokens": [
                {"token": token, "score": float(score), "weight": float(weight)}
                for token, score, weight in zip(self.tokens, self.scores, self.weights)
            ],
        }


def resolve(model: CorefModel, vocabulary: Vocabulary, sentence: str | list[str],
            pronoun: str | None = None, position: int | None = None) -> Resolution:
    """Run ``model`` on one sentence and return the pointer head's view of its pronoun.

    Raises :class:`~minitransformer.coref.data.UnknownWordError` for words the model never saw
    and :class:`PronounError` when the pronoun to resolve is missing or ambiguous.
    """
    tokens = tokenize(sentence) if isinstance(sentence, str) else list(sentence)
    ids = vocabulary.encode(tokens)  # raises UnknownWordError listing every unknown word
    if len(tokens) > model.config.max_len:
        raise SentenceError(f"the sentence has {len(tokens)} tokens; the model reads at most "
                         f"{model.config.max_len}")
    pronoun_position = choose_pronoun(tokens, pronoun, position)
    ids = np.array([ids], dtype=np.int64)  # (1, T): a batch of one, so no padding
    padding_mask = np.zeros(ids.shape, dtype=bool)  # (1, T)
    was_training = model.training
    model.eval()
    model.store_attention(True)
    try:
        with no_grad():
            scores, weights = model(ids, np.array([pronoun_position]), padding_mask)
        attention = [layer_maps[0] for layer_maps in model.encoder_attention()]  # (nh, T, T)
    finally:
        model.store_attention(False)
        model.train(was_training)
    return Resolution(
        tokens=tokens,
        pronoun_position=pronoun_position,
        scores=backend.to_numpy(scores.data)[0].astype(np.float64),
        weights=backend.to_numpy(weights.data)[0].astype(np.float64),
        encoder_attention=attention,
    )
