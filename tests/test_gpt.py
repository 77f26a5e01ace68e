"""The tiny GPT, its KV cache, the story language and its exact floor, the trainer."""

from __future__ import annotations

import math
import os
from collections import Counter

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import functional as F
from minitransformer.gpt.model import GPT, GPTConfig, KVCache, sample_next
from minitransformer.gpt.stories import (
    KINDS,
    bigram_cross_entropy,
    dependent_kind,
    entropy,
    generate_story,
    make_stories,
)
from minitransformer.gpt.training import (
    GPTTrainConfig,
    evaluate_gpt,
    load_gpt_run,
    resume_gpt,
    train_gpt,
)
from tests.test_nn import gradcheck_module


# ----------------------------------------------------------------------------- the language
def test_every_distribution_is_exact_and_contains_the_drawn_token():
    rng = np.random.default_rng(0)
    for _ in range(50):
        story = generate_story(rng)
        assert len(story.distributions) == len(story.tokens) - 1
        for distribution, word in zip(story.distributions, story.tokens[1:]):
            assert math.isclose(sum(distribution.values()), 1.0, abs_tol=1e-12)
            assert distribution[word] > 0
        assert story.tokens[0] == "<bos>" and story.tokens[-1] == "<eos>"


def test_claimed_conditionals_match_the_frequencies():
    """Sampled frequencies agree with the distributions the generator claims."""
    rng = np.random.default_rng(1)
    stories = [generate_story(rng) for _ in range(3000)]
    # after "<bos> the": a colour with probability 1/2 in all
    colour = Counter(s.tokens[2] in ("brown", "black", "white", "red") for s in stories)
    assert abs(colour[True] / len(stories) - 0.5) < 0.03
    claimed = stories[0].distributions[1]
    assert math.isclose(sum(p for w, p in claimed.items() if w in ("brown", "black", "white",
                                                                   "red")), 0.5)
    # the number of filler sentences is uniform over 0, 1, 2
    fillers = Counter(s.text.count(" . ") - 3 for s in stories)
    assert sorted(fillers) == [0, 1, 2]
    assert all(abs(n / len(stories) - 1 / 3) < 0.03 for n in fillers.values())
    # the adjective after "it was too" is uniform over the noun's kind, and only those
    for story in stories[:200]:
        position = story.tokens.index("too") + 1
        kind = next(k for k, (nouns, _) in KINDS.items() if story.noun in nouns)
        assert story.distributions[position - 1] == {a: 1 / 3 for a in KINDS[kind][1]}
        assert dependent_kind(story.tokens, position) == "adjective"


def test_floor_is_the_mean_exact_entropy_and_the_bigram_cannot_reach_it():
    data = make_stories(seed=0, train_size=400, val_size=100)
    entropies = np.concatenate([s.entropies() for s in data.val])
    assert data.floor == pytest.approx(entropies.mean())
    assert entropy({"a": 0.5, "b": 0.5}) == pytest.approx(math.log(2))
    assert abs(data.oracle_cross_entropy - data.floor) < 0.05  # a sample of the same mean
    bigram = bigram_cross_entropy(data)
    assert bigram["cross_entropy"] > data.floor + 0.5
    assert bigram["noun_accuracy"] < 0.2  # "so the ___": the noun is not in the last token
    again = make_stories(seed=0, train_size=400, val_size=100)
    np.testing.assert_array_equal(again.val_ids, data.val_ids)


# ----------------------------------------------------------------------------- the model
def tiny_gpt(tie: bool = True, dtype=mt.float64, **kw) -> GPT:
    mt.manual_seed(0)
    config = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=8,
                       dim_feedforward=16, tie_weights=tie, **kw)
    return GPT(config).to(dtype)


@pytest.mark.parametrize("tie", [True, False])
def test_gradcheck_gpt(tie):
    mt.manual_seed(0)
    config = GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=2, n_embd=4,
                       dim_feedforward=4, tie_weights=tie)
    gradcheck_module(GPT(config), np.array([[1, 3, 0], [4, 4, 2]]))


def test_logits_at_t_ignore_later_tokens():
    model = tiny_gpt()
    ids = np.array([[1, 2, 3, 4, 5, 6]])
    changed = ids.copy()
    changed[0, 3] = 9
    with mt.no_grad():
        before, after = model(ids).numpy(), model(changed).numpy()
    np.testing.assert_array_equal(before[0, :3], after[0, :3])
    assert np.abs(before[0, 3:] - after[0, 3:]).min() > 0


@pytest.mark.parametrize(("temperature", "top_k"), [(0.0, None), (1.0, None), (0.8, 3)])
def test_kv_cache_gives_the_same_tokens_and_logits(temperature, top_k):
    model = tiny_gpt(tie=False)
    kwargs = {"temperature": temperature, "top_k": top_k, "seed": 7}
    cached = model.generate([1, 5, 2], 10, use_cache=True, **kwargs)
    recomputed = model.generate([1, 5, 2], 10, use_cache=False, **kwargs)
    np.testing.assert_array_equal(cached.ids, recomputed.ids)
    np.testing.assert_allclose(cached.logits, recomputed.logits, rtol=0, atol=1e-12)
    assert cached.logits.shape == (10, 11)


