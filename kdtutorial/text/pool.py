"""Lesson 09: the unlabelled sentence pools that kNN augmentation retrieves from (Kamalloo et al., ACL 2021,
"Not Far Away, Not So Close: Sample Efficient Nearest Neighbour Data Augmentation via MiniMax": the neighbours of
each training sentence in a large in-domain unlabelled pool are labelled by the teacher and added to the student's
training data).

* **IMDB** (:func:`load_imdb_pool`): the 50,000 unlabelled reviews of aclImdb v1.0 (Maas et al., ACL 2011) split
  into 593,486 distinct sentences; the file ``imdb-unsup-sentences/imdb_unsup_sentences.tsv.gz`` of the data root
  (see :mod:`kdtutorial.common.corpora`). Without it, the same kind of file is built once from the Hugging Face hub
  (``stanfordnlp/imdb``, split ``unsupervised``) with the same splitting rule (``corpora.split_review``, pysbd
  0.3.4) and cached.
* **Pang & Lee polarity v2.0** (:func:`load_polarity_v2_pool`): 2,000 full movie reviews (Pang & Lee, ACL 2004),
  lower-cased and tokenised, one sentence per line: 63,652 distinct lines, a second, small pool. The file is NLTK's
  ``movie_reviews`` corpus zip, checked by sha256.

A pool is a :class:`SentencePool`: the sentences, the review each came from (so that neighbours can be kept from the
same review, or counted per review) and a fingerprint that identifies the exact list, e.g. as a cache key for its
embeddings. Nothing here keeps global state or touches the global random generators.
"""
from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdtutorial.common.corpora import (IMDB_HUB, IMDB_HUB_SPLIT, imdb_pool_file, make_segmenter, read_imdb_rows,
                                       split_review)
from kdtutorial.common.downloads import (DATA_ENV, ChecksumError, DataNotFoundError, data_root,
                                         searched_folder_text, sha256_file)

__all__ = ["IMDB_HUB", "IMDB_HUB_SPLIT", "POLARITY_V2_FILE", "POLARITY_V2_SHA256", "POLARITY_V2_SOURCE", "SentencePool",
           "make_segmenter", "split_review", "load_imdb_pool", "load_polarity_v2_pool"]

#: Pang & Lee polarity v2.0, relative to the data root: NLTK's movie_reviews corpus
POLARITY_V2_FILE = "movie-review-polarity-v2/movie_reviews.zip"
POLARITY_V2_SHA256 = "a41211ae685019137410268134db6a1a14428c89b671eb83056151a878539008"
POLARITY_V2_SOURCE = ("GitHub nltk/nltk_data (commit 5db857e6f7df11eabb5e5665836db9ec8df07e28), "
                      "packages/corpora/movie_reviews.zip")



