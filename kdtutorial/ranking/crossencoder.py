"""The cross-encoder teacher of lesson 06: BERT reads ``[CLS] query [SEP] ad [SEP]`` and gives one relevance logit.

A cross-encoder lets every query token attend to every ad token in every layer, which is why it is the
accurate teacher, and why it is slow to serve: each (query, ad) pair is a full pass of the network, nothing
can be cached. Here:

* :func:`ad_text` joins an ad's title and description into the one string both the teacher and the
  two-tower student (``kdtutorial.ranking.rankers``) see;
* :func:`tokenize_pairs` tokenises pairs once, without padding (a :class:`~kdtutorial.text.tokens.TokenizedText`);
  :func:`pair_matrix` builds the same token ids for a million pairs in seconds (:class:`PairMatrix`: every
  distinct query and ad tokenised once, pairs assembled in numpy with the tokenizer's own truncation rule);
* :func:`pair_token_type_ids` derives BERT's segment ids from the token ids (see below);
* :class:`CrossEncoder` is the model, :func:`fine_tune_cross_encoder` trains it on the Good/Bad labels;
* :func:`score_pairs` scores many pairs fast (length bucketing, bf16 on CUDA) for the transfer set, and
  :func:`score_pairs_padded` is the plain (fp32) baseline it is compared with.

**Segment (token type) ids.** ``TokenizedText`` stores token ids only. Rather than storing a second list per
pair (on a transfer set of a million pairs that would be hundreds of MB of Python lists) the segment ids are
recomputed per batch from the layout: 0 up to and including the first ``[SEP]``, 1 after it, 0 on padding,
exactly what the tokenizer itself returns. That is exact because :func:`tokenize_pairs` tokenises with
``split_special_tokens=True``: a literal ``"[SEP]"`` typed in a query becomes ordinary word pieces, so the
first ``[SEP]`` id is always the one between query and ad. It also works on any padded batch (dynamic or
fixed-width) without touching the shared text stack. Pinned by ``tests/test_crossencoder.py``.
"""
from __future__ import annotations

import copy
import time
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from kdtutorial.text.optim import graph_targets, to_device, train_steps
from kdtutorial.common.environment import autocast
from kdtutorial.ranking.relevance import label_bce_loss
from kdtutorial.text.tokens import PaddedIds, TokenizedText, padded_batches
from kdtutorial.ranking.twotower import mean_pool
from kdtutorial.ranking.qadsm import ad_text
from kdtutorial.common.environment import synchronize

__all__ = [
    "ad_text", "ads_of", "as_pairs", "pair_index", "tokenize_pairs", "longest_first", "PairMatrix", "pair_matrix",
    "pair_token_type_ids", "CrossEncoder", "ClsScorer", "fine_tune_cross_encoder", "score_pairs",
    "score_pairs_padded", "TRUNCATIONS",
]

TRUNCATIONS = ("longest_first", "only_second")


def ads_of(data) -> list:
    """``ad_text`` of every row of a Dataset (or dict of columns) with ``title`` and ``description`` columns."""
    return ad_text(data["title"], data["description"])


def encode_texts(tokenizer, first, second=None, *, max_length: int, truncation="longest_first") -> TokenizedText:
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
        return encode_texts(tokenizer, queries, ads, max_length=max_length, truncation=truncation)
    except Exception as err:  # the tokenizers library raises its own exception type for an impossible truncation
        if truncation == "only_second":
            raise ValueError(f"only_second truncation failed (a query longer than max_length={max_length}?): "
                             f"{err}") from err
        raise


def pair_index(queries: Sequence[str], ads: Sequence[str]):
    """``(distinct_queries, distinct_ads, query_ids, ad_ids)`` of a list of pairs.

    Distinct values in order of first appearance; pair ``i`` is ``(distinct_queries[query_ids[i]],
    distinct_ads[ad_ids[i]])``. ``ads`` are :func:`ad_text` strings.
    """
    queries, ads = as_pairs(queries, ads)
    query_ids, distinct_queries = pd.factorize(pd.Series(queries, dtype=object), sort=False)
    ad_ids, distinct_ads = pd.factorize(pd.Series(ads, dtype=object), sort=False)
    return list(distinct_queries), list(distinct_ads), query_ids.astype(np.int64), ad_ids.astype(np.int64)


