"""Nearest-neighbour retrieval from a sentence pool: an exact vector index and TF-IDF, behind one interface.

Lesson 09 follows Kamalloo et al., "Not Far Away, Not So Close: Sample Efficient Nearest Neighbour Data
Augmentation via MiniMax" (ACL 2021), which augments a KD transfer set with the ``K`` nearest pool sentences of
each training sentence. Two retrievers find them (``RETRIEVER`` in the notebook, one of :data:`RETRIEVERS`):

* ``"embedding"``: :class:`ExactEmbeddingIndex`, cosine similarity of sentence embeddings (unit vectors from
  ``kdtutorial.text.embedcache``), searched exactly with faiss;
* ``"tfidf"``: :class:`TfidfIndex`, cosine similarity of TF-IDF vectors of words and word pairs: the model-free
  alternative, which needs no encoder and finds sentences that share (rare) words rather than meaning.

Both answer ``index.search(queries, k)`` with :class:`Neighbours` (pool rows best first and their similarities);
the queries are vectors for the embedding index and sentences for TF-IDF. Ties are broken by the smaller pool
row, the rule :func:`brute_force_neighbours` (the dense reference the tests compare with) follows as well.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from kdtutorial.common.checks import check_sentences

__all__ = ["RETRIEVERS", "Neighbours", "ExactEmbeddingIndex", "TfidfIndex", "brute_force_neighbours",
           "make_index"]

RETRIEVERS = ("embedding", "tfidf")


@dataclass(frozen=True, eq=False)
class Neighbours:
    """The ``k`` nearest pool rows of each query: ``indices`` ``int64 [n_queries, k]`` (best first) and
    ``scores`` ``float32 [n_queries, k]`` (their similarities, descending along each row).

    ``len()`` is the number of queries; ``neighbours[rows]`` keeps the queries at ``rows`` (a slice, an index
    array, a boolean mask or one int, which gives one row) as a new ``Neighbours``.
    """

    indices: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        indices = np.asarray(self.indices, dtype=np.int64)
        scores = np.asarray(self.scores, dtype=np.float32)
        if indices.ndim != 2 or indices.shape != scores.shape:
            raise ValueError(f"indices and scores must be 2-D arrays of one shape [n_queries, k], got "
                             f"{indices.shape} and {scores.shape}")
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "scores", scores)

    @property
    def k(self) -> int:
        """The number of neighbours per query."""
        return int(self.indices.shape[1])

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, rows) -> "Neighbours":
        if isinstance(rows, (int, np.integer)):
            rows = [rows]
        return Neighbours(self.indices[rows], self.scores[rows])


def _check_k(k, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"K = {k} is not allowed: the pool has {n} sentences (1 <= K <= {n})")
    return int(k)


def _sorted_best_first(indices: np.ndarray, scores: np.ndarray):
    """Each row ordered by descending score, equal scores by ascending index."""
    order = np.lexsort((indices, -scores), axis=-1)
    return np.take_along_axis(indices, order, -1), np.take_along_axis(scores, order, -1)


def brute_force_neighbours(similarity: np.ndarray, k) -> Neighbours:
    """The ``k`` most similar pool rows of each query from a dense ``similarity`` ``[n_queries, n_pool]``, by a
    full stable sort: descending similarity, equal similarities by the smaller pool row. The reference the
    indices are tested against; it needs the whole matrix in memory."""
    similarity = np.asarray(similarity)
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be a 2-D array [n_queries, n_pool], got shape {similarity.shape}")
    if not np.isfinite(similarity).all():
        raise ValueError("similarity holds NaN or infinite values")
    k = _check_k(k, similarity.shape[1])
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return Neighbours(order, np.take_along_axis(similarity, order, 1))


def _unit_rows(vectors, argument: str, atol: float) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 matrix, checked: 2-D, not empty, finite, rows of norm 1 (± atol)."""
    array = np.asarray(vectors)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{argument} must hold real numbers, got dtype {array.dtype}")
    if array.ndim != 2:
        hint = " (one vector? pass it as vectors.reshape(1, -1))" if array.ndim == 1 else ""
        raise ValueError(f"{argument} must be a 2-D array [n, dim], got shape {array.shape}{hint}")
    if array.shape[1] == 0:
        raise ValueError(f"{argument} has vectors of dimension 0")
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise ValueError(f"{argument} holds NaN or infinite values in {int(bad.sum())} rows (first: row "
                         f"{int(np.flatnonzero(bad)[0])})")
    norms = np.linalg.norm(array, axis=1)
    off = np.abs(norms - 1) > atol
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise ValueError(f"{argument} must be L2-normalised (inner product = cosine similarity): {int(off.sum())} "
                         f"rows are not, e.g. row {row} has norm {norms[row]:.4g}; divide by "
                         f"np.linalg.norm(x, axis=1, keepdims=True) first")
    return array


