"""The toy coreference task: sentences in which a single word decides what a pronoun means.

    the animal didn't cross the street because it was too tired   ->  "it" is the animal
    the animal didn't cross the street because it was too wide    ->  "it" is the street

Every sentence comes from a :class:`Family` (after the Winograd schemas): a template with two
candidate nouns, A and B, a pronoun, and a *switch* word at the end. The switch word alone
decides whether the pronoun means A or B, so the label cannot be guessed from word order:
a model must relate the pronoun to the switch word and to both nouns, which is what
self-attention is meant to learn.

*Distractors* push the antecedent away from the pronoun and add competing nouns:

    the brown dog near the house by the lake didn't cross the road that morning
        because it was too tired

The label is the position of the antecedent's head noun ("dog" above), never of a distractor.

Train and test use disjoint (A, B) noun pairs: a test sentence such as "the horse ... the
bridge" pairs two nouns that each occur in training, but never together. Which pairs are held
out depends only on the seed (not on sizes or distractors), so a model trained at one
distractor setting can be tested at another on the same unseen pairs.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from minitransformer.coref.data.tokenizer import PRONOUNS, Vocabulary, find_pronouns

# The sentence of the famous attention figure: "it" should attend to "animal" (defined with
# the shared tokenizer, where the step-through page reads it too).
from minitransformer.tokenizer import ARTICLE_SENTENCE as ARTICLE_SENTENCE  # re-exported

ARTICLE_SENTENCE_WIDE = "The animal didn't cross the street because it was too wide."
"""Its twin: one word changed, and "it" should now attend to "street"."""

# ----------------------------------------------------------------------------- distractors
# None of these words may be a candidate noun or a switch word (checked in the tests):
# a distractor must never carry the answer.

COLOURS = ("brown", "black", "white", "red")
"""Adjectives put before a (non-human) candidate noun: "the brown dog"."""

PEOPLE_ADJECTIVES = ("tall", "quiet", "local")
"""Adjectives put before a human candidate noun: "the local officials"."""

PREPOSITIONS = ("near", "from", "by", "behind", "beside")
PLACES = ("house", "farm", "lake", "park", "barn", "village", "garden", "hill")
"""A phrase after a candidate noun is ``<preposition> the <place>``: "near the house"."""

FILLERS = (
    "that morning",
    "last week",
    "on a cold day",
    "after the long storm",
    "early in the evening",
    "even though the weather was nice",
    "during a quiet afternoon in the valley",
)
"""Clauses put between the main clause and "because" (at most one per sentence)."""


# --------------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    """A sentence template with two candidate nouns and a switch word.

    ``template`` is words separated by spaces, with the placeholders ``{A}``, ``{B}`` and
    ``{switch}``, the word ``because``, and one pronoun after it. A word of ``a_switches``
    makes the pronoun refer to A, a word of ``b_switches`` to B.
    """

    name: str
    template: str
    a_nouns: tuple[str, ...]
    b_nouns: tuple[str, ...]
    a_switches: tuple[str, ...]
    b_switches: tuple[str, ...]
    adjectives: tuple[str, ...] = COLOURS

    def __post_init__(self) -> None:
        words = self.template.split()
        for placeholder in ("{A}", "{B}", "{switch}", "because"):
            if words.count(placeholder) != 1:
                raise ValueError(f"family {self.name!r}: the template needs exactly one "
                                 f"{placeholder!r}: {self.template!r}")
        if not words.index("{A}") < words.index("{B}") < words.index("because"):
            raise ValueError(f"family {self.name!r}: the template must read {{A}} ... {{B}} "
                             f"... because ...: {self.template!r}")
        pronouns = find_pronouns(words)
        if len(pronouns) != 1 or pronouns[0] < words.index("because"):
            raise ValueError(f"family {self.name!r}: the template needs exactly one pronoun, "
                             f"after 'because': {self.template!r}")
        if set(self.a_nouns) & set(self.b_nouns):
            raise ValueError(f"family {self.name!r}: nouns both A and B: "
                             f"{sorted(set(self.a_nouns) & set(self.b_nouns))}")
        if set(self.a_switches) & set(self.b_switches):
            raise ValueError(f"family {self.name!r}: switch words both A and B: "
                             f"{sorted(set(self.a_switches) & set(self.b_switches))}")
        if not (self.a_nouns and self.b_nouns and self.a_switches and self.b_switches):
            raise ValueError(f"family {self.name!r}: every noun and switch list needs a word")

    @property
    def switches(self) -> tuple[str, ...]:
        return self.a_switches + self.b_switches

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Every (A, B) noun pair, A-major."""
        return [(a, b) for a in self.a_nouns for b in self.b_nouns]

    @property
    def words(self) -> set[str]:
        """Every word this family can produce, distractors excluded."""
        template_words = {w for w in self.template.split() if not w.startswith("{")}
        return (template_words | set(self.a_nouns) | set(self.b_nouns) | set(self.switches)
                | set(self.adjectives))

    def refers_to_a(self, switch: str) -> bool:
        """Whether ``switch`` makes the pronoun refer to A (else to B)."""
        if switch not in self.switches:
            raise ValueError(f"{switch!r} is not a switch word of family {self.name!r}; "
                             f"those are {list(self.switches)}")
        return switch in self.a_switches


