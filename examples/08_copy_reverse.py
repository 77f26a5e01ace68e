"""The smallest encoder-decoder: nn.Transformer learns to reverse a row of digits.

    source  3 1 4 1 5 9      ->  target  9 5 1 4 1 3

The encoder reads the source both ways; the decoder writes the target one digit at a time,
with causal self-attention over what it has written and *cross-attention* over the
encoder's output. To write target position t it must find source position L - 1 - t, so
a trained model's cross-attention weights form the anti-diagonal. The script trains for a
few seconds, decodes unseen rows greedily, and draws the cross-attention heatmap.

Pass --copy to learn copying instead (the diagonal). The first argument, if any, is the
folder for the heatmap (default: the current one).

Run:  python examples/08_copy_reverse.py [OUT_DIR] [--copy]
"""

import os
import sys
import time

import numpy as np

import minitransformer as mt
import minitransformer.functional as F
import minitransformer.nn as nn
from minitransformer import optim, tuning

DIGITS, LENGTH, BOS = 10, 6, 10  # tokens 0-9, and 10 starts every target
D_MODEL, STEPS, BATCH = 32, 120, 64


class Seq2Seq(nn.Module):
    """Embeddings and positions in, nn.Transformer, a linear layer out to the digits."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(DIGITS + 1, D_MODEL)
        self.position = nn.LearnedPositionalEncoding(D_MODEL, LENGTH)
        self.transformer = nn.Transformer(D_MODEL, nhead=2, num_encoder_layers=1,
                                          num_decoder_layers=1, dim_feedforward=64,
                                          batch_first=True, dropout=0.0)
        self.out = nn.Linear(D_MODEL, DIGITS)

    def forward(self, src: np.ndarray, tgt_in: np.ndarray) -> mt.Tensor:
        source = self.position(self.embed(src) * 0.2)  # (B, S, d_model)
        target = self.position(self.embed(tgt_in) * 0.2)  # (B, T, d_model)
        h = self.transformer(source, target, tgt_is_causal=True)  # (B, T, d_model)
        return self.out(h)  # (B, T, DIGITS)


def make_batch(rng: np.random.Generator, size: int, reverse: bool):
    src = rng.integers(0, DIGITS, (size, LENGTH))
    tgt = src[:, ::-1] if reverse else src
    tgt_in = np.concatenate([np.full((size, 1), BOS), tgt[:, :-1]], axis=1)  # teacher forcing
    return src, tgt_in, np.ascontiguousarray(tgt)


def greedy_decode(model: Seq2Seq, src: np.ndarray) -> np.ndarray:
    """Write the target one digit at a time, each step reading the digits written so far."""
    written = np.full((len(src), 1), BOS)
    with mt.no_grad():
        for _ in range(LENGTH):
            logits = model(src, written)  # (B, t, DIGITS)
            next_digit = logits.numpy()[:, -1].argmax(axis=-1)  # (B,)
            written = np.concatenate([written, next_digit[:, None]], axis=1)
    return written[:, 1:]


def main() -> None:
    with tuning.single_threaded_blas():  # small matrices: BLAS threads would only wait
        run()


def run() -> None:
    reverse = "--copy" not in sys.argv
    out_dir = next((a for a in sys.argv[1:] if not a.startswith("--")), ".")
    task = "reverse" if reverse else "copy"
    mt.manual_seed(0)
    rng = np.random.default_rng(0)
    model = Seq2Seq()
    optimizer = optim.AdamW(model.parameters(), lr=3e-3)
    started = time.perf_counter()
    for step in range(1, STEPS + 1):
        src, tgt_in, tgt = make_batch(rng, BATCH, reverse)
        logits = model(src, tgt_in)  # (B, T, DIGITS): flattened to rows, PyTorch's layout
        loss = F.cross_entropy(logits.reshape(-1, DIGITS), tgt.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 40 == 0:
            print(f"step {step}: loss {loss.item():.3f}")
    print(f"trained to {task} in {time.perf_counter() - started:.1f} s")

    model.eval()
    src, _, tgt = make_batch(np.random.default_rng(1), 200, reverse)
    decoded = greedy_decode(model, src)
    print(f"unseen rows decoded exactly: {np.mean(np.all(decoded == tgt, axis=1)):.0%} "
          f"(digits right: {np.mean(decoded == tgt):.0%})")
    print(f"  {src[0]} -> {decoded[0]}")

    cross = model.transformer.decoder.layers[0].multihead_attn
    cross.store_attention = True
    with mt.no_grad():
        model(src[:1], np.concatenate([[[BOS]], tgt[:1, :-1]], axis=1))
    weights = cross.last_attention.numpy()[0].mean(axis=0)  # (T, S), averaged over heads
    expected = np.arange(LENGTH)[::-1] if reverse else np.arange(LENGTH)
    on_target = np.mean(weights.argmax(axis=-1) == expected)
    shape = "anti-diagonal" if reverse else "diagonal"
    print(f"cross-attention: {on_target:.0%} of target positions look hardest at the source "
          f"position they need (the {shape})")
    path = os.path.join(out_dir, f"cross_attention_{task}.png")
    draw(weights, src[0], path, task)
    print(f"heatmap: {path}")


def draw(weights: np.ndarray, source: np.ndarray, path: str, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(weights, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(LENGTH), [str(d) for d in source])
    ax.set_xlabel("source position (key)")
    ax.set_ylabel("target position (query)")
    ax.set_title(f"cross-attention, trained to {task}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