class ExactEmbeddingIndex:
    """Exact cosine-similarity search over the pool's unit sentence vectors: a ``faiss.IndexFlatIP``.

    On unit vectors the inner product is the cosine similarity, and a flat index compares each query with every
    pool vector, so the answer is the true top ``k``. At web scale one would use an approximate index instead
    (faiss IVF, which searches only the clusters nearest the query, or an HNSW graph): sub-linear search over
    billions of vectors at the cost of missing a few true neighbours (recall below 1). SentAugment, which
    retrieves augmentation sentences from billions of web sentences, works that way. Here the pool is about half
    a million sentences, exact search of a transfer set takes seconds, and the tests can compare the result with
    brute force, so the exact index is the right tool.

    ``pool_vectors`` is ``[n, dim]``, rows L2-normalised to within ``atol`` (checked, as are the shape and
    finiteness); queries are checked the same way. ``dim`` is the vector dimension, ``len()`` the pool size.
    """

    def __init__(self, pool_vectors, *, atol: float = 1e-3):
        try:
            import faiss
        except ImportError as err:
            raise ImportError("ExactEmbeddingIndex needs faiss: pip install faiss-cpu (or the 'retrieval' "
                              "extra of kdtutorial)") from err
        vectors = _unit_rows(pool_vectors, "pool_vectors", atol)
        if len(vectors) == 0:
            raise ValueError("pool_vectors is empty: there is nothing to search")
        self.atol = float(atol)
        self.dim = int(vectors.shape[1])
        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(vectors)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, query_vectors, k) -> Neighbours:
        """The ``k`` pool rows of highest cosine similarity to each of ``query_vectors`` ``[n_queries, dim]``."""
        k = _check_k(k, len(self))
        queries = _unit_rows(query_vectors, "query_vectors", self.atol)
        if queries.shape[1] != self.dim:
            raise ValueError(f"query_vectors have dimension {queries.shape[1]} but the pool vectors {self.dim}: "
                             f"embed queries and pool with the same model")
        if len(queries) == 0:
            return Neighbours(np.empty((0, k), np.int64), np.empty((0, k), np.float32))
        scores, indices = self.index.search(queries, k)
        indices, scores = _sorted_best_first(indices.astype(np.int64), scores.astype(np.float32))
        return Neighbours(indices, scores)


