"""Lesson 09's leakage check: the normalisation rule, every count of ``overlap`` on constructed pools (raw match,
match only after normalisation, containment in a longer sentence, absent), and the READMEs' numbers on the mirror
(IMDB pool and Pang & Lee polarity v2.0 against SST-2 test)."""
import os
import time
from pathlib import Path

import pytest

from kdtutorial.common import corpora
from kdtutorial.common.downloads import DATA_ENV
from kdtutorial.text import leakage, pool, sst2

MIRROR = Path(os.environ.get(DATA_ENV, "/nonexistent"))
needs_sst2 = pytest.mark.skipif(not (MIRROR / "sst2" / "test.tsv").is_file(), reason=f"${DATA_ENV}/sst2 is missing")
needs_imdb = pytest.mark.skipif(not (MIRROR / corpora.IMDB_FILE).is_file(),
                                reason=f"${DATA_ENV}/imdb-unsup-sentences is missing")
needs_polarity = pytest.mark.skipif(not (MIRROR / pool.POLARITY_V2_FILE).is_file(),
                                    reason=f"${DATA_ENV}/movie-review-polarity-v2 is missing")


# --- normalisation --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b", [("do n't", "don't"), ("it 's not bad .", "It's not bad."),
                                  ("-- a film , indeed", "A film, indeed!"), ("a_b c", "abc")])
def test_ptb_tokenised_and_plain_text_normalise_alike(a, b):
    assert leakage.normalise_for_match(a) == leakage.normalise_for_match(b)


def test_normalise_keeps_lower_cased_letters_and_digits_only():
    assert leakage.normalise_for_match("It's  A 10/10 film -- really!") == "itsa1010filmreally"
    assert leakage.normalise_for_match("Café Noir, déjà vu") == "cafénoirdéjàvu"  # letters of any script stay
    assert leakage.normalise_for_match(" ... ?! ") == ""
    with pytest.raises(TypeError, match="s must be a str, got int"):
        leakage.normalise_for_match(3)


# --- overlap on constructed data ------------------------------------------------------------------------------

RAW = "A raw match sentence sits here ."
PTB = "it 's not bad ."
INSIDE = "the film was a total waste of two good hours"
ABSENT = "Nothing like this is anywhere in the pool ."
POOL = [RAW, "It's not bad.", "Honestly, the film was a total waste of two good hours.", "Unrelated words."]


def test_every_count_on_a_constructed_pool():
    found = leakage.overlap(POOL, [RAW, PTB, INSIDE, ABSENT])
    assert (found.raw_rows, found.rows, found.distinct, found.contained) == (1, 2, 2, 1)
    assert (found.n_pool, found.n_test) == (4, 4)
    assert found.examples == [(RAW, RAW), (PTB, "It's not bad.")]
    assert found.line() == ("pool 4 rows vs test 4 sentences: 1 raw equal rows, 2 rows equal after normalisation "
                            "(2 distinct test sentences), 1 test sentence inside a longer pool sentence")


def test_an_equal_line_is_not_containment_but_a_longer_one_later_is():
    form = "this exact sentence is long enough"
    alone = leakage.overlap([form.upper() + "!", "something else entirely"], [form])
    assert (alone.rows, alone.distinct, alone.contained) == (1, 1, 0)
    both = leakage.overlap([form + ".", "x", f"and then {form}, said he"], [form])
    assert (both.rows, both.distinct, both.contained) == (1, 1, 1)
    twice = leakage.overlap([form, form + "?", form.title()], [form])  # only equal lines, several of them
    assert (twice.raw_rows, twice.rows, twice.contained) == (1, 3, 0)


def test_containment_never_spans_two_pool_sentences():
    found = leakage.overlap(["the opening words of one line", "the closing words of the next"],
                            ["one line the closing words"])
    assert (found.rows, found.contained) == (0, 0)


def test_min_chars_sets_the_shortest_test_sentence_checked_for_containment():
    pool_ = ["he said it was not bad at all, really", "a very long sentence that is not bad at all"]
    assert leakage.overlap(pool_, ["not bad at all"]).contained == 0  # "notbadatall": 11 characters < 20
    assert leakage.overlap(pool_, ["not bad at all"], min_chars=11).contained == 1
    assert leakage.overlap(pool_, ["not bad at all"], min_chars=12).contained == 0