CROSS = Family(
    name="cross",
    template="the {A} didn't cross the {B} because it was too {switch}",
    a_nouns=("animal", "dog", "cat", "horse", "cow"),
    b_nouns=("street", "road", "river", "bridge"),
    a_switches=("tired", "scared", "old", "lazy"),
    b_switches=("wide", "busy", "icy", "crowded"),
)
FIT = Family(
    name="fit",
    template="the {A} doesn't fit in the {B} because it is too {switch}",
    a_nouns=("trophy", "ball", "book", "laptop"),
    b_nouns=("suitcase", "box", "bag", "drawer"),
    a_switches=("big", "large"),
    b_switches=("small", "tiny"),
)
PERMIT = Family(
    name="permit",
    template="the {A} refused the {B} a permit because they {switch} violence",
    a_nouns=("councilmen", "officials", "mayors"),
    b_nouns=("demonstrators", "protesters", "marchers"),
    a_switches=("feared",),
    b_switches=("advocated",),
    adjectives=PEOPLE_ADJECTIVES,
)
CATCH = Family(
    name="catch",
    template="the {A} caught the {B} because it was {switch}",
    a_nouns=("fox", "wolf", "hawk", "owl", "cat"),
    b_nouns=("mouse", "rabbit", "squirrel", "chicken"),
    a_switches=("hungry", "fast", "quick"),
    b_switches=("slow", "injured", "sleepy"),
)
LIFT_HE = Family(
    name="lift_he",
    template="the {A} couldn't lift the {B} because he was too {switch}",
    a_nouns=("man", "father", "farmer", "grandfather"),
    b_nouns=("boy", "son"),
    a_switches=("weak", "old"),
    b_switches=("heavy", "fat"),
    adjectives=PEOPLE_ADJECTIVES,
)
LIFT_SHE = Family(
    name="lift_she",
    template="the {A} couldn't lift the {B} because she was too {switch}",
    a_nouns=("woman", "mother", "nurse"),
    b_nouns=("girl", "daughter"),
    a_switches=("weak", "old"),
    b_switches=("heavy", "fat"),
    adjectives=PEOPLE_ADJECTIVES,
)

FAMILIES: tuple[Family, ...] = (CROSS, FIT, PERMIT, CATCH, LIFT_HE, LIFT_SHE)
"""All families, the first three being the classic Winograd schemas."""


