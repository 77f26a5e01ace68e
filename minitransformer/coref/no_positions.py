"""What the coreference model does without positional encodings (docs/embeddings.md).

Without positions, self-attention sees a sentence as a bag of words: permuting the tokens
permutes the encoder's outputs and changes nothing else. "the animal didn't cross the
street because it was too tired" and "the street didn't cross the animal because it was
too tired" hold the same words, so the model gives "animal" the same score in both, while
the answers differ ("animal", then "street"). This trains the default model with the
sinusoidal table set to zero and reports its held-out accuracy, next to the same model
with positions, on the held-out sentences and on the same sentences with the two nouns
swapped (the answer staying in the same grammatical role).

    python -m minitransformer.coref.no_positions     # ~1 min on a quiet 2-core CPU
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

import minitransformer as mt
from minitransformer.coref.compare import CompareConfig, train_model
from minitransformer.coref.data import Example, make_dataset
from minitransformer.coref.models.coref import CorefConfig, CorefModel
from minitransformer.coref.training import TrainConfig, evaluate


def without_positions(model: CorefModel) -> CorefModel:
    """Zero the sinusoidal table in place (it is a buffer, never trained): x + 0 = x."""
    model.positions.pe.data[...] = 0
    return model


def swapped(example: Example) -> Example:
    """The same sentence with its two candidate nouns exchanged, the answer kept at the same
    position (the same grammatical role): a sentence made of exactly the same words."""
    tokens = list(example.tokens)
    a, b = example.candidates
    tokens[a], tokens[b] = tokens[b], tokens[a]
    return Example(tokens, example.pronoun_position, example.label, example.family,
                   example.switch_word, example.candidates)


def run(seed: int = 0, log: Any = print) -> dict[str, dict[str, float]]:
    """Held-out accuracy of the default model with and without positions (same data), on
    the held-out sentences and on the same sentences with their two nouns swapped."""
    train = TrainConfig(seed=seed)
    data = make_dataset(seed=seed, train_size=train.train_size, test_size=train.test_size)
    config = replace(CompareConfig(), seed=seed, epochs=train.epochs, batch_size=train.batch_size,
                     lr=train.lr)
    results = {}
    for name in ("with positions", "without positions"):
        mt.manual_seed(seed)
        model = CorefModel(CorefConfig(vocab_size=len(data.vocabulary)))
        if name == "without positions":
            without_positions(model)
        train_model(model, data, config, log, name)
        results[name] = {
            "held-out": float(evaluate(model, data.test, data.vocabulary).mean()),
            "swapped": float(evaluate(model, [swapped(e) for e in data.test],
                                      data.vocabulary).mean()),
        }
        log(f"{name}: {results[name]}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
