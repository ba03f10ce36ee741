"""Tests for kdtutorial.text.sst2. Offline: the hub is a monkeypatched fake, downloads go to a loopback
HTTP server.

The tests on the real files run when the course's data mirror is found, in $KDTUTORIAL_DATA or at
``../shared/data`` next to the repository; otherwise they are skipped.
"""
from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest

from _support import unused_port
from kdtutorial.text import sst2
from kdtutorial.common.downloads import ChecksumError, DataNotFoundError, sha256_file
from kdtutorial.ranking.qadsm import load_qadsm, parse_qadsm_line, read_qadsm
from kdtutorial.text.sst2 import load_sst2, read_sst2_tsv, sst2_hub_split_indices, sst2_sample
from kdtutorial.ranking.transfer import transfer_pairs, transfer_index, overlap_pair_ids, neighbour_pair_ids, neighbour_ranks
from kdtutorial.common import downloads
from kdtutorial.ranking import qadsm


def _find_mirror(relative: str) -> Path | None:
    """The data mirror root holding ``relative``: $KDTUTORIAL_DATA, else ``<repo>/../shared/data``."""
    candidates = [os.environ.get(downloads.DATA_ENV, "").strip(),
                  Path(__file__).resolve().parents[3] / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / relative).is_file():
            return Path(candidate)
    return None


QADSM_MIRROR = _find_mirror("qadsm/de/test.tsv")  # looked up before the fixtures clear the variable
SST2_MIRROR = _find_mirror("sst2/test.tsv")
needs_qadsm_mirror = pytest.mark.skipif(QADSM_MIRROR is None, reason="no data mirror with qadsm/de")
needs_sst2_mirror = pytest.mark.skipif(SST2_MIRROR is None, reason="no data mirror with sst2")

# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No data root, a private default cache, no proxies for loopback requests."""
    monkeypatch.delenv(downloads.DATA_ENV, raising=False)
    monkeypatch.setenv(downloads.CACHE_ENV, str(tmp_path / "default-cache"))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


QADSM_TEXT = (
    "fast\tFasten Insel Rügen\tFasten - Wandern - Yoga\tGood\n"
    "wlan\tNetzwerkadministration\tleicht gemacht\tBad\n"
    "turtle beach\tturtle beach\tBlitzschnell Preisvergleich!\tGood\n"
    "wlan\tturtle beach\tBlitzschnell Preisvergleich!\tBad\n"
)


# --------------------------------------------------------------------------- SST-2: local files


def test_read_sst2_tsv_keeps_tricky_sentences(tmp_path):
    sentences = ["null", "NA", "nan", "None", 'he said "great" , twice', "'' quoted ``", "a \"b", ""]
    labels = [1, 0, 1, 0, 1, 0, 1, 0]
    body = "".join(f"{s}\t{y}\n" for s, y in zip(sentences, labels))
    ds = read_sst2_tsv(write(tmp_path / "x.tsv", "sentence\tlabel\n" + body))
    assert ds.column_names == ["sentence", "label"]
    assert ds["sentence"][:] == sentences and list(ds["label"]) == labels
    assert ds.features["label"] == datasets.Value("int64")


@pytest.mark.parametrize("text, message", [
    ("text\tlabel\na\t1\n", "header"),
    ("sentence\tlabel\na\t2\n", "0 or 1"),
    ("sentence\tlabel\na\tpositive\n", "0 or 1"),
    ("sentence\tlabel\na\tb\t1\n", "not a valid SST-2"),
    ("sentence\tlabel\nx\t1\na\tb\t1\n", "not a valid SST-2"),
    ("sentence\tlabel\nx\t1\nno label\n", "0 or 1"),
])
def test_read_sst2_tsv_rejects_bad_files(tmp_path, text, message):
    path = write(tmp_path / "bad.tsv", text)
    with pytest.raises(ValueError, match=message) as info:
        read_sst2_tsv(path)
    assert str(path) in str(info.value)


def test_load_sst2_rejects_bad_split():
    with pytest.raises(ValueError, match=r"'train', 'dev', 'test'.*validation"):
        load_sst2("validation")


