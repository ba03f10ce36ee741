"""Training, scoring and serving the two-tower students of lesson 06 (TwinBERT, C-DSSM).

The recipe (Microsoft Ads; Lu, Jiao and Zhang, TwinBERT, CIKM 2020): the cross-encoder teacher
(``kdtutorial.ranking.crossencoder``) scores a large unlabelled transfer set of query-ad pairs; the two-tower student
learns those scores (:func:`distil_two_tower`), then is fine-tuned on the labelled pairs, on the labels alone or
on labels plus the teacher's scores (:func:`fine_tune_two_tower`). :func:`score_two_tower` scores pairs the
direct way (both towers per pair); :func:`serve_with_cached_ads` the way a two-tower model is served: every
distinct ad encoded once offline, every distinct query once, then only the cheap crossing per pair.

A pair's two sides are stored separately, aligned by row: row ``i`` of ``q_text`` and row ``i`` of ``ad_text``
are pair ``i`` (:func:`tokenize_sides`). :func:`pair_batches` draws one set of rows and pads each side to its own
longest member.

**C-DSSM goes through the same functions.** ``CDSSM`` has TwinBERT's interface (``forward(q_ids, q_mask,
ad_ids, ad_mask)``, ``encode``, ``score_vectors``) but reads letter trigrams, not word pieces. So instead of a
second set of training loops there is one small adapter on the data side: :class:`TrigramText` holds the raw
strings and builds ``letter_trigram_batch`` tensors for the chosen rows, where a ``TokenizedText`` is padded;
:func:`trigram_sides` makes the pair of them. Every function here accepts either kind of side.
Pinned by ``tests/test_rankers.py``.
"""
from __future__ import annotations

import time
from copy import deepcopy
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from kdtutorial.ranking.crossencoder import encode_texts, distinct_texts, as_pairs, pair_index
from kdtutorial.text.optim import graph_targets, to_device, train_steps
from kdtutorial.common.environment import autocast
from kdtutorial.ranking.relevance import label_bce_loss, relevance_kd_loss
from kdtutorial.text.tokens import PaddedIds, TokenizedText
from kdtutorial.ranking.twotower import TwinBERT, letter_trigram_batch
from kdtutorial.common.environment import synchronize

__all__ = [
    "tokenize_sides", "padded_sides", "TrigramText", "trigram_sides", "pair_batches", "distil_two_tower", "fine_tune_two_tower",
    "training_throughput", "score_two_tower", "sentence_vectors", "pair_index", "serve_with_cached_ads", "serve_grid",
    "serving_latency",
]


# ------------------------------------------------------------------------------------------ the two sides
def tokenize_sides(tokenizer, queries: Sequence[str], ads: Sequence[str], max_query_len: int, max_ad_len: int, *,
                   query_ids=None, ad_ids=None) -> tuple[TokenizedText, TokenizedText]:
    """Queries and ads tokenised separately (``[CLS] text [SEP]``, truncated, unpadded), aligned by row.

    ``ads`` are ``crossencoder.ad_text`` strings, the same the teacher reads. As in
    ``crossencoder.tokenize_pairs``, a literal special-token string in the text is tokenised as ordinary text.
    Each distinct query and ad is tokenised once (a million re-paired pairs hold a few thousand of each). With
    ``query_ids`` and ``ad_ids`` the texts are the distinct ones, as in ``crossencoder.pair_matrix``.
    """
    if min(max_query_len, max_ad_len) < 3:
        raise ValueError(f"max lengths must be at least 3 ([CLS] word [SEP]), got {max_query_len}, {max_ad_len}")
    distinct_q, distinct_a, qi, ai = distinct_texts(queries, ads, query_ids, ad_ids)  # a transfer set repeats each text many times
    q_text = encode_texts(tokenizer, distinct_q, max_length=max_query_len)
    a_text = encode_texts(tokenizer, distinct_a, max_length=max_ad_len)
    return q_text.subset(qi), a_text.subset(ai)  # rows share the distinct texts' id lists: no copies


