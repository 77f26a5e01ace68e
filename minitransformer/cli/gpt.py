"""``minitransformer gpt train | sample | attend``: a tiny GPT on a toy story language.

    minitransformer gpt train --out runs/gpt
    minitransformer gpt sample runs/gpt --prompt "the dog met the nurse ." --temperature 0.8
    minitransformer gpt attend runs/gpt "the dog met the nurse . she waved . it was too"

Wired into the command line by ``add_gpt_command(subparsers)`` in ``cli/main.py``. Errors
(a missing checkpoint, a word the language does not have, a prompt too long) exit with
status 1 and one line, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys

import numpy as np

from minitransformer import files, tuning
from minitransformer.cli.common import CommandError

DEFAULT_GPT_DIR = os.path.join("runs", "gpt")


def add_gpt_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``gpt`` and its three sub-commands on the CLI's sub-command parsers."""
    from minitransformer.cli.common import add_device as _add_device
    from minitransformer.cli.common import epoch_count
    from minitransformer.cli.common import non_negative_int as _non_negative_int
    from minitransformer.cli.common import positive_int as _positive_int
    from minitransformer.runs import MAX_EPOCHS

    gpt = subparsers.add_parser(
        "gpt", help="train, sample from and inspect a tiny GPT on a toy story language",
        description="A decoder-only Transformer with a KV cache, trained on short stories "
                    "whose exact entropy is known, so its loss is reported next to the floor.")
    commands = gpt.add_subparsers(dest="gpt_command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train the GPT (checkpoint after every epoch)",
        description="Train on generated stories; report validation cross-entropy beside the "
                    "exact floor and a bigram baseline, and the accuracy on tokens that "
                    "depend on a far-back word. Writes checkpoint.npz and metrics.json.")
    train.add_argument("--epochs", type=epoch_count, default=None,
                       help=f"passes over the training stories (default: 8; at most "
                            f"{MAX_EPOCHS})")
    train.add_argument("--seed", type=_non_negative_int, default=None,
                       help="seeds the stories, the weights and the batch order (default: 0)")
    train.add_argument("--out", default=DEFAULT_GPT_DIR, metavar="DIR",
                       help=f"run directory (default: {DEFAULT_GPT_DIR})")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in DIR from its last checkpoint")
    train.add_argument("--force", action="store_true",
                       help="start a new run even where DIR already holds one (replacing "
                            "it), or files minitransformer did not write")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device(train)
    train.set_defaults(handler=_guarded(_train))

    sample = commands.add_parser(
        "sample", help="write a story with a trained GPT",
        description="Continue a prompt token by token (with the KV cache) until <eos>.")
    sample.add_argument("run", metavar="DIR", help="a run directory or its checkpoint.npz")
    sample.add_argument("--prompt", default="", metavar="TEXT",
                        help="the story's beginning (default: nothing)")
    sample.add_argument("--tokens", type=_positive_int, default=None, metavar="N",
                        help="at most N new tokens (default: as many as fit)")
    sample.add_argument("--temperature", type=float, default=1.0, metavar="T",
                        help="divide the logits by T; 0 takes the most likely token (default 1)")
    sample.add_argument("--top-k", type=_positive_int, default=None, metavar="K",
                        help="draw among the K most likely tokens only")
    sample.add_argument("--seed", type=_non_negative_int, default=None,
                        help="makes the draws reproducible")
    sample.add_argument("--no-cache", action="store_true",
                        help="recompute the whole prefix for every token (same result, slower)")
    _add_device(sample)
    sample.set_defaults(handler=_guarded(_sample))

    attend = commands.add_parser(
        "attend", help="show where every position of a text looks",
        description="For each position, the position every head attends to most; and a "
                    "heatmap per layer and head (a lower triangle: the causal mask).")
    attend.add_argument("run", metavar="DIR", help="a run directory or its checkpoint.npz")
    attend.add_argument("text", metavar="TEXT")
    attend.add_argument("--plot", metavar="FILE.png", default=None,
                        help="where to draw the heatmaps (default: DIR/attention.png)")
    _add_device(attend)
    attend.set_defaults(handler=_guarded(_attend))
    return gpt


