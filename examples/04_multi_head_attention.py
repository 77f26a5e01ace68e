"""Multi-head attention: split into heads, attend in each, merge back.

With E = embed_dim and nh heads of size hs = E / nh, each head attends in its own
hs-dimensional slice of the projected queries, keys and values, so different heads can
learn different patterns (one may track the previous word, another a noun far away).
All heads run at once: the head index becomes a batch axis.

    q = split(X W_Q^T)         (B, T, E) -> (B, T, nh, hs) -> (B, nh, T, hs)
    A_h = softmax(q_h k_h^T / sqrt(hs))                       (B, nh, T, T)
    heads = A v                                               (B, nh, T, hs)
    merge: (B, nh, T, hs) -> (B, T, nh, hs) -> (B, T, E)      heads side by side
    output = merged W_O^T                                     (B, T, E)

The projections are untrained (fixed seed): the numbers show the mechanics only.

Run:  python examples/04_multi_head_attention.py
"""

import math

import numpy as np

import minitransformer as mt
from minitransformer import nn

B, T, E, NH = 2, 5, 8, 4  # batch, tokens, embedding size, heads
HS = E // NH  # head size: 2

np.set_printoptions(precision=3, suppress=True, linewidth=100)
mt.manual_seed(0)
mha = nn.MultiHeadAttention(E, NH)
x = mt.randn(B, T, E)  # (B, T, E): a batch of 2 "sentences" of 5 random token vectors
print(f"x: {x.shape} (B, T, E)   num_heads={NH}, head size hs = E / nh = {HS}")

with mt.no_grad():
    # ----- the layer ---------------------------------------------------------------------
    out, per_head = mha(x, average_attn_weights=False)  # (B, T, E), (B, nh, T, T)
    _, averaged = mha(x)  # default: weights averaged over heads, (B, T, T)
    print(f"output: {out.shape}, per-head weights: {per_head.shape} (B, nh, T, T), "
          f"averaged: {averaged.shape} (B, T, T)")

    # ----- the same, by hand, to see the split and merge ---------------------------------
    def split_heads(t: mt.Tensor) -> mt.Tensor:
        t = t.reshape(B, T, NH, HS)  # (B, T, E) -> (B, T, nh, hs): cut E into nh slices
        return t.transpose(0, 2, 1, 3)  # (B, T, nh, hs) -> (B, nh, T, hs): heads as batch

    q = split_heads(mha.q_proj(x))  # (B, nh, T, hs)
    k = split_heads(mha.k_proj(x))  # (B, nh, T, hs)
    v = split_heads(mha.v_proj(x))  # (B, nh, T, hs)
    print(f"\nsplit:  q_proj(x) {(B, T, E)} (B, T, E) -> reshape {(B, T, NH, HS)} (B, T, nh, hs)"
          f" -> transpose {q.shape} (B, nh, T, hs)")
    scores = q @ k.swapaxes(-1, -2) / math.sqrt(HS)  # (B, nh, T, hs) @ (B, nh, hs, T)
    weights = mt.softmax(scores, axis=-1)  # (B, nh, T, T)
    heads = weights @ v  # (B, nh, T, T) @ (B, nh, T, hs) -> (B, nh, T, hs)
    merged = heads.transpose(0, 2, 1, 3)  # (B, nh, T, hs) -> (B, T, nh, hs)
    merged = merged.reshape(B, T, E)  # (B, T, nh, hs) -> (B, T, E): concat the heads
    by_hand = mha.out_proj(merged)  # (B, T, E)
    print(f"attend: scores {scores.shape}, weights {weights.shape}, heads {heads.shape}")
    print(f"merge:  {heads.shape} -> transpose {(B, T, NH, HS)} -> reshape {merged.shape} "
          f"-> out_proj {by_hand.shape}")
    difference = np.abs(by_hand.numpy() - out.numpy()).max()
    print(f"by hand vs the layer: max difference {difference:.1e}")
    assert difference < 1e-5

# ----- each head's weights for one query -------------------------------------------------
query = 0
print(f"\nweights of query {query} (batch element 0) over the {T} keys, per head:")
print("         " + "".join(f"{'key ' + str(j):>8}" for j in range(T)))
for h in range(NH):
    row = per_head.numpy()[0, h, query]  # (T,)
    print(f"head {h}   " + "".join(f"{100 * w:7.1f}%" for w in row))
mean_row = averaged.numpy()[0, query]  # (T,)
print("average  " + "".join(f"{100 * w:7.1f}%" for w in mean_row))
assert np.allclose(mean_row, per_head.numpy()[0, :, query].mean(axis=0), atol=1e-6)
print("(the averaged weights are the mean of the heads' rows; each row sums to 100%)")

# ----- PyTorch's packed layout ---------------------------------------------------------
# torch.nn.MultiheadAttention keeps W_Q, W_K, W_V stacked in one (3E, E) matrix.
in_proj_weight = mt.concat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight], axis=0)
in_proj_bias = mt.concat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias], axis=0)
print(f"\nin_proj_weight = concat(q_proj, k_proj, v_proj weights): {in_proj_weight.shape} (3E, E)"
      f", in_proj_bias: {in_proj_bias.shape}")
try:
    import torch
except ImportError:
    torch = None
if torch is None:
    print("PyTorch is not installed: skipping the comparison with torch.nn.MultiheadAttention")
else:
    reference = torch.nn.MultiheadAttention(E, NH, batch_first=True, dtype=torch.float32)
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.from_numpy(in_proj_weight.detach().numpy()))
        reference.in_proj_bias.copy_(torch.from_numpy(in_proj_bias.detach().numpy()))
        reference.out_proj.weight.copy_(torch.from_numpy(mha.out_proj.weight.detach().numpy()))
        reference.out_proj.bias.copy_(torch.from_numpy(mha.out_proj.bias.detach().numpy()))
        x_torch = torch.from_numpy(x.numpy())
        torch_out, torch_weights = reference(x_torch, x_torch, x_torch,
                                             average_attn_weights=False)
    out_difference = np.abs(torch_out.numpy() - out.numpy()).max()
    weight_difference = np.abs(torch_weights.numpy() - per_head.numpy()).max()
    print(f"torch.nn.MultiheadAttention with those weights: output max difference "
          f"{out_difference:.1e}, weights {weight_difference:.1e}")
    assert out_difference < 1e-5 and weight_difference < 1e-5
