"""The shared unlabelled text corpora: where their files lie under the data root, their sha256, and how to
read them. Used by lesson 08 (``lm.lmtext``: IMDB sentences as prompts) and lesson 09 (``text.pool``: IMDB
sentences as the retrieval pool of kNN augmentation).

* ``imdb-unsup-sentences/imdb_unsup_sentences.tsv.gz``: the 50,000 unlabelled reviews of the Large Movie Review
  Dataset v1.0 (aclImdb, Maas et al., ACL 2011), ``train/unsup/``, split into sentences and de-duplicated
  (593,486 rows). A gzipped TSV with the header ``review_id  sent_idx  sentence``, no quoting (``"`` is frequent
  in the text and never quotes a field); ``review_id`` is N of ``train/unsup/N_0.txt``, ``sent_idx`` the
  sentence's position in its review before duplicates were dropped.

Without the file, :func:`imdb_pool_file` builds the same kind of file once from the Hugging Face hub
(``stanfordnlp/imdb``, split ``unsupervised``), split by the same rule (:func:`split_review`, pysbd 0.3.4), and
caches it. Nothing here keeps state: every function takes the folder or file it reads.
"""
from __future__ import annotations

import csv
import gzip
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from kdtutorial.common.downloads import (DATA_ENV, DataNotFoundError, cache_dir, data_root, failure_reason,
                                         searched_folder_text)

__all__ = ["IMDB_FILE", "IMDB_SHA256", "IMDB_HEADER", "IMDB_DERIVATION", "IMDB_HUB", "IMDB_HUB_SPLIT",
           "imdb_pool_path", "read_imdb_rows", "make_segmenter", "split_review", "imdb_pool_file"]

#: the IMDB sentence pool, relative to the data root
IMDB_FILE = "imdb-unsup-sentences/imdb_unsup_sentences.tsv.gz"
#: sha256 of the mirrored file (a file rebuilt from the hub is equivalent but not byte-identical)
IMDB_SHA256 = "f142ce3bd46fb94bd63cd178e2e51433b52212871ce0fd08171affe518384ca3"
#: the hub data set the IMDB pool is built from when the file is not on disk (with internet: Colab, Binder)
IMDB_HUB = "stanfordnlp/imdb"
IMDB_HUB_SPLIT = "unsupervised"
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


_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def make_segmenter():
    """pysbd's English sentence splitter as the IMDB pool was made with it (``clean=False``: the text is kept)."""
    try:
        import pysbd
    except ImportError as err:
        raise ImportError("Splitting reviews into sentences needs pysbd: pip install pysbd==0.3.4") from err
    return pysbd.Segmenter(language="en", clean=False)


def split_review(text: str, segmenter) -> list[str]:
    """The sentences of one review: ``<br />`` / ``<br/>`` / ``<br>`` (any case) end a paragraph, whitespace is
    collapsed in each paragraph, ``segmenter.segment`` splits it, and each piece is collapsed and stripped again;
    empty pieces are dropped."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    out = []
    for paragraph in _BREAK.sub("\n", text).split("\n"):
        paragraph = _SPACE.sub(" ", paragraph).strip()
        if not paragraph:
            continue
        for piece in segmenter.segment(paragraph):
            piece = _SPACE.sub(" ", piece).strip()
            if piece:
                out.append(piece)
    return out


def _write_pool_file(rows, dest: Path) -> None:
    """Write ``(review_id, sent_idx, sentence)`` rows as a pool file: to ``dest.part`` first, renamed when done."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(part, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed, \
                io.TextIOWrapper(packed, encoding="utf-8", newline="") as f:
            f.write("\t".join(IMDB_HEADER) + "\n")
            for review, index, sentence in rows:
                f.write(f"{review}\t{index}\t{sentence}\n")
        os.replace(part, dest)
    except BaseException:  # a failure (or KeyboardInterrupt) leaves no half-written file behind
        part.unlink(missing_ok=True)
        raise


def _hub_pool_rows(reviews, segmenter):
    """The pool file's rows from hub rows (``{"text": ...}``; the row number is the review id), duplicates dropped."""
    seen = set()
    for review, row in enumerate(tqdm(reviews, desc="splitting IMDB reviews", unit="review")):
        for index, sentence in enumerate(split_review(row["text"], segmenter)):
            if sentence not in seen:
                seen.add(sentence)
                yield review, index, sentence


def _imdb_help(folder: Path | None, dest: Path, reason: str) -> str:
    return (f"The IMDB sentence pool was not found and could not be built ({reason}). Folder searched: "
            f"{searched_folder_text(folder, 'imdb-unsup-sentences')}. Put imdb_unsup_sentences.tsv.gz (sha256 "
            f"{IMDB_SHA256}) there "
            f"(or at {dest}) and point ${DATA_ENV} at the folder above imdb-unsup-sentences. {IMDB_DERIVATION}")


def imdb_pool_file(root: str | os.PathLike | None = None, *, online: bool = True,
                   cache: str | os.PathLike | None = None) -> tuple[Path, str]:
    """``(path, source)`` of the IMDB sentence pool file: the data root's (:func:`imdb_pool_path`), else the cache's
    (``cache_dir(cache) / IMDB_FILE``), else, when ``online``, built once from the hub
    (``datasets.load_dataset("stanfordnlp/imdb", split="unsupervised")``, rows numbered as review ids in the hub's
    order, each split by :func:`split_review`, exact duplicates dropped keeping the first; minutes) and written to
    the cache (to a ``.part`` file first: a failure leaves nothing behind). ``source`` says which, in words.

    Raises :class:`DataNotFoundError`, saying where to put the file and why the hub failed, when there is no file
    and the hub cannot be used."""
    try:
        return imdb_pool_path(root), "imdb-unsup-sentences (local file)"
    except DataNotFoundError:
        pass
    folder = data_root(root)
    dest = cache_dir(cache) / IMDB_FILE
    source = f"imdb-unsup-sentences (built from the hub, {IMDB_HUB} {IMDB_HUB_SPLIT}, cached at {dest})"
    if dest.is_file():
        return dest, source
    if not online:
        raise DataNotFoundError(_imdb_help(folder, dest, "online=False, so the hub was not asked"))
    try:
        import datasets
    except ImportError as err:
        raise DataNotFoundError(_imdb_help(folder, dest, "the datasets package is not installed: "
                                                         "pip install datasets")) from err
    segmenter = make_segmenter()
    try:
        reviews = datasets.load_dataset(IMDB_HUB, split=IMDB_HUB_SPLIT)
    except Exception as err:  # the hub's errors vary (ConnectionError, OSError, offline mode, hub-specific ones)
        raise DataNotFoundError(_imdb_help(folder, dest, f"the hub failed: {failure_reason(err)}")) from err
    _write_pool_file(_hub_pool_rows(reviews, segmenter), dest)
    return dest, source
