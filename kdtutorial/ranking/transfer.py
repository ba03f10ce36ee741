"""Transfer sets"""
from __future__ import annotations
import re
from dataclasses import dataclass
import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
from datasets.table import InMemoryTable
from kdtutorial.ranking.qadsm import QadsmSplit
from kdtutorial.common.checks import check_choice


def _as_dataset(split_data) -> datasets.Dataset:
    data = split_data.data if isinstance(split_data, QadsmSplit) else split_data
    missing = [c for c in ("query", "title", "description") if c not in data.column_names]
    if missing:
        raise ValueError(f"split_data lacks the column(s) {missing}")
    return data

def _pair_codes(data: datasets.Dataset):
    """Integer codes of queries and of ads (title, description), in order of first appearance.

    Returns ``(query_codes, ad_codes, unique_queries, unique_titles, unique_descriptions)``.
    """
    q_codes, queries = pd.factorize(np.asarray(data["query"], dtype=object))
    t_codes, titles = pd.factorize(np.asarray(data["title"], dtype=object))
    d_codes, descriptions = pd.factorize(np.asarray(data["description"], dtype=object))
    ad_keys = t_codes.astype(np.int64) * len(descriptions) + d_codes
    a_codes, unique_keys = pd.factorize(ad_keys)
    ad_titles = np.asarray(titles, dtype=object)[unique_keys // len(descriptions)]
    ad_descriptions = np.asarray(descriptions, dtype=object)[unique_keys % len(descriptions)]
    return (q_codes.astype(np.int64), a_codes.astype(np.int64), np.asarray(queries, dtype=object),
            ad_titles, ad_descriptions)

def _drop_members(candidates: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``candidates`` without the values in ``sorted_set`` (sorted, unique)."""
    if len(sorted_set) == 0:
        return candidates
    pos = np.minimum(np.searchsorted(sorted_set, candidates), len(sorted_set) - 1)
    return candidates[sorted_set[pos] != candidates]

def _sample_pair_ids(total: int, observed: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct ids from ``range(total)`` outside ``observed``, uniformly, in random order."""
    available = total - len(observed)
    if n > available // 2:  # dense: enumerate what is allowed and choose without replacement
        allowed = _drop_members(np.arange(total, dtype=np.int64), observed)
        return rng.choice(allowed, size=n, replace=False)
    chosen = np.empty(0, dtype=np.int64)
    while len(chosen) < n:  # sparse: draw with replacement, drop observed and repeated ids, top up
        need = n - len(chosen)
        draws = min(int(need * total / (available - len(chosen)) * 1.05) + 16, 20_000_000)
        candidates = _drop_members(rng.integers(0, total, size=draws, dtype=np.int64), observed)
        merged = np.concatenate([chosen, candidates])
        _, first = np.unique(merged, return_index=True)
        chosen = merged[np.sort(first)]  # earlier draws win, so the accepted prefix never changes
    return chosen[:n]

TRANSFER_CANDIDATES = ("random", "overlap", "neighbours")

def _words(text: str) -> set:
    return {w for w in re.findall(r"\w+", str(text).lower()) if len(w) >= 3}

def overlap_pair_ids(queries, titles, descriptions, max_ad_share: float = 0.2) -> np.ndarray:
    """Sorted pair ids ``q * n_ads + a`` of every (distinct query, distinct ad) sharing a word.

    A word is a run of letters or digits of at least 3 characters, lower-cased; words found in more than
    ``max_ad_share`` of the ads ("kaufen", "online") match too much to count. This is the crudest retrieval
    stage of an ads system: the candidates a relevance model is actually asked about share words with the query.
    """
    index: dict = {}
    for a, (title, description) in enumerate(zip(titles, descriptions)):
        for w in _words(f"{title} {description}"):
            index.setdefault(w, []).append(a)
    common = max_ad_share * len(titles)
    n_ads = len(titles)
    chunks = []
    for q, query in enumerate(queries):
        hits = [index[w] for w in _words(query) if w in index and len(index[w]) <= common]
        if hits:
            chunks.append(q * n_ads + np.unique(np.concatenate([np.asarray(h, dtype=np.int64) for h in hits])))
    return np.unique(np.concatenate(chunks)) if chunks else np.empty(0, np.int64)

def _unit_rows(vectors) -> np.ndarray:
    """``vectors`` as float32 rows of length 1 (a zero row stays zero), so products are cosine similarities."""
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

def neighbour_pair_ids(query_vectors, ad_vectors, n: int, exclude=None, chunk: int = 256) -> np.ndarray:
    """``n`` pair ids ``q * n_ads + a``: for every query its nearest ads by cosine similarity, filled round by round.

    ``query_vectors`` ``(Q, D)`` and ``ad_vectors`` ``(A, D)`` are sentence embeddings (any scale: they are
    normalised here). Round ``r`` holds each query's ``r``-th nearest ad, so every query gets ``n / Q`` of its
    nearest ads (one more or one fewer); within the last, partly taken round the more similar pairs go first. The
    pairs in ``exclude`` (sorted ids, e.g. the observed ones) are skipped and the next nearest ads take their place.
    This is the embedding-based retrieval stage of an ads system: the pairs it hands to the relevance model are
    related to the query, some relevant and some not, like the labelled ones. Returns the ids in order of
    (round, similarity). Raises ``ValueError`` when fewer than ``n`` pairs are left.
    """
    q, a = np.asarray(query_vectors), np.asarray(ad_vectors)
    if q.ndim != 2 or a.ndim != 2 or q.shape[1] != a.shape[1]:
        raise ValueError(f"query_vectors (Q, D) and ad_vectors (A, D) must share D, got {q.shape} and {a.shape}")
    n_queries, n_ads = len(q), len(a)
    exclude = np.empty(0, np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64)
    if not 0 <= n <= n_queries * n_ads - len(exclude):
        raise ValueError(f"n must be between 0 and {n_queries * n_ads - len(exclude):,} (pairs left), got {n:,}")
    if n == 0:
        return np.empty(0, np.int64)
    q, a = _unit_rows(q), _unit_rows(a)
    rounds = -(-n // n_queries)
    while True:  # more rounds only when excluded pairs leave some queries short
        ids, ranks, sims = [], [], []
        for start in range(0, n_queries, chunk):
            sim = q[start : start + chunk] @ a.T
            rows = np.arange(start, start + len(sim))
            if len(exclude):
                mine = exclude[(exclude >= start * n_ads) & (exclude < (start + len(sim)) * n_ads)]
                sim[mine // n_ads - start, mine % n_ads] = -np.inf
            k = min(rounds, n_ads)
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < n_ads else np.tile(np.arange(n_ads), (len(sim), 1))
            top_sim = np.take_along_axis(sim, top, axis=1)
            order = np.argsort(-top_sim, axis=1, kind="stable")
            top, top_sim = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sim, order, axis=1)
            keep = np.isfinite(top_sim)
            ids.append((rows[:, None] * n_ads + top)[keep])
            ranks.append(np.broadcast_to(np.arange(k), top.shape)[keep])
            sims.append(top_sim[keep])
        ids, ranks, sims = np.concatenate(ids), np.concatenate(ranks), np.concatenate(sims)
        if len(ids) >= n or rounds >= n_ads:
            break
        rounds += -(-(n - len(ids)) // n_queries)
    order = np.lexsort((ids, -sims, ranks))[:n]
    return ids[order].astype(np.int64)

def neighbour_ranks(query_vectors, ad_vectors, query_ids, ad_ids) -> np.ndarray:
    """For each pair (``query_ids[i]``, ``ad_ids[i]``): how many ads are nearer to the query by cosine similarity
    (0: its nearest ad). Tells how far down a query's neighbour list the pairs of a data set lie."""
    q, a = _unit_rows(query_vectors), _unit_rows(ad_vectors)
    query_ids, ad_ids = np.asarray(query_ids, dtype=np.int64), np.asarray(ad_ids, dtype=np.int64)
    if query_ids.shape != ad_ids.shape:
        raise ValueError(f"query_ids and ad_ids must have the same shape, got {query_ids.shape} and {ad_ids.shape}")
    ranks = np.empty(len(query_ids), np.int64)
    for start in range(0, len(query_ids), 1024):
        rows = slice(start, start + 1024)
        sim = q[query_ids[rows]] @ a.T
        own = sim[np.arange(len(sim)), ad_ids[rows]]  # from the same product, so the pair never outranks itself
        ranks[rows] = (sim > own[:, None]).sum(axis=1)
    return ranks

@dataclass
class TransferIndex:
    """A transfer set as indices: pair ``i`` is ``(queries[query_ids[i]], ad i = titles/descriptions[ad_ids[i]])``.

    ``overlap[i]`` says whether the pair shares a word (:func:`overlap_pair_ids`); ``query_vectors`` and
    ``ad_vectors`` are the embeddings a ``"neighbours"`` transfer set was drawn with. :meth:`ads` gives the distinct
    ads as ``"title description"`` strings, the form teacher and student read. Building a million pair strings
    is what takes time (tens of seconds); the lesson's tokenisers take the indices instead.
    """

    queries: list
    titles: list
    descriptions: list
    query_ids: np.ndarray
    ad_ids: np.ndarray
    overlap: np.ndarray
    query_vectors: np.ndarray | None = None
    ad_vectors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.query_ids)

    def ads(self) -> list:
        from kdtutorial.ranking.qadsm import ad_text

        return ad_text(self.titles, self.descriptions)

    def neighbour_ranks(self, split_data) -> np.ndarray:
        """For each pair of ``split_data`` (e.g. the labelled pairs the transfer set was drawn from): how many of
        this index's ads are nearer to its query than its own ad (:func:`neighbour_ranks`). Needs a
        ``"neighbours"`` index, and the split's queries and ads among this index's."""
        if self.query_vectors is None or self.ad_vectors is None:
            raise ValueError("neighbour_ranks needs the embeddings of a transfer_index(candidates='neighbours')")
        from kdtutorial.ranking.qadsm import ad_text

        data = _as_dataset(split_data)
        queries, ads = list(data["query"]), ad_text(data["title"], data["description"])
        query_row = {q: i for i, q in enumerate(self.queries)}
        ad_row = {a: i for i, a in enumerate(self.ads())}
        missing = [q for q in queries if q not in query_row] + [a for a in ads if a not in ad_row]
        if missing:
            raise ValueError(f"{missing[0]!r} is not among the transfer set's queries and ads")
        return neighbour_ranks(self.query_vectors, self.ad_vectors, [query_row[q] for q in queries],
                               [ad_row[a] for a in ads])

def transfer_index(split_data, n: int, seed: int, *, exclude_observed: bool = True,
                   candidates: str = "random", embed=None) -> TransferIndex:
    """``n`` different unlabelled query-ad pairs re-paired from ``split_data``, as a :class:`TransferIndex`.

    The distinct queries of ``split_data`` (a :class:`QadsmSplit` or a Dataset with ``query``, ``title``,
    ``description``) are re-paired with its distinct ads. ``candidates="random"``: ``n`` pairs drawn uniformly
    from all combinations. ``"overlap"``: first the pairs that share a word (:func:`overlap_pair_ids`, a sample
    of them when there are more than ``n``), topped up with uniform random pairs; a query re-paired with a random
    ad is almost always irrelevant, while real traffic (and the labelled data) mixes relevant and irrelevant ads,
    so this is closer to the distribution the student is tested on. ``"neighbours"``: each query with its nearest
    ads by sentence embedding (:func:`neighbour_pair_ids`), the closest of the three to the labelled pairs;
    ``embed(texts) -> (len(texts), D)`` array computes the embeddings (e.g. ``rankers.sentence_vectors`` of the
    pretrained encoder) and is called once for the distinct queries and once for the distinct ads (the
    ``TransferIndex.ads()`` strings). With ``exclude_observed`` the pairs that
    occur in ``split_data`` are left out (pass the union of splits to keep others out too). The pairs come in a
    seeded random order (``numpy.random.default_rng(seed)``), so any prefix is a smaller transfer set of the same
    mix; the result depends only on the data and the arguments. Raises ``ValueError`` when ``n`` is negative or
    exceeds the number of possible pairs, or for an unknown ``candidates``.
    """
    check_choice("candidates", candidates, TRANSFER_CANDIDATES)
    if (embed is None) != (candidates != "neighbours"):
        raise ValueError("embed (a function from texts to vectors) is needed with candidates='neighbours' "
                         "and only there")
    data = _as_dataset(split_data)
    q_codes, a_codes, queries, titles, descriptions = _pair_codes(data)
    n_ads = len(titles)
    total = len(queries) * n_ads
    observed = np.unique(q_codes * n_ads + a_codes) if exclude_observed else np.empty(0, np.int64)
    available = total - len(observed)
    if not 0 <= n <= available:
        excluded = f" minus {len(observed):,} observed pairs" if exclude_observed else ""
        raise ValueError(
            f"n must be between 0 and {available:,}: there are {len(queries):,} distinct queries x "
            f"{n_ads:,} distinct ads = {total:,} pairs{excluded}; got n={n:,}"
        )
    rng = np.random.default_rng(seed)
    chosen, vectors = np.empty(0, np.int64), (None, None)
    if candidates == "overlap":
        chosen = _drop_members(overlap_pair_ids(queries, titles, descriptions), observed)
        if len(chosen) > n:
            chosen = rng.choice(chosen, size=n, replace=False)
    if candidates == "neighbours":
        from kdtutorial.ranking.qadsm import ad_text

        vectors = embed(list(queries)), embed(ad_text(titles, descriptions))
        chosen = neighbour_pair_ids(*vectors, int(n), observed)
    rest = _sample_pair_ids(total, np.union1d(observed, chosen), int(n) - len(chosen), rng)
    is_overlap = np.concatenate([np.ones(len(chosen), bool), np.zeros(len(rest), bool)])
    ids = np.concatenate([chosen, rest])
    order = rng.permutation(len(ids)) if candidates != "random" else np.arange(len(ids))
    ids, is_overlap = ids[order], is_overlap[order]
    if candidates != "overlap" and len(ids):  # say which pairs happen to share a word
        is_overlap = np.isin(ids, overlap_pair_ids(queries, titles, descriptions))
    return TransferIndex(list(queries), list(titles), list(descriptions), ids // n_ads, ids % n_ads, is_overlap,
                         *vectors)

def transfer_pairs(split_data, n: int, seed: int, *, exclude_observed: bool = True,
                   candidates: str = "random", embed=None) -> datasets.Dataset:
    """The pairs of :func:`transfer_index` as a Dataset with columns ``query``, ``title``, ``description``.

    Same arguments and pairs, in the same order. For a million pairs prefer :func:`transfer_index` and the
    index-taking tokenisers (``crossencoder.pair_matrix``, ``rankers.tokenize_sides``).
    """
    index = transfer_index(split_data, n, seed, exclude_observed=exclude_observed, candidates=candidates, embed=embed)
    q_idx, a_idx = pa.array(index.query_ids), pa.array(index.ad_ids)
    table = pa.table({  # built in arrow: encoding a million python strings per column is slow
        "query": _strings(np.asarray(index.queries, dtype=object)).take(q_idx),
        "title": _strings(np.asarray(index.titles, dtype=object)).take(a_idx),
        "description": _strings(np.asarray(index.descriptions, dtype=object)).take(a_idx),
    })
    return datasets.Dataset(InMemoryTable(table))

def _strings(values: np.ndarray) -> pa.Array:
    return pa.array(values.tolist(), type=pa.string())
