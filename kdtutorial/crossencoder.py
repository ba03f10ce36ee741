"""The cross-encoder teacher of lesson 06: BERT reads ``[CLS] query [SEP] ad [SEP]`` and gives one relevance logit.

A cross-encoder lets every query token attend to every ad token in every layer, which is why it is the
accurate teacher, and why it is slow to serve: each (query, ad) pair is a full pass of the network, nothing
can be cached. Here:

* :func:`ad_text` joins an ad's title and description into the one string both the teacher and the
  two-tower student (``kdtutorial.rankers``) see;
* :func:`tokenize_pairs` tokenises pairs once, without padding (a :class:`~kdtutorial.tokens.TokenizedText`);
* :func:`pair_token_type_ids` derives BERT's segment ids from the token ids (see below);
* :class:`CrossEncoder` is the model, :func:`fine_tune_cross_encoder` trains it on the Good/Bad labels;
* :func:`score_pairs` scores many pairs fast (length bucketing, bf16 on CUDA) for the transfer set, and
  :func:`score_pairs_padded_fp32` is the plain baseline it is compared with.

**Segment (token type) ids.** ``TokenizedText`` stores token ids only. Rather than storing a second list per
pair (on a transfer set of a million pairs that would be hundreds of MB of Python lists) the segment ids are
recomputed per batch from the layout: 0 up to and including the first ``[SEP]``, 1 after it, 0 on padding,
exactly what the tokenizer itself returns. That is exact because :func:`tokenize_pairs` tokenises with
``split_special_tokens=True``: a literal ``"[SEP]"`` typed in a query becomes ordinary word pieces, so the
first ``[SEP]`` id is always the one between query and ad. It also works on any padded batch (dynamic or
fixed-width) without touching the shared text stack. Pinned by ``tests/test_crossencoder.py``.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .optim import train_steps
from .pretraining import autocast
from .relevance import label_bce_loss
from .tokens import TokenizedText, pad_rows, padded_batches
from .twotower import mean_pool

__all__ = [
    "ad_text", "ads_of", "tokenize_pairs", "pair_token_type_ids", "CrossEncoder", "fine_tune_cross_encoder",
    "score_pairs", "score_pairs_padded_fp32", "TRUNCATIONS",
]

TRUNCATIONS = ("longest_first", "only_second")


# ------------------------------------------------------------------------------------------- text
def _join(title, description) -> str:
    return " ".join(part for part in (str(title).strip(), str(description).strip()) if part)


def ad_text(title, description):
    """The ad as one string, ``"title description"`` (stripped; an empty part leaves no stray space).

    Takes two strings, or two equally long sequences of strings (e.g. ``data["title"]``, ``data["description"]``)
    and then returns a list. Teacher and student both build their ad input with this function.
    """
    if isinstance(title, str) and isinstance(description, str):
        return _join(title, description)
    if isinstance(title, str) or isinstance(description, str):
        raise TypeError("title and description must both be strings or both be sequences of strings")
    title, description = list(title), list(description)
    if len(title) != len(description):
        raise ValueError(f"{len(title)} titles but {len(description)} descriptions")
    return [_join(t, d) for t, d in zip(title, description)]


def ads_of(data) -> list:
    """``ad_text`` of every row of a Dataset (or dict of columns) with ``title`` and ``description`` columns."""
    return ad_text(data["title"], data["description"])


def _encode(tokenizer, first, second=None, *, max_length: int, truncation="longest_first") -> TokenizedText:
    """Token ids without padding; a literal special token inside the text is split into ordinary pieces."""
    kwargs = dict(truncation=truncation, max_length=int(max_length), padding=False, split_special_tokens=True)
    encoded = tokenizer(list(first), None if second is None else list(second), **kwargs)
    return TokenizedText(encoded["input_ids"], int(tokenizer.pad_token_id), frozenset(tokenizer.all_special_ids))


def as_pairs(queries, ads) -> tuple[list, list]:
    """``(queries, ads)`` as two lists of equal length (row i of each is pair i); clear errors otherwise."""
    if isinstance(queries, str) or isinstance(ads, str):
        raise TypeError("queries and ads must be sequences of strings, not one string")
    queries, ads = list(queries), list(ads)
    if len(queries) != len(ads):
        raise ValueError(f"{len(queries)} queries but {len(ads)} ads: row i of each is pair i")
    return queries, ads


def tokenize_pairs(tokenizer, queries: Sequence[str], ads: Sequence[str], max_length: int, *,
                   truncation: str = "longest_first") -> TokenizedText:
    """``[CLS] query [SEP] ad [SEP]`` per pair, at most ``max_length`` tokens (special tokens included), unpadded.

    ``truncation="longest_first"`` (default) removes tokens one at a time from whichever side is longer: QADSM
    queries are a few words and ads dozens, so in practice only the ad's description is cut, yet an unusually
    long query cannot make the pair fail. ``"only_second"`` cuts the ad only and raises when a query alone does
    not fit. ``ads`` are :func:`ad_text` strings. Literal special-token strings in the text (``"[SEP]"``) are
    tokenised as ordinary text (``split_special_tokens=True``), so every pair has exactly two ``[SEP]``.
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    if max_length < 5:
        raise ValueError(f"max_length must leave room for [CLS] q [SEP] ad [SEP]: at least 5, got {max_length}")
    queries, ads = as_pairs(queries, ads)
    try:
        return _encode(tokenizer, queries, ads, max_length=max_length, truncation=truncation)
    except Exception as err:  # the tokenizers library raises its own exception type for an impossible truncation
        if truncation == "only_second":
            raise ValueError(f"only_second truncation failed (a query longer than max_length={max_length}?): "
                             f"{err}") from err
        raise


