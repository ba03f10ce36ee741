"""Lesson 09's sentence pools: the pool file format (written here: good, wrong header, short row), the word filter,
SentencePool's fingerprint and seeded subsets, review splitting with the real pysbd, building the IMDB pool from a
stand-in hub (written once, read back, atomic on failure), the Pang & Lee zip's checksum, and the mirrored files."""
import gzip
import hashlib
import os
from pathlib import Path

import datasets
import numpy as np
import pytest

from kdtutorial.common import corpora
from kdtutorial.common.downloads import DATA_ENV, ChecksumError, DataNotFoundError
from kdtutorial.text import pool

MIRROR = Path(os.environ.get(DATA_ENV, "/nonexistent"))
needs_imdb = pytest.mark.skipif(not (MIRROR / corpora.IMDB_FILE).is_file(),
                                reason=f"${DATA_ENV}/imdb-unsup-sentences is missing")
needs_polarity = pytest.mark.skipif(not (MIRROR / pool.POLARITY_V2_FILE).is_file(),
                                    reason=f"${DATA_ENV}/movie-review-polarity-v2 is missing")


def write_pool(path, rows, header=corpora.IMDB_HEADER):
    """A pool file as the mirror's: gzipped TSV, header, no quoting; ``rows`` are lines' fields."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(str(x) for x in row) + "\n")
    return path


ROWS = [(0, 0, "Short one."), (0, 1, 'A "quoted" sentence of seven words here.'), (2, 0, "one two three"),
        (2, 2, " ".join(["w"] * 81)), (5, 0, "Exactly five words right here.")]


# --- the file format ------------------------------------------------------------------------------------------

def test_read_imdb_rows_gives_typed_rows_in_file_order(tmp_path):
    path = write_pool(tmp_path / "p.tsv.gz", ROWS)
    assert list(corpora.read_imdb_rows(path)) == ROWS  # quotes kept as they are


def test_a_file_with_another_header_is_refused(tmp_path):
    path = write_pool(tmp_path / corpora.IMDB_FILE, ROWS, header=("id", "n", "text"))
    with pytest.raises(ValueError, match="review_id") as err:
        list(corpora.read_imdb_rows(path))
    assert "('id', 'n', 'text')" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ValueError, match="review_id"):
        pool.load_imdb_pool(tmp_path, online=False)


def test_a_short_row_is_refused_with_its_line_number(tmp_path):
    path = tmp_path / "p.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write("review_id\tsent_idx\tsentence\n0\t0\tfine\n1\tno index\n")
    with pytest.raises(ValueError, match="line 3: 2 fields; every row must have 3"):
        list(corpora.read_imdb_rows(path))
    write_pool(path, [("x", 0, "not an id")])
    with pytest.raises(ValueError, match="line 2: review_id and sent_idx must be integers"):
        list(corpora.read_imdb_rows(path))


def test_a_missing_pool_file_says_what_to_put_where(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="imdb_unsup_sentences.tsv.gz") as err:
        corpora.imdb_pool_path(tmp_path)
    text = str(err.value)
    assert str(tmp_path / "imdb-unsup-sentences") in text and corpora.IMDB_SHA256 in text and "pysbd 0.3.4" in text
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DataNotFoundError, match=r"\$KDTUTORIAL_DATA is not set"):
        corpora.imdb_pool_path()


# --- load_imdb_pool from a local file -------------------------------------------------------------------------

def test_the_local_file_is_read_with_the_word_filter(tmp_path):
    write_pool(tmp_path / corpora.IMDB_FILE, ROWS)
    default = pool.load_imdb_pool(tmp_path, online=False)  # 3..80 words
    assert default.sentences == [ROWS[1][2], "one two three", "Exactly five words right here."]
    assert default.review_ids.dtype == np.int64 and default.review_ids.tolist() == [0, 2, 5]
    assert default.source == "imdb-unsup-sentences (local file)"
    everything = pool.load_imdb_pool(tmp_path, online=False, min_words=1, max_words=100)
    assert everything.sentences == [r[2] for r in ROWS]
    assert pool.load_imdb_pool(tmp_path, min_words=5, max_words=5).sentences == ["Exactly five words right here."]


@pytest.mark.parametrize("min_words, max_words, message", [
    (0, 80, "min_words must be a positive integer, got 0"), (3, -1, "max_words must be a positive integer"),
    (2.5, 80, "min_words must be a positive integer"), (3, True, "max_words must be a positive integer"),
    (5, 4, "min_words must be at most max_words, got min_words=5 > max_words=4")])
def test_bad_word_limits_are_named(min_words, max_words, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        pool.load_imdb_pool(tmp_path, online=False, min_words=min_words, max_words=max_words)


# --- SentencePool ---------------------------------------------------------------------------------------------

def make_pool(sentences, ids=None):
    return pool.SentencePool(list(sentences), np.arange(len(sentences)) if ids is None else np.asarray(ids), "test")


def test_the_fingerprint_is_the_sha256_of_the_lines():
    a = make_pool(["alpha", "beta", "gamma"])
    assert len(a) == 3 and a.fingerprint == hashlib.sha256(b"alpha\nbeta\ngamma\n").hexdigest()
    same = pool.SentencePool(["alpha", "beta", "gamma"], np.array([7, 7, 9]), "another source")
    assert same.fingerprint == a.fingerprint  # only the sentences and their order count
    assert make_pool(["alpha", "beta", "gamma!"]).fingerprint != a.fingerprint
    assert make_pool(["beta", "alpha", "gamma"]).fingerprint != a.fingerprint
    assert make_pool(["alpha", "beta"]).fingerprint != a.fingerprint


def test_review_ids_must_match_the_sentences():
    with pytest.raises(ValueError, match=r"review_ids must hold one id per sentence \(2\)"):
        make_pool(["a", "b"], ids=[0])
    with pytest.raises(ValueError, match="review_ids must be integers"):
        make_pool(["a", "b"], ids=[0.5, 1.0])
    assert make_pool(["a"], ids=np.array([3], dtype=np.int32)).review_ids.dtype == np.int64


def test_subsets_are_seeded_distinct_and_in_pool_order():
    full = make_pool([f"s{i}" for i in range(50)], ids=np.arange(50) // 5)
    a, b = full.subset(10, seed=3), full.subset(10, seed=3)
    assert a.sentences == b.sentences and np.array_equal(a.review_ids, b.review_ids)
    rows = [int(s[1:]) for s in a.sentences]
    assert rows == sorted(set(rows)) and len(rows) == 10  # distinct, in pool order
    assert a.review_ids.tolist() == [r // 5 for r in rows]  # each sentence keeps its review
    expected = np.sort(np.random.default_rng(3).choice(50, size=10, replace=False))
    assert rows == expected.tolist()
    assert full.subset(10, seed=4).sentences != a.sentences
    assert full.subset(50, seed=0) is full and len(full.subset(1, seed=0)) == 1


@pytest.mark.parametrize("n", [0, -1, 51, 2.5, True, "3"])
def test_a_bad_subset_size_names_the_range(n):
    with pytest.raises(ValueError, match=r"n must be an integer from 1 to 50 \(the pool's size\)"):
        make_pool([f"s{i}" for i in range(50)]).subset(n, seed=0)


# --- splitting reviews ----------------------------------------------------------------------------------------

def test_split_review_breaks_paragraphs_and_sentences():
    review = "I loved it. The end was weak!<br /><br />Second \t  paragraph  here, by Mr. Smith.<BR>Third<br/>  <br>"
    assert pool.split_review(review, pool.make_segmenter()) == [
        "I loved it.", "The end was weak!", "Second paragraph here, by Mr. Smith.", "Third"]
    assert pool.split_review("<br /><br />  ", pool.make_segmenter()) == []


def test_split_review_collapses_what_the_segmenter_returns():
    class Halves:
        def segment(self, text):
            return [text[: len(text) // 2] + "  \t", "  ", text[len(text) // 2:]]

    assert pool.split_review("abcd  efgh", Halves()) == ["abcd", "efgh"]


# --- building the pool from the hub ---------------------------------------------------------------------------

HUB_REVIEWS = [{"text": "Great film. Loved it.<br /><br />Great film.", "label": -1},
               {"text": "Bad acting. Great film.", "label": -1}]


@pytest.fixture
def hub(monkeypatch):
    """``datasets.load_dataset`` replaced: records its calls and returns ``hub.reviews`` (or raises ``hub.error``)."""
    class Hub:
        calls = []
        reviews = datasets.Dataset.from_list(HUB_REVIEWS)
        error = None

        def __call__(self, *args, **kwargs):
            self.calls.append((args, kwargs))
            if self.error is not None:
                raise self.error
            return self.reviews

    fake = Hub()
    fake.calls = []
    monkeypatch.setattr(datasets, "load_dataset", fake)
    return fake


def test_the_pool_is_built_from_the_hub_once_and_cached(tmp_path, hub):
    empty, cache = tmp_path / "data", tmp_path / "cache"
    empty.mkdir()
    built = pool.load_imdb_pool(empty, cache=cache, min_words=1)
    assert hub.calls == [(("stanfordnlp/imdb",), {"split": "unsupervised"})]
    dest = cache / corpora.IMDB_FILE
    with gzip.open(dest, "rt", encoding="utf-8") as f:
        assert f.read() == ("review_id\tsent_idx\tsentence\n0\t0\tGreat film.\n0\t1\tLoved it.\n"
                            "1\t0\tBad acting.\n")  # duplicates dropped, the first kept
    assert not list(dest.parent.glob("*.part"))
    assert built.sentences == ["Great film.", "Loved it.", "Bad acting."] and built.review_ids.tolist() == [0, 0, 1]
    assert "stanfordnlp/imdb" in built.source
    again = pool.load_imdb_pool(empty, cache=cache, min_words=1, online=False)
    assert again.sentences == built.sentences and len(hub.calls) == 1  # from the cache, no second hub call
    assert pool.load_imdb_pool(empty, cache=cache, min_words=3).sentences == []  # filtered after reading


def test_a_hub_list_of_rows_works_too(tmp_path, hub):
    hub.reviews = HUB_REVIEWS[::-1]
    built = pool.load_imdb_pool(tmp_path, cache=tmp_path / "cache", min_words=1)
    assert built.sentences == ["Bad acting.", "Great film.", "Loved it."] and built.review_ids.tolist() == [0, 0, 1]


def test_a_local_file_wins_over_the_cache_and_the_hub(tmp_path, hub):
    write_pool(tmp_path / corpora.IMDB_FILE, [(4, 0, "local file sentence")])
    write_pool(tmp_path / "cache" / corpora.IMDB_FILE, [(4, 0, "cached sentence")])
    assert pool.load_imdb_pool(tmp_path, cache=tmp_path / "cache").sentences == ["local file sentence"]
    assert hub.calls == []


def test_a_hub_failure_says_where_to_put_the_file(tmp_path, hub, monkeypatch):
    hub.error = ConnectionError("no route to huggingface.co")
    cache = tmp_path / "cache"
    with pytest.raises(DataNotFoundError, match="no route to huggingface.co") as err:
        pool.load_imdb_pool(tmp_path, cache=cache)
    text = str(err.value)
    assert str(tmp_path / "imdb-unsup-sentences") in text and str(cache / corpora.IMDB_FILE) in text
    assert "$KDTUTORIAL_DATA" in text and not cache.exists()
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DataNotFoundError, match=r"\$KDTUTORIAL_DATA is not set"):
        pool.load_imdb_pool(cache=cache)


def test_offline_the_hub_is_not_asked(tmp_path, hub):
    with pytest.raises(DataNotFoundError, match="online=False") as err:
        pool.load_imdb_pool(tmp_path, cache=tmp_path / "cache", online=False)
    assert str(tmp_path / "cache" / corpora.IMDB_FILE) in str(err.value) and hub.calls == []


def test_a_failure_while_writing_leaves_no_file(tmp_path, hub):
    hub.reviews = [HUB_REVIEWS[0], {"text": None}]  # the second review breaks the splitter mid-file
    cache = tmp_path / "cache"
    with pytest.raises(TypeError, match="text must be a str"):
        pool.load_imdb_pool(tmp_path, cache=cache)
    assert not [p for p in cache.rglob("*") if p.is_file()]


# --- Pang & Lee polarity v2.0 ---------------------------------------------------------------------------------

def test_a_missing_polarity_zip_says_what_to_put_where(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="movie_reviews.zip") as err:
        pool.load_polarity_v2_pool(tmp_path)
    text = str(err.value)
    assert str(tmp_path / "movie-review-polarity-v2") in text and pool.POLARITY_V2_SHA256 in text
    assert "nltk/nltk_data" in text and "packages/corpora/movie_reviews.zip" in text
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DataNotFoundError, match=r"\$KDTUTORIAL_DATA is not set"):
        pool.load_polarity_v2_pool()


def test_a_polarity_zip_with_another_sha256_is_refused(tmp_path):
    import zipfile

    fake = tmp_path / pool.POLARITY_V2_FILE
    fake.parent.mkdir(parents=True)
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("movie_reviews/pos/cv000_1.txt", "a fine film .\n")
    with pytest.raises(ChecksumError, match=pool.POLARITY_V2_SHA256) as err:
        pool.load_polarity_v2_pool(tmp_path)
    assert str(fake) in str(err.value)


# --- the mirrored files ---------------------------------------------------------------------------------------

@needs_polarity
def test_the_polarity_pool_from_the_mirror():
    lines = pool.load_polarity_v2_pool()
    assert len(lines) == 63652 and len(set(lines.sentences)) == 63652  # 64,720 lines, duplicates dropped
    assert lines.review_ids.dtype == np.int64 and lines.review_ids.min() == 0 and lines.review_ids.max() == 1999
    assert np.all(np.diff(lines.review_ids) >= 0)
    assert lines.sentences[0] == "plot : two teen couples go to a church party , drink and then drive ."
    assert all(s and s == s.strip() and s == s.lower() for s in lines.sentences)


@needs_imdb
def test_the_imdb_pool_from_the_mirror():
    everything = pool.load_imdb_pool(online=False, min_words=1, max_words=1000)
    assert len(everything) == 593486 and len(set(everything.sentences)) == 593486
    assert everything.sentences[0].startswith("I admit, the great majority of films released before say 1933")
    assert np.all(np.diff(everything.review_ids) >= 0) and len(np.unique(everything.review_ids)) == 49505
    default = pool.load_imdb_pool(online=False)
    words = np.array([len(s.split()) for s in everything.sentences])
    assert len(default) == int(((words >= 3) & (words <= 80)).sum())
    assert int((words < 3).sum()) == 10447  # the README's count of sentences under 3 words