def _guarded(handler):  # noqa: ANN001, ANN202 - argparse handlers
    """Report the errors a user can cause in one line (exit status 1)."""
    from minitransformer.errors import CheckpointError, ShapeError

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (CommandError, ShapeError, CheckpointError, ValueError, OSError) as exc:
            message = " ".join(str(exc).split())
            print(f"minitransformer gpt {args.gpt_command}: error: {message}", file=sys.stderr)
            return 1
    return run  # Ctrl-C: cli/main.py says it, once, for every command


def _train(args: argparse.Namespace) -> int:
    from minitransformer.cli.common import refuse_to_overwrite
    from minitransformer.gpt.training import (
        GPTTrainConfig,
        load_gpt_run,
        resume_gpt,
        train_gpt,
    )
    from minitransformer.runs import CHECKPOINT_FILE, METRICS_FILE

    given = {name: getattr(args, name) for name in ("epochs", "seed")
             if getattr(args, name) is not None}
    path = os.path.join(args.out, CHECKPOINT_FILE)
    if args.resume:
        saved = load_gpt_run(path).config
        conflicts = [f"--{name} {value} (the run has {getattr(saved, name)})"
                     for name, value in given.items() if getattr(saved, name) != value]
        if conflicts:
            raise CommandError(f"{path} continues with its own settings; drop "
                                  f"{', '.join(conflicts)} or start a new run")
        refuse_to_overwrite(args.out, [METRICS_FILE], args.force)
        result = resume_gpt(args.out, device=args.device, progress=not args.quiet)
    else:
        if os.path.exists(path):
            if not args.force:
                raise CommandError(f"{args.out} already holds a run: --resume continues it, "
                                   f"--force replaces it, or choose another --out")
            print(f"starting a new run in {args.out} (--force: its checkpoint is replaced)",
                  file=sys.stderr)
        refuse_to_overwrite(args.out, [CHECKPOINT_FILE, METRICS_FILE], args.force)
        result = train_gpt(GPTTrainConfig(**given), args.out, device=args.device,
                           progress=not args.quiet)
    print(format_metrics(result.metrics))
    print(f"wrote {args.out}: checkpoint.npz, metrics.json")
    return 0


def format_metrics(m: dict) -> str:
    """The run's results, the floor and the bigram baseline side by side."""
    kinds = ", ".join(f"{k.removesuffix('_accuracy')} {v:.1%}"
                      for k, v in m["accuracy_by_kind"].items())
    verdict = "within" if m["within_target"] else "NOT within"
    bigram = m["bigram"]
    return "\n".join([
        f"validation cross-entropy {m['val_cross_entropy']:.4f} nats/token; the exact floor "
        f"{m['floor']:.4f} (gap {m['gap_to_floor']:.4f}, {verdict} the target "
        f"{m['allowed_gap']:.2f})",
        f"antecedent-dependent tokens right {m['dependent_accuracy']:.1%} ({kinds})",
        f"bigram baseline, same stories: cross-entropy {bigram['cross_entropy']:.4f}, "
        f"antecedent-dependent tokens right {bigram['dependent_accuracy']:.1%}",
        f"training time {m['train_seconds']:.1f} s for {m['epochs']} epochs "
        f"({m['parameters']} parameters)",
    ])


def split_words(text: str) -> list[str]:
    """The story language's tokens of ``text``: lowercase words and full stops."""
    return re.findall(r"<[a-z]+>|[a-z']+|\.", text.lower())


_STORY_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz'.<>")


def _encode_prompt(vocabulary, text: str, what: str) -> list[int]:  # noqa: ANN001
    """The ids of ``text``; CommandError for a character the story language lacks (a
    comma, a digit, an emoji: split_words would drop it), UnknownWordError (closest known
    words named) for a word it lacks."""
    from minitransformer.cli.common import refuse_unreadable
    from minitransformer.gpt.stories import BOS

    refuse_unreadable(text, lambda c: c.isspace() or c.lower() in _STORY_CHARACTERS,
                      vocabulary.tokens[1:], what)
    words = split_words(text)
    if words[:1] != [BOS]:
        words = [BOS, *words]
    return vocabulary.encode(words)  # UnknownWordError (a ValueError) names every bad word


