"""Lesson 09's retrievers (``retrieval``), each checked against brute force.

The exact embedding index is compared with a dense ``queries @ pool.T`` over random unit vectors; the TF-IDF index
with the similarities computed from the same fitted vectoriser's dense matrices (float64, element by element) on a
small constructed pool that holds duplicate sentences (exact ties), rare words (dropped by ``min_df=2``) and a
query with no known word. Both follow the tie rule of ``brute_force_neighbours``: the smaller pool row first.
"""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from kdtutorial.text import retrieval
from kdtutorial.text.retrieval import ExactEmbeddingIndex, Neighbours, TfidfIndex, brute_force_neighbours


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    yield
    faiss.omp_set_num_threads(old)


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


POOL = [
    "the film was good",                                  # 0
    "a very good film with a great cast",                 # 1
    "the plot was boring and the acting was bad",         # 2
    "i loved the soundtrack",                             # 3
    "the acting was great",                               # 4
    "a boring film",                                      # 5
    "the soundtrack was too loud",                        # 6
    "i hated the ending",                                 # 7
    "the ending was a surprise",                          # 8
    "the cast was great and the plot was good",           # 9
    "i loved the soundtrack",                             # 10 duplicate of 3
    "not a good film at all",                             # 11
    "the director should retire",                         # 12
    "a film about a dog",                                 # 13
    "the dog was the best actor",                         # 14
    "i loved the soundtrack",                             # 15 duplicate of 3
    "too long and too loud",                              # 16
    "the best film of the year",                          # 17
    "the worst film of the year",                         # 18
    "a great director and a great cast",                  # 19
    "the ending was bad",                                 # 20
    "i loved the dog",                                    # 21
    "the acting was bad",                                 # 22
    "boring boring boring",                               # 23
    "a surprise ending",                                  # 24
    "the plot was good",                                  # 25
    "the plot was good",                                  # 26 duplicate of 25
    "good",                                               # 27
    "the year of the dog",                                # 28
    "an unforgettable masterpiece",                       # 29 only rare words
    "the cast and the director",                          # 30
    "loud music and a boring plot",                       # 31
    "the best soundtrack of the year",                    # 32
    "a film i hated",                                     # 33
    "the worst ending",                                   # 34
    "the acting was great",                               # 35 duplicate of 4
    "a very great film",                                  # 36
    "the music was great",                                # 37
    "a retire plan",                                      # 38
    "nothing to see here",                                # 39 only rare words
]
QUERIES = [
    "i loved the soundtrack",        # the three duplicates tie at the top
    "the plot was good",
    "zebra quantum xylophone",       # no known word: all similarities 0
    "",                              # empty: the same
    "retire",                        # a term in two sentences only (12, 38): the rest filled at score 0
    "a great film with a good plot",
    "THE ACTING WAS GREAT",          # lower-cased
    "the dog and the cast and the year",
    "very",                          # in rows 1 and 36 only: the zeros filled from 0, 2, 3 (1 is taken)
]


def dense_tfidf_similarity(index: TfidfIndex, queries) -> np.ndarray:
    """Cosine similarities from the fitted vectoriser's dense matrices, element by element in float64."""
    q = index.vectorizer.transform(queries).toarray().astype(np.float64)
    p = index.matrix.toarray().astype(np.float64)
    return (q[:, None, :] * p[None, :, :]).sum(-1)


# --------------------------------------------------------------------------------------------------------------
# Exact embedding index
# --------------------------------------------------------------------------------------------------------------


def test_exact_index_equals_brute_force():
    pool, queries = unit_rows(500, 16, seed=0), unit_rows(20, 16, seed=1)
    index = ExactEmbeddingIndex(pool)
    assert len(index) == 500 and index.dim == 16
    got = index.search(queries, 7)
    ref = brute_force_neighbours(queries.astype(np.float64) @ pool.T.astype(np.float64), 7)
    assert got.indices.dtype == np.int64 and got.scores.dtype == np.float32 and got.indices.shape == (20, 7)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5)
    assert (np.diff(got.scores, axis=1) <= 0).all()