@dataclass(frozen=True)
class SentencePool:
    """Unlabelled sentences to retrieve from: ``sentences``, ``review_ids`` (int64, one per sentence: the review
    or document it came from) and ``source`` (where the pool came from, in words)."""

    sentences: list[str]
    review_ids: np.ndarray
    source: str

    def __post_init__(self):
        ids = np.asarray(self.review_ids)
        if ids.ndim != 1 or len(ids) != len(self.sentences):
            raise ValueError(f"review_ids must hold one id per sentence ({len(self.sentences)}), "
                             f"got shape {ids.shape}")
        if len(ids) and not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"review_ids must be integers, got dtype {ids.dtype}")
        object.__setattr__(self, "review_ids", ids.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def fingerprint(self) -> str:
        """sha256 (hex) of the sentences, each UTF-8 encoded and followed by a newline: equal for pools with the
        same sentences in the same order, different otherwise."""
        digest = hashlib.sha256()
        for sentence in self.sentences:
            digest.update(sentence.encode("utf-8"))
            digest.update(b"\n")
        return digest.hexdigest()

    def subset(self, n: int, seed: int) -> SentencePool:
        """``n`` distinct rows drawn without replacement by ``np.random.default_rng(seed)``, kept in pool order
        (``self`` itself when ``n`` is the pool's size)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(self):
            raise ValueError(f"n must be an integer from 1 to {len(self)} (the pool's size), got {n!r}")
        if n == len(self):
            return self
        rows = np.sort(np.random.default_rng(seed).choice(len(self), size=int(n), replace=False))
        return SentencePool([self.sentences[i] for i in rows], self.review_ids[rows],
                            f"{self.source}, {n:,} rows drawn with seed {seed}")


def _check_word_range(min_words, max_words) -> None:
    for name, value in (("min_words", min_words), ("max_words", max_words)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if min_words > max_words:
        raise ValueError(f"min_words must be at most max_words, got min_words={min_words} > max_words={max_words}")


def _read_pool_file(path: Path, min_words: int, max_words: int, source: str) -> SentencePool:
    sentences, ids = [], []
    for review, _, sentence in read_imdb_rows(path):
        if min_words <= len(sentence.split()) <= max_words:
            sentences.append(sentence)
            ids.append(review)
    return SentencePool(sentences, np.array(ids, dtype=np.int64), source)


def load_imdb_pool(root: str | os.PathLike | None = None, *, online: bool = True, min_words: int = 3,
                   max_words: int = 80, cache: str | os.PathLike | None = None) -> SentencePool:
    """The IMDB sentence pool: the sentences of ``min_words..max_words`` whitespace words, in file order.

    The file is :func:`~kdtutorial.common.corpora.imdb_pool_file`'s: the data root's, else the cache's, else (when
    ``online``) built once from the hub (``stanfordnlp/imdb``, split ``unsupervised``, each review split by pysbd
    as the mirror was; minutes) and cached. Raises ``ValueError`` for bad word limits and
    :class:`DataNotFoundError`, saying where to put the file and why the hub failed, when there is no file and the
    hub cannot be used."""
    _check_word_range(min_words, max_words)
    path, source = imdb_pool_file(root, online=online, cache=cache)
    return _read_pool_file(path, min_words, max_words, source)


def _polarity_lines(path: Path):
    """``(file position, line)`` for every non-empty line of the reviews in the zip (sorted member names)."""
    with zipfile.ZipFile(path) as archive:
        names = sorted(name for name in archive.namelist()
                       if re.fullmatch(r"movie_reviews/(pos|neg)/[^/]+\.txt", name))
        for review, name in enumerate(names):
            for line in archive.read(name).decode("utf-8").splitlines():
                line = line.strip()
                if line:
                    yield review, line


def load_polarity_v2_pool(root: str | os.PathLike | None = None) -> SentencePool:
    """Pang & Lee polarity v2.0 as a pool: every non-empty line (one tokenised, lower-cased sentence) of
    ``movie_reviews/{neg,pos}/*.txt`` in ``movie-review-polarity-v2/movie_reviews.zip`` under the data root, the
    files in sorted order of their names (``neg/`` before ``pos/``), review id = a file's position in that order;
    exact duplicate lines are dropped, the first kept (64,720 lines, 63,652 rows).

    Raises :class:`DataNotFoundError` saying where to put the zip when it is missing, and :class:`ChecksumError`
    when its sha256 is not :data:`POLARITY_V2_SHA256`."""
    folder = data_root(root)
    path = folder / POLARITY_V2_FILE if folder is not None else None
    if path is None or not path.is_file():
        raise DataNotFoundError(
            f"Pang & Lee's polarity v2.0 was not found. Folder searched: "
            f"{searched_folder_text(folder, 'movie-review-polarity-v2')}. Put movie_reviews.zip (sha256 "
            f"{POLARITY_V2_SHA256}) there and point ${DATA_ENV} at the folder above it. It is NLTK's movie_reviews "
            f"corpus: {POLARITY_V2_SOURCE}.")
    actual = sha256_file(path)
    if actual != POLARITY_V2_SHA256:
        raise ChecksumError(f"{path} has sha256 {actual}, expected {POLARITY_V2_SHA256} (NLTK's movie_reviews.zip, "
                            f"{POLARITY_V2_SOURCE}): replace the file")
    seen: dict[str, int] = {}
    for review, line in _polarity_lines(path):
        seen.setdefault(line, review)
    return SentencePool(list(seen), np.fromiter(seen.values(), dtype=np.int64, count=len(seen)),
                        "movie-review-polarity-v2 (Pang & Lee 2004, local file)")
