"""Turning examples into padded NumPy batches, and iterating over them in shuffled order.

A batch is a dict of NumPy arrays (the model turns them into tensors):

    ids           (B, T) int64   token ids, 0 (<pad>) after each sentence's end
    padding_mask  (B, T) bool    True at padding: keys attention must ignore
    lengths       (B,)   int64   real tokens per sentence
    pronoun       (B,)   int64   position of the pronoun
    label         (B,)   int64   position of the antecedent's head noun
    candidates    (B, 2) int64   positions of the candidate nouns A and B
    distance      (B,)   int64   label-to-pronoun distance in tokens
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from minitransformer.coref.data.coref import Example
from minitransformer.coref.data.tokenizer import PAD_ID, Vocabulary


def encode_batch(examples: Sequence[Example], vocabulary: Vocabulary,
                 length: int | None = None) -> dict[str, np.ndarray]:
    """Encode and right-pad ``examples`` to the longest one (or to ``length``).

    Raises :class:`~minitransformer.coref.data.tokenizer.UnknownWordError` for words outside
    ``vocabulary``, and ValueError for an empty batch or a ``length`` too short.
    """
    if len(examples) == 0:
        raise ValueError("encode_batch needs at least one example")
    encoded = [vocabulary.encode(example.tokens) for example in examples]
    lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)  # (B,)
    longest = int(lengths.max())
    if length is None:
        length = longest
    elif length < longest:
        raise ValueError(f"length={length} is shorter than the longest sentence "
                         f"({longest} tokens)")

    ids = np.full((len(examples), length), PAD_ID, dtype=np.int64)  # (B, T)
    for row, sentence_ids in enumerate(encoded):
        ids[row, : len(sentence_ids)] = sentence_ids
    # Position t is padding when it lies at or after the sentence's end.
    padding_mask = np.arange(length)[None, :] >= lengths[:, None]  # (1, T) vs (B, 1) -> (B, T)

    return {
        "ids": ids,
        "padding_mask": padding_mask,
        "lengths": lengths,
        "pronoun": np.array([e.pronoun_position for e in examples], dtype=np.int64),
        "label": np.array([e.label for e in examples], dtype=np.int64),
        "candidates": np.array([e.candidates for e in examples], dtype=np.int64).reshape(-1, 2),
        "distance": np.array([e.distance for e in examples], dtype=np.int64),
    }


def iterate_batches(examples: Sequence[Example], vocabulary: Vocabulary, batch_size: int,
                    rng: np.random.Generator | None = None,
                    drop_last: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Yield :func:`encode_batch` batches of ``batch_size`` examples (the last may be smaller).

    With ``rng`` the order is a fresh permutation drawn from it (call again for the next
    epoch: same generator state, same order); without, the examples' own order.
    Each batch is padded only to its own longest sentence.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.arange(len(examples)) if rng is None else rng.permutation(len(examples))
    for start in range(0, len(examples), batch_size):
        indices = order[start : start + batch_size]
        if drop_last and len(indices) < batch_size:
            return
        yield encode_batch([examples[i] for i in indices], vocabulary)