def test_exact_index_puts_the_smaller_row_first_among_ties():
    pool = unit_rows(50, 8, seed=2)
    pool[[9, 30]] = pool[4]
    got = ExactEmbeddingIndex(pool).search(pool[[4, 30]], 3)
    np.testing.assert_array_equal(got.indices, [[4, 9, 30], [4, 9, 30]])
    np.testing.assert_allclose(got.scores, 1, atol=1e-5)
    np.testing.assert_array_equal(got.indices, brute_force_neighbours(pool[[4, 30]] @ pool.T, 3).indices)


def test_exact_index_checks_its_vectors():
    pool = unit_rows(10, 4, seed=3)
    with pytest.raises(ValueError, match=r"pool_vectors must be a 2-D array .* shape \(4,\).*reshape"):
        ExactEmbeddingIndex(pool[0])
    bad = pool.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values in 1 rows \(first: row 3\)"):
        ExactEmbeddingIndex(bad)
    with pytest.raises(ValueError, match=r"L2-normalised.*row 0 has norm 2"):
        ExactEmbeddingIndex(pool * 2)
    with pytest.raises(ValueError, match="empty"):
        ExactEmbeddingIndex(np.empty((0, 4), np.float32))
    with pytest.raises(ValueError, match="real numbers"):
        ExactEmbeddingIndex(np.array([["a", "b"]]))
    index = ExactEmbeddingIndex(pool.astype(np.float64))  # converted to float32
    with pytest.raises(ValueError, match="dimension 3 but the pool vectors 4"):
        index.search(unit_rows(2, 3, seed=4), 2)
    with pytest.raises(ValueError, match="query_vectors must be L2-normalised"):
        index.search(pool[:2] * 3, 2)
    assert index.search(np.empty((0, 4), np.float32), 2).indices.shape == (0, 2)


# --------------------------------------------------------------------------------------------------------------
# TF-IDF index
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tfidf():
    return TfidfIndex(POOL)


@pytest.mark.parametrize("k", [1, 3, 7, 40])
def test_tfidf_equals_brute_force(tfidf, k):
    got = tfidf.search(QUERIES, k)
    ref = brute_force_neighbours(dense_tfidf_similarity(tfidf, QUERIES), k)
    assert got.indices.shape == (len(QUERIES), k) and got.scores.dtype == np.float32
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-6)
    batched = tfidf.search(QUERIES, k, batch=3)
    np.testing.assert_array_equal(batched.indices, got.indices)
    np.testing.assert_array_equal(batched.scores, got.scores)


def test_tfidf_ties_and_queries_without_known_words(tfidf):
    got = tfidf.search(QUERIES, 5)
    np.testing.assert_array_equal(got.indices[0, :3], [3, 10, 15])  # exact duplicates: smaller row first
    np.testing.assert_allclose(got.scores[0, :3], 1, atol=1e-6)
    np.testing.assert_array_equal(got.indices[1, :2], [25, 26])
    for row in (2, 3):  # no known word: the k smallest rows at score 0
        np.testing.assert_array_equal(got.indices[row], np.arange(5))
        np.testing.assert_array_equal(got.scores[row], 0)
    assert set(got.indices[4, :2]) == {12, 38} and (got.scores[4, :2] > 0).all()  # two matches,
    np.testing.assert_array_equal(got.indices[4, 2:], [0, 1, 2])  # then the smallest rows at score 0
    np.testing.assert_array_equal(got.scores[4, 2:], 0)
    assert set(got.indices[8, :2]) == {1, 36} and (got.scores[8, :2] > 0).all()
    np.testing.assert_array_equal(got.indices[8, 2:], [0, 2, 3])
    np.testing.assert_array_equal(got.indices[6, :2], [4, 35])


