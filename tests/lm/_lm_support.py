"""Helpers shared by lesson 08's tests: a tiny random Llama, and a tiny word-level tokenizer."""
from __future__ import annotations

import torch
import transformers


def tiny_llama_config(**changes) -> transformers.LlamaConfig:
    """A 4-layer Llama of width 32 over a 64-token vocabulary (tied embeddings, grouped-query attention)."""
    options = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, tie_word_embeddings=True)
    return transformers.LlamaConfig(**{**options, **changes})


def tiny_llama(seed: int = 0, **changes) -> transformers.LlamaForCausalLM:
    """A randomly initialised tiny Llama (:func:`tiny_llama_config`) in eval mode; the same weights for a seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.LlamaForCausalLM(tiny_llama_config(**changes)).eval()


def word_tokenizer(words):
    """A whitespace word-level tokenizer whose vocabulary is ``words`` in that order (id = position)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=words[0])