# --------------------------------------------------------------------------- SST-2: hub fallback


def fake_glue(n_train=40, n_validation=6, n_test=5):
    """A small DatasetDict shaped like the hub's GLUE sst2 (ClassLabel labels, an idx column)."""
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"]),
                                  "idx": datasets.Value("int32")})

    def part(prefix, n, labelled=True):
        return datasets.Dataset.from_dict(
            {"sentence": [f"{prefix} {i}" for i in range(n)],
             "label": [i % 2 if labelled else -1 for i in range(n)], "idx": list(range(n))},
            features=features)

    return datasets.DatasetDict({"train": part("train", n_train),
                                 "validation": part("validation", n_validation),
                                 "test": part("test", n_test, labelled=False)})


class FakeHub:
    """Stands in for datasets.load_dataset: records its arguments, returns ``result`` or raises ``error``."""

    def __init__(self):
        self.calls: list = []
        self.result = fake_glue()
        self.error: Exception | None = None

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(datasets, "load_dataset", fake)
    return fake


def test_load_sst2_hub_mapping(hub, tmp_path):
    test = load_sst2("test", root=tmp_path)  # nothing under tmp_path: the hub is used
    assert hub.calls == [(("nyu-mll/glue", "sst2"), {})]
    assert test.column_names == ["sentence", "label"]
    assert test.features["label"] == datasets.Value("int64")
    assert test["sentence"][:] == [f"validation {i}" for i in range(6)]
    assert list(test["label"]) == [0, 1, 0, 1, 0, 1]

    train, dev = load_sst2("train", root=tmp_path), load_sst2("dev", root=tmp_path)
    assert (len(train), len(dev)) == (36, 4)  # 40 * 6735 // 67349 = 4 for dev
    assert train.features == dev.features == sst2.SST2_FEATURES
    together = train["sentence"][:] + dev["sentence"][:]
    assert sorted(together) == sorted(f"train {i}" for i in range(40))
    assert load_sst2("dev", root=tmp_path)["sentence"][:] == dev["sentence"][:]  # fixed seed
    assert all(y in (0, 1) for y in train["label"])


def test_sst2_hub_split_sizes_match_the_mirror():
    train, dev = sst2_hub_split_indices(67349)
    assert (len(train), len(dev)) == (60614, 6735)
    assert len(np.intersect1d(train, dev)) == 0 and len(np.union1d(train, dev)) == 67349
    assert np.array_equal(train, np.sort(train))
    again, _ = sst2_hub_split_indices(67349)
    other, _ = sst2_hub_split_indices(67349, seed=1)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_load_sst2_prefers_local_file_and_online_flags(hub, tmp_path, monkeypatch):
    write(tmp_path / "sst2" / "train.tsv", "sentence\tlabel\nlocal one\t1\n")
    assert load_sst2("train", root=tmp_path)["sentence"][:] == ["local one"]
    monkeypatch.setenv(downloads.DATA_ENV, str(tmp_path))
    assert load_sst2("train")["sentence"][:] == ["local one"]
    assert hub.calls == []
    assert len(load_sst2("train", online=True)) == 36  # online=True skips the local file
    assert len(hub.calls) == 1
    with pytest.raises(DataNotFoundError, match="online=False"):
        load_sst2("dev", online=False)
    assert len(hub.calls) == 1


def test_load_sst2_hub_failure_says_where_to_put_the_file(hub, tmp_path):
    hub.error = ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (offline)")
    with pytest.raises(DataNotFoundError) as info:
        load_sst2("dev", root=tmp_path)
    message = str(info.value)
    for part in ("$KDTUTORIAL_DATA/sst2/dev.tsv", str(tmp_path / "sst2"), "forest-snow/alps",
                 "data/SST-2/dev.tsv", "sentence<TAB>label", "6,735",
                 "ConnectionError: Couldn't reach 'nyu-mll/glue' on the Hub (offline)"):
        assert part in message
    assert isinstance(info.value.__cause__, ConnectionError)
    with pytest.raises(DataNotFoundError, match=r"KDTUTORIAL_DATA is not set"):
        load_sst2("test")


