"""A word-level tokenizer and the vocabulary that maps words to integer ids, shared by the
coreference task (minitransformer.coref) and the tiny GPT's stories (minitransformer.gpt).

    tokenize("The animal didn't cross the street because it was too tired.")
    # ['the', 'animal', "didn't", 'cross', 'the', 'street', 'because', 'it', 'was', 'too', 'tired']

Words are lowercased and punctuation is dropped; an apostrophe or hyphen *inside* a
word keeps it whole ("didn't", "doesn't", "well-known"). The vocabulary is closed: the
toy task has a fixed set of words, so a word outside it is a mistake worth an error,
not an ``<unk>`` that would silently turn every typo into the same token. (The same
closed vocabulary serves the GPT's generated stories.)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

# The article's worked example: "it" must attend to "animal". The coreference task and the
# step-through page both start from it.
ARTICLE_SENTENCE = "The animal didn't cross the street because it was too tired."

PAD = "<pad>"
"""The padding token. It always has id 0, so a zero-filled array is already padded."""

PAD_ID = 0

# A word: letters/digits (any script, no underscore), optionally joined by an inner
# apostrophe or hyphen. Everything else (spaces, . , ! ? ; : quotes ...) separates words.
_WORD = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*")

# Typographic apostrophes are folded into the ASCII one, so "didn’t" == "didn't".
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lowercase words, dropping punctuation."""
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects a str, got {type(text).__name__}")
    return _WORD.findall(text.lower().translate(_APOSTROPHES))


class UnknownWordError(ValueError):
    """Words that are not in the vocabulary. ``.words`` lists them all, in order of appearance."""

    def __init__(self, words: Sequence[str], vocabulary_size: int,
                 known: Sequence[str] = ()):
        import difflib

        self.words = tuple(words)
        listed = ", ".join(
            repr(word) + (f" (closest known: {', '.join(close)})" if close else "")
            for word in self.words
            for close in [difflib.get_close_matches(word, known, n=3, cutoff=0.6)])
        plural = "word is" if len(self.words) == 1 else "words are"
        hint = "; `minitransformer vocab` lists every known word" if known else ""
        super().__init__(
            f"{len(self.words)} {plural} not in the vocabulary ({vocabulary_size} tokens): "
            f"{listed}{hint}"
        )


class Vocabulary:
    """A fixed, ordered list of tokens; a token's id is its index.

    ``tokens[0]`` is always ``<pad>``. Build it from the words it should know:

        vocabulary = Vocabulary(["the", "animal", "it"])
        vocabulary.encode("the animal")   # [1, 2]
        vocabulary.decode([1, 2, 0])      # ['the', 'animal']  (padding dropped)
    """

    def __init__(self, words: Iterable[str]):
        tokens = [PAD]
        for word in words:
            if not isinstance(word, str) or not word or word != word.strip() or " " in word:
                raise ValueError(f"a vocabulary word must be a non-empty str without spaces, "
                                 f"got {word!r}")
            if word != PAD:
                tokens.append(word)
        # dict.fromkeys keeps the first occurrence of each word, in order.
        self._tokens: tuple[str, ...] = tuple(dict.fromkeys(tokens))
        self._ids: dict[str, int] = {word: index for index, word in enumerate(self._tokens)}

    @property
    def tokens(self) -> tuple[str, ...]:
        """All tokens, ``tokens[i]`` being the token with id ``i``."""
        return self._tokens

    @property
    def pad_id(self) -> int:
        return PAD_ID

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, word: object) -> bool:
        return word in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(self._tokens)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    def unknown_words(self, tokens: Sequence[str] | str) -> list[str]:
        """The distinct words of ``tokens`` (or of a tokenized str) missing from the vocabulary."""
        if isinstance(tokens, str):
            tokens = tokenize(tokens)
        missing = [word for word in tokens if word not in self._ids]
        return list(dict.fromkeys(missing))

    def encode(self, tokens: Sequence[str] | str) -> list[int]:
        """Ids of ``tokens``; a str is tokenized first.

        Raises :class:`UnknownWordError` (a ValueError) naming *every* unknown word.
        """
        if isinstance(tokens, str):
            tokens = tokenize(tokens)
        missing = self.unknown_words(tokens)
        if missing:
            raise UnknownWordError(missing, len(self), known=self.tokens[1:])
        return [self._ids[word] for word in tokens]

    def decode(self, ids: Iterable[int], skip_padding: bool = True) -> list[str]:
        """Tokens of ``ids`` (ints or a 1-D integer array); padding is dropped unless asked."""
        words = []
        for raw_id in ids:
            token_id = int(raw_id)
            if not 0 <= token_id < len(self._tokens):
                raise ValueError(f"token id {token_id} is outside the vocabulary "
                                 f"(ids 0..{len(self._tokens) - 1})")
            if skip_padding and token_id == PAD_ID:
                continue
            words.append(self._tokens[token_id])
        return words

    def to_dict(self) -> dict[str, list[str]]:
        """A plain, JSON-friendly form for checkpoints: ``{"tokens": [...]}``."""
        return {"tokens": list(self._tokens)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Vocabulary:
        """Inverse of :meth:`to_dict`; checks that the ids would come back unchanged."""
        tokens = state.get("tokens") if isinstance(state, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(word, str) for word in tokens):
            raise ValueError(f"a vocabulary dict needs 'tokens': a list of str, got {state!r:.200}")
        if not tokens or tokens[0] != PAD:
            raise ValueError(f"the first vocabulary token must be {PAD!r}, got "
                             f"{tokens[0] if tokens else None!r}")
        duplicates = sorted(word for word, count in Counter(tokens).items() if count > 1)
        if duplicates:
            raise ValueError(f"duplicate vocabulary tokens: {duplicates}")
        return cls(tokens[1:])
