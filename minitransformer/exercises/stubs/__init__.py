"""The files a learner edits: each gives a forward and leaves the backward to write.

They are data, not modules of the library: ``minitransformer exercise start DIR`` copies
them into the learner's own directory, and the checker loads them from there by path.
"""
