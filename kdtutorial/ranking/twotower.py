"""Two-tower students for query-ad relevance (lesson 06): TwinBERT and a C-DSSM-style baseline.

A two-tower model encodes the query and the ad separately and only combines the two vectors at the end
(the "crossing"), so ad vectors can be computed offline and cached: serving a query costs one query
encoding plus one cheap crossing per candidate ad. A cross-encoder (the BERT teacher) has to run the whole
network on every (query, ad) pair. Both classes here expose the same three methods:

* ``encode(ids, mask, side)``      one side ("query" or "ad") to vectors ``(B, D)`` (what you cache for ads)
* ``score_vectors(q_vec, ad_vec)``  vectors to logits; broadcasts, so ``q[:, None]`` against ``ads[None]``
                                     scores every query against every cached ad
* ``forward(q_ids, q_mask, ad_ids, ad_mask)`` = ``score_vectors(encode(q), encode(ad))``, logits ``(B,)``

References: TwinBERT (Lu, Jiao and Zhang, CIKM 2020), C-DSSM (Shen, He, Gao, Deng and Mesnil, WWW 2014).
Pinned by ``tests/test_twotower.py``.
"""
from __future__ import annotations

import re
import zlib
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "TwoTower",
    "mean_pool",
    "CosineCrossing",
    "ResidualCrossing",
    "TwinBERT",
    "words",
    "word_trigrams",
    "trigram_bucket",
    "letter_trigram_batch",
    "CDSSMTower",
    "CDSSM",
]


