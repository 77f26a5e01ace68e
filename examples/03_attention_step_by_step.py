"""Self-attention step by step, on "The animal didn't cross the street because it was too tired."

The five equations of single-head self-attention, one at a time, with every shape:

    Q = X W_Q,  K = X W_K,  V = X W_V     project each token's embedding three ways
                                          (the code's Linear adds a bias: X W^T + b)
    S = Q K^T                             S[i, j]: how well query i matches key j
    S_hat = S / sqrt(d_k)                 keep the scores' scale independent of d_k
    A = softmax(S_hat)                    row i: query i's weights over all keys, sum 1
    Z = A V                               row i: a weighted mean of the value vectors

The embedding and the projections here are UNTRAINED (random, with a fixed seed): the
point is to watch the machinery, not to get a sensible answer. With random weights "it"
spreads its attention roughly evenly; a trained model that really links "it" to "animal"
is built in examples/06_train_coreference.py.

Run:  python examples/03_attention_step_by_step.py
"""

import math

import numpy as np

import minitransformer as mt
from minitransformer import nn
from minitransformer.coref.data import ARTICLE_SENTENCE, build_vocabulary, tokenize

EMBED_DIM = 8  # d_model = d_k = d_v: tiny, so the matrices fit on screen

# The article's worked example for the query "it": (similarity, weight in %). It lists
# ten words; the sentence's second "the" (before "street") has no row there.
ARTICLE_TABLE = {
    "the": (0.02, 1), "animal": (0.85, 45), "didn't": (0.05, 3), "cross": (0.08, 4),
    "street": (0.12, 6), "because": (0.15, 8), "it": (0.50, 26), "was": (0.06, 3),
    "too": (0.04, 2), "tired": (0.13, 7),
}

np.set_printoptions(precision=3, suppress=True, linewidth=100)

# ----- tokens and embeddings -------------------------------------------------------------
tokens = tokenize(ARTICLE_SENTENCE)  # lowercased words, punctuation dropped
vocabulary = build_vocabulary()  # every word the coreference task uses
ids = np.array(vocabulary.encode(tokens))  # (T,)
T = len(tokens)
it = tokens.index("it")
print(f"sentence: {ARTICLE_SENTENCE}")
print(f"tokens ({T}): {tokens}")
print(f"ids: {ids.tolist()}   (vocabulary of {len(vocabulary)} words)")

mt.manual_seed(0)  # the embedding and the layer draw their initial weights from this seed
embedding = nn.Embedding(len(vocabulary), EMBED_DIM)
attention = nn.Attention(EMBED_DIM)

with mt.no_grad():  # we only look: no graph needed
    X = embedding(ids)  # (T,) -> (T, E)
    print(f"\nX = embedding(ids)                 {X.shape}   (T, E), T={T} tokens, E={EMBED_DIM}")

    # ----- 1. projections ----------------------------------------------------------------
    # Linear stores W as (out, in) like PyTorch, so q_proj(X) = X W_Q^T + b_Q.
    Q = attention.q_proj(X)  # (T, E) -> (T, d_k)
    K = attention.k_proj(X)  # (T, E) -> (T, d_k)
    V = attention.v_proj(X)  # (T, E) -> (T, d_v)
    print(f"Q = X W_Q^T + b_Q                  {Q.shape}   (T, d_k)")
    print(f"K = X W_K^T + b_K                  {K.shape}   (T, d_k)")
    print(f"V = X W_V^T + b_V                  {V.shape}   (T, d_v)")

    # ----- 2. scores ---------------------------------------------------------------------
    S = Q @ K.T  # (T, d_k) @ (d_k, T) -> (T, T)
    print(f"S = Q K^T                          {S.shape}  (T, T): one row per query")

    # ----- 3. scaling --------------------------------------------------------------------
    # A dot product of d_k terms of variance ~1 has variance ~d_k; dividing by sqrt(d_k)
    # brings it back to ~1, so the softmax does not saturate into a one-hot as d_k grows.
    d_k = EMBED_DIM
    S_hat = S / math.sqrt(d_k)  # (T, T)
    print(f"S_hat = S / sqrt({d_k})                {S_hat.shape}")

    # ----- 4. softmax over keys ----------------------------------------------------------
    A = mt.softmax(S_hat, axis=-1)  # (T, T): each row sums to 1
    print(f"A = softmax(S_hat, axis=-1)        {A.shape}  rows sum to "
          f"{A.sum(axis=-1).numpy().min():.4f}..{A.sum(axis=-1).numpy().max():.4f}")

    # ----- 5. weighted sum of values -----------------------------------------------------
    Z = A @ V  # (T, T) @ (T, d_v) -> (T, d_v)
    print(f"Z = A V                            {Z.shape}   (T, d_v)")

    # The layer does exactly these five steps in its forward: same numbers.
    Z_layer, A_layer = attention(X)
    assert np.allclose(Z.numpy(), Z_layer.numpy(), atol=1e-6)
    assert np.allclose(A.numpy(), A_layer.numpy(), atol=1e-6)
    print("nn.Attention(X) gives the same Z and A: the layer is these five lines")

# ----- the row of "it" -------------------------------------------------------------------
scores = S.numpy()[it]  # (T,)   S[it, j]
scaled = S_hat.numpy()[it]  # (T,)
weights = A.numpy()[it]  # (T,)
print(f'\nquery "it" (position {it}): its row of S, S_hat and A, next to the article\'s numbers')
print(f"{'token':>9} {'raw score':>10} {'scaled':>8} {'weight':>8}   |"
      f" {'article score':>13} {'article weight':>14}")
seen = set()
for token, raw, sc, w in zip(tokens, scores, scaled, weights):
    # The article's row for a word goes to its first occurrence (the second "the": none).
    reference = None if token in seen else ARTICLE_TABLE.get(token)
    seen.add(token)
    article = f"{reference[0]:13.2f} {reference[1]:13d}%" if reference else f"{'-':>13} {'-':>14}"
    print(f"{token:>9} {raw:10.3f} {sc:8.3f} {100 * w:7.1f}%   | {article}")
print(f"{'sum':>9} {'':>10} {'':>8} {100 * weights.sum():7.1f}%   |"
      f" {'':>13} {sum(w for _, w in ARTICLE_TABLE.values()):13d}%")

# No positional information was added, so both "the" have the same embedding, the same
# key, and therefore the same score: plain self-attention sees a bag of words. (That is
# why the coreference model adds a positional encoding to its embeddings.)
print('both "the" get the same score: without positions, attention cannot tell them apart')

z_it = Z.numpy()[it]  # (d_v,)
print(f'\nZ[it] = sum_j A[it, j] V[j] = {z_it}   shape {z_it.shape}')
print(f'untrained: "it" attends most to "{tokens[int(weights.argmax())]}" '
      f"({100 * weights.max():.1f}%); uniform would be {100 / T:.1f}% each")

# ----- what the article's numbers are --------------------------------------------------
article_scores = np.array([score for score, _ in ARTICLE_TABLE.values()])
softmaxed = np.exp(article_scores) / np.exp(article_scores).sum()
animal = list(ARTICLE_TABLE).index("animal")
total = sum(w for _, w in ARTICLE_TABLE.values())
print(f"\nabout the article's table: its weights add up to {total}%, and a plain softmax of")
print(f'its similarities would give "animal" {100 * softmaxed[animal]:.0f}%, not 45%: the numbers')
print("illustrate the idea (animal gets the most), they are not one exact computation.")
print("trained weights: run examples/06_train_coreference.py")
