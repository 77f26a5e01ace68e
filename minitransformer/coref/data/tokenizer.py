"""The coreference task's tokens: the shared word-level tokenizer
(:mod:`minitransformer.tokenizer`, re-exported here so this import path keeps working) and
the pronouns whose antecedent the task asks for.

    tokenize("The animal didn't cross the street because it was too tired.")
    # ['the', 'animal', "didn't", 'cross', 'the', 'street', 'because', 'it', 'was', 'too', 'tired']
    find_pronouns("The animal didn't cross the street because it was too tired.")  # [7]
"""

from __future__ import annotations

from collections.abc import Sequence

from minitransformer.tokenizer import PAD, PAD_ID, UnknownWordError, Vocabulary, tokenize

__all__ = ["PAD", "PAD_ID", "PRONOUNS", "UnknownWordError", "Vocabulary", "find_pronouns",
           "tokenize"]

PRONOUNS = frozenset({"it", "they", "he", "she"})
"""The pronouns whose antecedent the coreference task asks for."""


def find_pronouns(tokens: Sequence[str] | str) -> list[int]:
    """Positions of the pronouns (it, they, he, she) in ``tokens`` (or in a tokenized str)."""
    if isinstance(tokens, str):
        tokens = tokenize(tokens)
    return [position for position, word in enumerate(tokens) if word.lower() in PRONOUNS]
