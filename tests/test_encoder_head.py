"""The encoder-head variant of the coreference model (coref/encoder_head.py)."""

from __future__ import annotations

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.coref.data import iterate_batches, make_dataset
from minitransformer.coref.encoder_head import LOG_FLOOR, EncoderHeadModel, results_markdown
from minitransformer.coref.models.coref import CorefConfig


def _batch():
    data = make_dataset(seed=0, train_size=8, test_size=4)
    return data, next(iterate_batches(data.train, data.vocabulary, 8))


@pytest.mark.parametrize("head", [0, 1])
def test_scores_are_the_log_of_the_last_layers_head_row(head: int) -> None:
    data, batch = _batch()
    mt.manual_seed(0)
    model = EncoderHeadModel(CorefConfig(vocab_size=len(data.vocabulary), d_model=8,
                                         dim_feedforward=16), head=head)
    assert not hasattr(model, "pointer") and "pointer" not in dict(model.named_parameters())
    model.store_attention(True)
    scores, weights = model(batch["ids"], batch["pronoun"], batch["padding_mask"])
    last = model.encoder_attention()[-1]  # (B, nh, T, T)
    rows = np.arange(len(batch["label"]))
    expected = last[rows, head, batch["pronoun"]]  # (B, T)
    assert np.allclose(weights.detach().numpy(), expected)
    assert np.allclose(scores.detach().numpy(), np.log(expected + LOG_FLOOR), atol=1e-5)
    assert np.allclose(expected[batch["padding_mask"]], 0)


def test_the_loss_trains_every_layer_through_the_head() -> None:
    data, batch = _batch()
    mt.manual_seed(0)
    model = EncoderHeadModel(CorefConfig(vocab_size=len(data.vocabulary), d_model=8,
                                         dim_feedforward=16))
    scores, _ = model(batch["ids"], batch["pronoun"], batch["padding_mask"])
    mt.functional.cross_entropy(scores, mt.tensor(batch["label"])).backward()
    params = dict(model.named_parameters())
    for name in ("embedding.weight", "encoder.layers.0.linear1.weight",
                 "encoder.layers.1.self_attn.q_proj.weight"):
        assert params[name].grad is not None and np.abs(params[name].grad.numpy()).sum() > 0
    # the last layer's feed-forward half is not run: nothing reaches it
    assert params["encoder.layers.1.linear1.weight"].grad is None


def test_head_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="head must be in 0..1"):
        EncoderHeadModel(CorefConfig(vocab_size=10, d_model=8), head=2)


def test_results_markdown_has_both_models() -> None:
    run_result = {"test_accuracy": 0.5, "last_layer_per_head": [0.5, 0.1],
                  "last_layer_any_head": 0.55, "chance": 0.05, "seconds": 1.0,
                  "accuracy_by_distance": {"1-5": {"accuracy": 0.5, "count": 2},
                                           "6+": {"accuracy": None, "count": 0}}}
    results = {"config": {"train_size": 8, "test_size": 4, "max_distractors": 0, "epochs": 1,
                          "d_model": 8},
               "runs": [{"seed": 0, "pointer head": run_result, "encoder head": run_result}]}
    text = results_markdown(results)
    assert "| 0 | pointer head | 50.0% | 50.0% | 10.0% | 55.0% | 5.0% |" in text
    assert "| 0 | encoder head | 50.0% | - |" in text  # the empty bucket, by distance