def test_sst2_sample_is_stratified_and_seeded():
    ds = datasets.Dataset.from_dict({"sentence": [f"s{i}" for i in range(200)],
                                     "label": [1] * 150 + [0] * 50})
    a, b, c = sst2_sample(ds, 40, seed=0), sst2_sample(ds, 40, seed=0), sst2_sample(ds, 40, seed=1)
    assert len(a) == 40 and list(a["label"]).count(0) == 10
    assert a["sentence"][:] == b["sentence"][:] != c["sentence"][:]
    assert len(set(a["sentence"][:])) == 40
    assert len(sst2_sample(ds, 200, seed=0)) == 200
    with pytest.raises(ValueError, match="between 0 and 200"):
        sst2_sample(ds, 201, seed=0)


@needs_sst2_mirror
def test_real_sst2_mirror(hub):
    sizes = {split: len(load_sst2(split, root=SST2_MIRROR, online=False))
             for split in sst2.SST2_SPLITS}
    assert sizes == {"train": 60614, "dev": 6735, "test": 872}
    test = load_sst2("test", root=SST2_MIRROR)
    assert test.features == sst2.SST2_FEATURES
    assert np.bincount(test["label"]).tolist() == [428, 444]
    assert hub.calls == []


# --------------------------------------------------------------------------- QADSM: parsing


def test_quotes_inside_fields_parse_exactly(tmp_path):
    line = 'hotel "zur post"\t"Hotel" Zur Post - 5" Rabatt\t„Jetzt" buchen: ""sofort""\tGood\n'
    split = read_qadsm(write(tmp_path / "q.tsv", line + QADSM_TEXT))
    assert split.malformed == []
    assert split.data[0] == {"query": 'hotel "zur post"', "title": '"Hotel" Zur Post - 5" Rabatt',
                             "description": '„Jetzt" buchen: ""sofort""', "label": 1, "row": 1}
    assert len(split.data) == 5


def test_label_mapping():
    assert parse_qadsm_line("q\tt\td\tGood") == (("q", "t", "d", 1), None)
    assert parse_qadsm_line("q\tt\td\tBad") == (("q", "t", "d", 0), None)
    assert parse_qadsm_line("q\tt\td\tGood \r") == (("q", "t", "d", 1), None)
    for label in ("good", "GOOD", " Good", "Good?", "1", ""):
        assert parse_qadsm_line(f"q\tt\td\t{label}") == (None, f"unknown label {label.rstrip()!r}")


def test_malformed_lines_are_reported_not_dropped_silently(tmp_path):
    text = ("a\tb\tc\tGood\n"
            "only\tthree\tfields\n"
            "\n"
            "q\tt\td\tgood?\n"
            "q\tt\td\te\tBad\n"
            "x\ty\tz\tBad\n\n\n")
    path = write(tmp_path / "m.tsv", text)
    expected = [(2, "expected 4 tab-separated fields, got 3"), (3, "empty line"),
                (4, "unknown label 'good?'"), (5, "expected 4 tab-separated fields, got 5")]
    with pytest.warns(UserWarning, match=r"m\.tsv: 4 malformed line\(s\) left out \(lines 2, 3, 4, 5\)"):
        split = read_qadsm(path)
    assert split.malformed == expected
    assert split.data["row"][:] == [1, 6] and list(split.data["label"]) == [1, 0]
    assert "4 malformed line(s) left out (lines 2, 3, 4, 5; see .malformed)" in split.describe()
    with pytest.raises(ValueError) as info:
        read_qadsm(path, strict=True)
    for line, reason in expected:
        assert f"line {line}: {reason}" in str(info.value)


def test_warning_points_at_the_caller(tmp_path):
    path = write(tmp_path / "root" / "qadsm" / "de" / "dev.tsv", "a\tb\n" + QADSM_TEXT)
    with pytest.warns(UserWarning) as record:
        split = load_qadsm("de", "dev", root=tmp_path / "root", download_missing=False)
    assert record[0].filename == __file__
    assert split.path == path and split.malformed == [(1, "expected 4 tab-separated fields, got 2")]
    with pytest.raises(ValueError, match="line 1: expected 4"):
        load_qadsm("de", "dev", root=tmp_path / "root", strict=True)