def pair_token_type_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor, sep_id: int | None = None
                        ) -> torch.Tensor:
    """BERT segment ids of padded pairs: 0 up to and including the first ``[SEP]``, 1 after it, 0 on padding.

    ``sep_id=None`` reads the separator of each row from its last real token, which in a BERT pair is always
    ``[SEP]`` (truncation never removes it); pass the tokenizer's ``sep_token_id`` to pin it instead. A row with
    no separator at all (not a pair) is all zeros.
    """
    mask = attention_mask.bool()
    if sep_id is None:
        last = (mask.long().sum(dim=1) - 1).clamp_min(0)
        sep = input_ids.gather(1, last[:, None])
    else:
        sep = torch.full_like(input_ids[:, :1], int(sep_id))
    is_sep = (input_ids == sep) & mask
    seen_before = is_sep.long().cumsum(dim=1) - is_sep.long()  # separators strictly before each position
    return ((seen_before >= 1) & mask).long()


# ------------------------------------------------------------------------------------------ model
POOLINGS = ("cls", "mean")


class CrossEncoder(nn.Module):
    """``Linear(dropout(pool(BERT([CLS] q [SEP] ad [SEP]))))``: one relevance logit per pair, ``P(Good) = sigmoid``.

    ``encoder`` is a BERT-family model called as ``encoder(input_ids=, attention_mask=, token_type_ids=)`` with
    ``.last_hidden_state`` (``transformers.BertModel``, or ``load_masked_lm(...).base_model``).
    ``pooling="cls"`` takes the final [CLS] vector (not BERT's tanh pooler, which sentence encoders such as
    MiniLM never trained); ``"mean"`` the masked mean over all real tokens of the pair.
    ``forward`` computes the segment ids with :func:`pair_token_type_ids` when none are given (``sep_id`` as
    there); an encoder with a single token type (``type_vocab_size == 1``, RoBERTa-style) gets none.
    """

    def __init__(self, encoder: nn.Module, pooling: str = "cls", dropout: float = 0.1, *, sep_id: int | None = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        config = getattr(encoder, "config", None)
        if getattr(config, "hidden_size", None) is None:
            raise ValueError("the encoder needs a config with hidden_size (a transformers BERT-family model)")
        self.encoder = encoder
        self.pooling = pooling
        self.sep_id = sep_id
        self.uses_token_types = getattr(config, "type_vocab_size", 2) > 1
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Relevance logits ``(B,)``."""
        kwargs = {}
        if self.uses_token_types:
            if token_type_ids is None:
                token_type_ids = pair_token_type_ids(input_ids, attention_mask, self.sep_id)
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        pooled = hidden[:, 0] if self.pooling == "cls" else mean_pool(hidden, attention_mask)
        return self.head(self.dropout(pooled)).squeeze(-1)


# ----------------------------------------------------------------------------------------- training
def fine_tune_cross_encoder(model: nn.Module, text: TokenizedText, labels, *, epochs: int = 2, lr: float = 5e-5,
                            batch_size: int = 32, warmup: float = 0.1, weight_decay: float = 0.01, seed: int = 0,
                            device="cpu", amp: bool = False, max_steps: int | None = None,
                            progress: bool = True) -> list:
    """Train ``model`` (a :class:`CrossEncoder`) on pairs ``text`` with Good = 1 / Bad = 0 ``labels`` (BCE).

    The schedule of :func:`kdtutorial.finetuning.fine_tune`: AdamW, linear warm-up over the first ``warmup``
    share of the steps, then linear decay to 0; batch order seeded with ``seed`` (the head and dropout follow
    torch's global seed: call ``seed_everything`` first); bf16 autocast on CUDA when ``amp``. The loss is
    :func:`kdtutorial.relevance.label_bce_loss` on float32 logits. Returns every step's loss; the model is left
    in eval mode.
    """
    device = torch.device(device)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    if labels.shape != (len(text),):
        raise ValueError(f"labels must have one value per pair, shape ({len(text)},), got {tuple(labels.shape)}")

    def batches(epoch):
        for rows, batch in padded_batches(text, batch_size, shuffle=True, seed=seed * 1000 + epoch):
            yield rows, (batch["input_ids"], batch["attention_mask"])

    def loss_of(logits, rows):
        return label_bce_loss(logits, labels[rows].to(logits.device))

    return train_steps(model, batches, loss_of, n_rows=len(text), epochs=epochs, batch_size=batch_size, lr=lr,
                       weight_decay=weight_decay, warmup=warmup, device=device, amp=amp, max_steps=max_steps,
                       desc="cross-encoder", progress=progress)


# ------------------------------------------------------------------------------------------ scoring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _widen(batch: dict, width: int, pad_id: int) -> dict:
    """Pad a batch on the right to ``width`` positions (the fixed-length baseline)."""
    extra = width - batch["input_ids"].shape[1]
    return {"input_ids": nn.functional.pad(batch["input_ids"], (0, extra), value=pad_id),
            "attention_mask": nn.functional.pad(batch["attention_mask"], (0, extra), value=0)}


def _score(model, text: TokenizedText, order: np.ndarray, *, batch_size: int, device, amp: bool,
           width: int | None, warmup: int, desc: str, progress: bool):
    device = torch.device(device)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    was_training = model.training
    model.to(device).eval()
    out = np.empty(len(text), dtype=np.float32)
    starts = range(0, len(order), batch_size)

    def run(rows):
        batch = pad_rows(text, rows)
        if width is not None:
            batch = _widen(batch, width, text.pad_id)
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        with autocast(device, amp):
            logits = model(ids, mask)
        return logits.float().cpu().numpy(), int(ids.numel()), int(batch["attention_mask"].sum())

    with torch.inference_mode():
        for start in list(starts)[:warmup]:  # first calls pay for kernel selection and allocations: untimed
            run(order[start : start + batch_size])
        _sync(device)
        positions = real = 0
        began = time.perf_counter()
        for start in tqdm(starts, desc=desc, leave=False, disable=not progress):
            rows = order[start : start + batch_size]
            logits, n_positions, n_real = run(rows)  # .cpu() waits for the GPU: each batch is finished here
            out[rows] = logits
            positions += n_positions
            real += n_real
        _sync(device)
        seconds = time.perf_counter() - began
    model.train(was_training)
    stats = {"pairs": len(text), "seconds": seconds, "pairs_per_s": len(text) / max(seconds, 1e-12),
             "batches": len(starts), "padding": 1.0 - real / max(positions, 1)}
    return out, stats


def score_pairs(model: nn.Module, text: TokenizedText, *, batch_size: int = 512, device="cpu", amp: bool = False,
                sort_by_length: bool = True, warmup: int = 1, progress: bool = False):
    """Logits of every pair of ``text`` (float32 numpy, original order) and timing ``stats``.

    Fast inference: ``torch.inference_mode``, eval mode (restored afterwards), bf16 autocast on CUDA when
    ``amp``, and length bucketing: with ``sort_by_length`` the pairs are sorted by length, so each batch is
    padded only to its own longest pair and holds pairs of similar length. The logits are put back in the
    original order. ``stats``: ``pairs``, ``seconds`` (wall time, CUDA-synchronised, including padding and
    host-device copies; ``warmup`` batches are run once before timing), ``pairs_per_s``, ``batches`` and
    ``padding`` (the share of computed positions that were padding).

    Timing on CUDA: the first batch of every new shape pays for kernel selection, and bucketing makes many
    shapes (one width per batch), so ``warmup=1`` is not enough for a fair comparison. Call once untimed on the
    same pairs (or a sample of them) and report the second call's ``stats``, for every variant compared.
    """
    order = np.arange(len(text))
    if sort_by_length:
        order = np.argsort(text.lengths(), kind="stable")
    return _score(model, text, order, batch_size=batch_size, device=device, amp=amp, width=None, warmup=warmup,
                  desc="score pairs", progress=progress)


def score_pairs_padded_fp32(model: nn.Module, text: TokenizedText, *, max_length: int, batch_size: int = 512,
                            device="cpu", warmup: int = 1, progress: bool = False):
    """The plain baseline of :func:`score_pairs`: pairs in their original order, every batch padded to
    ``max_length``, float32. Same return values, so the two can be compared side by side.
    """
    longest = int(text.lengths().max()) if len(text) else 0
    if longest > max_length:
        raise ValueError(f"a pair has {longest} tokens, more than max_length={max_length}")
    return _score(model, text, np.arange(len(text)), batch_size=batch_size, device=device, amp=False,
                  width=int(max_length), warmup=warmup, desc="score pairs (padded)", progress=progress)
