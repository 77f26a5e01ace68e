"""The coreference task's commands: ``minitransformer train | attend | demo``.

Registered on the command line by ``add_coref_commands(subparsers)`` in ``cli/main.py``;
their errors are reported in one line there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from minitransformer.cli.common import (
    CommandError,
    add_device,
    check_run_directory,
    coref_keeps,
    epoch_count,
    figure_destination,
    non_negative_int,
    refuse_to_overwrite,
    refuse_unreadable,
)
from minitransformer.coref.data import ARTICLE_SENTENCE, ARTICLE_SENTENCE_WIDE
from minitransformer.errors import CheckpointError

DEFAULT_RUN_DIR = os.path.join("runs", "coref")
DEMO_FILES = ("attention_tired.png", "attention_wide.png", "attention_graph.dot",
              "attention_graph.svg")  # what demo writes besides the run's own files


# ----------------------------------------------------------------------------- train


def _train(args: argparse.Namespace) -> int:
    from minitransformer.coref.training import (
        CHECKPOINT_FILE,
        CURVES_FILE,
        METRICS_FILE,
        TrainConfig,
        load_run,
        resume,
        train,
    )

    given = {name: getattr(args, name) for name in ("epochs", "seed", "distractors")
             if getattr(args, name) is not None}
    check_run_directory(args.out, CHECKPOINT_FILE)
    if args.resume:
        path = os.path.join(args.out, CHECKPOINT_FILE)
        saved = load_run(path)  # CheckpointError if there is none
        epochs = given.pop("epochs", None)  # --epochs N extends the run to N epochs in all
        if epochs is not None and epochs < saved.history.epochs_done:
            raise CommandError(f"{path} has already trained {saved.history.epochs_done} "
                               f"epochs: --epochs can extend a run, not shorten it")
        conflicts = [f"--{name} {value} (the run has {getattr(saved.config, name)})"
                     for name, value in given.items() if getattr(saved.config, name) != value]
        if conflicts:
            raise CommandError(f"{path} continues with its own settings; drop "
                               f"{', '.join(conflicts)} or start a new run")
        refuse_to_overwrite(args.out, [METRICS_FILE, CURVES_FILE], args.force)
        result = resume(args.out, device=args.device, progress=not args.quiet, epochs=epochs)
    else:
        if os.path.exists(os.path.join(args.out, CHECKPOINT_FILE)):
            if not args.force:
                raise CommandError(f"{args.out} already holds a run: --resume continues it, "
                                   f"--force replaces it, or choose another --out")
            print(f"starting a new run in {args.out} (--force: its checkpoint is replaced)",
                  file=sys.stderr)
        refuse_to_overwrite(args.out, [CHECKPOINT_FILE, METRICS_FILE, CURVES_FILE], args.force)
        result = train(TrainConfig(**given), args.out, device=args.device,
                       progress=not args.quiet)
    _print_summary(result.metrics, args.out)
    return 0


def _print_summary(metrics: dict, out_dir: str) -> None:
    print(f"held-out accuracy {metrics['test_accuracy']:.1%} on {metrics['test_size']} "
          f"sentences with noun pairs never seen in training")
    if metrics["config"]["distractors"] > 0:
        print(f"  with {metrics['config']['distractors']} distractors in every sentence: "
              f"{metrics['test_accuracy_with_all_distractors']:.1%}")
    print(f"training time {metrics['train_seconds']:.1f} s for {metrics['epochs']} epochs "
          f"({metrics['parameters']} parameters)")
    for sentence, antecedent in metrics["article"].items():
        print(f"  {sentence}  ->  it = {antecedent}")
    print(f"wrote {out_dir}: checkpoint.npz, metrics.json, curves.png")


# ----------------------------------------------------------------------------- vocab


def _vocab(args: argparse.Namespace) -> int:
    import textwrap

    from minitransformer.coref.training import load_run

    words = sorted(load_run(args.checkpoint).vocabulary.tokens[1:])  # [0] is padding
    if not sys.stdout.isatty():  # into a pipe or a file: one word a line, nothing else
        print(f"{len(words)} words (write sentences with these; punctuation is split off)",
              file=sys.stderr)
        print("\n".join(words))
        return 0
    print(f"{len(words)} words (write sentences with these; punctuation is split off):")
    print(textwrap.fill(" ".join(words), width=88))
    return 0


# ----------------------------------------------------------------------------- attend


def _attend(args: argparse.Namespace) -> int:
    from minitransformer.coref.cli.attend import describe, format_table, plot_attention
    from minitransformer.coref.data.tokenizer import PRONOUNS
    from minitransformer.coref.models.coref import resolve
    from minitransformer.coref.training import load_run
    from minitransformer.viz.attention import FIGURE_FORMATS

    plot, note = (figure_destination(args.plot, "attention.png", FIGURE_FORMATS) if args.plot
                  else (None, ""))  # a bad file name fails now, not after the work
    run = load_run(args.checkpoint, device=args.device)
    refuse_unreadable(args.sentence, coref_keeps, run.vocabulary.tokens[1:], "the sentence")
    result = resolve(run.model, run.vocabulary, args.sentence, pronoun=args.pronoun,
                     position=args.position)
    others = [t for i, t in enumerate(result.tokens) if i != result.pronoun_position]
    if all(t in PRONOUNS for t in others):
        raise CommandError(f"the sentence has no word but {result.pronoun!r}"
                           + (f" and {', '.join(map(repr, others))}" if others else "")
                           + ": no candidate antecedent to point at; write a whole sentence")
    values = [result.scores, result.weights, *result.encoder_attention]
    if not all(np.isfinite(v).all() for v in values):
        raise CommandError(f"the model in {args.checkpoint} produced non-finite values (NaN or "
                           "infinity) for this sentence: its weights are damaged or training "
                           "diverged; train it again")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        print(describe(result))
        print(format_table(result))
    if plot:
        plot_attention(result, plot)
        if note:
            print(note, file=sys.stderr)
        print(f"wrote {plot}", file=sys.stderr if args.json else sys.stdout)
    return 0


# ----------------------------------------------------------------------------- demo


def _demo(args: argparse.Namespace) -> int:
    from minitransformer.coref.cli.attend import (
        ARTICLE_TABLE,
        describe,
        format_table,
        plot_attention,
    )
    from minitransformer.coref.data import FAMILIES, make_example, split_pairs
    from minitransformer.coref.models.coref import resolve
    from minitransformer.coref.training import (
        CHECKPOINT_FILE,
        CURVES_FILE,
        METRICS_FILE,
        TrainConfig,
        load_run,
        resume,
        train,
    )
    from minitransformer.runs import record_written

    path = os.path.join(args.out, CHECKPOINT_FILE)
    check_run_directory(args.out, CHECKPOINT_FILE)
    refuse_to_overwrite(args.out, [CHECKPOINT_FILE, METRICS_FILE, CURVES_FILE, *DEMO_FILES],
                        args.force)
    run = None
    if os.path.exists(path):
        try:
            run = load_run(path, device=args.device)
        except CheckpointError as exc:
            if not args.force:  # never train over a checkpoint we cannot read: it may matter
                raise CommandError(
                    f"{exc}; demo will not replace it: give another --out, or --force to "
                    f"train a new model over {path}") from None
            print(f"cannot use the checkpoint there ({exc}); --force: training a new model",
                  file=sys.stderr)
    if run is None:
        print(f"training the default model into {args.out} ...", file=sys.stderr)
        result = train(TrainConfig(), args.out, device=args.device, progress=not args.quiet)
        _print_summary(result.metrics, args.out)
        run = result.run
    elif not run.finished:
        result = resume(args.out, device=args.device, progress=not args.quiet)
        _print_summary(result.metrics, args.out)
        run = result.run
    else:
        print(f"using the trained model in {path} (delete it, or run "
              f"`minitransformer train`, to train again)")

    sentences = [(ARTICLE_SENTENCE, "animal", "the article's sentence"),
                 (ARTICLE_SENTENCE_WIDE, "street", "its twin: one word changed")]
    for index, family in enumerate(FAMILIES):
        if family.name == "cross":
            continue
        a, b = split_pairs(family, run.config.seed).test[0]  # a noun pair never trained on
        switch = family.a_switches[0] if index % 2 else family.b_switches[0]
        example = make_example(family, a, b, switch)
        sentences.append((example.text + ".", example.antecedent,
                          f"family {family.name!r}, a noun pair not seen in training"))

    correct = 0
    for number, (sentence, expected, note) in enumerate(sentences):
        result = resolve(run.model, run.vocabulary, sentence)
        correct += result.antecedent == expected
        verdict = "right" if result.antecedent == expected else f"WRONG, expected {expected!r}"
        print(f"\n[{number + 1}] {note} ({verdict})")
        print(describe(result))
        print(format_table(result, reference=ARTICLE_TABLE if number == 0 else None))
        if number < 2:
            image = os.path.join(args.out, f"attention_{result.tokens[-1]}.png")
            plot_attention(result, image)
            record_written(args.out, os.path.basename(image))
            print(f"  heatmaps of every layer, head and the pointer head: {image}")
    _demo_graph(args.out)
    print(f"\n{correct}/{len(sentences)} pronouns resolved as expected")
    if correct < len(sentences):
        print("  (a sentence above was resolved wrongly: this model is not the one the "
              "README describes; `minitransformer train` retrains it)", file=sys.stderr)
    return 0


def _demo_graph(out_dir: str) -> None:
    """Draw one attention layer's forward and backward next to the heatmaps."""
    from minitransformer.runs import record_written
    from minitransformer.viz import GraphvizNotFoundError, render
    from minitransformer.viz.examples import attention_graph

    try:
        path = render(attention_graph(), "attention_graph", format="svg", directory=out_dir)
        print(f"\nthe computation graph of one attention layer: {path}")
    except GraphvizNotFoundError as exc:
        print(f"\n{exc}", file=sys.stderr)
    finally:
        record_written(out_dir, *[name for name in DEMO_FILES if name.startswith("attention_graph")
                                  and os.path.exists(os.path.join(out_dir, name))])