# ------------------------------------------------------------------------------------ pooling, crossing
def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of token vectors: ``sum_j m_j h_j / sum_j m_j``; padding (``m_j = 0``) does not count.

    ``hidden`` is ``(B, L, H)``, ``attention_mask`` ``(B, L)``; a row with no token gives the zero vector.
    """
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class CosineCrossing(nn.Module):
    """``logit = a * cos(q, ad) + b`` with a learned scale ``a`` and bias ``b`` (TwinBERT_cos, C-DSSM).

    A bare cosine lies in [-1, 1], so ``sigmoid(cos)`` could only reach [0.27, 0.73]: the scale lets the
    probability reach both ends and lets the logit match a teacher's logit range. ``a`` starts at
    ``scale_init = 10`` (``sigmoid(+-10)`` is within 5e-5 of 1 and 0) and ``b`` at 0. Note that mean-pooled
    vectors of an untrained-for-the-task encoder tend to have cosines packed close to 1, so ``b`` has real
    work to do early in training. The output is bounded: ``|logit| <= |a| + |b|`` (the cosine is clamped to
    [-1, 1] against rounding).
    """

    def __init__(self, scale_init: float = 10.0, bias_init: float = 0.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))
        self.bias = nn.Parameter(torch.tensor(float(bias_init)))

    def forward(self, q_vec: torch.Tensor, ad_vec: torch.Tensor) -> torch.Tensor:
        cos = F.cosine_similarity(q_vec, ad_vec, dim=-1, eps=1e-8).clamp(-1.0, 1.0)
        return self.scale * cos + self.bias

    def grid(self, q_vecs: torch.Tensor, ad_vecs: torch.Tensor) -> torch.Tensor:
        """Logits of every query against every ad, ``(Q, A)``: one matrix product of the unit vectors."""
        q = q_vecs / q_vecs.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        a = ad_vecs / ad_vecs.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return self.scale * (q @ a.T).clamp(-1.0, 1.0) + self.bias


class ResidualCrossing(nn.Module):
    """TwinBERT_res: a small residual network over the pair's features, then a logistic-regression layer.

    ``x = [q, ad, q * ad, |q - ad|]`` (``4D``), ``y = x + W_2 relu(W_1 x)`` (one residual block of width
    ``hidden``), ``logit = w^T y + c``. TwinBERT's residual crossing feeds the two vectors through a
    residual layer ``y = F(x) + x``; the product and difference features (as in InferSent's pair classifier)
    give the block the interactions a cosine would, without making it large.
    """

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = dim if hidden is None else hidden
        if hidden < 1:
            raise ValueError(f"hidden must be a positive width, got {hidden}")
        self.down = nn.Linear(4 * dim, hidden)
        self.up = nn.Linear(hidden, 4 * dim)
        self.out = nn.Linear(4 * dim, 1)

    @staticmethod
    def features(q_vec: torch.Tensor, ad_vec: torch.Tensor) -> torch.Tensor:
        q_vec, ad_vec = torch.broadcast_tensors(q_vec, ad_vec)
        return torch.cat([q_vec, ad_vec, q_vec * ad_vec, (q_vec - ad_vec).abs()], dim=-1)

    def forward(self, q_vec: torch.Tensor, ad_vec: torch.Tensor) -> torch.Tensor:
        x = self.features(q_vec, ad_vec)
        y = x + self.up(F.relu(self.down(x)))
        return self.out(y).squeeze(-1)

    def grid(self, q_vecs: torch.Tensor, ad_vecs: torch.Tensor, query_chunk: int | None = None) -> torch.Tensor:
        """The same logits for every query against every ad, ``(Q, A)``, with the work per pair cut down.

        Because ``out`` is linear, ``out(x + up(r)) = w.x + (w W_up).r + (w.b_up + c)``: the up-projection folds
        into one vector ``f`` and is never applied. Write ``down = [W_q, W_a, W_m, W_d]`` and ``w = [o_q, o_a, o_m,
        o_d]`` by feature block, and ``|q - a| = 2 max(q, a) - q - a``. Everything linear in the ad then folds into
        one matrix per query, ``M_q = [diag(q) W_m^T + (W_a - W_d)^T | q * o_m + o_a - o_d]``, and the query-only
        terms into its bias row ``b_q``:

            z = [a, 1] [M_q; b_q] + 2 max(q, a) [W_d^T | o_d],    logit = f . relu(z_hidden) + z_linear + const

        Per pair only ``max(q, a)`` is built; the rest are two large matrix products over ``query_chunk`` queries at
        a time (ads in rows; by default as many queries as make about 2^20 pairs on a GPU, 2^17 elsewhere: a chunk
        holds two blocks of ``pairs x D`` numbers). The linear column is carried twice, as ``+z`` and ``-z``, so
        that one ``relu`` over the whole block serves both (``relu(z) - relu(-z) = z``), and the inner sizes are
        padded with zeros to multiples of 8, which the GPU's tensor-core kernels need. Under autocast the vectors
        are cast to its dtype first (bf16 traffic for the per-pair block). Pinned against ``forward`` by the tests.
        """
        device_type = q_vecs.device.type
        if torch.is_autocast_enabled(device_type):
            low = torch.get_autocast_dtype(device_type)
            q_vecs, ad_vecs = q_vecs.to(low), ad_vecs.to(low)
        if query_chunk is None:
            query_chunk = max(1, (2**20 if device_type == "cuda" else 2**17) // max(1, ad_vecs.shape[0]))
        if query_chunk < 1:
            raise ValueError(f"query_chunk must be positive, got {query_chunk}")
        d = q_vecs.shape[-1]
        w_q, w_a, w_m, w_d = self.down.weight.split(d, dim=1)  # (hidden, D) each
        o_q, o_a, o_m, o_d = self.out.weight[0].split(d)
        hidden = w_d.shape[0]
        width, depth = -(-(hidden + 2) // 8) * 8, -(-(d + 1) // 8) * 8  # padded: hidden + [+z, -z], D + [1]
        fold = torch.zeros(width, dtype=self.up.weight.dtype, device=self.up.weight.device)
        fold[:hidden], fold[hidden], fold[hidden + 1] = self.out.weight[0] @ self.up.weight, 1.0, -1.0
        const = self.out.weight[0] @ self.up.bias + self.out.bias[0]
        per_pair = torch.zeros(d, width, dtype=w_d.dtype, device=w_d.device)
        per_pair[:, :hidden], per_pair[:, hidden], per_pair[:, hidden + 1] = 2 * w_d.T, 2 * o_d, -2 * o_d
        q_bias = q_vecs.to(w_q.dtype) @ (w_q - w_d).T + self.down.bias  # (Q, hidden)
        q_out = q_vecs.to(o_q.dtype) @ (o_q - o_d)  # (Q,)
        ads_1 = ad_vecs.new_zeros(ad_vecs.shape[0], depth)
        ads_1[:, :d], ads_1[:, d] = ad_vecs, 1.0
        ad_part = (w_a - w_d).T  # (D, hidden)
        n_ads, rows = ad_vecs.shape[0], []
        for start in range(0, q_vecs.shape[0], query_chunk):
            q = q_vecs[start : start + query_chunk]  # (c, D)
            c = q.shape[0]
            folded = torch.zeros(depth, c, width, dtype=w_m.dtype, device=w_m.device)
            folded[:d, :, :hidden] = q.T.to(w_m.dtype)[:, :, None] * w_m.T[:, None, :] + ad_part[:, None, :]
            linear = q.to(o_m.dtype) * o_m + o_a - o_d  # (c, D)
            folded[:d, :, hidden], folded[:d, :, hidden + 1] = linear.T, -linear.T
            folded[d, :, :hidden] = q_bias[start : start + c]
            folded[d, :, hidden], folded[d, :, hidden + 1] = q_out[start : start + c], -q_out[start : start + c]
            z = ads_1 @ folded.reshape(depth, c * width).to(ads_1.dtype)  # (A, c * width)
            larger = torch.maximum(ad_vecs[:, None, :], q[None, :, :]).reshape(n_ads * c, d)  # (A * c, D)
            z = z.reshape(n_ads * c, width).addmm_(larger.to(z.dtype), per_pair.to(z.dtype)).relu_()
            rows.append((z @ fold.to(z.dtype)).reshape(n_ads, c).T + const)
        return torch.cat(rows)


# -------------------------------------------------------------------------------------------- TwinBERT
POOLINGS = ("mean", "cls")
CROSSINGS = ("cos", "res")


class TwoTower(nn.Module):
    """What every two-tower ranker shares: ``encode`` each side (a subclass defines it and ``crossing``), then score
    the pair from the two vectors, so ad vectors can be computed once and cached for serving."""

    def score_vectors(self, q_vec: torch.Tensor, ad_vec: torch.Tensor) -> torch.Tensor:
        """Logits from (possibly cached) vectors; the batch dimensions broadcast."""
        return self.crossing(q_vec, ad_vec)

    def score_grid(self, q_vecs: torch.Tensor, ad_vecs: torch.Tensor) -> torch.Tensor:
        """Logits of every query ``(Q, D)`` against every cached ad ``(A, D)``: ``(Q, A)``, equal to
        ``score_vectors(q_vecs[:, None], ad_vecs[None])`` but computed the cheap way for each crossing."""
        return self.crossing.grid(q_vecs, ad_vecs)

    def forward(self, q_ids, q_mask, ad_ids, ad_mask) -> torch.Tensor:
        """Relevance logits ``(B,)`` of the pairs (query ``i``, ad ``i``)."""
        return self.score_vectors(self.encode(q_ids, q_mask, "query"), self.encode(ad_ids, ad_mask, "ad"))


class TwinBERT(TwoTower):
    """Two BERT towers sharing one encoder, a pooling layer and a crossing layer (Lu et al., CIKM 2020).

    ``encoder`` is any BERT-like module called as ``encoder(input_ids=..., attention_mask=...)`` whose output
    has ``.last_hidden_state`` ``(B, L, D)`` (e.g. ``transformers.BertModel``). The query and the ad (title and
    description) go through the *same* encoder, one after the other: one set of weights, and the ad side can
    be cached.

    * ``pooling="mean"``: masked mean over the tokens (padding ignored); ``"cls"``: the first token's vector.
      (The paper pools with [CLS] or a learned weighted average; the plain mean is the unweighted case.)
    * ``crossing="cos"``: ``CosineCrossing`` (``a * cos + b``, ``a`` starts at ``scale_init``);
      ``"res"``: ``ResidualCrossing`` of width ``hidden`` (default ``D``). ``hidden`` with ``"cos"`` is an error.
    * ``dim`` is the encoder's output width, read from ``encoder.config.hidden_size`` when not given.

    With dropout active (``train()``) two forward passes differ; the equalities below hold in ``eval()``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        pooling: str = "mean",
        crossing: str = "cos",
        hidden: int | None = None,
        *,
        dim: int | None = None,
        scale_init: float = 10.0,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if crossing not in CROSSINGS:
            raise ValueError(f"crossing must be one of {CROSSINGS}, got {crossing!r}")
        if crossing == "cos" and hidden is not None:
            raise ValueError("hidden is the width of the residual crossing: it applies to crossing='res' only")
        if dim is None:
            dim = getattr(getattr(encoder, "config", None), "hidden_size", None)
            if dim is None:
                raise ValueError("cannot read the encoder's width from encoder.config.hidden_size: pass dim=")
        self.encoder = encoder
        self.pooling = pooling
        self.crossing_kind = crossing
        self.dim = int(dim)
        self.crossing = CosineCrossing(scale_init) if crossing == "cos" else ResidualCrossing(self.dim, hidden)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, side: str = "query") -> torch.Tensor:
        """One side to pooled vectors ``(B, D)``; ``side`` is accepted for symmetry with ``CDSSM`` (one encoder)."""
        if side not in ("query", "ad"):
            raise ValueError(f"side must be 'query' or 'ad', got {side!r}")
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        return mean_pool(hidden, attention_mask)