class TrigramText:
    """Letter trigrams for a ``CDSSM`` side, in the part of a ``TokenizedText`` (``len``, ``subset``, ``lengths``,
    one batch per rows): ``batch(rows)`` equals ``letter_trigram_batch([text of row r for r in rows], n_buckets,
    max_words)``.

    ``texts`` are the distinct texts and ``index`` maps each row to one of them (``None``: row ``i`` is ``texts[i]``).
    Each distinct text is hashed once, on first use, into a table of trigram ids; a batch is a slice of that table,
    cut to the batch's longest text and word. A million re-paired pairs hold a few thousand distinct texts, so
    distillation over them does no hashing per step. ``subset`` shares the table.
    """

    def __init__(self, texts, n_buckets: int = 2**15, max_words: int = 32, index=None):
        self.texts, self.n_buckets, self.max_words = list(texts), int(n_buckets), int(max_words)
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        if self.index is not None and self.index.size and (self.index.min() < 0 or self.index.max() >= len(self.texts)):
            raise ValueError(f"index must lie in [0, {len(self.texts)})")
        self._table = None  # (ids, n_words, n_trigrams) of every distinct text, built on first use

    def __len__(self) -> int:
        return len(self.texts) if self.index is None else len(self.index)

    def _rows(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return rows if self.index is None else self.index[rows]

    def _tables(self):
        if self._table is None:
            ids, mask = letter_trigram_batch(self.texts or [""], self.n_buckets, self.max_words)
            ids = ids.numpy().astype(np.int32 if self.n_buckets < 2**31 - 1 else np.int64)
            n_words = mask.numpy().sum(axis=1)
            n_trigrams = (ids > 0).sum(axis=2).max(axis=1, initial=0)
            self._table = (ids, n_words, n_trigrams)
        return self._table

    def subset(self, rows) -> "TrigramText":
        out = TrigramText(self.texts, self.n_buckets, self.max_words, index=self._rows(rows))
        out._table = self._table
        return out

    def lengths(self) -> np.ndarray:
        """Words per text (at most ``max_words``): the width of its batch, for length bucketing."""
        return self._tables()[1][self._rows(np.arange(len(self)))].astype(np.int64)

    def batch(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        ids, n_words, n_trigrams = self._tables()
        which = self._rows(rows)
        w = max(1, int(n_words[which].max(initial=0)))
        t = max(1, int(n_trigrams[which].max(initial=0)))
        out = np.zeros((len(which), w, t), dtype=np.int64)
        cut = ids[which, : min(w, ids.shape[1]), : min(t, ids.shape[2])]
        out[:, : cut.shape[1], : cut.shape[2]] = cut
        mask = np.arange(w)[None, :] < n_words[which][:, None]
        return torch.from_numpy(out), torch.from_numpy(mask)


def trigram_sides(model, queries: Sequence[str], ads: Sequence[str], max_words: int = 32, *, query_ids=None,
                  ad_ids=None) -> tuple[TrigramText, TrigramText]:
    """The two sides for a ``CDSSM`` ``model`` (its ``n_buckets``), aligned by row, as ``tokenize_sides`` does:
    each distinct query and ad is hashed once; with ``query_ids`` and ``ad_ids`` the texts are the distinct ones."""
    if query_ids is None and ad_ids is None:
        queries, ads = as_pairs(queries, ads)
    distinct_q, distinct_a, qi, ai = distinct_texts(queries, ads, query_ids, ad_ids)
    return (TrigramText(distinct_q, model.n_buckets, max_words, index=qi),
            TrigramText(distinct_a, model.n_buckets, max_words, index=ai))


def padded_sides(q_text, ad_text) -> tuple[PaddedIds, PaddedIds]:
    """Both word-piece sides as :class:`~kdtutorial.text.tokens.PaddedIds`, converted once. Every function here
    takes either kind and converts a ``TokenizedText`` on each call (a pass over the data), which for a
    million-pair transfer set costs seconds per call; convert it once when it is trained on several times."""
    _check_aligned(q_text, ad_text)
    return _padded(q_text), _padded(ad_text)


def _padded(text):
    """A side as a :class:`kdtutorial.text.tokens.PaddedIds`, built once per pass (trigram sides stay as they are)."""
    return text if isinstance(text, (TrigramText, PaddedIds)) else PaddedIds.from_text(text)


def _side_batch(text, rows, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` of one side for ``rows``: word pieces padded to the longest row (or to ``width``, the
    fixed-length baseline), or letter trigrams for a ``TrigramText``."""
    if isinstance(text, TrigramText):
        return text.batch(rows)
    side = _padded(text)
    n = side.n_tokens[rows]
    w = max(1, int(n.max(initial=1))) if width is None else int(width)
    if w < int(n.max(initial=0)):
        raise ValueError(f"width={w} is shorter than the longest row ({int(n.max())} tokens)")
    ids = side.ids[rows, : min(w, side.ids.shape[1])].astype(np.int64)
    if w > ids.shape[1]:
        ids = np.pad(ids, ((0, 0), (0, w - ids.shape[1])), constant_values=side.pad_id)
    mask = (np.arange(w)[None, :] < n[:, None]).astype(np.int64)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _check_aligned(q_text, ad_text) -> None:
    if len(q_text) != len(ad_text):
        raise ValueError(f"q_text has {len(q_text)} rows but ad_text {len(ad_text)}: row i of each is pair i")


def pair_batches(q_text, ad_text, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 sort_by_length: bool = False, indices=None, widths: tuple | None = None):
    """Yield ``(rows, (q_ids, q_mask), (ad_ids, ad_mask))``: the same pair rows from both sides, each side padded
    to its own longest member (``tokens.pad_rows``; trigram tensors for a :class:`TrigramText`).

    ``shuffle`` (seeded with ``seed``, as ``tokens.padded_batches``) for training; ``sort_by_length`` sorts by ad
    length, then query length (inference; the caller puts results back with ``rows``); ``indices`` restricts the
    batches to those rows. ``widths=(query_width, ad_width)`` pads every batch to those fixed widths instead (the
    plain baseline of the training-throughput comparison; word-piece sides only).
    """
    _check_aligned(q_text, ad_text)
    q_text, ad_text = _padded(q_text), _padded(ad_text)
    q_width, ad_width = (None, None) if widths is None else widths
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.arange(len(q_text)) if indices is None else np.asarray(indices)
    if shuffle:
        order = order[np.random.default_rng(seed).permutation(len(order))]
    elif sort_by_length:
        order = order[np.lexsort((q_text.lengths()[order], ad_text.lengths()[order]))]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield rows, _side_batch(q_text, rows, q_width), _side_batch(ad_text, rows, ad_width)


def _to(pair, device):
    return tuple(t.to(device, non_blocking=True) for t in pair)


# ---------------------------------------------------------------------------------------------- training
def _frozen_embeddings(student) -> set:
    embeddings = getattr(getattr(student, "encoder", None), "embeddings", None)
    if embeddings is None:
        raise ValueError("freeze_embeddings needs a student with .encoder.embeddings (a TwinBERT)")
    return set(embeddings.parameters())


def _train(student, q_text, ad_text, loss_of, *, epochs, lr, batch_size, warmup, weight_decay, seed, device, amp,
           max_steps, freeze_embeddings, progress, desc, widths=None, accelerator=None, graphs=False) -> list:
    """The loop shared by both stages; ``loss_of(logits, rows)`` is the objective. Schedule as ``finetuning``.
    ``graphs``: steps replayed from a CUDA graph (``optim.train_steps``), word-piece sides padded to their longest
    row so that every batch has one shape."""
    _check_aligned(q_text, ad_text)
    q_text, ad_text = _padded(q_text), _padded(ad_text)  # once, not once per epoch
    if graphs and widths is None and isinstance(q_text, PaddedIds) and isinstance(ad_text, PaddedIds):
        widths = (q_text.ids.shape[1], ad_text.ids.shape[1])

    def batches(epoch):
        for rows, q, ad in pair_batches(q_text, ad_text, batch_size, shuffle=True, seed=seed * 1000 + epoch,
                                        widths=widths):
            yield rows, (*q, *ad)

    frozen = _frozen_embeddings(student) if freeze_embeddings else ()
    return train_steps(student, batches, loss_of, n_rows=len(q_text), epochs=epochs, batch_size=batch_size, lr=lr,
                       weight_decay=weight_decay, warmup=warmup, device=device, amp=amp, max_steps=max_steps,
                       frozen=frozen, desc=desc, progress=progress, accelerator=accelerator, graphs=graphs)


def _per_pair(values, n: int, name: str) -> torch.Tensor:
    values = torch.as_tensor(np.asarray(values), dtype=torch.float32)
    if values.shape != (n,):
        raise ValueError(f"{name} must have one value per pair, shape ({n},), got {tuple(values.shape)}")
    return values


def distil_two_tower(student: nn.Module, q_text, ad_text, teacher_logits, *, kind: str = "mse",
                     temperature: float = 1.0, epochs: int = 1, lr: float = 5e-5, batch_size: int = 64,
                     warmup: float = 0.1, weight_decay: float = 0.01, seed: int = 0, device="cpu", amp: bool = False,
                     max_steps: int | None = None, freeze_embeddings: bool = False, progress: bool = True,
                     accelerator=None, graphs: bool = False) -> list:
    """Stage 3: the student learns the teacher's logits on the (unlabelled) transfer set.

    ``student`` is a ``TwinBERT`` or ``CDSSM`` (anything with ``forward(q_ids, q_mask, ad_ids, ad_mask) -> (B,)``);
    ``q_text`` / ``ad_text`` the two sides (``tokenize_sides`` or ``trigram_sides``); ``teacher_logits`` one per
    pair (``crossencoder.score_pairs``). Loss: ``relevance.relevance_kd_loss(s, t, labels=None, kind=kind,
    temperature=temperature)``, i.e. MSE on logits or tempered BCE. Schedule and seeding as
    ``finetuning.fine_tune`` (AdamW, warm-up then linear decay, seeded order, bf16 autocast on CUDA when ``amp``);
    ``freeze_embeddings`` keeps a TwinBERT's embedding layer fixed. Returns every step's loss; eval mode after.
    ``accelerator``: data-parallel on several GPUs (``optim.train_steps``, ``kdtutorial.ranking.scaling``).
    ``graphs=True`` (CUDA): every step after the warm-up replayed from a CUDA graph (``optim.train_steps``; batches
    padded to one width, the targets on the device); the same training, with other dropout masks.
    """
    teacher = _per_pair(teacher_logits, len(q_text), "teacher_logits")
    relevance_kd_loss(teacher[:1], teacher[:1], kind=kind, temperature=temperature)  # argument errors now, not later
    teacher = graph_targets(teacher, device, graphs)

    def loss_of(logits, rows):
        return relevance_kd_loss(logits, to_device(teacher[rows], logits.device), kind=kind, temperature=temperature)

    return _train(student, q_text, ad_text, loss_of, epochs=epochs, lr=lr, batch_size=batch_size, warmup=warmup,
                  weight_decay=weight_decay, seed=seed, device=device, amp=amp, max_steps=max_steps,
                  freeze_embeddings=freeze_embeddings, progress=progress, desc="distil", accelerator=accelerator,
                  graphs=graphs)


def fine_tune_two_tower(student: nn.Module, q_text, ad_text, labels, *, teacher_logits=None, kind: str = "mse",
                        alpha: float = 0.5, temperature: float = 1.0, epochs: int = 2, lr: float = 5e-5,
                        batch_size: int = 32, warmup: float = 0.1, weight_decay: float = 0.01, seed: int = 0,
                        device="cpu", amp: bool = False, max_steps: int | None = None,
                        freeze_embeddings: bool = False, progress: bool = True, accelerator=None,
                        graphs: bool = False) -> list:
    """Stage 4: fine-tune the student on the labelled pairs (Good = 1, Bad = 0).

    With ``teacher_logits=None`` the loss is ``relevance.label_bce_loss`` (labels only); with the teacher's
    logits of these pairs it is ``relevance_kd_loss(s, t, y, kind=, alpha=, temperature=)``:
    ``alpha * KD + (1 - alpha) * BCE``. Otherwise as :func:`distil_two_tower`.
    """
    y = _per_pair(labels, len(q_text), "labels")
    if ((y < 0) | (y > 1)).any():
        raise ValueError("labels must lie in [0, 1] (Good = 1, Bad = 0)")
    y = graph_targets(y, device, graphs)
    if teacher_logits is None:
        def loss_of(logits, rows):
            return label_bce_loss(logits, to_device(y[rows], logits.device))
    else:
        teacher = _per_pair(teacher_logits, len(q_text), "teacher_logits")
        relevance_kd_loss(teacher[:1], teacher[:1], y[:1].cpu(), kind=kind, alpha=alpha, temperature=temperature)
        teacher = graph_targets(teacher, device, graphs)

        def loss_of(logits, rows):
            return relevance_kd_loss(logits, to_device(teacher[rows], logits.device), to_device(y[rows], logits.device),
                                     kind=kind, alpha=alpha, temperature=temperature)

    return _train(student, q_text, ad_text, loss_of, epochs=epochs, lr=lr, batch_size=batch_size, warmup=warmup,
                  weight_decay=weight_decay, seed=seed, device=device, amp=amp, max_steps=max_steps,
                  freeze_embeddings=freeze_embeddings, progress=progress, desc="fine-tune two-tower",
                  accelerator=accelerator, graphs=graphs)


def training_throughput(student: nn.Module, q_text, ad_text, teacher_logits, *, steps: int = 50,
                        batch_size: int = 1024, device="cpu", amp: bool = False, widths: tuple | None = None,
                        warmup_steps: int = 5, lr: float = 1e-4) -> dict:
    """Training pairs per second of :func:`distil_two_tower`'s step (MSE to the teacher), measured on a copy.

    ``amp`` and dynamic padding (``widths=None``) is the lesson's setting; ``amp=False, widths=(q, ad)`` the plain
    float32 loop padded to fixed lengths it is compared with. ``warmup_steps`` untimed steps first (kernel
    selection), then ``steps`` timed ones (CUDA-synchronised). ``student`` itself is not changed.
    """
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    teacher = _per_pair(teacher_logits, len(q_text), "teacher_logits")
    device = torch.device(device)
    copy_ = deepcopy(student)
    times = []

    def loss_of(logits, rows):
        if len(times) == warmup_steps:
            synchronize(device)
            times.append(time.perf_counter())
        else:
            times.append(None)
        return relevance_kd_loss(logits, to_device(teacher[rows], logits.device), kind="mse")

    epochs = -(-(warmup_steps + steps) * batch_size // max(1, len(q_text)))
    _train(copy_, q_text, ad_text, loss_of, epochs=epochs, lr=lr, batch_size=batch_size, warmup=0.0,
           weight_decay=0.0, seed=0, device=device, amp=amp, max_steps=warmup_steps + steps,
           freeze_embeddings=False, progress=False, desc="throughput", widths=widths)
    synchronize(device)
    seconds = time.perf_counter() - times[warmup_steps]
    del copy_
    return {"steps": steps, "pairs": steps * batch_size, "seconds": seconds,
            "pairs_per_s": steps * batch_size / max(seconds, 1e-12)}


# ----------------------------------------------------------------------------------------------- scoring
def score_two_tower(student: nn.Module, q_text, ad_text, *, batch_size: int = 512, device="cpu", amp: bool = False,
                    return_stats: bool = False):
    """Logits of every pair (float32 numpy, original order), both towers run per pair: the direct way.

    Inference mode, eval mode (restored afterwards), batches sorted by length, bf16 autocast on CUDA when ``amp``.
    With ``return_stats`` also ``{"pairs", "seconds", "pairs_per_s"}`` (CUDA-synchronised wall time).
    """
    _check_aligned(q_text, ad_text)
    device = torch.device(device)
    was_training = student.training
    student.to(device).eval()
    out = np.empty(len(q_text), dtype=np.float32)
    with torch.inference_mode():
        synchronize(device)
        began = time.perf_counter()
        for rows, q, ad in pair_batches(q_text, ad_text, batch_size, sort_by_length=True):
            with autocast(device, amp):
                logits = student(*_to(q, device), *_to(ad, device))
            out[rows] = logits.float().cpu().numpy()
        synchronize(device)
        seconds = time.perf_counter() - began
    student.train(was_training)
    if not return_stats:
        return out
    return out, {"pairs": len(out), "seconds": seconds, "pairs_per_s": len(out) / max(seconds, 1e-12)}


def _encode_side(student, text, side: str, *, batch_size: int, device, amp: bool) -> torch.Tensor:
    """Vectors of every row of one side, in order, on ``device``: ``(len(text), D)``."""
    text = _padded(text)
    order = np.argsort(text.lengths(), kind="stable")
    chunks, vectors = [], None
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = _to(_side_batch(text, rows), device)
        with autocast(device, amp):
            vec = student.encode(ids, mask, side)
        chunks.append((rows, vec))
    for rows, vec in chunks:
        if vectors is None:
            vectors = torch.empty((len(text), vec.shape[-1]), dtype=vec.dtype, device=device)
        vectors[torch.as_tensor(rows, device=device)] = vec
    return vectors


def sentence_vectors(encoder: nn.Module, tokenizer, texts: Sequence[str], max_length: int, *, batch_size: int = 512,
                     device="cpu", amp: bool = False) -> np.ndarray:
    """Unit-length mean-pooled vectors ``(len(texts), D)`` (float32 numpy) of ``encoder``, e.g. the pretrained
    all-MiniLM-L6-v2, whose training made the cosine of two such vectors a similarity of meaning.

    ``[CLS] text [SEP]`` truncated to ``max_length``, batches sorted by length, inference mode, bf16 autocast on
    CUDA when ``amp``. Used to draw a transfer set of each query's nearest ads (``textdata.transfer_index``
    with ``candidates="neighbours"``); ``encoder`` is wrapped, not copied, and left on the device and in the mode
    it was in.
    """
    if max_length < 3:
        raise ValueError(f"max_length must be at least 3 ([CLS] word [SEP]), got {max_length}")
    device = torch.device(device)
    tower = TwinBERT(encoder, pooling="mean", crossing="cos")
    was_training, home = encoder.training, next(encoder.parameters()).device
    tower.to(device).eval()
    try:
        with torch.inference_mode():
            vectors = _encode_side(tower, encode_texts(tokenizer, list(texts), max_length=max_length), "query",
                                   batch_size=batch_size, device=device, amp=amp).float()
    finally:
        encoder.to(home).train(was_training)
    return torch.nn.functional.normalize(vectors, dim=-1).cpu().numpy()


def _ids(values, n_distinct: int, name: str) -> torch.Tensor:
    values = np.asarray(values)
    if values.ndim != 1 or not (np.issubdtype(values.dtype, np.integer) or values.size == 0):
        raise ValueError(f"{name} must be a 1-D array of integer row numbers")
    if values.size and (values.min() < 0 or values.max() >= n_distinct):
        raise ValueError(f"{name} must lie in [0, {n_distinct}), got values in [{values.min()}, {values.max()}]")
    return torch.as_tensor(values.astype(np.int64))


def serve_with_cached_ads(student: nn.Module, q_text, ad_text, query_ids, ad_ids, *, batch_size: int = 512,
                          device="cpu", amp: bool = False, score_chunk: int = 65536):
    """Score pairs the way a two-tower model is served; returns ``(logits, stats)``.

    ``q_text`` holds the *distinct* queries and ``ad_text`` the *distinct* ads (not aligned: any lengths);
    pair ``i`` is ``(q_text[query_ids[i]], ad_text[ad_ids[i]])`` (:func:`pair_index` builds all four). Offline,
    every ad is encoded once and its vector cached; online, every query is encoded once, and each pair costs only
    ``student.score_vectors`` on the gathered vectors (``score_chunk`` pairs at a time). The logits (float32
    numpy, pair order) equal :func:`score_two_tower` on the expanded pairs, up to rounding.

    ``stats``: ``pairs``, ``queries``, ``ads``; the offline part ``ad_seconds``, ``ads_per_s``, ``cache_mb`` (the
    ad vectors' memory); the online part ``query_seconds``, ``scoring_seconds``, ``online_seconds`` (their sum)
    and ``pairs_per_s`` (pairs / online seconds). Times are CUDA-synchronised wall times.
    """
    device = torch.device(device)
    q_index = _ids(query_ids, len(q_text), "query_ids")
    a_index = _ids(ad_ids, len(ad_text), "ad_ids")
    if q_index.shape != a_index.shape:
        raise ValueError(f"{len(q_index)} query_ids but {len(a_index)} ad_ids: one of each per pair")
    was_training = student.training
    student.to(device).eval()
    out = np.empty(len(q_index), dtype=np.float32)
    with torch.inference_mode():
        synchronize(device)
        t0 = time.perf_counter()
        ad_vecs = _encode_side(student, ad_text, "ad", batch_size=batch_size, device=device, amp=amp)  # offline
        synchronize(device)
        t1 = time.perf_counter()
        q_vecs = _encode_side(student, q_text, "query", batch_size=batch_size, device=device, amp=amp)
        synchronize(device)
        t2 = time.perf_counter()
        q_index, a_index = q_index.to(device), a_index.to(device)
        for start in range(0, len(out), score_chunk):
            stop = start + score_chunk
            with autocast(device, amp):
                logits = student.score_vectors(q_vecs[q_index[start:stop]], ad_vecs[a_index[start:stop]])
            out[start:stop] = logits.float().cpu().numpy()
        synchronize(device)
        t3 = time.perf_counter()
    student.train(was_training)
    online = t3 - t1
    cache_mb = 0.0 if ad_vecs is None else ad_vecs.numel() * ad_vecs.element_size() / 2**20
    stats = {
        "pairs": len(out), "queries": len(q_text), "ads": len(ad_text),
        "ad_seconds": t1 - t0, "ads_per_s": len(ad_text) / max(t1 - t0, 1e-12), "cache_mb": cache_mb,
        "query_seconds": t2 - t1, "scoring_seconds": t3 - t2, "online_seconds": online,
        "pairs_per_s": len(out) / max(online, 1e-12),
    }
    return out, stats


def serve_grid(student: nn.Module, q_text, ad_text, *, batch_size: int = 512, device="cpu", amp: bool = False):
    """Score every query of ``q_text`` against every ad of ``ad_text`` (distinct texts): ``(logits (Q, A), stats)``.

    The widest serving workload: ads encoded once offline and cached, each query encoded once, then
    ``student.score_grid`` (a matrix product for the cosine crossing, the folded residual network otherwise).
    ``stats`` as :func:`serve_with_cached_ads` (``pairs = Q * A``; ``pairs_per_s`` over the online part).
    """
    device = torch.device(device)
    if not hasattr(student, "score_grid"):
        raise TypeError(f"{type(student).__name__} has no score_grid: use serve_with_cached_ads")
    was_training = student.training
    student.to(device).eval()
    with torch.inference_mode():
        synchronize(device)
        t0 = time.perf_counter()
        ad_vecs = _encode_side(student, _padded(ad_text), "ad", batch_size=batch_size, device=device, amp=amp)
        synchronize(device)
        t1 = time.perf_counter()
        q_vecs = _encode_side(student, _padded(q_text), "query", batch_size=batch_size, device=device, amp=amp)
        synchronize(device)
        t2 = time.perf_counter()
        with autocast(device, amp):
            logits = student.score_grid(q_vecs, ad_vecs)
        synchronize(device)
        t3 = time.perf_counter()
        out = logits.float().cpu().numpy()
    student.train(was_training)
    pairs = out.size
    return out, {"pairs": pairs, "queries": len(q_text), "ads": len(ad_text), "ad_seconds": t1 - t0,
                 "ads_per_s": len(ad_text) / max(t1 - t0, 1e-12),
                 "cache_mb": ad_vecs.numel() * ad_vecs.element_size() / 2**20, "query_seconds": t2 - t1,
                 "scoring_seconds": t3 - t2, "online_seconds": t3 - t1, "pairs_per_s": pairs / max(t3 - t1, 1e-12)}


def _timed(fn, device) -> float:
    synchronize(device)
    began = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - began


def serving_latency(student: nn.Module, teacher: nn.Module, q_text, ad_text, pairs, query_ids, ad_ids, *,
                    n_queries: int = 50, seed: int = 0, device="cpu", amp: bool = False, warmup: int = 3) -> dict:
    """Per-request latency of the two ways to score one query's candidate ads, measured on the same requests.

    A request is one distinct query with all its candidate pairs (the rows with that ``query_ids`` value).
    ``q_text`` / ``ad_text`` hold the distinct queries and ads and ``query_ids`` / ``ad_ids`` index them per pair
    (:func:`pair_index`); ``pairs`` is the cross-encoder's input for the same pairs (a ``crossencoder.PairMatrix``
    or ``TokenizedText``, row ``i`` = pair ``i``). The ad vectors are computed once beforehand (offline, untimed);
    then per request the two-tower model encodes the one query and crosses it with its cached ad vectors, and the
    cross-encoder runs its full network on every candidate pair. ``n_queries`` requests drawn with ``seed``, after
    ``warmup`` untimed ones. Returns ``{"two_tower_ms": {median, p95}, "cross_encoder_ms": {...}, "requests",
    "mean_candidates"}``.
    """
    from kdtutorial.ranking.crossencoder import as_pair_matrix

    device = torch.device(device)
    q_index, a_index = np.asarray(query_ids), np.asarray(ad_ids)
    matrix = as_pair_matrix(pairs)
    if not len(q_index) == len(a_index) == len(matrix):
        raise ValueError("query_ids, ad_ids and pairs must have one entry per pair")
    groups = [rows for rows in pd.Series(np.arange(len(q_index))).groupby(q_index).indices.values()]
    rng = np.random.default_rng(seed)
    chosen = [groups[i] for i in rng.choice(len(groups), size=min(n_queries + warmup, len(groups)), replace=False)]
    q_side, ad_side = _padded(q_text), _padded(ad_text)
    modes = {m: m.training for m in (student, teacher)}
    student.to(device).eval()
    teacher.to(device).eval()
    times = {"two_tower": [], "cross_encoder": []}
    with torch.inference_mode():
        ad_vecs = _encode_side(student, ad_side, "ad", batch_size=512, device=device, amp=amp)  # offline
        for i, rows in enumerate(chosen):
            q_ids, q_mask = _to(_side_batch(q_side, [int(q_index[rows[0]])]), device)
            cand = torch.as_tensor(a_index[rows], device=device)

            def two_tower():
                with autocast(device, amp):
                    student.score_vectors(student.encode(q_ids, q_mask, "query"), ad_vecs[cand]).float().cpu()

            sub = matrix.subset(rows)
            width = int(sub.n_tokens.max())
            ids = torch.as_tensor(sub.ids[:, :width], dtype=torch.long, device=device)
            mask = (torch.arange(width, device=device)[None, :]
                    < torch.as_tensor(sub.n_tokens, device=device)[:, None]).long()

            def cross_encoder():
                with autocast(device, amp):
                    teacher(ids, mask).float().cpu()

            for name, fn in (("two_tower", two_tower), ("cross_encoder", cross_encoder)):
                seconds = _timed(fn, device)
                if i >= warmup:
                    times[name].append(seconds)
    for model, mode in modes.items():
        model.train(mode)
    summary = {name: {"median": 1000 * float(np.median(t)), "p95": 1000 * float(np.percentile(t, 95))}
               for name, t in times.items()}
    return {"two_tower_ms": summary["two_tower"], "cross_encoder_ms": summary["cross_encoder"],
            "requests": len(times["two_tower"]), "mean_candidates": float(np.mean([len(r) for r in chosen[warmup:]]))}