def test_test_sentences_count_once_and_empty_ones_are_skipped():
    found = leakage.overlap(["BAD.", "bad .", "...", "?"], ["bad .", "bad .", "Bad!", "...", ""])
    assert found.raw_rows == 1  # "bad ." once; "..." normalises to nothing and is skipped, raw too
    assert found.rows == 2 and found.distinct == 2  # "bad ." and "Bad!" are two test sentences, one form
    assert found.n_test == 5 and found.examples == [("bad .", "BAD.")]


def test_at_most_ten_examples_are_kept():
    words = [f"sentence number {i} ." for i in range(15)]
    found = leakage.overlap([w.upper() for w in words], words)
    assert (found.rows, found.distinct, len(found.examples)) == (15, 15, 10)
    assert found.examples[0] == (words[0], words[0].upper())


def test_empty_inputs_and_generators_work():
    assert leakage.overlap([], ["some test sentence of fair length"]).line().startswith("pool 0 rows vs test 1")
    found = leakage.overlap((s for s in POOL), iter([RAW]))
    assert (found.raw_rows, found.n_pool, found.n_test) == (1, 4, 1)


@pytest.mark.parametrize("min_chars", [0, -3, 2.5, True, "20"])
def test_a_bad_min_chars_is_named(min_chars):
    with pytest.raises(ValueError, match="min_chars must be a positive integer"):
        leakage.overlap(POOL, [RAW], min_chars=min_chars)


def test_non_strings_are_named():
    with pytest.raises(TypeError, match="pool_sentences must hold str values, found NoneType at position 1"):
        leakage.overlap(["a", None], [RAW])
    with pytest.raises(TypeError, match="test_sentences must hold str values, found int"):
        leakage.overlap(POOL, [RAW, 7])


# --- the mirror: the READMEs' numbers -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sst2_test():
    return list(sst2.load_sst2("test", online=False)["sentence"])


STOCK = {"bad .", "very bad .", "cool ?", "oh come on .", "do not see this film .", "but it could have been worse ."}


@needs_sst2
@needs_imdb
def test_the_imdb_pool_holds_six_stock_phrases_of_sst2_test(sst2_test, report):
    """The whole pool (593,486 rows, no word filter): takes some seconds (about 10-20 on one busy core)."""
    sentences = [row[2] for row in corpora.read_imdb_rows(corpora.imdb_pool_path())]
    start = time.perf_counter()
    found = leakage.overlap(sentences, sst2_test)
    seconds = time.perf_counter() - start
    assert (found.n_pool, found.n_test) == (593486, 872)
    assert (found.raw_rows, found.rows, found.distinct) == (0, 23, 6)
    assert {test.strip() for test, _ in found.examples} == STOCK
    report(f"leakage IMDB vs SST-2 test: {found.line()} ({seconds:.1f} s)")


@needs_sst2
@needs_polarity
def test_pang_and_lee_v2_is_effectively_disjoint_from_sst2_test(sst2_test, report):
    lines = pool.load_polarity_v2_pool().sentences
    found = leakage.overlap(lines, sst2_test)  # min_chars=20: the README's "1 is a normalised substring"
    assert (found.raw_rows, found.rows, found.distinct, found.contained) == (0, 2, 2, 1)
    assert {test.strip() for test, _ in found.examples} == {"bad .", "cool ?"}
    assert leakage.overlap(lines, sst2_test, min_chars=17).contained == 2  # "big fat waste of time ." as well
    report(f"leakage Pang & Lee v2 vs SST-2 test: {found.line()}")


def test_containment_can_be_skipped():
    from kdtutorial.text.leakage import overlap

    pool = ["it 's not bad at all , says the critic", "a quiet film ."]
    tests = ["it 's not bad at all", "a quiet film ."]
    full, fast = overlap(pool, tests, min_chars=5), overlap(pool, tests, min_chars=5, containment=False)
    assert full.contained == 1 and fast.contained is None
    assert (fast.raw_rows, fast.rows, fast.distinct) == (full.raw_rows, full.rows, full.distinct) == (1, 1, 1)
    assert "containment not checked" in fast.line()
