"""A tiny GPT trained on a toy story language whose exact entropy is known.

    from minitransformer.gpt import GPT, GPTConfig, make_stories, train_gpt

See ``minitransformer gpt --help`` and docs/gpt.md.
"""

from minitransformer.gpt.model import GPT, CausalSelfAttention, GPTBlock, GPTConfig, KVCache
from minitransformer.gpt.stories import StoryData, generate_story, make_stories
from minitransformer.gpt.training import GPTTrainConfig, load_gpt_run, resume_gpt, train_gpt

__all__ = [
    "GPT", "CausalSelfAttention", "GPTBlock", "GPTConfig", "GPTTrainConfig", "KVCache",
    "StoryData", "generate_story", "load_gpt_run", "make_stories", "resume_gpt", "train_gpt",
]