def longest_first(n_first, n_second, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens kept of each side when a pair of ``n_first`` and ``n_second`` tokens must fit in ``budget``.

    The rule of the tokenizers library's ``longest_first`` truncation (vectorised): nothing is cut when the
    pair fits; otherwise the longer side is cut to ``budget - shorter`` when the shorter side takes at most
    half, else both are cut to half (``budget // 2`` for the first, the odd token to the second when the first
    was the shorter). ``budget`` is ``max_length`` minus the 3 special tokens. Pinned against the tokenizer.
    """
    a, b = np.asarray(n_first, dtype=np.int64), np.asarray(n_second, dtype=np.int64)
    short = np.minimum(a, b)
    keep_long = np.maximum(short, budget - short)
    halves = short + keep_long > budget
    keep_short = np.where(halves, budget // 2, short)
    keep_long = np.where(halves, budget // 2 + budget % 2, keep_long)
    first_short = a <= b
    cut_a = np.where(first_short, keep_short, keep_long)
    cut_b = np.where(first_short, keep_long, keep_short)
    fits = a + b <= budget
    return np.where(fits, a, np.minimum(a, cut_a)), np.where(fits, b, np.minimum(b, cut_b))


class PairMatrix(PaddedIds):
    """Tokenised pairs as one right-padded ``int32`` matrix (a :class:`kdtutorial.text.tokens.PaddedIds`): row ``i``
    holds ``[CLS] q [SEP] ad [SEP]`` of pair ``i`` followed by ``pad_id``. The scoring functions slice batches
    straight out of it; :meth:`from_text` converts a ``TokenizedText`` of pairs (:func:`tokenize_pairs`)."""


def _side_matrix(tokenizer, texts: list, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct texts tokenised without special tokens, cut at ``budget``: padded matrix and lengths."""
    ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=budget, padding=False,
                    split_special_tokens=True)["input_ids"]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    out = np.zeros((len(ids), max(1, int(lengths.max(initial=1)))), dtype=np.int32)
    for row, seq in enumerate(ids):
        out[row, : len(seq)] = seq
    return out, lengths


def distinct_texts(queries, ads, query_ids, ad_ids):
    """``(distinct_queries, distinct_ads, query_ids, ad_ids)``: given indices are checked, else computed."""
    if query_ids is None and ad_ids is None:
        return pair_index(queries, ads)
    if query_ids is None or ad_ids is None:
        raise ValueError("pass both query_ids and ad_ids (indices into queries and ads), or neither")
    qi, ai = np.asarray(query_ids, dtype=np.int64), np.asarray(ad_ids, dtype=np.int64)
    if qi.shape != ai.shape or qi.ndim != 1:
        raise ValueError(f"query_ids and ad_ids must be 1-D and equally long, got {qi.shape} and {ai.shape}")
    for name, ids, values in (("query_ids", qi, queries), ("ad_ids", ai, ads)):
        if ids.size and (ids.min() < 0 or ids.max() >= len(values)):
            raise ValueError(f"{name} must lie in [0, {len(values)})")
    return list(queries), list(ads), qi, ai


def pair_matrix(tokenizer, queries: Sequence[str], ads: Sequence[str], max_length: int, *, query_ids=None,
                ad_ids=None, chunk: int = 65536) -> PairMatrix:
    """The token ids :func:`tokenize_pairs` gives (``longest_first``), built fast for a large transfer set.

    A transfer set re-pairs a few thousand queries with a few thousand ads, so each distinct query and ad is
    tokenised once (:func:`pair_index`) and the pairs are assembled in numpy, ``chunk`` rows at a time, with
    :func:`longest_first`. A million pairs take seconds instead of a minute. Identical ids to
    :func:`tokenize_pairs` for every pair whose two sides are non-empty (pinned by the tests); an empty side
    still gets its ``[SEP]``. With ``query_ids`` and ``ad_ids``, ``queries`` and ``ads`` are the distinct texts and
    pair ``i`` is ``(queries[query_ids[i]], ads[ad_ids[i]])`` (e.g. a ``textdata.TransferIndex``).
    """
    if max_length < 5:
        raise ValueError(f"max_length must leave room for [CLS] q [SEP] ad [SEP]: at least 5, got {max_length}")
    budget = int(max_length) - 3
    distinct_q, distinct_a, qi, ai = distinct_texts(queries, ads, query_ids, ad_ids)
    q_mat, q_len = _side_matrix(tokenizer, distinct_q, budget)
    a_mat, a_len = _side_matrix(tokenizer, distinct_a, budget)
    keep_q, keep_a = longest_first(q_len[qi], a_len[ai], budget)
    n_tokens = keep_q + keep_a + 3
    width = int(n_tokens.max(initial=3))
    cls_id, sep_id, pad_id = int(tokenizer.cls_token_id), int(tokenizer.sep_token_id), int(tokenizer.pad_token_id)
    ids = np.full((len(qi), width), pad_id, dtype=np.int32)
    j = np.arange(width)[None, :]
    for start in range(0, len(qi), chunk):
        sl = slice(start, start + chunk)
        tq, ta = keep_q[sl, None], keep_a[sl, None]
        q_tok = np.take_along_axis(q_mat[qi[sl]], np.clip(j - 1, 0, q_mat.shape[1] - 1), axis=1)
        a_tok = np.take_along_axis(a_mat[ai[sl]], np.clip(j - tq - 2, 0, a_mat.shape[1] - 1), axis=1)
        block = np.where((j >= 1) & (j <= tq), q_tok, a_tok)
        block = np.where((j == tq + 1) | (j == tq + ta + 2), sep_id, block)
        block[:, 0] = cls_id
        ids[sl] = np.where(j < n_tokens[sl, None], block, pad_id)
    return PairMatrix(ids, n_tokens, pad_id)


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