# ----------------------------------------------------------------------------- C-DSSM letter trigrams
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens: maximal runs of Unicode letters, digits and underscores."""
    return _WORD.findall(text.lower())


def word_trigrams(word: str) -> list[str]:
    """Letter trigrams of a word wrapped in ``#`` (Huang et al., 2013; Shen et al., 2014).

    ``"cat"`` -> ``"#cat#"`` -> ``["#ca", "cat", "at#"]``; repeats are kept (``"aaaa"`` has ``"aaa"`` twice),
    so a word is a bag (a count vector) of trigrams.
    """
    wrapped = f"#{word}#"
    return [wrapped[i : i + 3] for i in range(len(wrapped) - 2)]


def trigram_bucket(trigram: str, n_buckets: int) -> int:
    """``crc32(utf-8 bytes) mod n_buckets``: stable across processes, machines and Python versions.

    (Python's ``hash`` of a string is salted per process, so it would give every run its own vocabulary.)
    C-DSSM keeps an explicit trigram vocabulary; hashing needs no vocabulary file and takes any language,
    at the price of a few collisions.
    """
    return zlib.crc32(trigram.encode("utf-8")) % n_buckets


def letter_trigram_batch(
    texts: Sequence[str], n_buckets: int = 2**15, max_words: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise texts into the tensors ``CDSSM`` consumes: ``(trigram_ids, word_mask)``.

    ``trigram_ids`` is ``(B, W, T)`` int64: text ``b``, word ``w`` (the first ``max_words`` words), its
    trigram ``j``, stored as ``trigram_bucket + 1``; **0 is padding** (missing words and trigrams). ``W`` is
    the longest text in the batch (at most ``max_words``, at least 1), ``T`` the longest word's trigram count.
    ``word_mask`` ``(B, W)`` is True on real words. Pure Python and numpy; deterministic.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    if n_buckets < 1 or max_words < 1:
        raise ValueError(f"n_buckets and max_words must be positive, got {n_buckets} and {max_words}")
    tokenised = [[[trigram_bucket(t, n_buckets) + 1 for t in word_trigrams(w)] for w in words(text)[:max_words]]
                 for text in texts]
    n_words = max([len(doc) for doc in tokenised] + [1])
    n_trigrams = max([len(w) for doc in tokenised for w in doc] + [1])
    ids = np.zeros((len(texts), n_words, n_trigrams), dtype=np.int64)
    mask = np.zeros((len(texts), n_words), dtype=bool)
    for b, doc in enumerate(tokenised):
        for w, trigram_ids in enumerate(doc):
            ids[b, w, : len(trigram_ids)] = trigram_ids
            mask[b, w] = True
    return torch.from_numpy(ids), torch.from_numpy(mask)


# ---------------------------------------------------------------------------------------------- C-DSSM
class CDSSMTower(nn.Module):
    """One C-DSSM tower: letter trigrams -> word vectors -> convolution -> max-pooling -> semantic layer.

    1. word vector = sum of its trigrams' embeddings (``nn.EmbeddingBag``, padding id 0 adds nothing);
    2. ``h_t = tanh(conv([v_{t-1}, v_t, v_{t+1}]))``, a 1-D convolution over a window of ``window`` words,
       zero-padded at the ends (C-DSSM pads with sentence-boundary words);
    3. max-pooling over the real word positions;
    4. ``y = tanh(W_s h + b_s)``.

    C-DSSM applies its convolution matrix directly to the concatenated sparse trigram vectors
    (``3 x 30k -> 300``); embedding first then convolving is a low-rank factorisation of that matrix,
    ``embed`` being the rank, which keeps the parameters at ``n_buckets * embed``.
    """

    def __init__(self, n_buckets: int = 2**15, embed: int = 128, conv: int = 300, out: int = 128, window: int = 3):
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be a positive odd number of words, got {window}")
        self.n_buckets = n_buckets
        self.trigrams = nn.EmbeddingBag(n_buckets + 1, embed, mode="sum", padding_idx=0)
        self.conv = nn.Conv1d(embed, conv, kernel_size=window, padding=window // 2)
        self.semantic = nn.Linear(conv, out)

    def forward(self, trigram_ids: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        B, W, T = trigram_ids.shape
        if trigram_ids.device.type == "cpu" and trigram_ids.numel() and int(trigram_ids.max()) > self.n_buckets:
            # checked where it costs nothing; on a GPU the check would make the host wait for every batch
            raise ValueError(
                f"trigram ids go up to {int(trigram_ids.max())} but the model has n_buckets={self.n_buckets}: "
                "tokenise with the model's n_buckets (CDSSM.tokenize does)"
            )
        word_vecs = self.trigrams(trigram_ids.reshape(B * W, T)).reshape(B, W, -1)
        h = torch.tanh(self.conv(word_vecs.transpose(1, 2))).transpose(1, 2)  # (B, W, conv)
        h = h.masked_fill(~word_mask.bool().unsqueeze(-1), float("-inf"))
        pooled = h.amax(dim=1)
        pooled = torch.where(word_mask.bool().any(dim=1, keepdim=True), pooled, torch.zeros_like(pooled))
        return torch.tanh(self.semantic(pooled))


class CDSSM(TwoTower):
    """The C-DSSM-style baseline of TwinBERT's table 2 (Shen et al., 2014), as a two-tower relevance model.

    Query and ad go through ``CDSSMTower`` (``shared=True``: one tower for both, as in ``TwinBERT``; the
    original DSSM trains separate towers, ``shared=False``), then ``CosineCrossing``: ``a * cos + b``. Inputs
    come from ``letter_trigram_batch`` with the same ``n_buckets`` (``CDSSM.tokenize`` makes sure).
    """

    def __init__(
        self,
        n_buckets: int = 2**15,
        embed: int = 128,
        conv: int = 300,
        out: int = 128,
        window: int = 3,
        shared: bool = True,
        scale_init: float = 10.0,
    ):
        super().__init__()
        self.n_buckets = n_buckets
        self.shared = shared
        n_towers = 1 if shared else 2
        self.towers = nn.ModuleList(CDSSMTower(n_buckets, embed, conv, out, window) for _ in range(n_towers))
        self.crossing = CosineCrossing(scale_init)

    @property
    def query_tower(self) -> CDSSMTower:
        return self.towers[0]

    @property
    def ad_tower(self) -> CDSSMTower:
        return self.towers[-1]

    def tokenize(self, texts: Sequence[str], max_words: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """``letter_trigram_batch`` with this model's ``n_buckets``."""
        return letter_trigram_batch(texts, self.n_buckets, max_words)

    def encode(self, trigram_ids: torch.Tensor, word_mask: torch.Tensor, side: str = "query") -> torch.Tensor:
        """One side to vectors ``(B, out)``; ``side`` ("query" or "ad") picks the tower when not shared."""
        if side not in ("query", "ad"):
            raise ValueError(f"side must be 'query' or 'ad', got {side!r}")
        tower = self.query_tower if side == "query" else self.ad_tower
        return tower(trigram_ids, word_mask)

