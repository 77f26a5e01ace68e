"""A toy language of short stories, made here, with its exact entropy per token.

    <bos> the brown dog met the farmer . he waved . the wind was cold .
          it was too hungry . so the dog rested . <eos>

The generator is a chain of random choices, and it knows, at every token, the exact
probability of every possible next token given the story so far. So the *conditional
entropy* of each token, H(x_t | x_<t) = -sum_w p(w | x_<t) log p(w | x_<t), is computed
exactly, not estimated. Its mean over the validation tokens is the floor on cross-entropy:
no model, however large, can beat it on average (a model that did would know more than
the process that wrote the text). Results can then be stated as "x nats above the floor".

Some tokens depend on a word far back, the story's *antecedent*:

- after ``it was too`` comes an adjective of the noun's kind (a dog is tired, hungry or
  scared; a box is heavy, full or big): ``it`` is the noun of the first sentence, 10 to
  25 tokens back, with a person and filler sentences in between;
- after ``so the`` comes that noun again, exactly;
- after the first sentence, ``he`` or ``she`` agrees with the person met.

A bigram model (the previous token only) cannot know any of these; attention can look
back for them. :func:`dependent_kind` names such positions, and the accuracy on them
(is the model's most likely token one the generator could have written there?) is the
test that a model really uses the far-back word.

Every latent choice is visible in the tokens that follow it (a noun's kind from the noun,
the number of filler sentences so far by counting them), so the state of the generator
after any prefix is a function of the prefix, and the distributions below are the true
conditionals p(x_t | x_<t), not approximations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from minitransformer.tokenizer import PAD, PAD_ID, Vocabulary

BOS = "<bos>"
EOS = "<eos>"

KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # kind: (nouns, the adjectives that may follow "it was too" for them)
    "animal": (("dog", "cat", "horse", "cow", "fox"), ("tired", "hungry", "scared")),
    "thing": (("box", "bag", "suitcase", "trunk"), ("heavy", "full", "big")),
    "machine": (("truck", "car", "boat", "train"), ("slow", "loud", "old")),
}
COLOURS = ("brown", "black", "white", "red")
VERBS = ("met", "saw", "passed")
PEOPLE = {"he": ("man", "farmer", "boy", "father"), "she": ("woman", "nurse", "girl", "mother")}
ACTIONS = ("smiled", "waved", "laughed")
FILLERS = ("the sky was grey", "the wind was cold", "the road was quiet", "the sun went down",
           "a bird sang", "time passed")
MAX_FILLERS = 2
ENDINGS = ("stayed", "rested", "waited")

Distribution = dict[str, float]


@dataclass
class Story:
    """One story: its tokens (from ``<bos>`` to ``<eos>``), and for every token after the
    first the exact distribution it was drawn from, given all the tokens before it."""

    tokens: list[str]
    distributions: list[Distribution]  # distributions[i] is p(tokens[i + 1] | tokens[:i + 1])
    noun: str
    person: str

    @property
    def text(self) -> str:
        return " ".join(self.tokens[1:-1])

    def entropies(self) -> np.ndarray:
        """H(x_{t+1} | x_<=t) in nats for every predicted position, shape (len(tokens) - 1,)."""
        return np.array([entropy(d) for d in self.distributions])

    def log_likelihoods(self) -> np.ndarray:
        """log p(x_{t+1} | x_<=t) of the tokens actually drawn, shape (len(tokens) - 1,)."""
        return np.array([math.log(d[w]) for d, w in zip(self.distributions, self.tokens[1:])])


def entropy(distribution: Distribution) -> float:
    """-sum p log p in nats (terms with p = 0 contribute 0)."""
    return -sum(p * math.log(p) for p in distribution.values() if p > 0)


def _choose(options: Sequence[tuple[tuple[str, ...], float]], rng: np.random.Generator,
            out: Story) -> int:
    """Draw one of several word sequences with the given probabilities, append its words to
    ``out`` with the exact distribution of each word given the words before it, and return
    the index drawn.

    Options may share first words ("the sky ...", "the wind ..."): the distribution of the
    next word is then the total probability of the options still possible, grouped by their
    next word (a walk down a trie). No option may be a prefix of another, so once an
    option's last word is out, which option was drawn is known.
    """
    index = 0
    if len(options) > 1:  # one option: nothing to draw
        cumulative = np.cumsum([p for _, p in options])
        index = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], "right")),
                    len(options) - 1)
    chosen = options[index][0]
    for depth, word in enumerate(chosen):
        alive = [(words, p) for words, p in options if words[:depth] == chosen[:depth]]
        total = sum(p for _, p in alive)
        distribution: Distribution = {}
        for words, p in alive:
            distribution[words[depth]] = distribution.get(words[depth], 0.0) + p / total
        out.distributions.append(distribution)
        out.tokens.append(word)
    return index


def _say(words: str, out: Story) -> None:
    """Words the story must contain here: each has probability 1."""
    for word in words.split():
        out.distributions.append({word: 1.0})
        out.tokens.append(word)


def _uniform(words: Sequence[str]) -> list[tuple[tuple[str, ...], float]]:
    return [((w,), 1.0 / len(words)) for w in words]


ALL_NOUNS = tuple(noun for nouns, _ in KINDS.values() for noun in nouns)
KIND_OF = {noun: kind for kind, (nouns, _) in KINDS.items() for noun in nouns}
GENDER_OF = {person: pronoun for pronoun, people in PEOPLE.items() for person in people}
ALL_PEOPLE = tuple(GENDER_OF)


def generate_story(rng: np.random.Generator) -> Story:
    """One story, drawn with ``rng``, with its exact per-token distributions."""
    story = Story(tokens=[BOS], distributions=[], noun="", person="")
    _say("the", story)
    # an optional colour: half the stories say "the brown dog", half "the dog"
    colour_or_noun = [((c,), 0.5 / len(COLOURS)) for c in COLOURS]
    colour_or_noun += [((n,), 0.5 / len(ALL_NOUNS)) for n in ALL_NOUNS]
    if _choose(colour_or_noun, rng, story) < len(COLOURS):
        _choose(_uniform(ALL_NOUNS), rng, story)
    story.noun = story.tokens[-1]
    _choose(_uniform(VERBS), rng, story)
    _say("the", story)
    _choose(_uniform(ALL_PEOPLE), rng, story)
    story.person = story.tokens[-1]
    _say(".", story)
    _say(GENDER_OF[story.person], story)  # he or she: agrees with the person
    _choose(_uniform(ACTIONS), rng, story)
    _say(".", story)
    # 0 to MAX_FILLERS filler sentences, their number uniform: after k of them, the story
    # goes on to "it" with probability 1 / (MAX_FILLERS + 1 - k)
    for k in range(MAX_FILLERS + 1):
        stop = 1.0 / (MAX_FILLERS + 1 - k)
        options = [(("it",), stop)]
        if k < MAX_FILLERS:
            options += [(tuple(f.split()) + (".",), (1 - stop) / len(FILLERS)) for f in FILLERS]
        if _choose(options, rng, story) == 0:
            break
    _say("was too", story)  # "it" is already out
    _choose(_uniform(KINDS[KIND_OF[story.noun]][1]), rng, story)  # depends on the noun
    _say(". so the", story)
    _say(story.noun, story)  # the noun again
    _choose(_uniform(ENDINGS), rng, story)
    _say(". " + EOS, story)
    return story


def dependent_kind(tokens: Sequence[str], position: int) -> str | None:
    """Which far-back word ``tokens[position]`` depends on: "adjective" (after "it was
    too": the noun's kind), "noun" (after "so the": the noun itself), "pronoun" (he/she:
    the person's gender), or None for every other token."""
    if position >= 3 and tuple(tokens[position - 3 : position]) == ("it", "was", "too"):
        return "adjective"
    if position >= 2 and tuple(tokens[position - 2 : position]) == ("so", "the"):
        return "noun"
    if tokens[position] in PEOPLE and position >= 1 and tokens[position - 1] == ".":
        return "pronoun"
    return None


def build_vocabulary() -> Vocabulary:
    """Every token the generator can write, sorted after ``<pad>``, ``<bos>``, ``<eos>``."""
    words = {"the", ".", "it", "was", "too", "so", *COLOURS, *VERBS, *ACTIONS, *ENDINGS,
             *ALL_NOUNS, *ALL_PEOPLE, *PEOPLE}
    for _, adjectives in KINDS.values():
        words.update(adjectives)
    for filler in FILLERS:
        words.update(filler.split())
    return Vocabulary([BOS, EOS, *sorted(words)])


@dataclass
class StoryData:
    """Training and validation stories, encoded, with the exact floor of the validation set.

    ``train_ids``/``val_ids`` (N, T + 1): ``<bos>`` story ``<eos>``, then ``<pad>`` (id 0).
    A model reads ``ids[:, :-1]`` and predicts ``ids[:, 1:]``; padding is not scored.
    """

    vocabulary: Vocabulary
    train: list[Story]
    val: list[Story]
    train_ids: np.ndarray = field(repr=False)
    val_ids: np.ndarray = field(repr=False)

    @property
    def floor(self) -> float:
        """Mean exact conditional entropy over the validation tokens, in nats per token."""
        return float(np.mean(np.concatenate([s.entropies() for s in self.val])))

    @property
    def oracle_cross_entropy(self) -> float:
        """The generator's own cross-entropy on the validation tokens (the floor's sample)."""
        return float(-np.mean(np.concatenate([s.log_likelihoods() for s in self.val])))

    def dependent_positions(self) -> list[tuple[int, int, str]]:
        """(story, target position, kind) of every antecedent-dependent validation target;
        target position p is the prediction for ``val_ids[story, p + 1]``."""
        found = []
        for index, story in enumerate(self.val):
            for position in range(1, len(story.tokens)):
                kind = dependent_kind(story.tokens, position)
                if kind is not None:
                    found.append((index, position - 1, kind))
        return found


def encode(stories: Sequence[Story], vocabulary: Vocabulary, length: int) -> np.ndarray:
    """Stories as ids (N, length), padded with ``<pad>`` = 0."""
    ids = np.full((len(stories), length), PAD_ID, dtype=np.int64)
    for row, story in enumerate(stories):
        if len(story.tokens) > length:
            raise ValueError(f"a story of {len(story.tokens)} tokens does not fit in {length}")
        ids[row, : len(story.tokens)] = vocabulary.encode(story.tokens)
    return ids


MAX_TOKENS = 2 + 3 + 4 + 3 + MAX_FILLERS * 5 + 5 + 5 + 1  # longest story, <bos> to <eos>


def make_stories(seed: int = 0, train_size: int = 3000, val_size: int = 500) -> StoryData:
    """``train_size`` + ``val_size`` stories from ``seed`` (the same seed, the same data)."""
    rng = np.random.default_rng(seed)
    stories = [generate_story(rng) for _ in range(train_size + val_size)]
    vocabulary = build_vocabulary()
    length = max(len(s.tokens) for s in stories)
    assert length <= MAX_TOKENS, (length, MAX_TOKENS)
    return StoryData(vocabulary, stories[:train_size], stories[train_size:],
                     encode(stories[:train_size], vocabulary, MAX_TOKENS),
                     encode(stories[train_size:], vocabulary, MAX_TOKENS))


def bigram_cross_entropy(data: StoryData, alpha: float = 0.01) -> dict[str, float]:
    """A bigram model (counts of next token given the previous one, add-``alpha``
    smoothed) fitted on the training stories: its validation cross-entropy, and its
    accuracy on the antecedent-dependent tokens. The baseline without attention."""
    V = len(data.vocabulary)
    counts = np.full((V, V), alpha)
    prev, nxt = data.train_ids[:, :-1].ravel(), data.train_ids[:, 1:].ravel()
    keep = nxt != PAD_ID
    np.add.at(counts, (prev[keep], nxt[keep]), 1.0)
    log_probs = np.log(counts / counts.sum(axis=1, keepdims=True))  # (V, V)
    vp, vn = data.val_ids[:, :-1], data.val_ids[:, 1:]
    scored = vn != PAD_ID
    cross_entropy = float(-log_probs[vp[scored], vn[scored]].mean())
    predicted = log_probs[vp].argmax(axis=-1)  # (N, T)
    return {"cross_entropy": cross_entropy,
            **dependent_accuracy(data, predicted)}


def dependent_accuracy(data: StoryData, predicted: np.ndarray) -> dict[str, float]:
    """The share of antecedent-dependent targets where ``predicted`` (N, T) ids are a token
    the generator could have written there (probability > 0), overall and per kind."""
    right: dict[str, list[bool]] = {"adjective": [], "noun": [], "pronoun": []}
    for story, position, kind in data.dependent_positions():
        word = data.vocabulary.tokens[int(predicted[story, position])]
        right[kind].append(data.val[story].distributions[position].get(word, 0.0) > 0)
    every = [r for values in right.values() for r in values]
    result = {"dependent_accuracy": float(np.mean(every)) if every else float("nan")}
    result.update({f"{kind}_accuracy": float(np.mean(v)) for kind, v in right.items() if v})
    return result


__all__ = [
    "BOS", "EOS", "PAD", "Story", "StoryData", "bigram_cross_entropy", "build_vocabulary",
    "dependent_accuracy", "dependent_kind", "encode", "entropy", "generate_story",
    "make_stories",
]
