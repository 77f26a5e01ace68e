"""Train the coreference model briefly, then ask it what "it" refers to.

The task: in "The animal didn't cross the street because it was too tired", which word
does "it" mean? Change "tired" to "wide" and the answer flips to "street". Word order
cannot decide it; only the relation between the pronoun, the last word and the two nouns
can, which is what attention has to learn.

The model (minitransformer.coref.models.coref) is a small Transformer encoder (token +
position embeddings, self-attention layers) topped by a *pointer head*: one attention
head whose only query is the pronoun. Its softmax weights over the sentence's positions
are the model's answer, trained with cross-entropy against the antecedent's position.
So the table printed at the end is a real attention row, the trained counterpart of the
untrained one in examples/03_attention_step_by_step.py.

Settings here are cut down (1000 sentences, 4 epochs) to finish in seconds; the full
run is `minitransformer train` (see `minitransformer train --help`).

Run:  python examples/06_train_coreference.py
"""

import tempfile

import numpy as np

from minitransformer.coref.data import ARTICLE_SENTENCE, ARTICLE_SENTENCE_WIDE
from minitransformer.coref.models.coref import resolve
from minitransformer.coref.training import TrainConfig, train

# The article's weights for "it" (in %), for comparison with the trained model's.
ARTICLE_WEIGHTS = {"the": 1, "animal": 45, "didn't": 3, "cross": 4, "street": 6,
                   "because": 8, "it": 26, "was": 3, "too": 2, "tired": 7}

config = TrainConfig(
    seed=0,  # data, initial weights and batch order all follow from it
    epochs=4,
    train_size=1000,  # sentences; the test set uses noun pairs never seen in training
    test_size=200,
    d_model=32,
    num_layers=2,
)
print(f"training: {config.train_size} sentences, {config.epochs} epochs, d_model="
      f"{config.d_model}, {config.num_layers} encoder layers, {config.nhead} heads")

with tempfile.TemporaryDirectory() as run_dir:  # checkpoint, metrics.json, curves.png
    result = train(config, run_dir, progress=False, log=lambda line: print("  " + line))
model, vocabulary = result.run.model, result.run.vocabulary

# Chance: the pointer picks one of ~T positions; even knowing the answer is one of the two
# candidate nouns, a coin flip would get 50%.
print(f"held-out accuracy: {result.test_accuracy:.1%}  (guessing between the two nouns: "
      f"50%; uniform over an 11-word sentence: {1 / 11:.0%})")
assert result.test_accuracy > 0.8, "training did not get well above chance"


def show(sentence: str, reference: dict[str, int] | None) -> str:
    """Print the pointer head's row for the pronoun; return the word it points at."""
    answer = resolve(model, vocabulary, sentence)  # one sentence, evaluation mode, no grad
    print(f'\n"{sentence}"')
    header = f"{'token':>9} {'score':>8} {'weight':>8}"
    print(header + (f"   {'article':>7}" if reference else ""))
    seen = set()
    rows = zip(answer.tokens, answer.scores, answer.weights)
    for position, (token, score, weight) in enumerate(rows):
        row = f"{token:>9} {score:8.2f} {100 * weight:7.1f}%"
        if reference:
            # The article's row for a word goes to its first occurrence (the second "the": none).
            ref = None if token in seen else reference.get(token)
            row += f"   {ref:6d}%" if ref is not None else f"   {'-':>7}"
        seen.add(token)
        print(row + ("   <- highest" if position == answer.antecedent_position else ""))
    print(f'"{answer.pronoun}" -> "{answer.antecedent}" '
          f"({100 * float(np.max(answer.weights)):.1f}% of its attention)")
    return answer.antecedent


tired = show(ARTICLE_SENTENCE, ARTICLE_WEIGHTS)
wide = show(ARTICLE_SENTENCE_WIDE, None)
print(f'\ntired -> "{tired}", wide -> "{wide}": one word changed the answer'
      if (tired, wide) == ("animal", "street") else
      f'\ntired -> "{tired}", wide -> "{wide}": this short run did not get both right')
print("The trained head is far surer than the article's illustration (45%): the toy task "
      "is small and every answer is clear-cut.")
