"""Does self-attention itself learn "it -> animal"? The pointer head against an encoder head.

The coreference model reads its answer from a *pointer head* (models/coref.py), an extra
attention query trained with cross-entropy on the antecedent: its weights are the
prediction by construction. This experiment asks the stronger question. The variant,
:class:`EncoderHeadModel`, has no pointer head: its prediction is the pronoun's row of
one head of the **last encoder layer's own self-attention**,

    scores_j = log A[head, pronoun, j]          A = softmax(Q Kᵀ / √hs) of that layer

trained end to end with the same cross-entropy, so the loss reaches every layer through
that head's weights. Both models get the same data, initial encoder and optimiser; for
both we report the held-out accuracy and how often each encoder head's largest weight from
the pronoun lands on the antecedent.

    python -m minitransformer.coref.encoder_head --out docs/encoder_head   # ~3 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np

import minitransformer as mt
from minitransformer.coref.compare import (
    CompareConfig,
    accuracy_by_bucket,
    attention_hits,
    train_model,
)
from minitransformer.coref.data import make_dataset
from minitransformer.coref.models.coref import CorefConfig, CorefModel, on_device
from minitransformer.coref.training import evaluate
from minitransformer.runs import write_json
from minitransformer.tensor import Tensor

LOG_FLOOR = 1e-9  # log(A + floor): finite where a weight is exactly 0 (padding)


class EncoderHeadModel(CorefModel):
    """:class:`CorefModel` without the pointer head: the answer is one encoder head's row.

    ``forward(ids, pronoun, padding_mask)`` returns ``(scores, weights)``, both (B, T):
    ``weights`` is the pronoun's row of head ``head`` in the last encoder layer's
    self-attention and ``scores`` its log, so cross-entropy on ``scores`` is the negative
    log of the weight on the antecedent. The last layer's feed-forward half is not run: the
    decision is taken inside that layer, before it.
    """

    def __init__(self, config: CorefConfig, head: int = 0, device: Any = None) -> None:
        super().__init__(config, device=device)
        del self.pointer  # unused: no parameters that nothing trains
        if not 0 <= head < config.nhead:
            raise ValueError(f"head must be in 0..{config.nhead - 1}; got {head}")
        self.head = head

    def forward(self, ids: Any, pronoun: Any, padding_mask: Any) -> tuple[Tensor, Tensor]:
        device = self.embedding.weight.device
        padding_mask = on_device(padding_mask, device)
        h = self.positions(self.embedding(on_device(ids, device)))  # (B, T, E)
        *lower, last = self.encoder.layers
        for layer in lower:
            h = layer(h, src_key_padding_mask=padding_mask)  # (B, T, E)
        if last.norm_first:
            h = last.norm1(h)
        _, weights = last.self_attn(h, key_padding_mask=padding_mask, need_weights=True,
                                    average_attn_weights=False)  # (B, nh, T, T)
        B = weights.shape[0]
        rows = Tensor(np.arange(B), device=device)
        row = weights[:, self.head][rows, on_device(pronoun, device)]  # (B, T, T) -> (B, T)
        return (row + LOG_FLOOR).log(), row


def run_experiment(config: CompareConfig, seeds: tuple[int, ...] = (0, 1, 2),
                   log: Any = print) -> dict[str, Any]:
    """Train the pointer-head model and the encoder-head variant for each seed; the numbers."""
    results: dict[str, Any] = {"config": asdict(config), "seeds": list(seeds), "runs": []}
    started = time.perf_counter()
    for seed in seeds:
        cfg = replace(config, seed=seed)
        data = make_dataset(seed=seed, distractors=range(cfg.max_distractors + 1),
                            train_size=cfg.train_size, test_size=cfg.test_size)
        distances = np.array([e.distance for e in data.test])
        max_len = max(64, max(len(e.tokens) for e in data.train + data.test))
        model_config = CorefConfig(vocab_size=len(data.vocabulary), d_model=cfg.d_model,
                                   max_len=max_len)
        run: dict[str, Any] = {"seed": seed}
        for name in ("pointer head", "encoder head"):
            mt.manual_seed(seed)  # the same initial embedding and encoder for both
            model = (CorefModel(model_config) if name == "pointer head"
                     else EncoderHeadModel(model_config, head=0))
            training = train_model(model, data, cfg, log, name)
            correct = evaluate(model, data.test, data.vocabulary)
            hits = attention_hits(model, data)
            run[name] = {
                "test_accuracy": float(correct.mean()),
                "accuracy_by_distance": accuracy_by_bucket(correct, distances, cfg.buckets()),
                "last_layer_per_head": hits["last_layer_per_head"],
                "last_layer_any_head": hits["last_layer_any_head"],
                "chance": hits["chance"],
                "seconds": float(np.sum(training["epoch_seconds"])),
            }
            log(f"seed {seed}, {name}: held-out {correct.mean():.1%}, pronoun's top weight "
                f"on the antecedent per head {[f'{h:.1%}' for h in hits['last_layer_per_head']]}")
        results["runs"].append(run)
    results["seconds"] = time.perf_counter() - started
    return results


def results_markdown(results: dict[str, Any]) -> str:
    """The tables of docs/encoder_head/results.md."""
    config = results["config"]
    lines = ["# Pointer head against an encoder head: results", "",
             f"Data: {config['train_size']} training and {config['test_size']} held-out "
             f"sentences, 0 to {config['max_distractors']} distractors, {config['epochs']} "
             f"epochs, d_model {config['d_model']}, 2 layers, 2 heads. Produced by "
             "`python -m minitransformer.coref.encoder_head`.", "",
             "| seed | model | held-out accuracy | last layer, head 1: top weight on the "
             "antecedent | head 2 | any head | chance |", "|---|---|---:|---:|---:|---:|---:|"]
    for run in results["runs"]:
        for name in ("pointer head", "encoder head"):
            m = run[name]
            heads = " | ".join(f"{100 * h:.1f}%" for h in m["last_layer_per_head"])
            lines.append(f"| {run['seed']} | {name} | {100 * m['test_accuracy']:.1f}% | "
                         f"{heads} | {100 * m['last_layer_any_head']:.1f}% | "
                         f"{100 * m['chance']:.1f}% |")
    buckets = list(results["runs"][0]["pointer head"]["accuracy_by_distance"])
    lines += ["", "Held-out accuracy by antecedent-to-pronoun distance (tokens):", "",
              "| seed | model | " + " | ".join(buckets) + " |",
              "|---|---|" + "---:|" * len(buckets)]
    for run in results["runs"]:
        for name in ("pointer head", "encoder head"):
            cells = [run[name]["accuracy_by_distance"][b]["accuracy"] for b in buckets]
            lines.append(f"| {run['seed']} | {name} | " + " | ".join(
                "-" if c is None else f"{100 * c:.1f}%" for c in cells) + " |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/encoder_head",
                        help="folder for results.json and results.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="the comparison's quick setting")
    parser.add_argument("--train-size", type=int, help="training sentences (default: 2000)")
    parser.add_argument("--test-size", type=int, help="held-out sentences (default: 1000)")
    parser.add_argument("--distractors", type=int, help="at most this many per sentence (16)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: 10)")
    args = parser.parse_args(argv)
    config = CompareConfig.quick() if args.quick else CompareConfig()
    changes = {"train_size": args.train_size, "test_size": args.test_size,
               "max_distractors": args.distractors, "epochs": args.epochs}
    config = replace(config, **{k: v for k, v in changes.items() if v is not None})
    results = run_experiment(config, tuple(args.seeds))
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "results.json"), results)
    markdown = results_markdown(results)
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    print(markdown)
    print(json.dumps({"seconds": round(results["seconds"], 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
