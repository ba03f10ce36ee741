"""Lesson 09: is the test set inside the retrieval pool? kNN augmentation (Kamalloo et al., ACL 2021,
"Not Far Away, Not So Close: Sample Efficient Nearest Neighbour Data Augmentation via MiniMax") retrieves
unlabelled sentences near the training examples and lets the teacher label them for the student. If the pool
holds test sentences (or the texts they were cut from), retrieval pulls the test set into training and the
student's test score is no longer a held-out score.

:func:`overlap` counts three kinds of contamination of a pool by a test set:

* ``raw_rows``: pool rows equal to a test sentence character for character;
* ``rows`` / ``distinct``: pool rows equal to a test sentence after :func:`normalise_for_match`
  (lower-cased, alphanumeric characters only: the rule of the pool READMEs, under which SST-2's
  PTB-tokenised ``it 's not bad .`` equals a review's ``It's not bad.``), and how many distinct test
  sentences they match;
* ``contained``: test sentences (normalised, at least ``min_chars`` characters) found inside a *longer*
  normalised pool sentence, as a test phrase cut from a review would be.

On the mirrored data (SST-2's 872 test sentences): the IMDB pool (593,486 rows) has 0 raw matches and 23 rows
equal to 6 distinct test sentences after normalisation, all stock phrases ("bad .", "oh come on ."); Pang & Lee's
polarity v2.0 has 2 sentences equal after normalisation and 1 normalised substring.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["normalise_for_match", "Overlap", "overlap"]

#: characters that are not alphanumeric (``\w`` is str.isalnum() plus the underscore)
_NOT_ALNUM = re.compile(r"[\W_]+")
#: at most this many (test, pool) example pairs are kept
_EXAMPLES = 10


def normalise_for_match(s: str) -> str:
    """``s`` lower-cased with every character that is not alphanumeric (spaces and punctuation too) removed:
    ``"do n't"`` and ``"Don't"`` both become ``"dont"``."""
    if not isinstance(s, str):
        raise TypeError(f"s must be a str, got {type(s).__name__}")
    return _NOT_ALNUM.sub("", s.lower())


@dataclass(frozen=True)
class Overlap:
    """How much of a test set a pool contains (see :func:`overlap`).

    ``raw_rows``: pool rows equal to a test sentence as they are; ``rows``: pool rows equal to a test sentence
    after normalisation; ``distinct``: distinct test sentences with such a row; ``contained``: distinct test
    sentences whose normalised form (at least ``min_chars`` characters) lies inside a longer normalised pool
    sentence, whether or not they also have an equal row (``None``: not checked); ``examples``: (test sentence, pool sentence)
    pairs of the equal-after-normalisation matches, the first pool row of each matched test sentence, at most 10;
    ``n_pool`` / ``n_test``: the sizes compared."""

    raw_rows: int
    rows: int
    distinct: int
    contained: int | None
    examples: list[tuple[str, str]]
    n_pool: int
    n_test: int

    def line(self) -> str:
        """A one-line summary, e.g. for a notebook's printout."""
        return (f"pool {self.n_pool:,} rows vs test {self.n_test:,} sentences: {self.raw_rows:,} raw equal rows, "
                f"{self.rows:,} rows equal after normalisation ({self.distinct:,} distinct test sentences), "
                + ("containment not checked" if self.contained is None else
                   f"{self.contained:,} test sentence{'' if self.contained == 1 else 's'} inside a longer pool sentence"))


def _check_min_chars(min_chars) -> None:
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 1:
        raise ValueError(f"min_chars must be a positive integer, got {min_chars!r}")


class _LongerLines:
    """Normalised pool sentences, longest first, joined by "\n" into one byte string, so that the sentences longer
    than a given length are a prefix of it: a search there finds a needle only inside a *longer* sentence."""

    def __init__(self, forms: list[str]):
        encoded = sorted((form.encode("utf-8") for form in forms), key=len, reverse=True)
        self.lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))  # descending
        self.ends = np.cumsum(self.lengths + 1)  # end (exclusive, with its "\n") of the first k + 1 lines
        self.text = b"\n".join(encoded)  # bytes: one byte per ASCII character, C-speed find

    def contain(self, form: str) -> bool:
        """Whether a pool sentence longer than ``form`` (in UTF-8 bytes) contains it."""
        needle = form.encode("utf-8")
        longer = int(np.searchsorted(-self.lengths, -len(needle), side="left"))  # lines with more bytes
        return longer > 0 and self.text.find(needle, 0, int(self.ends[longer - 1])) >= 0


def overlap(pool_sentences: Iterable[str], test_sentences: Iterable[str], *, min_chars: int = 20,
            containment: bool = True) -> Overlap:
    """Count the pool rows equal to test sentences (raw and after :func:`normalise_for_match`) and the test
    sentences contained in longer pool sentences (only those of at least ``min_chars`` normalised characters,
    so that short stock phrases do not count as "found inside" everything).

    Counts of test sentences count distinct ones; those that normalise to the empty string are skipped. The
    containment check joins the normalised pool sentences, longest first, into one string and searches, once per
    test sentence, only the part that holds sentences longer than it (C speed, no Python double loop: about 15
    seconds for the 872 SST-2 test sentences against the 593,486 IMDB sentences on one core, most of it in the
    searches). ``containment=False`` skips that search (``contained`` is then ``None``): the equal-row counts
    alone take about 3 seconds for that pool."""
    _check_min_chars(min_chars)
    pool = list(pool_sentences)
    tests = list(test_sentences)
    for name, values in (("pool_sentences", pool), ("test_sentences", tests)):
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise TypeError(f"{name} must hold str values, found {type(values[bad]).__name__} at position {bad}: "
                            f"{values[bad]!r}")
    by_form: dict[str, list[str]] = {}  # normalised form -> the distinct test sentences with it, in test order
    for sentence in dict.fromkeys(tests):
        form = normalise_for_match(sentence)
        if form:
            by_form.setdefault(form, []).append(sentence)
    raw_tests = {sentence for same in by_form.values() for sentence in same}
    raw_rows = rows = 0
    matched: dict[str, str] = {}  # normalised form -> first pool sentence equal to it
    pool_forms = []
    for sentence in pool:
        raw_rows += sentence in raw_tests
        form = normalise_for_match(sentence)
        pool_forms.append(form)
        if form in by_form:
            rows += 1
            matched.setdefault(form, sentence)
    contained = None
    if containment:
        longer = _LongerLines(pool_forms)
        contained = sum(len(same) for form, same in by_form.items()
                        if len(form) >= min_chars and longer.contain(form))
    examples = [(by_form[form][0], pool_sentence) for form, pool_sentence in list(matched.items())[:_EXAMPLES]]
    distinct = sum(len(by_form[form]) for form in matched)
    return Overlap(raw_rows=raw_rows, rows=rows, distinct=distinct, contained=contained, examples=examples,
                   n_pool=len(pool), n_test=len(tests))