def test_non_utf8_line_is_malformed(tmp_path):
    path = write(tmp_path / "b.tsv", QADSM_TEXT.encode() + b"caf\xe9\tt\td\tGood\n")
    with pytest.warns(UserWarning):
        split = read_qadsm(path)
    assert len(split.data) == 4 and split.malformed[0][0] == 5
    assert "not valid UTF-8" in split.malformed[0][1]


@pytest.mark.parametrize("ending", ["", "\n\n", "\n \n\t\n", "crlf"])
def test_line_endings_and_trailing_blank_lines(tmp_path, ending):
    text = QADSM_TEXT.replace("\n", "\r\n") if ending == "crlf" else QADSM_TEXT.rstrip("\n") + ending
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split = read_qadsm(write(tmp_path / "e.tsv", text))
    reference = read_qadsm(write(tmp_path / "ref.tsv", QADSM_TEXT))
    assert split.malformed == [] and split.data.to_dict() == reference.data.to_dict()
    assert split.data["description"][:][-1] == "Blitzschnell Preisvergleich!"


def test_describe(tmp_path):
    split = read_qadsm(write(tmp_path / "d.tsv", QADSM_TEXT), lang="de", split="dev")
    assert split.describe() == (f"XGLUE QADSM de/dev ({tmp_path / 'd.tsv'}): 4 rows, Good 2 (50.0%), "
                                f"Bad 2 (50.0%); no malformed lines.")
    assert repr(split) == split.describe()
    assert split.data.column_names == ["query", "title", "description", "label", "row"]


# --------------------------------------------------------------------------- QADSM: finding and downloading


def test_load_qadsm_downloads_verifies_and_caches(server, tmp_path, monkeypatch):
    sha = server.serve("train.txt", QADSM_TEXT.encode())
    monkeypatch.setitem(qadsm.QADSM_DE_SHA256, "train", sha)
    cache = tmp_path / "cache"
    split = load_qadsm("de", "train", root=tmp_path / "empty-root", cache=cache, base_url=server.url)
    assert split.path == cache / "qadsm" / "de" / "train.tsv"
    assert files_under(cache) == [split.path] and sha256_file(split.path) == sha
    assert server.requests == ["/train.txt"] and len(split.data) == 4
    server.stop()  # from now on the cache must answer
    again = load_qadsm("de", "train", cache=cache, download_missing=False)
    assert again.data.to_dict() == split.data.to_dict()


def test_load_qadsm_rejects_wrong_checksum_and_caches_nothing(server, tmp_path):
    server.serve("dev.txt", QADSM_TEXT.encode())  # real sha256 table: this content is wrong
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match=qadsm.QADSM_DE_SHA256["dev"]):
        load_qadsm("de", "dev", cache=cache, base_url=server.url)
    assert files_under(cache) == []


def test_load_qadsm_offline_german_says_where_to_put_files(tmp_path):
    root, cache = tmp_path / "root", tmp_path / "cache"
    dead = f"http://127.0.0.1:{unused_port()}/"
    with pytest.raises(DataNotFoundError) as info:
        load_qadsm("de", "test", root=root, cache=cache, base_url=dead)
    message = str(info.value)
    for part in (str(root / "qadsm" / "de" / "test.tsv"), str(cache / "qadsm" / "de" / "test.tsv"),
                 "$KDTUTORIAL_DATA/qadsm/de/test.tsv", dead + "test.txt", "Good|Bad"):
        assert part in message
    assert files_under(cache) == []
    with pytest.raises(DataNotFoundError, match=r"KDTUTORIAL_DATA is not set.*\n.*download_missing"):
        load_qadsm("de", "test", cache=cache, download_missing=False)


def test_load_qadsm_english_missing_needs_xglue(server, tmp_path):
    root = tmp_path / "root"
    with pytest.raises(DataNotFoundError) as info:
        load_qadsm("en", "dev", root=root, cache=tmp_path / "cache", base_url=server.url)
    message = str(info.value)
    assert "$KDTUTORIAL_DATA/qadsm/en/dev.tsv" in message
    assert str(root / "qadsm" / "en" / "dev.tsv") in message
    assert "XGLUE" in message and qadsm.XGLUE_ARCHIVE in message
    assert server.requests == []