def _encoder_inputs(model, input_ids, attention_mask=None, token_type_ids=None) -> dict:
    """The encoder's keyword arguments for ``model`` (a :class:`CrossEncoder` or :class:`ClsScorer`): the ids, the
    mask as given (``None``: no padding) and the segment ids, derived with :func:`pair_token_type_ids` (its
    ``sep_id``) when not given; none for a single-type encoder."""
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
    if model.uses_token_types:
        if token_type_ids is None:
            full = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            token_type_ids = pair_token_type_ids(input_ids, full, model.sep_id)
        inputs["token_type_ids"] = token_type_ids
    return inputs


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

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Relevance logits ``(B,)``. ``attention_mask=None`` means a batch without padding: the encoder then gets
        no mask at all, which lets PyTorch's attention use its fastest (flash) kernel."""
        hidden = self.encoder(**_encoder_inputs(self, input_ids, attention_mask, token_type_ids)).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = mean_pool(hidden, torch.ones_like(input_ids) if attention_mask is None else attention_mask)
        return self.head(self.dropout(pooled)).squeeze(-1)


class ClsScorer(nn.Module):
    """A :class:`CrossEncoder` with ``pooling="cls"`` for inference only: the same logits, less work.

    The head reads only the final ``[CLS]`` vector, and in the last layer no other position feeds it except
    through attention's keys and values. So the last layer is computed for ``[CLS]`` alone (Vaswani et al. 2017,
    Sec. 3.2; BERT's layer, Devlin et al. 2019):

        a = LN(x_0 + W_o Attn(q_0 = W_q x_0, K = W_k X, V = W_v X)),    h_0 = LN(a + W_2 act(W_1 a))

    Keys and values are still projected for every token; the query projection, the attention output, both
    feed-forward matrices and the layer norms run on one position instead of ``L``. For a 6-layer encoder that
    removes about a seventh of the multiply-adds. The weights are copies (the model passed in is not changed);
    dropout is off. Pinned against ``CrossEncoder.forward`` by ``tests/test_crossencoder.py``.
    """

    def __init__(self, model: "CrossEncoder"):
        super().__init__()
        if getattr(model, "pooling", None) != "cls":
            raise ValueError("ClsScorer needs a CrossEncoder with pooling='cls' (mean pooling reads every position)")
        from kdtutorial.text.students import copy_layers_encoder, encoder_layers

        layers = encoder_layers(model.encoder)
        if len(layers) < 2:
            raise ValueError(f"ClsScorer needs an encoder with at least 2 layers, this one has {len(layers)}")
        self.encoder = copy_layers_encoder(model.encoder, range(len(layers) - 1))
        self.last = copy.deepcopy(layers[-1])
        self.head = copy.deepcopy(model.head)
        self.sep_id, self.uses_token_types = model.sep_id, model.uses_token_types
        attention = self.last.attention.self
        self.heads, self.head_dim = attention.num_attention_heads, attention.attention_head_size
        self.eval()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Relevance logits ``(B,)``, equal to the cross-encoder's in eval mode (``attention_mask=None``: no
        padding)."""
        x = self.encoder(**_encoder_inputs(self, input_ids, attention_mask, token_type_ids)).last_hidden_state
        batch = x.shape[0]
        attention, layer = self.last.attention, self.last

        def heads(t):  # (B, L, H * d) -> (B, H, L, d)
            return t.view(batch, -1, self.heads, self.head_dim).transpose(1, 2)

        x0 = x[:, :1]
        mask = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        context = nn.functional.scaled_dot_product_attention(
            heads(attention.self.query(x0)), heads(attention.self.key(x)), heads(attention.self.value(x)),
            attn_mask=mask)
        a = attention.output.LayerNorm(attention.output.dense(context.transpose(1, 2).reshape(batch, 1, -1)) + x0)
        h = layer.output.LayerNorm(layer.output.dense(layer.intermediate(a)) + a)
        return self.head(h[:, 0]).squeeze(-1)


# ----------------------------------------------------------------------------------------- training
def fine_tune_cross_encoder(model: nn.Module, text: TokenizedText, labels, *, epochs: int = 2, lr: float = 5e-5,
                            batch_size: int = 32, warmup: float = 0.1, weight_decay: float = 0.01, seed: int = 0,
                            device="cpu", amp: bool = False, max_steps: int | None = None,
                            freeze_embeddings: bool = False, progress: bool = True, accelerator=None,
                            graphs: bool = False) -> list:
    """Train ``model`` (a :class:`CrossEncoder`) on pairs ``text`` with Good = 1 / Bad = 0 ``labels`` (BCE).

    The schedule of :func:`kdtutorial.text.finetuning.fine_tune`: AdamW, linear warm-up over the first ``warmup``
    share of the steps, then linear decay to 0; batch order seeded with ``seed`` (the head and dropout follow
    torch's global seed: call ``seed_everything`` first); bf16 autocast on CUDA when ``amp``. The loss is
    :func:`kdtutorial.ranking.relevance.label_bce_loss` on float32 logits. ``freeze_embeddings`` keeps the encoder's
    embedding layer fixed (cheaper steps on a CPU, as in ``finetuning.fine_tune``). Returns every step's loss; the
    model is left in eval mode. ``accelerator``: data-parallel on several GPUs (``optim.train_steps``).
    ``graphs=True`` (CUDA): steps replayed from a CUDA graph, as ``finetuning.fine_tune`` takes it (batches padded to
    the longest pair, labels on the device).
    """
    device = torch.device(device)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    if labels.shape != (len(text),):
        raise ValueError(f"labels must have one value per pair, shape ({len(text)},), got {tuple(labels.shape)}")
    if ((labels < 0) | (labels > 1)).any():
        raise ValueError("labels must lie in [0, 1] (Good = 1, Bad = 0)")
    labels, width = graph_targets(labels, device, graphs), "longest" if graphs else None

    def batches(epoch):
        for rows, batch in padded_batches(text, batch_size, shuffle=True, seed=seed * 1000 + epoch, width=width):
            yield rows, (batch["input_ids"], batch["attention_mask"])

    def loss_of(logits, rows):
        return label_bce_loss(logits, to_device(labels[rows], logits.device))

    frozen = model.encoder.embeddings.parameters() if freeze_embeddings else ()
    return train_steps(model, batches, loss_of, n_rows=len(text), epochs=epochs, batch_size=batch_size, lr=lr,
                       weight_decay=weight_decay, warmup=warmup, device=device, amp=amp, max_steps=max_steps,
                       frozen=frozen, desc="cross-encoder", progress=progress, accelerator=accelerator,
                       graphs=graphs)


# ------------------------------------------------------------------------------------------ scoring
def as_pair_matrix(pairs) -> PairMatrix:
    if isinstance(pairs, PairMatrix):
        return pairs
    if isinstance(pairs, TokenizedText):
        return PairMatrix.from_text(pairs)
    raise TypeError(f"pairs must be a PairMatrix or a TokenizedText, got {type(pairs).__name__}")


def _fixed_spans(lengths: np.ndarray, batch_size: int, width: int | None) -> list[tuple[int, int, int]]:
    """``(start, stop, width)`` of batches of ``batch_size`` rows; ``width=None``: each its own longest row."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(lengths)
    return [(s, min(s + batch_size, n), int(width) if width is not None else int(lengths[s : s + batch_size].max()))
            for s in range(0, n, batch_size)]


def _score(model, pairs, order: np.ndarray, spans: list, *, device, amp: bool, warmup: bool, desc: str,
           progress: bool):
    """Score ``pairs`` in the given row ``order``, batch by batch over ``spans`` ``(start, stop, width)`` (rows of
    the reordered matrix, each batch padded or cut to ``width`` tokens).

    The whole (reordered) id matrix goes to the device once; each batch is a slice of it, its attention mask
    is computed on the device (none when the batch has no padding) and its logits stay there until the end: one
    host transfer each way.
    """
    device = torch.device(device)
    matrix = as_pair_matrix(pairs)
    was_training = model.training
    model.to(device).eval()
    n = len(matrix)
    lengths = matrix.n_tokens[order]
    widest = max((w for _, _, w in spans), default=1)
    if matrix.ids.shape[1] < widest:
        ids_host = np.full((n, widest), matrix.pad_id, dtype=np.int32)
        ids_host[:, : matrix.ids.shape[1]] = matrix.ids[order]
    else:
        ids_host = matrix.ids[order]
    ids = torch.from_numpy(np.ascontiguousarray(ids_host)).to(device)
    n_tok = torch.from_numpy(lengths).to(device)
    out = torch.empty(n, dtype=torch.float32, device=device)
    unpadded = {start: int(lengths[start:stop].min()) == w for start, stop, w in spans}

    def run(start: int, stop: int, w: int) -> None:
        batch = ids[start:stop, :w].long()
        if unpadded[start]:  # no padding in this batch (most of them, once sorted by length): no mask at all
            mask = None
        else:
            mask = (torch.arange(w, device=device)[None, :] < n_tok[start:stop, None]).long()
        with autocast(device, amp):
            out[start:stop] = model(batch, mask).float()

    with torch.inference_mode():
        if warmup:  # the first call of each batch shape pays for kernel selection and allocation: untimed
            shapes = {}  # a batch with padding (masked attention) and one without run different kernels
            for start, stop, w in spans:
                shapes.setdefault((stop - start, w, unpadded[start]), (start, stop, w))
            for span in shapes.values():
                run(*span)
        synchronize(device)
        began = time.perf_counter()
        for span in tqdm(spans, desc=desc, leave=False, disable=not progress):
            run(*span)
        synchronize(device)
        seconds = time.perf_counter() - began
        scores = np.empty(n, dtype=np.float32)
        scores[order] = out.cpu().numpy()
    model.train(was_training)
    computed = sum((stop - start) * w for start, stop, w in spans)
    stats = {"pairs": n, "seconds": seconds, "pairs_per_s": n / max(seconds, 1e-12), "batches": len(spans),
             "padding": 1.0 - float(lengths.sum()) / max(computed, 1)}
    return scores, stats


def score_pairs(model: nn.Module, pairs, *, batch_size: int = 1024, device="cpu", amp: bool = False,
                bf16_weights: bool = False, cls_only: bool = False, sort_by_length: bool = True,
                lean: bool = False, attention: str = "sdpa", exact_lengths: bool = False, batch_tokens: int | None = None,
                gelu_epilogue: bool = False, compile: bool = False, warmup: bool = False, progress: bool = False):
    """Logits of every pair (float32 numpy, original order) and timing ``stats``.

    ``pairs`` is a :class:`PairMatrix` (:func:`pair_matrix`) or a ``TokenizedText`` (:func:`tokenize_pairs`).
    Fast inference: ``torch.inference_mode``, eval mode (restored afterwards), bf16 autocast on CUDA when
    ``amp``, length bucketing (with ``sort_by_length`` the pairs are sorted by length, so each batch holds pairs
    of similar length and is padded only to its own longest one), the ids sent to the device once and the
    logits fetched once. ``stats``: ``pairs``, ``seconds`` (CUDA-synchronised wall time of the scoring loop),
    ``pairs_per_s``, ``batches`` and ``padding`` (the share of computed positions that were padding), plus
    ``compile_seconds`` when ``compile``.

    Timing: on CUDA the first batch of every new shape pays for kernel selection, and bucketing makes many
    shapes. ``warmup=True`` first runs one untimed batch of each distinct shape, with and without padding; use it
    for every variant compared (it costs little next to a million pairs; on a CPU it only doubles a small run's
    time).

    ``bf16_weights`` (CUDA with ``amp`` only): score a bfloat16 copy of the model instead of autocasting the
    float32 one. Autocast keeps layer norms and softmax in float32 and re-casts the weights on every call; the
    pure-bf16 copy skips both (faster; its logits differ slightly from the autocast ones, lesson 06 prints by how
    much). The model passed in is not changed.

    ``cls_only``: score with a :class:`ClsScorer` copy of the model (a ``pooling="cls"`` :class:`CrossEncoder`),
    which computes the last layer at ``[CLS]`` only: the same logits (to float rounding) for less work.

    ``lean``: score with a :class:`~kdtutorial.ranking.leanscorer.LeanCrossEncoder` copy instead (``cls_only`` is then
    implied: its last layer runs at ``[CLS]`` only; fused ``W_qkv``,
    flattened tokens, last layer at ``[CLS]`` only; bf16 weights with ``bf16_weights``; ``gelu_epilogue`` fuses the
    feed-forward GELU into its matrix product on CUDA; ``attention``: ``"sdpa"`` or ``"matmul"``
    (:data:`~kdtutorial.ranking.leanscorer.ATTENTIONS`); ``compile`` runs it through ``torch.compile`` with dynamic
    shapes, the compilation timed apart). ``exact_lengths``: batches of one pair length each
    (:func:`~kdtutorial.ranking.leanscorer.exact_length_spans`, at most ``batch_tokens`` tokens a batch, default
    ``batch_size`` times the median length): no padding, no attention mask.
    """
    from kdtutorial.ranking.leanscorer import LeanCrossEncoder, exact_length_spans

    matrix = as_pair_matrix(pairs)
    if exact_lengths and not sort_by_length:
        raise ValueError("exact_lengths needs sort_by_length=True (batches of one length come from sorted pairs)")
    if (gelu_epilogue or compile or attention != "sdpa") and not lean:
        raise ValueError("gelu_epilogue, compile and attention apply to lean=True only")
    order = np.argsort(matrix.n_tokens, kind="stable") if sort_by_length else np.arange(len(matrix))
    device = torch.device(device)
    if lean:
        use_bf16 = bf16_weights and amp and device.type == "cuda"
        model = LeanCrossEncoder(model, dtype=torch.bfloat16 if use_bf16 else torch.float32,
                                 gelu_epilogue=gelu_epilogue, attention=attention).to(device)
        amp = amp and not use_bf16
    else:
        if cls_only:
            model = ClsScorer(model)
        if bf16_weights and amp and device.type == "cuda":
            model, amp = (model if cls_only else copy.deepcopy(model)).to(device=device, dtype=torch.bfloat16), False
    lengths = matrix.n_tokens[order]
    if exact_lengths:
        tokens = batch_tokens if batch_tokens is not None else batch_size * max(1, int(np.median(lengths)) if len(lengths) else 1)
        spans = exact_length_spans(lengths, int(tokens))
    else:
        spans = _fixed_spans(lengths, batch_size, None)
    compile_seconds = None
    if compile and spans:  # no pairs, nothing to compile
        began = time.perf_counter()
        model = torch.compile(model, dynamic=True)
        with torch.inference_mode(), autocast(device, amp):  # the first call compiles: timed on its own
            first = spans[0]
            model(torch.from_numpy(np.ascontiguousarray(matrix.ids[order[first[0]:first[1]], :first[2]])).long()
                  .to(device))
        synchronize(device)
        compile_seconds = time.perf_counter() - began
    scores, stats = _score(model, matrix, order, spans, device=device, amp=amp, warmup=warmup, desc="score pairs",
                           progress=progress)
    if compile_seconds is not None:
        stats["compile_seconds"] = compile_seconds
    return scores, stats


def score_pairs_padded(model: nn.Module, pairs, *, max_length: int, batch_size: int = 1024, device="cpu",
                       amp: bool = False, warmup: bool = False, progress: bool = False):
    """The plain baseline of :func:`score_pairs`: pairs in their original order, every batch padded to
    ``max_length``, float32 (or bf16 autocast on CUDA with ``amp``). Same return values, so the two can be compared
    side by side.
    """
    matrix = as_pair_matrix(pairs)
    longest = int(matrix.n_tokens.max(initial=0))
    if longest > max_length:
        raise ValueError(f"a pair has {longest} tokens, more than max_length={max_length}")
    return _score(model, matrix, np.arange(len(matrix)), _fixed_spans(matrix.n_tokens, batch_size, int(max_length)),
                  device=device, amp=amp, warmup=warmup, desc="score pairs (padded)", progress=progress)
