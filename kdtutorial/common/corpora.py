"""The shared unlabelled text corpora: where their files lie under the data root, their sha256, and how to
read them. Used by lesson 08 (``lm.lmtext``: IMDB sentences as prompts) and lesson 09 (``text.pool``: IMDB
sentences as the retrieval pool of kNN augmentation).

* ``imdb-unsup-sentences/imdb_unsup_sentences.tsv.gz``: the 50,000 unlabelled reviews of the Large Movie Review
  Dataset v1.0 (aclImdb, Maas et al., ACL 2011), ``train/unsup/``, split into sentences and de-duplicated
  (593,486 rows). A gzipped TSV with the header ``review_id  sent_idx  sentence``, no quoting (``"`` is frequent
  in the text and never quotes a field); ``review_id`` is N of ``train/unsup/N_0.txt``, ``sent_idx`` the
  sentence's position in its review before duplicates were dropped.

Nothing here keeps state: every function takes the folder or file it reads.
"""
from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Iterator
from pathlib import Path

from kdtutorial.common.downloads import DATA_ENV, DataNotFoundError, data_root, searched_folder_text

__all__ = ["IMDB_FILE", "IMDB_SHA256", "IMDB_HEADER", "IMDB_DERIVATION", "imdb_pool_path", "read_imdb_rows"]

#: the IMDB sentence pool, relative to the data root
IMDB_FILE = "imdb-unsup-sentences/imdb_unsup_sentences.tsv.gz"
#: sha256 of the mirrored file (a file rebuilt from the hub is equivalent but not byte-identical)
IMDB_SHA256 = "f142ce3bd46fb94bd63cd178e2e51433b52212871ce0fd08171affe518384ca3"
#: the first row of every sentence pool file
IMDB_HEADER = ("review_id", "sent_idx", "sentence")
#: how the pool file was derived, for "not found" messages
IMDB_DERIVATION = ("It is derived from the unlabelled reviews of aclImdb v1.0 (Maas et al., 2011; train/unsup/): "
                   "each review's <br /> breaks become paragraph breaks, whitespace is collapsed, pysbd 0.3.4 "
                   "(Segmenter(language=\"en\", clean=False)) splits the sentences, and exact duplicate sentences "
                   "are dropped, the first occurrence kept.")


def imdb_pool_path(root: str | os.PathLike | None = None) -> Path:
    """The IMDB sentence pool under ``data_root(root)``.

    Raises :class:`DataNotFoundError` naming the folder searched, the file and its sha256, and how the file
    was derived, when it is not there (or no data root is known)."""
    folder = data_root(root)
    path = folder / IMDB_FILE if folder is not None else None
    if path is None or not path.is_file():
        raise DataNotFoundError(
            f"The IMDB sentence pool was not found. Folder searched: "
            f"{searched_folder_text(folder, 'imdb-unsup-sentences')}. Put imdb_unsup_sentences.tsv.gz (sha256 "
            f"{IMDB_SHA256}) there and point ${DATA_ENV} at the folder above it. {IMDB_DERIVATION}")
    return path


def read_imdb_rows(path: str | os.PathLike) -> Iterator[tuple[int, int, str]]:
    """``(review_id, sent_idx, sentence)`` for every row of a sentence pool file (gzipped TSV, header
    :data:`IMDB_HEADER`, no quoting), in file order, read as a stream.

    Raises ``ValueError`` for a file whose first row is not the header, for a row without exactly three
    fields and for ids that are not integers; the message names the file and the line."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        got = tuple(next(rows, ()))
        if got != IMDB_HEADER:
            raise ValueError(f"{path}: unexpected header: the header is {got}; a sentence pool file must start "
                             f"with review_id<TAB>sent_idx<TAB>sentence")
        for row in rows:
            if len(row) != 3:
                raise ValueError(f"{path}, line {rows.line_num}: {len(row)} fields; every row must have 3 "
                                 f"(review_id<TAB>sent_idx<TAB>sentence)")
            try:
                review, index = int(row[0]), int(row[1])
            except ValueError:
                raise ValueError(f"{path}, line {rows.line_num}: review_id and sent_idx must be integers, "
                                 f"got {row[0]!r} and {row[1]!r}") from None
            yield review, index, row[2]