def get_family(name: str) -> Family:
    """The family called ``name``."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ValueError(f"unknown family {name!r}; the families are "
                     f"{[family.name for family in FAMILIES]}")


def _resolve_families(families: Sequence[Family | str] | None) -> tuple[Family, ...]:
    if families is None:
        return FAMILIES
    resolved = tuple(get_family(f) if isinstance(f, str) else f for f in families)
    if not resolved:
        raise ValueError("families must not be empty")
    names = [family.name for family in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"family names must be unique, got {names}")
    return resolved


def build_vocabulary(families: Sequence[Family | str] | None = None) -> Vocabulary:
    """Every word the generator can produce, for all of ``FAMILIES`` plus any extra ``families``.

    Sorted, so it depends on nothing but the word lists (not on a seed or a setting).
    """
    words = set(PRONOUNS) | set(PREPOSITIONS) | set(PLACES) | {"the"}
    words.update(word for filler in FILLERS for word in filler.split())
    for family in FAMILIES + _resolve_families(families):
        words |= family.words
    return Vocabulary(sorted(words))


# --------------------------------------------------------------------------------- examples


@dataclass
class Example:
    """One sentence with its pronoun and the position of the pronoun's antecedent.

    ``label`` and ``candidates`` are positions in ``tokens`` of *head nouns*;
    ``candidates`` is (A, B) in sentence order, and ``label`` is one of them.
    ``distance`` is ``pronoun_position - label``: how many tokens back the answer lies.
    """

    tokens: list[str]
    pronoun_position: int
    label: int
    family: str
    switch_word: str
    candidates: tuple[int, int]
    distance: int = field(init=False)

    def __post_init__(self) -> None:
        if self.label not in self.candidates:
            raise ValueError(f"label {self.label} is not one of the candidates {self.candidates}")
        self.distance = self.pronoun_position - self.label

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    @property
    def pronoun(self) -> str:
        return self.tokens[self.pronoun_position]

    @property
    def antecedent(self) -> str:
        return self.tokens[self.label]

    @property
    def pair(self) -> tuple[str, str]:
        """The candidate nouns (A, B)."""
        return self.tokens[self.candidates[0]], self.tokens[self.candidates[1]]


@dataclass
class _Distractors:
    """Where the distractors of one sentence go. Keys "A"/"B" name the candidate noun."""

    adjectives: dict[str, str | None] = field(default_factory=lambda: {"A": None, "B": None})
    phrases: dict[str, list[str]] = field(default_factory=lambda: {"A": [], "B": []})
    filler: str | None = None


def _draw_distractors(count: int, family: Family, rng: np.random.Generator) -> _Distractors:
    """Spread ``count`` distractors over the open slots, uniformly at random.

    The slots do not depend on which noun is the answer, so where the distractors sit
    says nothing about the label. Adjective and filler slots take one distractor each;
    phrases stack without limit ("near the house by the lake ..."), so any count fits.
    """
    drawn = _Distractors()
    for _ in range(count):
        open_slots = [("phrase", "A"), ("phrase", "B")]
        open_slots += [("adjective", n) for n in ("A", "B") if drawn.adjectives[n] is None]
        if drawn.filler is None:
            open_slots.append(("filler", None))
        kind, noun = open_slots[rng.integers(len(open_slots))]
        if kind == "adjective":
            drawn.adjectives[noun] = family.adjectives[rng.integers(len(family.adjectives))]
        elif kind == "phrase":
            preposition = PREPOSITIONS[rng.integers(len(PREPOSITIONS))]
            place = PLACES[rng.integers(len(PLACES))]
            drawn.phrases[noun].append(f"{preposition} the {place}")
        else:
            drawn.filler = FILLERS[rng.integers(len(FILLERS))]
    return drawn


def make_example(family: Family | str, a: str, b: str, switch: str, *, distractors: int = 0,
                 rng: np.random.Generator | None = None) -> Example:
    """The sentence of ``family`` with nouns ``a``, ``b`` and ``switch``, plus distractors.

        make_example("cross", "animal", "street", "tired").text
        # "the animal didn't cross the street because it was too tired"
    """
    family = get_family(family) if isinstance(family, str) else family
    if a not in family.a_nouns or b not in family.b_nouns:
        raise ValueError(f"({a!r}, {b!r}) is not a noun pair of family {family.name!r}: "
                         f"A is one of {list(family.a_nouns)}, B one of {list(family.b_nouns)}")
    refers_to_a = family.refers_to_a(switch)
    if distractors < 0:
        raise ValueError(f"distractors must be >= 0, got {distractors}")
    if distractors > 0 and rng is None:
        raise ValueError("distractors > 0 needs a numpy Generator `rng` to place them")
    drawn = _draw_distractors(distractors, family, rng) if distractors else _Distractors()

    tokens: list[str] = []
    positions: dict[str, int] = {}
    for word in family.template.split():
        if word in ("{A}", "{B}"):
            noun_key = word[1]
            if drawn.adjectives[noun_key] is not None:
                tokens.append(drawn.adjectives[noun_key])
            positions[noun_key] = len(tokens)
            tokens.append(a if noun_key == "A" else b)
            for phrase in drawn.phrases[noun_key]:
                tokens.extend(phrase.split())
        elif word == "{switch}":
            tokens.append(switch)
        elif word == "because":
            if drawn.filler is not None:
                tokens.extend(drawn.filler.split())
            tokens.append(word)
        else:
            if word in PRONOUNS:
                positions["pronoun"] = len(tokens)
            tokens.append(word)

    return Example(
        tokens=tokens,
        pronoun_position=positions["pronoun"],
        label=positions["A"] if refers_to_a else positions["B"],
        family=family.name,
        switch_word=switch,
        candidates=(positions["A"], positions["B"]),
    )


def distances(examples: Sequence[Example]) -> np.ndarray:
    """Antecedent-to-pronoun distance in tokens of each example, shape (N,), int64."""
    return np.array([example.distance for example in examples], dtype=np.int64)


# ----------------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class PairSplit:
    """The (A, B) noun pairs of one family that go to training and to the test set."""

    train: tuple[tuple[str, str], ...]
    test: tuple[tuple[str, str], ...]


def split_pairs(family: Family, seed: int, test_fraction: float = 0.25) -> PairSplit:
    """Hold out about ``test_fraction`` of the family's (A, B) pairs for testing.

    A pair is held out only if both of its nouns still occur in some training pair, so
    the test set asks for new *combinations* of known words, never for unknown words.
    The choice depends only on ``seed`` and the family (its name seeds the generator).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    pairs = family.pairs
    rng = np.random.default_rng([seed, zlib.crc32(family.name.encode())])
    wanted = max(1, round(test_fraction * len(pairs)))
    a_uses = {a: len(family.b_nouns) for a in family.a_nouns}  # training pairs per noun
    b_uses = {b: len(family.a_nouns) for b in family.b_nouns}
    held_out = set()
    for index in rng.permutation(len(pairs)):
        if len(held_out) == wanted:
            break
        a, b = pairs[index]
        if a_uses[a] > 1 and b_uses[b] > 1:
            held_out.add((a, b))
            a_uses[a] -= 1
            b_uses[b] -= 1
    if not held_out:
        raise ValueError(f"family {family.name!r} has too few nouns to hold out a pair "
                         f"and still train on every noun")
    return PairSplit(train=tuple(p for p in pairs if p not in held_out),
                     test=tuple(p for p in pairs if p in held_out))