class TfidfIndex:
    """Cosine similarity of TF-IDF vectors between query sentences and the pool sentences: retrieval without a
    model. The vectoriser (scikit-learn's ``TfidfVectorizer``, L2-normalised rows) is fitted on the pool; the
    options are its own, with these defaults: lower-cased words and word pairs (``ngram_range=(1, 2)``),
    ``sublinear_tf`` (``1 + log tf``), and terms in at least ``min_df=2`` pool sentences (and at most a share
    ``max_df=1.0`` of them: lower it to drop the commonest words, which makes ``search`` several times faster).

    ``search`` multiplies sparse query vectors by the sparse pool matrix in batches of ``batch`` queries and keeps
    the top ``k`` of each row (ties: the smaller pool row first). A query none of whose terms occurs in the
    vocabulary has similarity 0 with every pool sentence: it still gets ``k`` neighbours, pool rows
    ``0 .. k-1`` at score 0 (the tie rule), so look at the scores before using them. Memory grows with
    ``batch`` times the number of pool sentences sharing a term with a query (common words such as "the" are
    kept, so nearly all of them): lower ``batch`` for pools of millions.
    """

    def __init__(self, pool_sentences, *, lowercase: bool = True, sublinear_tf: bool = True,
                 ngram_range=(1, 2), min_df=2, max_df=1.0, dtype=np.float32):
        sentences = check_sentences(pool_sentences, "pool_sentences")
        if not sentences:
            raise ValueError("pool_sentences is empty: there is nothing to search")
        self.vectorizer = TfidfVectorizer(lowercase=lowercase, sublinear_tf=sublinear_tf,
                                          ngram_range=tuple(ngram_range), min_df=min_df, max_df=max_df,
                                          dtype=dtype)
        try:
            self.matrix = self.vectorizer.fit_transform(sentences).tocsr()
        except ValueError as err:  # e.g. no term reaches min_df
            raise ValueError(f"cannot fit TF-IDF on pool_sentences ({len(sentences)} sentences, "
                             f"min_df={min_df}): {err}") from err
        self._pool_t = self.matrix.T.tocsr()

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def vocabulary_size(self) -> int:
        """The number of terms (words and word pairs) the vectoriser kept."""
        return int(self.matrix.shape[1])

    def search(self, query_sentences, k, *, batch: int = 512) -> Neighbours:
        """The ``k`` pool sentences of highest TF-IDF cosine similarity to each of ``query_sentences``."""
        n = len(self)
        k = _check_k(k, n)
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch = {batch!r} is not allowed: it must be a positive int")
        queries = check_sentences(query_sentences, "query_sentences")
        indices = np.empty((len(queries), k), np.int64)
        scores = np.empty((len(queries), k), np.float32)
        for start in range(0, len(queries), int(batch)):
            product = (self.vectorizer.transform(queries[start : start + batch]) @ self._pool_t).tocsr()
            for row in range(product.shape[0]):
                lo, hi = product.indptr[row], product.indptr[row + 1]
                indices[start + row], scores[start + row] = _top_k_of_sparse_row(
                    product.indices[lo:hi], product.data[lo:hi], k)
        return Neighbours(indices, scores)


def _top_k_of_sparse_row(columns: np.ndarray, values: np.ndarray, k: int):
    """The top ``k`` of a row whose entries are ``values`` at ``columns`` and 0 elsewhere (all values >= 0)."""
    positive = values > 0
    columns, values = columns[positive].astype(np.int64), values[positive]
    if len(values) >= k:
        kth = np.partition(values, len(values) - k)[len(values) - k]  # the k-th largest value
        above = values > kth
        tied = np.sort(columns[values == kth])[: k - int(above.sum())]
        picked = np.concatenate([columns[above], tied])
        picked_scores = np.concatenate([values[above], np.full(len(tied), kth, values.dtype)])
    else:  # fewer than k similar sentences: fill with the smallest rows at similarity 0
        fill = np.setdiff1d(np.arange(k + len(columns)), columns)[: k - len(columns)]
        picked = np.concatenate([columns, fill])
        picked_scores = np.concatenate([values, np.zeros(len(fill), values.dtype)])
    return _sorted_best_first(picked, picked_scores.astype(np.float32))


def make_index(retriever: str, *, pool_sentences=None, pool_vectors=None, **options):
    """The index of ``retriever`` (one of :data:`RETRIEVERS`): ``"embedding"`` builds an
    :class:`ExactEmbeddingIndex` from ``pool_vectors``, ``"tfidf"`` a :class:`TfidfIndex` from
    ``pool_sentences``; ``options`` go to its constructor."""
    if retriever not in RETRIEVERS:
        raise ValueError(f"RETRIEVER = {retriever!r} is not allowed: choose one of {RETRIEVERS}")
    if retriever == "embedding":
        if pool_vectors is None:
            raise ValueError("RETRIEVER = 'embedding' needs pool_vectors: the L2-normalised sentence embeddings "
                             "of the pool (e.g. from kdtutorial.text.embedcache.cached_embeddings)")
        return ExactEmbeddingIndex(pool_vectors, **options)
    if pool_sentences is None:
        raise ValueError("RETRIEVER = 'tfidf' needs pool_sentences: the pool's sentences as strings")
    return TfidfIndex(pool_sentences, **options)
