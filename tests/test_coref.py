"""The coreference model, its pointer head and its training loop: learning, checkpoints, resume."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import serialization
from minitransformer.coref.data import (
    ARTICLE_SENTENCE,
    UnknownWordError,
    encode_batch,
    make_dataset,
    make_example,
)
from minitransformer.coref.models import (
    CorefConfig,
    CorefModel,
    PointerHead,
    PronounError,
    SentenceError,
    choose_pronoun,
    resolve,
)
from minitransformer.coref.training import (
    CHECKPOINT_FILE,
    CURVES_FILE,
    METRICS_FILE,
    TrainConfig,
    build_dataset,
    evaluate,
    load_run,
    resume,
    train,
)
from minitransformer.errors import CheckpointError

TINY = dict(train_size=240, test_size=60, batch_size=16, d_model=16, nhead=2, num_layers=1,
            dim_feedforward=32)  # for tests of the machinery, not of learning
SMALL = dict(train_size=400, test_size=100, batch_size=16)  # the default model, less data


def quiet(message: str) -> None:
    pass


# ----------------------------------------------------------------------------- pointer head


def test_pointer_head_is_scaled_dot_product_of_the_pronoun_query(rng):
    mt.manual_seed(0)
    head = PointerHead(4, dtype=mt.float64)
    h = rng.standard_normal((2, 5, 4))
    pronoun = np.array([3, 1])
    padding = np.array([[False] * 5, [False, False, False, True, True]])
    with mt.no_grad():
        scores, weights = head(mt.tensor(h), pronoun, padding)

    W_q, W_k = head.q_proj.weight.detach().numpy(), head.k_proj.weight.detach().numpy()
    for b in range(2):
        q = W_q @ h[b, pronoun[b]]  # (E,)
        k = h[b] @ W_k.T  # (T, E)
        expected = k @ q / math.sqrt(4)
        real = ~padding[b]
        np.testing.assert_allclose(scores.numpy()[b, real], expected[real], rtol=1e-12)
        e = np.exp(expected[real] - expected[real].max())
        np.testing.assert_allclose(weights.numpy()[b, real], e / e.sum(), rtol=1e-12)
    assert np.all(weights.numpy()[1, 3:] == 0.0)  # padding gets exactly no weight
    np.testing.assert_allclose(weights.numpy().sum(axis=-1), 1.0, rtol=1e-12)


def test_pointer_head_gradcheck(rng):
    mt.manual_seed(1)
    head = PointerHead(3, dtype=mt.float64)
    h = mt.tensor(rng.standard_normal((2, 4, 3)), requires_grad=True)
    padding = np.array([[False, False, False, False], [False, False, True, True]])
    label = np.array([2, 0])

    def loss_of(h, w_q, w_k):  # w_q, w_k: the head's own parameters, perturbed in place
        scores, _ = head(h, np.array([1, 1]), padding)
        return mt.functional.cross_entropy(scores, label)

    assert mt.gradcheck(loss_of, (h, head.q_proj.weight, head.k_proj.weight))


def test_model_prediction_does_not_depend_on_padding():
    data = make_dataset(seed=0, train_size=0, test_size=0)
    mt.manual_seed(0)
    model = CorefModel(CorefConfig(len(data.vocabulary)))
    model.eval()
    short = make_example("catch", "fox", "mouse", "hungry")
    long = make_example("cross", "animal", "street", "tired", distractors=4,
                        rng=np.random.default_rng(0))
    alone = encode_batch([short], data.vocabulary)
    together = encode_batch([short, long], data.vocabulary)
    assert together["ids"].shape[1] > alone["ids"].shape[1]  # the short one is padded
    with mt.no_grad():
        _, w_alone = model(alone["ids"], alone["pronoun"], alone["padding_mask"])
        _, w_together = model(together["ids"], together["pronoun"], together["padding_mask"])
    T = alone["ids"].shape[1]
    np.testing.assert_allclose(w_together.numpy()[0, :T], w_alone.numpy()[0], atol=1e-6)
    assert np.all(w_together.numpy()[0, T:] == 0.0)


# ----------------------------------------------------------------------------- one sentence


def test_choose_pronoun():
    tokens = "the man told the boy that he was late because she said it".split()
    with pytest.raises(PronounError, match="3 pronouns"):
        choose_pronoun(tokens)
    assert choose_pronoun(tokens, pronoun="she") == 10
    assert choose_pronoun(tokens, pronoun="IT") == 12
    assert choose_pronoun(tokens, position=4) == 4
    with pytest.raises(PronounError, match="'they' does not occur"):
        choose_pronoun(tokens, pronoun="they")
    with pytest.raises(PronounError, match="outside the sentence"):
        choose_pronoun(tokens, position=13)
    with pytest.raises(PronounError, match="no pronoun"):
        choose_pronoun("the dog ran".split())
    with pytest.raises(PronounError, match="no words"):
        choose_pronoun([])
    with pytest.raises(PronounError, match="2 times"):
        choose_pronoun("it saw it".split(), pronoun="it")


def test_resolve_reports_every_token_and_rejects_unknown_words():
    data = make_dataset(seed=0, train_size=0, test_size=0)
    mt.manual_seed(0)
    model = CorefModel(CorefConfig(len(data.vocabulary), num_layers=2, nhead=2))
    result = resolve(model, data.vocabulary, ARTICLE_SENTENCE)
    assert result.pronoun == "it" and result.pronoun_position == 7
    assert len(result.scores) == len(result.weights) == len(result.tokens) == 11
    assert result.antecedent == result.tokens[int(np.argmax(result.scores))]
    assert [a.shape for a in result.encoder_attention] == [(2, 11, 11)] * 2
    as_dict = result.to_dict()
    assert as_dict["tokens"][1] == {"token": "animal", "score": result.scores[1],
                                    "weight": result.weights[1]}
    assert model.training  # resolve puts the model back in the mode it found it in

    with pytest.raises(UnknownWordError, match="'zebra', 'purple'"):
        resolve(model, data.vocabulary, "The zebra didn't cross the purple street because it was")
    with pytest.raises(SentenceError, match="reads at most"):
        resolve(model, data.vocabulary, "the dog " * 40 + "it")


# ----------------------------------------------------------------------------- training


def test_small_training_run_learns_well_above_chance(tmp_path):
    config = TrainConfig(epochs=4, **SMALL)
    result = train(config, tmp_path, progress=False, log=quiet)
    data = build_dataset(config)
    # Chance is about 1 in 10 positions (1 in 2 between the two candidate nouns).
    assert result.test_accuracy >= 0.8
    assert result.run.history.epoch_loss[-1] < 0.5 * result.run.history.epoch_loss[0]
    assert result.test_accuracy == evaluate(result.run.model, data.test, data.vocabulary).mean()
    for name in (CHECKPOINT_FILE, METRICS_FILE, CURVES_FILE):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / CURVES_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_round_trip(tmp_path):
    result = train(TrainConfig(epochs=1, **TINY), tmp_path, progress=False, log=quiet)
    for where in (tmp_path, tmp_path / CHECKPOINT_FILE):  # the directory or the file
        loaded = load_run(where)
        assert loaded.config == result.run.config
        assert loaded.vocabulary == result.run.vocabulary
        assert loaded.history == result.run.history
        assert loaded.finished
        original = result.run.model.state_dict()
        for key, value in loaded.model.state_dict().items():
            np.testing.assert_array_equal(value.numpy(), original[key].numpy(), err_msg=key)
    a = resolve(result.run.model, result.run.vocabulary, ARTICLE_SENTENCE)
    b = resolve(loaded.model, loaded.vocabulary, ARTICLE_SENTENCE)
    np.testing.assert_array_equal(a.scores, b.scores)


class Interrupt(Exception):
    pass


def test_resume_gives_bit_identical_losses(tmp_path):
    # Dropout on, so that the dropout generators' states must be restored too.
    config = TrainConfig(epochs=2, dropout=0.1, **TINY)
    whole = train(config, tmp_path / "whole", progress=False, log=quiet)

    def stop_after_first_epoch(message: str) -> None:
        if message.startswith("epoch  1/"):
            raise Interrupt  # after the checkpoint of epoch 1 was written

    with pytest.raises(Interrupt):
        train(config, tmp_path / "parts", progress=False, log=stop_after_first_epoch)
    assert load_run(tmp_path / "parts").history.epochs_done == 1
    resumed = resume(tmp_path / "parts", progress=False, log=quiet)

    assert resumed.run.history.step_loss == whole.run.history.step_loss  # bit for bit
    assert resumed.run.history.test_accuracy == whole.run.history.test_accuracy
    assert len(whole.run.history.step_loss) == 2 * math.ceil(240 / 16)
    final = whole.run.model.state_dict()
    for key, value in resumed.run.model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), final[key].numpy(), err_msg=key)

    again = resume(tmp_path / "parts", progress=False, log=quiet)  # finished: nothing to do
    assert again.run.history.step_loss == whole.run.history.step_loss


def test_resume_with_more_epochs_extends_a_finished_run(tmp_path):
    steps_per_epoch = math.ceil(240 / 16)
    first = train(TrainConfig(epochs=1, **TINY), tmp_path / "run", progress=False, log=quiet)
    first_epoch_losses = first.run.history.step_loss
    longer = resume(tmp_path / "run", progress=False, log=quiet, epochs=3)

    assert longer.run.config.epochs == 3 and longer.run.history.epochs_done == 3
    assert longer.run.history.step_loss[:steps_per_epoch] == first_epoch_losses
    assert len(longer.run.history.step_loss) == 3 * steps_per_epoch
    # the schedule was stretched to the new length, not kept at the old one
    state = serialization.load(str(tmp_path / "run" / CHECKPOINT_FILE))
    assert int(state["scheduler"]["total_steps"]) == 3 * steps_per_epoch
    with pytest.raises(ValueError, match="cannot shorten it to 2"):
        resume(tmp_path / "run", progress=False, log=quiet, epochs=2)


# ----------------------------------------------------------------------------- bad checkpoints


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    train(TrainConfig(epochs=1, **TINY), directory, progress=False, log=quiet)
    return directory


CHECKPOINT_ENTRIES = {"kind", "version", "config", "model_config", "model", "optimizer",
                      "scheduler", "vocabulary", "rng", "history"}  # format version 1


def test_the_checkpoint_keeps_the_format_earlier_versions_wrote(finished_run):
    """Version 1, entry for entry, so that checkpoints saved before still load."""
    state = serialization.load(str(finished_run / CHECKPOINT_FILE))
    assert (state["kind"], state["version"]) == ("minitransformer-coref-run", 1)
    assert set(state) == CHECKPOINT_ENTRIES and set(state["rng"]) == {"batches", "dropout"}
    assert set(state["history"]) == {"step_loss", "epoch_loss", "train_accuracy",
                                     "test_accuracy", "seconds"}


def test_missing_truncated_and_foreign_checkpoints(finished_run, tmp_path):
    missing = tmp_path / "nothing-here.npz"
    with pytest.raises(CheckpointError, match="nothing-here.npz"):
        load_run(missing)
    with pytest.raises(CheckpointError, match=str(tmp_path / CHECKPOINT_FILE)):
        resume(tmp_path, progress=False, log=quiet)  # a directory without a checkpoint

    truncated = tmp_path / "truncated.npz"
    content = (finished_run / CHECKPOINT_FILE).read_bytes()
    truncated.write_bytes(content[: len(content) // 2])
    with pytest.raises(CheckpointError, match="truncated.npz"):
        load_run(truncated)

    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.txt"):
        load_run(text)

    other = tmp_path / "other.npz"  # a valid checkpoint file, of something else
    serialization.save({"weights": np.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="other.npz.*not a checkpoint of a coreference"):
        load_run(other)

    state = serialization.load(finished_run / CHECKPOINT_FILE)
    state["model"]["pointer.q_proj.weight"] = np.zeros((3, 3), dtype=np.float32)
    wrong_shape = tmp_path / "wrong.npz"
    serialization.save(state, wrong_shape)
    with pytest.raises(CheckpointError, match="wrong.npz.*pointer.q_proj.weight"):
        load_run(wrong_shape)


def test_resume_refuses_a_run_for_other_data(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path / "copy")
    state = serialization.load(tmp_path / "copy" / CHECKPOINT_FILE)
    tokens = state["vocabulary"]["tokens"]
    tokens[1], tokens[2] = tokens[2], tokens[1]  # same size, other ids
    serialization.save(state, tmp_path / "copy" / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="vocabulary"):
        resume(tmp_path / "copy", progress=False, log=quiet)


def test_single_threaded_blas_restores_the_setting():
    from minitransformer.tuning import _openblas, single_threaded_blas

    library = _openblas()
    if library is None:  # NumPy without OpenBLAS: the context is a no-op
        with single_threaded_blas():
            pass
        return
    get_threads, _ = library
    before = get_threads()
    with single_threaded_blas():
        assert get_threads() == 1
    assert get_threads() == before
    assert os.path.exists("/proc/self/maps")
