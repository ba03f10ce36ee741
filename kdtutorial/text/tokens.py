"""Tokenised text in batches with dynamic padding, for the text lessons.

Sentences are tokenised once (:class:`TokenizedText`, no padding); each batch is then padded only to its own
longest sentence. On SST-2 the median sentence is about 10 tokens, so padding every batch to a fixed length
of 64 would mostly compute on padding. ``sort_by_length`` groups sentences of similar length in one batch
(length bucketing) for inference, where the order does not matter.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TokenizedText", "PaddedIds", "tokenize", "tokenize_sentence_pairs", "padded_batches", "pad_rows"]


@dataclass
class TokenizedText:
    """Token ids (one list per sentence, special tokens included) and the tokenizer's pad id."""

    ids: list
    pad_id: int
    special_ids: frozenset

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows) -> "TokenizedText":
        """The sentences at ``rows`` (e.g. ``range(320)``), as a new ``TokenizedText``."""
        return TokenizedText([self.ids[i] for i in rows], self.pad_id, self.special_ids)

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))


@dataclass
class PaddedIds:
    """Token ids as one right-padded ``int32`` matrix ``ids`` ``(N, W)`` with each row's ``n_tokens`` ``(N,)``.

    Batches are slices of it: one host-to-device copy, no per-row Python. ``len``, ``lengths()`` and ``subset``
    as a :class:`TokenizedText`; :meth:`from_text` converts one (the ids ``pad_rows`` gives, padded to the
    longest row).
    """

    ids: np.ndarray
    n_tokens: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.n_tokens)

    def lengths(self) -> np.ndarray:
        return self.n_tokens

    def subset(self, rows):
        rows = np.asarray(rows)
        return type(self)(self.ids[rows], self.n_tokens[rows], self.pad_id)

    @classmethod
    def from_text(cls, text: TokenizedText):
        n = text.lengths()
        ids = np.full((len(text), max(1, int(n.max(initial=1)))), text.pad_id, dtype=np.int32)
        if len(text):
            ids[np.arange(ids.shape[1])[None, :] < n[:, None]] = np.fromiter(
                itertools.chain.from_iterable(text.ids), dtype=np.int32, count=int(n.sum()))
        return cls(ids, n, int(text.pad_id))


def tokenize(tokenizer, sentences, max_length: int) -> TokenizedText:
    """Tokenise ``sentences`` (truncated to ``max_length`` tokens, special tokens included), without padding."""
    if max_length < 4:
        raise ValueError(f"max_length must be at least 4 tokens, got {max_length}")
    encoded = tokenizer(list(sentences), truncation=True, max_length=int(max_length), padding=False)
    return TokenizedText(encoded["input_ids"], int(tokenizer.pad_token_id), frozenset(tokenizer.all_special_ids))


def tokenize_sentence_pairs(tokenizer, first, second, max_length: int) -> TokenizedText:
    """Tokenise sentence pairs ``[CLS] first [SEP] second [SEP]``, at most ``max_length`` tokens, without padding.

    Row ``i`` pairs ``first[i]`` with ``second[i]``; the tokenizer's ``truncation=True`` (longest first) cuts the
    longer side. With ``second=None`` this is :func:`tokenize` of ``first``. The ids hold no segment ids
    (``token_type_ids``): the two sentences are told apart by the ``[SEP]`` between them.
    """
    if second is None:
        return tokenize(tokenizer, first, max_length)
    if isinstance(first, str) or isinstance(second, str):
        raise TypeError("first and second must be sequences of strings, not one string")
    first, second = list(first), list(second)
    if len(first) != len(second):
        raise ValueError(f"{len(first)} first sentences but {len(second)} second ones: row i of each is pair i")
    if max_length < 5:
        raise ValueError(f"max_length must leave room for [CLS] a [SEP] b [SEP]: at least 5, got {max_length}")
    encoded = tokenizer(first, second, truncation=True, max_length=int(max_length), padding=False)
    return TokenizedText(encoded["input_ids"], int(tokenizer.pad_token_id), frozenset(tokenizer.all_special_ids))


def _pad(ids_list, pad_id: int, special_ids, width: int | None = None) -> dict:
    """Right-pad the rows to the longest one (or to ``width``), in numpy (no Python loop per row: in a training loop
    whose steps are bound by the CPU launching GPU kernels, host time per batch is wall time)."""
    lengths = np.fromiter(map(len, ids_list), dtype=np.int64, count=len(ids_list))
    longest = int(lengths.max(initial=0))
    if width is not None and width < longest:
        raise ValueError(f"width={width} is shorter than the longest sentence of the batch ({longest} tokens)")
    attention = np.arange(longest if width is None else int(width))[None, :] < lengths[:, None]
    input_ids = np.full(attention.shape, pad_id, dtype=np.int64)
    input_ids[attention] = np.fromiter(itertools.chain.from_iterable(ids_list), dtype=np.int64,
                                       count=int(lengths.sum()))
    # [CLS], [SEP] and the like, and padding: never a token to predict, whatever the pad id
    special = np.isin(input_ids, np.fromiter(special_ids, dtype=np.int64, count=len(special_ids))) | ~attention
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention.astype(np.int64)),
            "special_tokens_mask": torch.from_numpy(special)}


def padded_batches(text: TokenizedText, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                   sort_by_length: bool = False, indices=None, width: int | str | None = None):
    """Yield ``(positions, batch)``: the row numbers in ``text`` and a dict of padded tensors.

    ``batch`` has ``input_ids``, ``attention_mask`` and ``special_tokens_mask`` ([CLS], [SEP] and padding).
    ``shuffle`` uses a generator seeded with ``seed``; ``sort_by_length`` sorts by length first (inference).
    ``indices`` restricts the batches to those rows. ``width``: pad every batch to that many tokens instead of its
    longest sentence (batches of one shape, as a step replayed from a CUDA graph needs; at least the longest
    sentence of ``text``); ``"longest"``: to the longest sentence of ``text``.
    """
    if width == "longest":
        width = int(text.lengths().max(initial=1))
    elif isinstance(width, str):
        raise ValueError(f"width must be a number of tokens, 'longest' or None, got {width!r}")
    if width is not None and len(text) and width < int(text.lengths().max()):
        raise ValueError(f"width={width} is shorter than the longest sentence ({int(text.lengths().max())} tokens)")
    order = np.arange(len(text)) if indices is None else np.asarray(indices)
    if shuffle:
        order = order[np.random.default_rng(seed).permutation(len(order))]
    elif sort_by_length:
        order = order[np.argsort(text.lengths()[order], kind="stable")]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield rows, _pad([text.ids[i] for i in rows], text.pad_id, text.special_ids, width)


def pad_rows(text: TokenizedText, rows) -> dict:
    """The sentences at ``rows`` padded to the longest of them: one batch dict as :func:`padded_batches` yields.

    For code that picks its own rows, e.g. a query batch and an ad batch selected by the same pair indices.
    """
    rows = np.asarray(rows).reshape(-1)
    if len(rows) == 0:
        raise ValueError("rows is empty: there is nothing to pad")
    return _pad([text.ids[i] for i in rows], text.pad_id, text.special_ids)