# ----------------------------------------------------------------------------- parsers


def _distractors(text: str) -> int:
    from minitransformer.coref.training import MAX_DISTRACTORS

    value = non_negative_int(text)
    if value > MAX_DISTRACTORS:
        raise argparse.ArgumentTypeError(f"at most {MAX_DISTRACTORS}, got {value}")
    return value


def _add_run_directory(parser: argparse.ArgumentParser, force_help: str) -> None:
    """--out DIR, --force and --quiet: where a training run goes, whether to replace one
    there, and no progress bar."""
    parser.add_argument("--out", default=DEFAULT_RUN_DIR, metavar="DIR",
                        help=f"run directory (default: {DEFAULT_RUN_DIR})")
    parser.add_argument("--force", action="store_true", help=force_help)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_checkpoint(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """The positional CHECKPOINT (optional where there is a ``default``)."""
    where = f" (default: {default})" if default else ""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?" if default else None,
                        default=default, help=f"a run directory or its checkpoint.npz{where}")


def add_coref_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``train``, ``attend`` and ``demo`` on the CLI's sub-command parsers."""
    train = commands.add_parser(
        "train", help="train the coreference model",
        description="Train the coreference model; a checkpoint after every epoch, then "
                    "held-out accuracy, metrics.json and curves.png in the run directory.")
    from minitransformer.coref.training import MAX_DISTRACTORS, default_epochs
    from minitransformer.runs import MAX_EPOCHS

    train.add_argument("--epochs", type=epoch_count, default=None,
                       help=f"passes over the training sentences (default: "
                            f"{default_epochs(0)}, or {default_epochs(1)} with distractors; "
                            f"at most {MAX_EPOCHS})")
    train.add_argument("--seed", type=non_negative_int, default=None,
                       help="seeds the data, the weights and the batch order (default: 0)")
    train.add_argument("--distractors", type=_distractors, default=None, metavar="K",
                       help=f"up to K distractor words/phrases per sentence, K <= "
                            f"{MAX_DISTRACTORS} (default: 0)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in DIR from its last checkpoint; with "
                            "--epochs N, extend a run (finished or not) to N epochs in all")
    _add_run_directory(train, "start a new run even where DIR already holds one (replacing it)")
    add_device(train)
    train.set_defaults(handler=_train)

    vocab = commands.add_parser(
        "vocab", help="list the words a trained model knows",
        description="Print every word in a run's vocabulary: the words `attend` accepts.")
    _add_checkpoint(vocab, DEFAULT_RUN_DIR)
    vocab.set_defaults(handler=_vocab)

    attend = commands.add_parser(
        "attend", help="show where a pronoun's attention goes",
        description="Print every token's score and weight for the pronoun, and the "
                    "predicted antecedent.")
    _add_checkpoint(attend)
    attend.add_argument("sentence", metavar="SENTENCE")
    which = attend.add_mutually_exclusive_group()
    which.add_argument("--pronoun", metavar="WORD", help="the pronoun to resolve")
    which.add_argument("--position", type=non_negative_int, metavar="N",
                       help="the token position to resolve (0-based)")
    attend.add_argument("--plot", metavar="FILE.png",
                        help="draw every layer's and head's attention and the pointer head")
    attend.add_argument("--json", action="store_true", help="print the numbers as JSON")
    add_device(attend)
    attend.set_defaults(handler=_attend)

    demo = commands.add_parser(
        "demo", help="train (or reuse) the default model and show the article's example",
        description="Train with the default settings (or reuse a finished run), then "
                    "resolve the article's sentence, its twin and one sentence per family.")
    _add_run_directory(demo, "train a new model over a checkpoint that cannot be read")
    add_device(demo)
    demo.set_defaults(handler=_demo)