def test_tfidf_vectoriser_options(tfidf):
    assert tfidf.vectorizer.min_df == 2 and tfidf.vectorizer.ngram_range == (1, 2)
    assert tfidf.vectorizer.sublinear_tf and tfidf.vectorizer.lowercase
    assert tfidf.matrix.dtype == np.float32 and len(tfidf) == len(POOL)
    assert "unforgettable" not in tfidf.vectorizer.vocabulary_ and "loved the" in tfidf.vectorizer.vocabulary_
    unigrams = TfidfIndex(POOL, ngram_range=(1, 1), min_df=1)
    assert "unforgettable" in unigrams.vectorizer.vocabulary_ and unigrams.vocabulary_size < tfidf.vocabulary_size
    with pytest.raises(ValueError, match="cannot fit TF-IDF on pool_sentences"):
        TfidfIndex(["one", "two"])
    with pytest.raises(TypeError, match="not one string"):
        tfidf.search("the film", 2)
    with pytest.raises(ValueError, match="batch"):
        tfidf.search(QUERIES, 2, batch=0)


# --------------------------------------------------------------------------------------------------------------
# The common interface
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -1, 41, 2.5, "3", True, None])
def test_k_outside_the_pool_is_refused(tfidf, k):
    message = rf"K = {k} is not allowed: the pool has 40 sentences \(1 <= K <= 40\)"
    with pytest.raises(ValueError, match=message):
        tfidf.search(QUERIES, k)
    with pytest.raises(ValueError, match=message):
        ExactEmbeddingIndex(unit_rows(40, 4, seed=5)).search(unit_rows(2, 4, seed=6), k)
    with pytest.raises(ValueError, match=message):
        brute_force_neighbours(np.zeros((2, 40)), k)


def test_numpy_ints_are_fine_as_k(tfidf):
    assert tfidf.search(QUERIES[:2], np.int64(4)).k == 4


def test_make_index_by_name():
    assert retrieval.RETRIEVERS == ("embedding", "tfidf")
    index = retrieval.make_index("embedding", pool_vectors=unit_rows(30, 4, seed=7))
    assert isinstance(index, ExactEmbeddingIndex) and len(index) == 30
    index = retrieval.make_index("tfidf", pool_sentences=POOL, min_df=1)
    assert isinstance(index, TfidfIndex) and "unforgettable" in index.vectorizer.vocabulary_
    with pytest.raises(ValueError, match=r"RETRIEVER = 'bm25' is not allowed: choose one of \('embedding', "
                                         r"'tfidf'\)"):
        retrieval.make_index("bm25", pool_sentences=POOL)
    with pytest.raises(ValueError, match="'embedding' needs pool_vectors"):
        retrieval.make_index("embedding", pool_sentences=POOL)
    with pytest.raises(ValueError, match="'tfidf' needs pool_sentences"):
        retrieval.make_index("tfidf", pool_vectors=unit_rows(30, 4, seed=7))


def test_neighbours_slicing():
    neighbours = Neighbours(np.arange(12).reshape(4, 3), -np.arange(12, dtype=np.float64).reshape(4, 3))
    assert neighbours.k == 3 and len(neighbours) == 4
    assert neighbours.indices.dtype == np.int64 and neighbours.scores.dtype == np.float32
    part = neighbours[1:3]
    np.testing.assert_array_equal(part.indices, [[3, 4, 5], [6, 7, 8]])
    np.testing.assert_array_equal(part.scores, [[-3, -4, -5], [-6, -7, -8]])
    np.testing.assert_array_equal(neighbours[np.array([3, 0])].indices, [[9, 10, 11], [0, 1, 2]])
    np.testing.assert_array_equal(neighbours[np.array([True, False, False, True])].indices[:, 0], [0, 9])
    one = neighbours[-1]
    assert one.indices.shape == (1, 3) and one.k == 3
    with pytest.raises(ValueError, match="one shape"):
        Neighbours(np.zeros((2, 3)), np.zeros((2, 2)))