def _sample(args: argparse.Namespace) -> int:
    from minitransformer.gpt.stories import BOS, EOS
    from minitransformer.gpt.training import load_gpt_run

    if args.temperature < 0:
        raise CommandError(f"--temperature must be >= 0, got {args.temperature}")
    run = load_gpt_run(args.run, device=args.device)
    prompt = _encode_prompt(run.vocabulary, args.prompt, "--prompt")
    room = run.model.config.block_size - len(prompt)
    if room < 1:
        raise CommandError(f"the prompt has {len(prompt)} tokens; this model reads at most "
                              f"{run.model.config.block_size}")
    tokens = room if args.tokens is None else min(args.tokens, room)
    eos = run.vocabulary.encode([EOS])[0]
    with tuning.single_threaded_blas():  # one sequence: BLAS threads would only wait
        out = run.model.generate(prompt, tokens, temperature=args.temperature,
                                 top_k=args.top_k, seed=args.seed,
                                 use_cache=not args.no_cache, stop_id=eos)
    words = [w for w in run.vocabulary.decode(out.ids) if w not in (BOS, EOS)]
    print(" ".join(words))
    return 0


def _attend(args: argparse.Namespace) -> int:
    from minitransformer.cli.common import figure_destination, refuse_to_overwrite
    from minitransformer.gpt.training import load_gpt_run
    from minitransformer.runs import record_written

    if args.plot:
        path, note = figure_destination(args.plot, "attention.png")
    else:  # into the run directory: not over a file of the user's
        refuse_to_overwrite(_run_dir(args.run), ["attention.png"], force=False,
                            way_out="give --plot FILE.png to draw elsewhere")
        path, note = os.path.join(_run_dir(args.run), "attention.png"), ""
    run = load_gpt_run(args.run, device=args.device)
    ids = _encode_prompt(run.vocabulary, args.text, "the text")
    if len(ids) > run.model.config.block_size:
        raise CommandError(f"the text has {len(ids)} tokens; this model reads at most "
                              f"{run.model.config.block_size}")
    words = run.vocabulary.decode(ids)
    maps = [m[0] for m in run.model.attention_maps(np.array([ids]))]  # each (nh, T, T)
    print(format_attention_table(words, maps))
    plot_causal_attention(words, maps, path)
    if not args.plot:
        record_written(_run_dir(args.run), "attention.png")
    if note:
        print(note, file=sys.stderr)
    print(f"wrote {path}")
    return 0


def _run_dir(path: str) -> str:
    return path if os.path.isdir(path) else os.path.dirname(path) or "."


def format_attention_table(words: list[str], maps: list[np.ndarray]) -> str:
    """One row per position: for each layer and head, the earlier (or same) position it
    attends to most, with the weight. A causal model can only name positions <= its own."""
    width = max(len(w) for w in words) + 4
    heads = [(layer, head) for layer, m in enumerate(maps) for head in range(m.shape[0])]
    header = f"{'position':<{width + 4}}" + "".join(
        f"{f'L{layer + 1} H{head + 1}':<{width + 6}}" for layer, head in heads)
    lines = [header]
    for t, word in enumerate(words):
        cells = []
        for layer, head in heads:
            row = maps[layer][head, t]  # (T,): zero after position t
            s = int(row.argmax())
            cells.append(f"{f'{s}:{words[s]} {row[s]:.0%}':<{width + 6}}")
        lines.append(f"{f'{t}:{word}':<{width + 4}}" + "".join(cells))
    return "\n".join(lines)


def plot_causal_attention(words: list[str], maps: list[np.ndarray], path: str) -> None:
    """A heatmap per layer and head: query rows, key columns; the upper triangle is 0."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, no display needed
    import matplotlib.pyplot as plt

    n_layers, n_heads = len(maps), maps[0].shape[0]
    size = 0.3 * len(words) + 1.5
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(size * n_heads, size * n_layers),
                             squeeze=False)
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer][head]
            ax.imshow(maps[layer][head], vmin=0.0, vmax=1.0, cmap="viridis")
            ax.set_xticks(range(len(words)), words, rotation=90, fontsize=7)
            ax.set_yticks(range(len(words)), words, fontsize=7)
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=9)
    fig.suptitle("causal self-attention: each row looks only left (key <= query)")
    fig.tight_layout()
    picture = io.BytesIO()  # drawn whole, then written in one step: never half a file
    fig.savefig(picture, format=os.path.splitext(path)[1].lstrip(".").lower() or "png", dpi=110)
    plt.close(fig)
    files.write_bytes(path, picture.getvalue())