def _sample(count: int, families: tuple[Family, ...],
            pairs: dict[str, tuple[tuple[str, str], ...]], distractor_counts: list[int],
            rng: np.random.Generator) -> list[Example]:
    """``count`` examples: family, pair, side (A or B, half each), switch word and distractor
    count drawn uniformly."""
    examples = []
    for _ in range(count):
        family = families[rng.integers(len(families))]
        a, b = pairs[family.name][rng.integers(len(pairs[family.name]))]
        side = family.a_switches if rng.integers(2) == 0 else family.b_switches
        switch = side[rng.integers(len(side))]
        n_distractors = distractor_counts[rng.integers(len(distractor_counts))]
        examples.append(make_example(family, a, b, switch, distractors=n_distractors, rng=rng))
    return examples


@dataclass
class CorefDataset:
    """Training and test examples, the vocabulary that encodes both, and the held-out pairs."""

    train: list[Example]
    test: list[Example]
    vocabulary: Vocabulary
    test_pairs: dict[str, tuple[tuple[str, str], ...]]


def make_dataset(seed: int = 0, distractors: int | Sequence[int] = 0, train_size: int = 2000,
                 test_size: int = 500, families: Sequence[Family | str] | None = None,
                 test_fraction: float = 0.25) -> CorefDataset:
    """Generate the coreference data set, deterministically for a seed.

    distractors: distractors per sentence: an int, or a sequence of ints to draw from
        uniformly per sentence (e.g. ``range(0, 11)`` for a spread of distances).
    families: the families (or their names) to draw from; all of ``FAMILIES`` by default.
    test_fraction: the share of each family's (A, B) pairs held out for testing.

    The held-out pairs depend only on ``seed`` and ``test_fraction``; the vocabulary holds
    every word of every family and distractor, whatever the arguments.
    """
    chosen = _resolve_families(families)
    distractor_counts = [distractors] if np.isscalar(distractors) else list(distractors)
    if not distractor_counts or not all(
            isinstance(n, (int, np.integer)) and n >= 0 for n in distractor_counts):
        raise ValueError(f"distractors must be an int >= 0 or a non-empty sequence of them, "
                         f"got {distractors!r}")
    distractor_counts = [int(n) for n in distractor_counts]
    if train_size < 0 or test_size < 0:
        raise ValueError(f"sizes must be >= 0, got train_size={train_size}, "
                         f"test_size={test_size}")
    splits = {family.name: split_pairs(family, seed, test_fraction) for family in chosen}
    train_pairs = {name: split.train for name, split in splits.items()}
    test_pairs = {name: split.test for name, split in splits.items()}
    # Separate streams, so the test set does not change when train_size does.
    train_rng = np.random.default_rng([seed, 1])
    test_rng = np.random.default_rng([seed, 2])
    return CorefDataset(
        train=_sample(train_size, chosen, train_pairs, distractor_counts, train_rng),
        test=_sample(test_size, chosen, test_pairs, distractor_counts, test_rng),
        vocabulary=build_vocabulary(chosen),
        test_pairs=test_pairs,
    )
