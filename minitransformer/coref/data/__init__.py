"""The toy coreference task: a word-level tokenizer, a Winograd-style generator, and batching.

    from minitransformer.coref.data import make_dataset, iterate_batches
    data = make_dataset(seed=0, distractors=2)
    for batch in iterate_batches(data.train, data.vocabulary, 32, rng=np.random.default_rng(0)):
        batch["ids"], batch["padding_mask"], batch["pronoun"], batch["label"]
"""

from minitransformer.coref.data.batching import encode_batch, iterate_batches
from minitransformer.coref.data.coref import (
    ARTICLE_SENTENCE,
    ARTICLE_SENTENCE_WIDE,
    FAMILIES,
    CorefDataset,
    Example,
    Family,
    PairSplit,
    build_vocabulary,
    distances,
    get_family,
    make_dataset,
    make_example,
    split_pairs,
)
from minitransformer.coref.data.tokenizer import (
    PAD,
    PAD_ID,
    PRONOUNS,
    UnknownWordError,
    Vocabulary,
    find_pronouns,
    tokenize,
)