def test_load_qadsm_reads_user_supplied_english_and_prefers_the_root(tmp_path, monkeypatch):
    root, cache = tmp_path / "root", tmp_path / "cache"
    write(root / "qadsm" / "en" / "train.tsv", QADSM_TEXT)
    write(cache / "qadsm" / "en" / "train.tsv", QADSM_TEXT.splitlines(keepends=True)[0])
    assert len(load_qadsm("en", "train", root=root, cache=cache).data) == 4
    assert len(load_qadsm("en", "train", root=tmp_path / "nothing", cache=cache).data) == 1
    monkeypatch.setenv(downloads.DATA_ENV, str(root))
    assert load_qadsm("en", "train", cache=cache).path == root / "qadsm" / "en" / "train.tsv"


def test_load_qadsm_rejects_bad_lang_and_split():
    with pytest.raises(ValueError, match=r"lang.*'de', 'en', 'fr'"):
        load_qadsm("es")
    with pytest.raises(ValueError, match=r"split.*'train', 'dev', 'test'"):
        load_qadsm("de", "validation")


# --------------------------------------------------------------------------- QADSM: the real mirror


def _readme_sums(root: Path) -> dict[str, str]:
    text = (root / "README.md").read_text(encoding="utf-8")
    return {name: digest for digest, name in re.findall(r"^([0-9a-f]{64})\s+(\S+)$", text, re.M)}


@needs_qadsm_mirror
def test_real_qadsm_mirror():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = {s: load_qadsm("de", s, root=QADSM_MIRROR, download_missing=False, strict=True)
                  for s in qadsm.QADSM_SPLITS}
    assert {s: len(x.data) for s, x in splits.items()} == {"train": 9000, "dev": 1000, "test": 10000}
    assert all(x.malformed == [] for x in splits.values())
    assert np.bincount(splits["test"].data["label"]).tolist() == [5000, 5000]
    assert splits["test"].data["row"][:][-1] == 10000
    sums = _readme_sums(QADSM_MIRROR)
    for s, x in splits.items():
        assert sha256_file(x.path) == sums[f"qadsm/de/{s}.tsv"] == qadsm.QADSM_DE_SHA256[s]


@needs_qadsm_mirror
def test_real_qadsm_file_passes_the_download_check(server, tmp_path):
    server.serve("dev.txt", (QADSM_MIRROR / "qadsm" / "de" / "dev.tsv").read_bytes())
    split = load_qadsm("de", "dev", cache=tmp_path / "cache", base_url=server.url, strict=True)
    assert len(split.data) == 1000


# --------------------------------------------------------------------------- transfer_pairs


def pairs_data(n_queries: int, n_ads: int, rows: list[tuple[int, int]]) -> datasets.Dataset:
    assert {q for q, _ in rows} == set(range(n_queries)) and {a for _, a in rows} == set(range(n_ads))
    return datasets.Dataset.from_dict({
        "query": [f"q{q}" for q, _ in rows], "title": [f"t{a}" for _, a in rows],
        "description": [f"d{a}" for _, a in rows], "label": [1] * len(rows)})


def as_tuples(ds) -> list[tuple]:
    return list(zip(ds["query"], ds["title"], ds["description"]))


def test_transfer_pairs_basics(tmp_path):
    split = read_qadsm(write(tmp_path / "t.tsv", QADSM_TEXT))
    observed = set(as_tuples(split.data))
    # 3 queries x 3 ads = 9 pairs, 4 observed, 5 re-paired
    everything = transfer_pairs(split, 5, seed=0)
    assert everything.column_names == ["query", "title", "description"]
    assert len(set(as_tuples(everything))) == 5 and not observed & set(as_tuples(everything))
    assert set(as_tuples(transfer_pairs(split.data, 9, seed=0, exclude_observed=False))) >= observed
    with pytest.raises(ValueError, match=r"3 distinct queries x 3 distinct ads = 9 pairs minus 4"):
        transfer_pairs(split, 6, seed=0)
    with pytest.raises(ValueError):
        transfer_pairs(split, -1, seed=0)
    assert len(transfer_pairs(split, 0, seed=0)) == 0


