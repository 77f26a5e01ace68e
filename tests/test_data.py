"""The coreference data: tokenizer, vocabulary, generator, splits and batches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minitransformer.coref.data.batching import encode_batch, iterate_batches
from minitransformer.coref.data.coref import (
    ARTICLE_SENTENCE,
    ARTICLE_SENTENCE_WIDE,
    COLOURS,
    FAMILIES,
    FILLERS,
    PEOPLE_ADJECTIVES,
    PLACES,
    PREPOSITIONS,
    Example,
    Family,
    build_vocabulary,
    distances,
    make_dataset,
    make_example,
    split_pairs,
)
from minitransformer.coref.data.tokenizer import (
    PAD,
    PRONOUNS,
    UnknownWordError,
    Vocabulary,
    find_pronouns,
    tokenize,
)

ARTICLE_TOKENS = ["the", "animal", "didn't", "cross", "the", "street", "because", "it", "was",
                  "too", "tired"]


def _all_sentences():
    """Every (family, A, B, switch) combination."""
    return [(family, a, b, switch) for family in FAMILIES for a, b in family.pairs
            for switch in family.switches]


# ---------------------------------------------------------------------------------- tokenizer


def test_tokenize_article_sentence_and_its_twin():
    assert tokenize(ARTICLE_SENTENCE) == ARTICLE_TOKENS
    assert tokenize(ARTICLE_SENTENCE_WIDE) == ARTICLE_TOKENS[:-1] + ["wide"]
    vocabulary = build_vocabulary()
    for sentence in (ARTICLE_SENTENCE, ARTICLE_SENTENCE_WIDE):
        ids = vocabulary.encode(sentence)
        assert len(ids) == 11 and 0 not in ids
        assert vocabulary.decode(ids) == tokenize(sentence)


def test_tokenize_strips_punctuation_and_keeps_contractions():
    text = "\"Well,\" she said; the Dog doesn’t CROSS... it's (really) icy!? Isn't it-so?"
    assert tokenize(text) == ["well", "she", "said", "the", "dog", "doesn't", "cross", "it's",
                              "really", "icy", "isn't", "it-so"]
    assert tokenize("  ,.!?  ") == []
    with pytest.raises(TypeError):
        tokenize(["not", "a", "str"])


def test_find_pronouns():
    assert find_pronouns(ARTICLE_TOKENS) == [7]
    assert find_pronouns("They said he and she saw it.") == [0, 2, 4, 6]
    # Words that merely contain a pronoun are not pronouns.
    assert find_pronouns(["item", "itself", "them", "shed", "the", "hello"]) == []
    assert find_pronouns([]) == []


# --------------------------------------------------------------------------------- vocabulary


def test_vocabulary_ids_and_round_trip():
    vocabulary = Vocabulary(["the", "dog", "it", "dog", PAD])  # duplicates and <pad> dropped
    assert vocabulary.tokens == (PAD, "the", "dog", "it")
    assert len(vocabulary) == 4 and vocabulary.pad_id == 0
    assert vocabulary.encode("The dog, it.") == [1, 2, 3]
    assert vocabulary.encode(["it", "the"]) == [3, 1]
    assert vocabulary.decode([1, 2, 0, 0]) == ["the", "dog"]
    assert vocabulary.decode(np.array([3, 0]), skip_padding=False) == ["it", PAD]
    with pytest.raises(ValueError, match="token id 4"):
        vocabulary.decode([4])


def test_vocabulary_dict_round_trip():
    vocabulary = build_vocabulary()
    state = json.loads(json.dumps(vocabulary.to_dict()))  # plain lists of str survive JSON
    restored = Vocabulary.from_dict(state)
    assert restored == vocabulary
    assert restored.encode(ARTICLE_SENTENCE) == vocabulary.encode(ARTICLE_SENTENCE)
    with pytest.raises(ValueError, match="first vocabulary token"):
        Vocabulary.from_dict({"tokens": ["the", PAD]})
    with pytest.raises(ValueError, match="duplicate.*'dog'"):
        Vocabulary.from_dict({"tokens": [PAD, "dog", "cat", "dog"]})
    with pytest.raises(ValueError, match="list of str"):
        Vocabulary.from_dict({"words": [PAD]})


def test_unknown_words_error_lists_all_of_them():
    vocabulary = build_vocabulary()
    sentence = "The zebra didn't cross the motorway because it was too sleepyish, said zebra."
    with pytest.raises(UnknownWordError) as caught:
        vocabulary.encode(sentence)
    assert isinstance(caught.value, ValueError)
    assert caught.value.words == ("zebra", "motorway", "sleepyish", "said")  # each once, in order
    for word in caught.value.words:
        assert repr(word) in str(caught.value)
    assert vocabulary.unknown_words(ARTICLE_SENTENCE) == []


def test_vocabulary_covers_every_word_and_is_independent_of_settings():
    vocabulary = build_vocabulary()
    assert set(PRONOUNS) <= set(vocabulary.tokens)
    distractor_words = set(COLOURS) | set(PEOPLE_ADJECTIVES) | set(PREPOSITIONS) | set(PLACES)
    distractor_words |= {word for filler in FILLERS for word in filler.split()}
    for family in FAMILIES:
        assert family.words <= set(vocabulary.tokens)
    assert distractor_words <= set(vocabulary.tokens)
    small = make_dataset(seed=3, distractors=1, train_size=5, test_size=5, families=["fit"])
    assert small.vocabulary == vocabulary


def test_distractors_never_carry_the_answer():
    """No distractor word is a candidate noun or a switch word of any family."""
    distractor_words = set(COLOURS) | set(PEOPLE_ADJECTIVES) | set(PREPOSITIONS) | set(PLACES)
    distractor_words |= {word for filler in FILLERS for word in filler.split()}
    answer_words = set()
    for family in FAMILIES:
        answer_words |= set(family.a_nouns) | set(family.b_nouns) | set(family.switches)
    assert not distractor_words & answer_words
    assert not distractor_words & PRONOUNS


# ---------------------------------------------------------------------------------- examples


def test_article_sentences_as_examples():
    tired = make_example("cross", "animal", "street", "tired")
    assert tired.tokens == ARTICLE_TOKENS
    assert (tired.pronoun_position, tired.label, tired.candidates) == (7, 1, (1, 5))
    assert tired.antecedent == "animal" and tired.distance == 6
    wide = make_example("cross", "animal", "street", "wide")
    assert wide.tokens == tokenize(ARTICLE_SENTENCE_WIDE)
    assert wide.antecedent == "street" and wide.label == 5 and wide.distance == 2


@pytest.mark.parametrize("distractors", [0, 3, 9])
def test_every_label_points_at_the_right_noun(distractors):
    rng = np.random.default_rng(distractors)
    vocabulary = build_vocabulary()
    for family, a, b, switch in _all_sentences():
        example = make_example(family, a, b, switch, distractors=distractors, rng=rng)
        tokens = example.tokens
        expected = a if switch in family.a_switches else b
        # Located independently of the generator: each noun occurs once in its sentence.
        assert tokens.count(a) == 1 and tokens.count(b) == 1
        assert example.candidates == (tokens.index(a), tokens.index(b))
        assert tokens[example.label] == expected, example.text
        assert find_pronouns(tokens) == [example.pronoun_position]
        assert example.pronoun_position > example.candidates[1]
        assert tokens[-1] == switch or tokens[-2:] == [switch, "violence"]
        assert example.family == family.name and example.switch_word == switch
        assert tokenize(example.text) == tokens
        vocabulary.encode(tokens)  # no unknown word


def test_both_switch_directions_in_every_family():
    for family in FAMILIES:
        a, b = family.pairs[0]
        assert make_example(family, a, b, family.a_switches[0]).antecedent == a
        assert make_example(family, a, b, family.b_switches[0]).antecedent == b


def test_make_example_rejects_bad_arguments():
    with pytest.raises(ValueError, match="noun pair"):
        make_example("cross", "street", "animal", "tired")
    with pytest.raises(ValueError, match="'wide'.*switch word of family 'fit'"):
        make_example("fit", "ball", "box", "wide")
    with pytest.raises(ValueError, match="unknown family 'swim'"):
        make_example("swim", "a", "b", "c")
    with pytest.raises(ValueError, match="needs a numpy Generator"):
        make_example("cross", "dog", "road", "tired", distractors=2)
    with pytest.raises(ValueError, match=">= 0"):
        make_example("cross", "dog", "road", "tired", distractors=-1)
    with pytest.raises(ValueError, match="not one of the candidates"):
        Example(tokens=["a", "b"], pronoun_position=1, label=1, family="x", switch_word="y",
                candidates=(0, 0))


def test_family_checks_its_template():
    with pytest.raises(ValueError, match="because"):
        Family("bad", "the {A} saw the {B} so it was {switch}", ("x",), ("y",), ("p",), ("q",))
    with pytest.raises(ValueError, match="pronoun"):
        Family("bad", "the {A} saw the {B} because x was {switch}", ("x",), ("y",), ("p",),
               ("q",))
    with pytest.raises(ValueError, match="both A and B"):
        Family("bad", "the {A} saw the {B} because it was {switch}", ("x",), ("x",), ("p",),
               ("q",))


# -------------------------------------------------------------------------------- distractors


def test_distractors_increase_distance_and_reach_30_tokens():
    mean_distances, mean_b_distances = [], []
    for count in (0, 2, 4, 8, 12):
        data = make_dataset(seed=0, distractors=count, train_size=400, test_size=0)
        distance = distances(data.train)
        np.testing.assert_array_equal(
            distance, [e.pronoun_position - e.label for e in data.train])
        mean_distances.append(distance.mean())
        # Distractors also land between B and the pronoun, not only after A.
        refers_to_b = np.array([e.label == e.candidates[1] for e in data.train])
        mean_b_distances.append(distance[refers_to_b].mean())
        if count == 0:
            assert distance.max() <= 7
        if count == 12:
            assert distance.max() >= 30
            assert (distance >= 30).mean() > 0.2
            assert distance[refers_to_b].mean() > 15  # phrases stack after B too
    assert all(np.diff(mean_distances) > 0), mean_distances
    assert all(np.diff(mean_b_distances) > 0), mean_b_distances


def test_distractors_only_insert_words():
    """A sentence with distractors is the plain sentence with words inserted, never changed."""
    rng = np.random.default_rng(1)
    for family, a, b, switch in _all_sentences()[::7]:
        plain = make_example(family, a, b, switch)
        padded = make_example(family, a, b, switch, distractors=5, rng=rng)
        assert len(padded.tokens) >= len(plain.tokens) + 5  # a distractor is >= 1 word
        remaining = iter(padded.tokens)
        assert all(word in remaining for word in plain.tokens)  # plain is a subsequence
        assert padded.distance >= plain.distance


def test_mixed_distractor_counts_spread_the_distances():
    data = make_dataset(seed=0, distractors=range(0, 13), train_size=600, test_size=0)
    distance = distances(data.train)
    assert distance.min() <= 3 and distance.max() >= 30
    assert len(np.unique(distance)) > 20
    with pytest.raises(ValueError, match="distractors"):
        make_dataset(distractors=[1, -2])


# ------------------------------------------------------------------------------------ splits


def test_train_and_test_pairs_are_disjoint():
    data = make_dataset(seed=0, distractors=2, train_size=1500, test_size=500)
    train_pairs = {(e.family, *e.pair) for e in data.train}
    test_pairs = {(e.family, *e.pair) for e in data.test}
    assert train_pairs and test_pairs
    assert not train_pairs & test_pairs
    assert not {e.pair for e in data.train} & {e.pair for e in data.test}
    held_out = {(name, a, b) for name, pairs in data.test_pairs.items() for a, b in pairs}
    assert test_pairs <= held_out and not train_pairs & held_out
    # Every test noun is known from training; only the combination is new.
    train_nouns = {noun for _, a, b in train_pairs for noun in (a, b)}
    assert {noun for _, a, b in test_pairs for noun in (a, b)} <= train_nouns


def test_split_keeps_every_noun_in_training():
    for family in FAMILIES:
        for seed in range(5):
            split = split_pairs(family, seed)
            assert split.test and not set(split.test) & set(split.train)
            assert set(split.test) | set(split.train) == set(family.pairs)
            assert {a for a, _ in split.train} == set(family.a_nouns)
            assert {b for _, b in split.train} == set(family.b_nouns)


def test_held_out_pairs_depend_only_on_the_seed():
    base = make_dataset(seed=4, distractors=0, train_size=10, test_size=10)
    other = make_dataset(seed=4, distractors=7, train_size=50, test_size=3)
    assert base.test_pairs == other.test_pairs
    assert make_dataset(seed=5, train_size=0, test_size=0).test_pairs != base.test_pairs


def test_generation_is_deterministic_per_seed():
    first = make_dataset(seed=7, distractors=3, train_size=200, test_size=100)
    again = make_dataset(seed=7, distractors=3, train_size=200, test_size=100)
    assert first.train == again.train and first.test == again.test
    other = make_dataset(seed=8, distractors=3, train_size=200, test_size=100)
    assert [e.text for e in other.train] != [e.text for e in first.train]
    assert [e.text for e in other.test] != [e.text for e in first.test]


def test_dataset_is_balanced_over_families_and_directions():
    data = make_dataset(seed=0, train_size=1200, test_size=0)
    families = [e.family for e in data.train]
    for family in FAMILIES:
        assert families.count(family.name) > 1200 / len(FAMILIES) / 2
    refers_to_first = np.mean([e.label == e.candidates[0] for e in data.train])
    assert 0.4 < refers_to_first < 0.6


# ----------------------------------------------------------------------------------- batches


def test_encode_batch_pads_and_masks():
    rng = np.random.default_rng(0)
    examples = [make_example("cross", "animal", "street", "tired"),
                make_example("permit", "mayors", "marchers", "advocated", distractors=4, rng=rng),
                make_example("fit", "ball", "box", "tiny", distractors=1, rng=rng)]
    vocabulary = build_vocabulary()
    batch = encode_batch(examples, vocabulary)
    longest = max(len(e.tokens) for e in examples)
    assert batch["ids"].shape == batch["padding_mask"].shape == (3, longest)
    assert batch["ids"].dtype == np.int64 and batch["padding_mask"].dtype == np.bool_
    for key in ("lengths", "pronoun", "label", "distance"):
        assert batch[key].shape == (3,) and batch[key].dtype == np.int64
    assert batch["candidates"].shape == (3, 2)
    for row, example in enumerate(examples):
        length = len(example.tokens)
        assert batch["lengths"][row] == length
        assert not batch["padding_mask"][row, :length].any()
        assert batch["padding_mask"][row, length:].all()
        assert (batch["ids"][row, length:] == 0).all() and (batch["ids"][row, :length] != 0).all()
        assert vocabulary.decode(batch["ids"][row]) == example.tokens
        assert batch["pronoun"][row] == example.pronoun_position
        assert batch["label"][row] == example.label
        assert tuple(batch["candidates"][row]) == example.candidates
        assert batch["distance"][row] == example.distance
    assert batch["padding_mask"].sum() == 3 * longest - sum(len(e.tokens) for e in examples)

    fixed = encode_batch(examples, vocabulary, length=longest + 5)
    assert fixed["ids"].shape == (3, longest + 5) and fixed["padding_mask"][:, longest:].all()
    with pytest.raises(ValueError, match="shorter than the longest"):
        encode_batch(examples, vocabulary, length=longest - 1)
    with pytest.raises(ValueError, match="at least one"):
        encode_batch([], vocabulary)
    with pytest.raises(UnknownWordError, match="'animal'"):
        encode_batch(examples[:1], Vocabulary(["the"]))


def test_iterate_batches_shuffles_deterministically():
    data = make_dataset(seed=0, distractors=range(4), train_size=23, test_size=0)
    vocabulary = data.vocabulary

    def texts(batches):
        return [" ".join(vocabulary.decode(row)) for batch in batches for row in batch["ids"]]

    batches = list(iterate_batches(data.train, vocabulary, 5, rng=np.random.default_rng(1)))
    assert [len(b["ids"]) for b in batches] == [5, 5, 5, 5, 3]
    assert sorted(texts(batches)) == sorted(e.text for e in data.train)  # each example once
    for batch in batches:  # each batch is padded to its own longest sentence
        assert batch["ids"].shape[1] == batch["lengths"].max()
    again = list(iterate_batches(data.train, vocabulary, 5, rng=np.random.default_rng(1)))
    assert texts(again) == texts(batches)
    other = list(iterate_batches(data.train, vocabulary, 5, rng=np.random.default_rng(2)))
    assert texts(other) != texts(batches)
    in_order = list(iterate_batches(data.train, vocabulary, 5))
    assert texts(in_order) == [e.text for e in data.train]
    dropped = list(iterate_batches(data.train, vocabulary, 5, drop_last=True))
    assert [len(b["ids"]) for b in dropped] == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="batch_size"):
        list(iterate_batches(data.train, vocabulary, 0))


def test_the_word_tokenizer_is_shared_and_the_gpt_does_not_import_the_coref_task():
    """minitransformer.tokenizer is the one word-level tokenizer; coref's old import path
    gives the same objects, and importing the GPT loads nothing of the coreference task."""
    import subprocess
    import sys

    import minitransformer.tokenizer as shared

    assert (Vocabulary, tokenize, UnknownWordError, PAD) == (
        shared.Vocabulary, shared.tokenize, shared.UnknownWordError, shared.PAD)
    code = ("import sys, minitransformer.gpt, minitransformer.gpt.training; "
            "print([m for m in sys.modules if m.startswith('minitransformer.coref')])")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"
