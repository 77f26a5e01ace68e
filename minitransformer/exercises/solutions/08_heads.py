# ruff: noqa: F821  (runs in the exercise file's namespace: split_heads, merge_heads)
def split_heads_backward(dout, x, num_heads):
    return merge_heads(dout)  # moving numbers back is the inverse move


def merge_heads_backward(dout, z):
    return split_heads(dout, z.shape[1])