def test_transfer_pairs_seeded_and_uniform():
    rows = [(i, i) for i in range(30)] + [(i, (i + 1) % 30) for i in range(30)]
    ds = pairs_data(30, 30, rows)
    observed = set(as_tuples(ds))
    a, b, c = (transfer_pairs(ds, 200, seed=s) for s in (7, 7, 8))
    assert as_tuples(a) == as_tuples(b) != as_tuples(c)
    assert len(set(as_tuples(a))) == 200 and not observed & set(as_tuples(a))
    assert all(title[1:] == description[1:] for _, title, description in as_tuples(a))
    # uniform: every query is drawn about equally often over many seeds
    counts = np.zeros(30)
    for seed in range(20):
        for query in transfer_pairs(ds, 400, seed=seed)["query"]:
            counts[int(query[1:])] += 1
    assert counts.min() > 0.75 * counts.mean() and counts.max() < 1.25 * counts.mean()


def test_transfer_pairs_million_is_fast():
    rows = [(i, i) for i in range(2000)]
    ds = pairs_data(2000, 2000, rows)
    start = time.perf_counter()
    result = transfer_pairs(ds, 1_000_000, seed=0)
    elapsed = time.perf_counter() - start
    assert len(result) == 1_000_000
    codes = (np.char.lstrip(np.asarray(result["query"][:], dtype=str), "q").astype(np.int64) * 2000
             + np.char.lstrip(np.asarray(result["title"][:], dtype=str), "t").astype(np.int64))
    assert len(np.unique(codes)) == 1_000_000
    assert not np.any(codes // 2000 == codes % 2000)  # no observed pair
    assert elapsed < 30, f"transfer_pairs took {elapsed:.1f} s for 1,000,000 pairs"


@needs_qadsm_mirror
def test_transfer_pairs_on_real_train():
    split = load_qadsm("de", "train", root=QADSM_MIRROR, download_missing=False)
    pairs = transfer_pairs(split, 5000, seed=0)
    assert len(set(as_tuples(pairs))) == 5000
    assert not set(as_tuples(split.data)) & set(as_tuples(pairs))
    assert set(pairs["query"]) <= set(split.data["query"])


def words_data() -> datasets.Dataset:
    """6 queries, 6 ads; query i and ad i share the word ``word{i}``; ads 0-5 all say ``online`` (a common word)."""
    rows = [(i, i) for i in range(6)]
    return datasets.Dataset.from_dict({
        "query": [f"word{q} and more" for q, _ in rows] + ["word1 word2"],
        "title": [f"Ad{a} word{a}" for _, a in rows] + ["Ad9 word9"],
        "description": ["buy online" for _ in rows] + ["buy online"],
        "label": [1] * 7})


def test_overlap_pair_ids_share_a_rare_word():
    ds = words_data()
    queries = list(dict.fromkeys(ds["query"]))
    ads = list(dict.fromkeys(zip(ds["title"], ds["description"])))
    ids = overlap_pair_ids(queries, [t for t, _ in ads], [d for _, d in ads])
    pairs = {(int(i) // len(ads), int(i) % len(ads)) for i in ids}
    # "and", "more", "buy", "online" are in more than 20% of the texts or too short: only wordN matches
    assert pairs == {(i, i) for i in range(6)} | {(6, 1), (6, 2)}
    assert np.all(np.diff(ids) > 0)


def test_transfer_index_overlap_candidates_first_then_random():
    ds = words_data()
    index = transfer_index(ds, 20, seed=0, candidates="overlap")
    pairs = list(zip(index.query_ids.tolist(), index.ad_ids.tolist()))
    assert len(set(pairs)) == 20
    # the observed pairs (i, i) and (6, 6) are excluded, so the overlap candidates left are (6, 1) and (6, 2)
    assert {p for p, o in zip(pairs, index.overlap) if o} == {(6, 1), (6, 2)}
    assert not {(i, i) for i in range(7)} & set(pairs)
    assert index.ads()[1] == "Ad1 word1 buy online" and len(index) == 20
    again = transfer_index(ds, 20, seed=0, candidates="overlap")
    assert np.array_equal(again.query_ids, index.query_ids) and np.array_equal(again.ad_ids, index.ad_ids)
    one = transfer_index(ds, 1, seed=0, candidates="overlap")  # fewer wanted than candidates: a sample of them
    assert one.overlap.tolist() == [True]
    random = transfer_index(ds, 20, seed=0)
    assert random.overlap.sum() == sum((q, a) in {(6, 1), (6, 2)} for q, a in zip(random.query_ids, random.ad_ids))
    as_dataset = transfer_pairs(ds, 20, seed=0, candidates="overlap")
    assert as_tuples(as_dataset)[0] == (index.queries[pairs[0][0]], index.titles[pairs[0][1]],
                                        index.descriptions[pairs[0][1]])
    with pytest.raises(ValueError, match="candidates"):
        transfer_index(ds, 5, seed=0, candidates="bm25")


# ------------------------------------------------------------------------------------ nearest-ad candidates
def _brute_force_neighbours(q, a, n, exclude=()):
    """Reference: every allowed pair with its rank among its query's allowed ads, sorted by (rank, -cosine)."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    rows = []
    for i in range(len(q)):
        allowed = [j for j in range(len(a)) if i * len(a) + j not in set(exclude)]
        for rank, j in enumerate(sorted(allowed, key=lambda j: -float(q[i] @ a[j]))):
            rows.append((rank, -float(q[i] @ a[j]), i * len(a) + j))
    return [pair for _, _, pair in sorted(rows)[:n]]


def test_neighbour_pair_ids_fill_round_by_round():
    rng = np.random.default_rng(0)
    q, a = rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
    for n in (0, 1, 5, 9, 13, 35):
        got = neighbour_pair_ids(q, a, n, chunk=2)  # chunks smaller than the query count
        assert got.tolist() == _brute_force_neighbours(q, a, n), n
    ids = neighbour_pair_ids(q, a, 12)
    assert sorted(np.bincount(ids // 7, minlength=5)) == [2, 2, 2, 3, 3]  # 12 / 5 of its nearest per query
    assert np.array_equal(neighbour_pair_ids(3 * q, 0.5 * a, 12), ids)  # cosine: the scale does not matter
    with pytest.raises(ValueError, match="between 0 and 35"):
        neighbour_pair_ids(q, a, 36)
    with pytest.raises(ValueError, match="share D"):
        neighbour_pair_ids(q, a[:, :3], 3)


def test_neighbour_pair_ids_skip_excluded_pairs():
    rng = np.random.default_rng(1)
    q, a = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
    nearest = neighbour_pair_ids(q, a, 4)  # each query's nearest ad
    exclude = np.sort(np.concatenate([nearest, [0 * 6 + j for j in range(6) if 0 * 6 + j not in nearest][:4]]))
    # query 0 keeps a single allowed ad; the others lose their nearest: later rounds fill the gap
    assert len(exclude) == 8  # 24 pairs, 16 allowed
    for n in (4, 8, 16):
        got = neighbour_pair_ids(q, a, n, exclude)
        assert got.tolist() == _brute_force_neighbours(q, a, n, exclude.tolist()), n
        assert not set(got.tolist()) & set(exclude.tolist())
    with pytest.raises(ValueError, match="between 0 and 16"):
        neighbour_pair_ids(q, a, 17, exclude)


def test_neighbour_ranks_count_the_nearer_ads():
    rng = np.random.default_rng(2)
    q, a = rng.normal(size=(3, 5)), rng.normal(size=(8, 5))
    qi, ai = np.array([0, 0, 1, 2, 2]), np.array([0, 7, 3, 3, 5])
    qn, an = q / np.linalg.norm(q, axis=1, keepdims=True), a / np.linalg.norm(a, axis=1, keepdims=True)
    # by brute force, in float64: the other ads whose similarity is higher. The pair's own ad is left out by index,
    # not by comparing its similarity with itself computed a second way (a dot product and a matrix-vector
    # product may round differently in the last bit, depending on the CPU's kernels: a tie that could flip)
    expected = []
    for i, j in zip(qi, ai):
        row = qn[i] @ an.T
        expected.append(sum(int(row[k] > row[j]) for k in range(len(an)) if k != j))
    gaps = np.diff(np.sort(qn @ an.T, axis=1), axis=1)
    assert gaps.min() > 1e-4  # no two ads are near a tie, so float32 vs float64 cannot reorder them
    assert neighbour_ranks(q, a, qi, ai).tolist() == expected
    first = neighbour_pair_ids(q, a, 3)  # each query's nearest ad has rank 0
    assert neighbour_ranks(q, a, first // 8, first % 8).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="same shape"):
        neighbour_ranks(q, a, qi, ai[:2])


def _bag_of_words_embed(texts):
    """A stand-in sentence encoder: counts of the words word0..word9 (plus a constant, so no vector is zero)."""
    return np.array([[t.split().count(f"word{k}") + t.split().count(f"Ad{k}") for k in range(10)] + [0.1]
                     for t in texts], dtype=np.float32)


def test_transfer_index_neighbour_candidates():
    ds = words_data()
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return _bag_of_words_embed(texts)

    index = transfer_index(ds, 14, seed=0, candidates="neighbours", embed=embed)
    assert len(calls) == 2 and calls[0] == index.queries and calls[1] == index.ads()  # queries, then ads, once each
    pairs = set(zip(index.query_ids.tolist(), index.ad_ids.tolist()))
    assert len(pairs) == 14 and not {(i, i) for i in range(7)} & pairs  # observed pairs left out
    q, a = _bag_of_words_embed(index.queries), _bag_of_words_embed(index.ads())
    n_ads = len(index.titles)
    observed = np.unique([i * n_ads + i for i in range(6)] + [6 * n_ads + 6])
    assert pairs == {(int(p) // n_ads, int(p) % n_ads) for p in neighbour_pair_ids(q, a, 14, observed)}
    assert {(6, 1), (6, 2)} <= pairs  # query 6 ("word1 word2") gets the two ads that say its words
    assert index.overlap.tolist() == [(qq, aa) in {(6, 1), (6, 2)} for qq, aa in zip(index.query_ids, index.ad_ids)]
    np.testing.assert_array_equal(index.query_vectors, q)
    np.testing.assert_array_equal(index.ad_vectors, a)
    again = transfer_index(ds, 14, seed=0, candidates="neighbours", embed=_bag_of_words_embed)
    assert np.array_equal(again.query_ids, index.query_ids) and np.array_equal(again.ad_ids, index.ad_ids)
    as_dataset = transfer_pairs(ds, 14, seed=0, candidates="neighbours", embed=_bag_of_words_embed)
    assert len(as_dataset) == 14
    ranks = index.neighbour_ranks(ds)  # the labelled pairs: each own ad's rank among all ads for its query
    rows = [index.queries.index(q) for q in ds["query"]]
    ads = [index.ads().index(f"{t} {d}") for t, d in zip(ds["title"], ds["description"])]
    assert ranks.tolist() == neighbour_ranks(q, a, rows, ads).tolist()
    assert ranks[:6].tolist() == [0] * 6  # query i says word i, and so does ad i, alone among the ads
    with pytest.raises(ValueError, match="not among"):
        index.neighbour_ranks(datasets.Dataset.from_dict({"query": ["unseen"], "title": ["Ad1 word1"],
                                                          "description": ["buy online"]}))
    with pytest.raises(ValueError, match="neighbours"):
        transfer_index(ds, 5, seed=0).neighbour_ranks(ds)
    with pytest.raises(ValueError, match="embed"):
        transfer_index(ds, 5, seed=0, candidates="neighbours")
    with pytest.raises(ValueError, match="embed"):
        transfer_index(ds, 5, seed=0, candidates="overlap", embed=_bag_of_words_embed)
    assert transfer_index(ds, 5, seed=0).query_vectors is None