def test_cache_holds_every_layer_and_position():
    model = tiny_gpt()
    cache = KVCache(2)
    with mt.no_grad():
        model(np.array([[1, 2, 3]]), cache)
        model(np.array([[4]]), cache)
    assert cache.length == 4
    assert all(k.shape == v.shape == (1, 2, 4, 4) for k, v in cache.layers)
    with pytest.raises(mt.ShapeError, match="block_size=16"):
        model.generate([1] * 10, 7)


def test_sampling_rules():
    logits = np.array([0.0, 3.0, 1.0, 2.0])
    assert sample_next(logits, temperature=0) == 1
    assert sample_next(logits, top_k=1, rng=np.random.default_rng(0)) == 1
    draws = {sample_next(logits, top_k=2, rng=np.random.default_rng(s)) for s in range(200)}
    assert draws == {1, 3}
    seeded = [sample_next(logits, rng=np.random.default_rng(3)) for _ in range(2)]
    assert seeded[0] == seeded[1]
    with pytest.raises(ValueError, match="temperature"):
        sample_next(logits, temperature=-1)


def test_attention_maps_are_causal():
    model = tiny_gpt()
    maps = model.attention_maps(np.array([[1, 2, 3, 4]]))
    assert len(maps) == 2 and maps[0].shape == (1, 2, 4, 4)
    assert np.all(np.triu(maps[0][0, 0], k=1) == 0)
    np.testing.assert_allclose(maps[1].sum(axis=-1), 1.0)


def test_gpt_forms_attention_weights_only_when_asked(monkeypatch):
    """A plain forward calls F.scaled_dot_product_attention as nanoGPT does (one tensor, no
    weights: tiled once the scores are large); attention_maps asks for the weights."""
    from minitransformer.ops import sdpa

    model, ids = tiny_gpt(), np.array([[1, 2, 3, 4]])
    expected = model(ids).data
    calls = []

    def spying(name):
        real = getattr(F, name)

        def spy(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)
        return spy

    for name in ("scaled_dot_product_attention", "scaled_dot_product_attention_with_weights"):
        monkeypatch.setattr(F, name, spying(name))
    monkeypatch.setattr(sdpa, "TILED_MIN_SCORES", 1)  # tiled even at T = 4
    np.testing.assert_allclose(model(ids).data, expected, atol=1e-5)
    assert calls == ["scaled_dot_product_attention"] * 2  # one per block
    calls.clear()
    assert model.attention_maps(ids)[0].shape == (1, 2, 4, 4)
    assert calls == ["scaled_dot_product_attention_with_weights"] * 2


# ----------------------------------------------------------------------------- training
TINY = {"train_size": 64, "val_size": 16, "batch_size": 16, "n_embd": 16,
        "dim_feedforward": 16, "n_layer": 1}


def test_training_lowers_the_loss_and_resume_is_exact(tmp_path):
    whole = train_gpt(GPTTrainConfig(epochs=2, **TINY), tmp_path / "whole", progress=False,
                      log=lambda _: None)
    history = whole.run.history
    assert history.step_loss[-1] < history.step_loss[0]
    assert {"val_cross_entropy", "floor", "bigram", "dependent_accuracy"} <= set(whole.metrics)

    class Interrupted(Exception):
        pass

    def stop_after_first_epoch(message: str) -> None:
        raise Interrupted(message)  # as Ctrl-C would, right after the epoch's checkpoint

    with pytest.raises(Interrupted):
        train_gpt(GPTTrainConfig(epochs=2, **TINY), tmp_path / "split", progress=False,
                  log=stop_after_first_epoch)
    assert sorted(os.listdir(tmp_path / "split")) == [  # no temporary file left
        ".minitransformer-written.json", "checkpoint.npz"]
    assert load_gpt_run(tmp_path / "split").history.epochs_done == 1
    resumed = resume_gpt(tmp_path / "split", progress=False, log=lambda _: None)
    assert resumed.run.history.step_loss == history.step_loss

    state = mt.load(str(tmp_path / "whole" / "checkpoint.npz"))  # format version 1, unchanged
    assert (state["kind"], state["version"]) == ("minitransformer-gpt-run", 1)
    assert set(state) == {"kind", "version", "config", "model_config", "model", "optimizer",
                          "scheduler", "vocabulary", "rng", "history"}
    assert set(state["history"]) == {"step_loss", "val_loss", "dependent_accuracy", "seconds"}
    run = load_gpt_run(tmp_path / "whole")
    data = make_stories(0, TINY["train_size"], TINY["val_size"])
    assert evaluate_gpt(run.model, data)["cross_entropy"] == pytest.approx(
        whole.metrics["val_cross_entropy"])


def test_loading_something_else_is_a_clear_error(tmp_path):
    import minitransformer.serialization as serialization

    serialization.save({"kind": "other"}, tmp_path / "x.npz")
    with pytest.raises(mt.CheckpointError, match="not a checkpoint of a GPT run"):
        load_gpt_run(tmp_path / "x.npz")


def test_cross_entropy_of_a_batch_ignores_padding():
    model = tiny_gpt()
    ids = np.array([[1, 2, 3, 0], [1, 4, 0, 0]])
    logits = model(ids[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                           ignore_index=0)
    by_hand = -np.mean([logits.log_softmax(axis=-1).detach().numpy()[b, t, ids[b, t + 1]]
                        for b, t in [(0, 0), (0, 1), (1, 0)]])
    assert loss.item() == pytest.approx(by_hand)
