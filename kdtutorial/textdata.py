"""Text data sets for the course: SST-2 (sentiment) and XGLUE QADSM (query-ad relevance).

* **SST-2** (GLUE's binary Stanford Sentiment Treebank task; Socher et al. 2013, Wang et al. 2018).
  :func:`load_sst2` reads ``$KDTUTORIAL_DATA/sst2/{train,dev,test}.tsv`` (header ``sentence\\tlabel``,
  1 = positive; the layout of GitHub ``forest-snow/alps``, ``data/SST-2/``): train + dev (60,614 +
  6,735) are GLUE's training set, test is GLUE's labelled dev set (872 sentences, the one to report).
  Without the files it falls back to the Hugging Face hub (``nyu-mll/glue``, ``sst2``); see
  :func:`load_sst2` for how the hub's splits are mapped. :func:`sst2_sample` draws a seeded,
  label-stratified subset.
* **XGLUE QADSM** (query-ad matching; Liang et al. 2020, "XGLUE", arXiv:2004.01401): lines
  ``query \\t ad title \\t ad description \\t Good|Bad`` without a header. :func:`load_qadsm` finds
  ``qadsm/<lang>/<split>.tsv`` in the data root or the download cache and, for German, downloads it
  from a public GitHub copy, verified by sha256, into the cache. Malformed lines are never dropped
  silently: they are left out of the data, listed with their line numbers, and warned about (or
  raise, with ``strict=True``). :func:`transfer_pairs` builds the unlabelled transfer set of the
  distillation recipe (Hinton et al. 2015: a teacher labels unlabelled inputs from the same
  distribution, the student learns from those soft labels; on QADSM, a cross-encoder teacher
  distilled into a two-tower student, as in the KDD 2022 tutorial "Deep Search Relevance Ranking in
  Practice"): the data's distinct queries re-paired with its distinct ads, sampled uniformly with a
  seeded generator.

Downloads, checksums, the data root and the cache come from :mod:`kdtutorial.data`. Nothing here keeps
global state: every function takes what it needs and never touches the global random generators.
"""
from __future__ import annotations

import csv
import re
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
from datasets.table import InMemoryTable

from kdtutorial.data import (
    DATA_ENV,
    ChecksumError,  # noqa: F401 - re-exported: load_qadsm raises it for a bad download
    DataNotFoundError,
    cache_dir,
    data_root,
    download,
    stratified_split,
)

# --------------------------------------------------------------------------- SST-2 constants

SST2_SPLITS = ("train", "dev", "test")
SST2_SIZES = {"train": 60614, "dev": 6735, "test": 872}
SST2_HUB = ("nyu-mll/glue", "sst2")
SST2_HUB_SPLIT_SEED = 0  # seed of the permutation that re-splits the hub's "train" into train/dev
SST2_SOURCE = "GitHub forest-snow/alps (commit 3c7ef2c98249), data/SST-2/"
SST2_FEATURES = datasets.Features({"sentence": datasets.Value("string"),
                                   "label": datasets.Value("int64")})

# --------------------------------------------------------------------------- QADSM constants

QADSM_LANGS = ("de", "en", "fr")
QADSM_SPLITS = ("train", "dev", "test")
QADSM_LABELS = {"Good": 1, "Bad": 0}
QADSM_COLUMNS = ("query", "title", "description", "label")
QADSM_FEATURES = datasets.Features({
    "query": datasets.Value("string"),
    "title": datasets.Value("string"),
    "description": datasets.Value("string"),
    "label": datasets.Value("int64"),
    "row": datasets.Value("int64"),
})
# German QADSM as plain git blobs of LSX-UniWue/SuperGLEBer at a fixed commit: train + dev are XGLUE's
# German dev set (10,000) re-split 9,000 / 1,000, test is XGLUE's German test set (10,000).
QADSM_DE_BASE_URL = ("https://raw.githubusercontent.com/LSX-UniWue/SuperGLEBer/"
                     "5d3c59a91ab3b5011a45a28cfafe813cf657111d/data/XGlue/Query_Ad/")
QADSM_DE_REMOTE = {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"}
QADSM_DE_SHA256 = {
    "train": "e28663249b605b026bf6c16c1142bad8629f1dc86c1ce2982c859c8c1c7c4a95",
    "dev": "2c71ef195c609d7ed4660cfa61dd3850a616c79ff7d0f4b7f7adca24d07b3865",
    "test": "d6d2a0ea73e4acdc84df2a68a95747a5f8bb474f8ba4d5baa964874a80745a15",
}
XGLUE_HOME = "https://microsoft.github.io/XGLUE/"
XGLUE_ARCHIVE = "https://xglue.blob.core.windows.net/xglue/xglue_full_dataset.tar.gz"

_FIRST_LINES_SHOWN = 5  # malformed line numbers quoted in describe() and in warnings


def _check_choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _searched_text(root_folder: Path | None, sub: str) -> str:
    """The data-root folder that was searched, or why none was."""
    if root_folder is None:
        return f"none (${DATA_ENV} is not set and no root was given)"
    return str(root_folder / sub)


# --------------------------------------------------------------------------- SST-2


def read_sst2_tsv(path: str | os.PathLike) -> datasets.Dataset:
    """Read one SST-2 tsv file (header ``sentence\\tlabel``) into a Dataset (``sentence``, int ``label``).

    Read without quote handling and without NA detection, so sentences such as ``null`` or ones with
    quote characters come back exactly as written. Raises ``ValueError`` naming the file when the
    header, a line, or a label (must be 0 or 1) is wrong.
    """
    try:
        with warnings.catch_warnings():  # a line with an extra field must not shift or lose columns
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False,
                                dtype={"sentence": str}, index_col=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a valid SST-2 tsv file ({err})") from err
    if list(frame.columns) != ["sentence", "label"]:
        raise ValueError(f"{path}: expected the header 'sentence<TAB>label', got {list(frame.columns)}")
    if not pd.api.types.is_integer_dtype(frame["label"]) or not frame["label"].isin([0, 1]).all():
        bad = frame.loc[~frame["label"].astype(str).isin(["0", "1"]), "label"].head(3).tolist()
        raise ValueError(f"{path}: labels must be 0 or 1, found e.g. {bad}")
    return datasets.Dataset.from_dict(
        {"sentence": frame["sentence"].tolist(), "label": frame["label"].astype("int64").tolist()},
        features=SST2_FEATURES,
    )


def sst2_hub_split_indices(n: int, seed: int = SST2_HUB_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, dev)`` that re-split the hub's SST-2 training set of ``n`` sentences.

    A seeded permutation; dev gets ``n * 6735 // 67349`` sentences (exactly 6,735 of the hub's 67,349,
    as in the mirror), train the rest. Both come back sorted, so they keep the hub's order. The
    sentences differ from the mirror's train/dev files: only the sizes match.
    """
    n_dev = n * SST2_SIZES["dev"] // (SST2_SIZES["train"] + SST2_SIZES["dev"])
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_dev:]), np.sort(order[:n_dev])


def _plain_sst2(ds: datasets.Dataset) -> datasets.Dataset:
    """The hub's columns reduced to ``sentence`` and an int64 ``label`` (its ClassLabel cast away)."""
    ds = ds.remove_columns([c for c in ds.column_names if c not in SST2_FEATURES])
    return ds.cast(SST2_FEATURES)


def sst2_from_hub(split: str, seed: int = SST2_HUB_SPLIT_SEED) -> datasets.Dataset:
    """SST-2 from the Hugging Face hub (``datasets.load_dataset("nyu-mll/glue", "sst2")``).

    ``"test"`` is the hub's ``validation`` split (GLUE's labelled dev set, 872 sentences, the one to
    report; the hub's own ``test`` split has no labels). ``"train"`` and ``"dev"`` re-split the hub's
    ``train`` split (67,349) with :func:`sst2_hub_split_indices` into 60,614 / 6,735: the same sizes
    as the mirror's files but **not the same sentences**. Network errors propagate unchanged.
    """
    _check_choice("split", split, SST2_SPLITS)
    hub = datasets.load_dataset(*SST2_HUB)
    if split == "test":
        return _plain_sst2(hub["validation"])
    full = hub["train"]
    train_idx, dev_idx = sst2_hub_split_indices(len(full), seed)
    return _plain_sst2(full.select(train_idx if split == "train" else dev_idx))


def _sst2_help(split: str, root_folder: Path | None, hub_reason: str | None) -> str:
    """The message of the error raised when an SST-2 split can be found nowhere."""
    where = (f"its hub copy ({'/'.join(SST2_HUB)}) could not be loaded: {hub_reason}"
             if hub_reason is not None else "the hub was not tried (online=False)")
    return (
        f"SST-2 split {split!r} not found. Folder searched: {_searched_text(root_folder, 'sst2')}; "
        f"{where}.\n"
        f"To fix: put the file at ${DATA_ENV}/sst2/{split}.tsv (set {DATA_ENV} to a folder of your "
        f"choice). Format: tab-separated, UTF-8, header line 'sentence<TAB>label', one sentence per "
        f"line, label 1 = positive, 0 = negative; expected {SST2_SIZES[split]:,} rows. The course's "
        f"mirror copies {SST2_SOURCE}{split}.tsv."
    )


def load_sst2(split: str, root: str | os.PathLike | None = None, *,
              online: bool | None = None) -> datasets.Dataset:
    """Load an SST-2 split as a Dataset with columns ``sentence`` (str) and ``label`` (int, 1 = positive).

    ``split`` is ``"train"`` (60,614), ``"dev"`` (6,735) or ``"test"`` (872, GLUE's labelled dev set).
    The file ``data_root(root)/"sst2"/f"{split}.tsv"`` is read when it exists (see
    :func:`read_sst2_tsv`); otherwise the split comes from the Hugging Face hub (:func:`sst2_from_hub`:
    same sizes, but its train/dev split differs from the mirror's). ``online=None`` does exactly that;
    ``online=False`` never contacts the hub; ``online=True`` skips the local file and uses the hub.
    Raises ``ValueError`` for an unknown split and :class:`DataNotFoundError`, saying where to put
    the file and why the hub failed, when neither source works.
    """
    _check_choice("split", split, SST2_SPLITS)
    root_folder = data_root(root)
    path = root_folder / "sst2" / f"{split}.tsv" if root_folder is not None else None
    if online is not True and path is not None and path.is_file():
        return read_sst2_tsv(path)
    if online is False:
        raise DataNotFoundError(_sst2_help(split, root_folder, None))
    try:
        return sst2_from_hub(split)
    except Exception as err:  # the hub's errors vary (ConnectionError, OSError, hub-specific ones)
        reason = f"{type(err).__name__}: {err}"
        raise DataNotFoundError(_sst2_help(split, root_folder, reason)) from err


def sst2_sample(ds: datasets.Dataset, n: int, seed: int) -> datasets.Dataset:
    """A seeded subset of ``n`` rows of ``ds`` with the label proportions of ``ds`` (up to rounding).

    Deterministic in ``(ds, n, seed)``; the rows keep their order in ``ds``. Raises ``ValueError``
    when ``n`` is negative or larger than ``len(ds)``.
    """
    if not 0 <= n <= len(ds):
        raise ValueError(f"n must be between 0 and {len(ds)} (the size of the data), got {n}")
    (idx,) = stratified_split(np.asarray(ds["label"]), [n], seed)
    return ds.select(np.sort(idx))


# --------------------------------------------------------------------------- QADSM: reading


@dataclass(repr=False)
class QadsmSplit:
    """One QADSM file: its well-formed rows as a Dataset, and the lines that were not well formed.

    ``data`` has columns ``query``, ``title``, ``description``, ``label`` (Good = 1, Bad = 0) and
    ``row`` (the 1-based line number in the file). ``malformed`` lists ``(line_number, reason)``
    for every line that was left out.
    """

    data: datasets.Dataset
    malformed: list = field(default_factory=list)
    path: Path | None = None
    lang: str | None = None
    split: str | None = None

    def describe(self) -> str:
        """One paragraph: rows, Good/Bad counts and shares, and the malformed lines."""
        name = f"XGLUE QADSM {self.lang}/{self.split}" if self.lang and self.split else "QADSM file"
        n = len(self.data)
        good = int(np.sum(np.asarray(self.data["label"]))) if n else 0
        counts = (f"Good {good:,} ({good / n:.1%}), Bad {n - good:,} ({(n - good) / n:.1%})" if n
                  else "Good 0, Bad 0")
        if self.malformed:
            bad = (f"{len(self.malformed):,} malformed line(s) left out "
                   f"({_line_list(self.malformed)}; see .malformed)")
        else:
            bad = "no malformed lines"
        return f"{name} ({self.path}): {n:,} rows, {counts}; {bad}."

    def __repr__(self) -> str:
        return self.describe()


def _line_list(malformed: list) -> str:
    shown = ", ".join(str(line) for line, _ in malformed[:_FIRST_LINES_SHOWN])
    more = ", ..." if len(malformed) > _FIRST_LINES_SHOWN else ""
    return f"line{'s' if len(malformed) > 1 else ''} {shown}{more}"


def parse_qadsm_line(line: str) -> tuple[tuple[str, str, str, int] | None, str | None]:
    """Parse one QADSM line (without its newline): ``((query, title, description, label), None)`` or
    ``(None, reason)``.

    Fields are split on tabs only, so quote characters are ordinary text. A trailing ``\\r`` is
    removed from the line; the label may carry trailing whitespace but must otherwise be exactly
    ``Good`` or ``Bad``.
    """
    line = line.rstrip("\r")
    if not line.strip():
        return None, "empty line"
    fields = line.split("\t")
    if len(fields) != len(QADSM_COLUMNS):
        return None, f"expected {len(QADSM_COLUMNS)} tab-separated fields, got {len(fields)}"
    label = fields[3].rstrip()
    if label not in QADSM_LABELS:
        return None, f"unknown label {label!r}"
    return (fields[0], fields[1], fields[2], QADSM_LABELS[label]), None


def _split_lines(raw: bytes) -> list[bytes]:
    """The file's lines (split on ``\\n`` only), without the empty lines at its end."""
    lines = raw.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def parse_qadsm(path: str | os.PathLike) -> tuple[dict, list]:
    """Parse a QADSM file into column lists (``query``, ``title``, ``description``, ``label``,
    ``row``) and a list of malformed ``(line_number, reason)``; nothing is dropped silently.

    Blank lines at the end of the file are ignored; a blank line elsewhere, a line with other than
    four tab-separated fields, an unknown label or a line that is not UTF-8 counts as malformed.
    """
    columns: dict = {name: [] for name in QADSM_FEATURES}
    malformed = []
    raw = Path(path).read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte order mark
        raw = raw[3:]
    for number, raw_line in enumerate(_split_lines(raw), start=1):
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as err:
            malformed.append((number, f"not valid UTF-8 ({err.reason} at byte {err.start})"))
            continue
        parsed, reason = parse_qadsm_line(line)
        if parsed is None:
            malformed.append((number, reason))
            continue
        for name, value in zip(QADSM_COLUMNS, parsed):
            columns[name].append(value)
        columns["row"].append(number)
    return columns, malformed


def _malformed_text(malformed: list, limit: int = 20) -> str:
    lines = [f"  line {line}: {reason}" for line, reason in malformed[:limit]]
    if len(malformed) > limit:
        lines.append(f"  ... and {len(malformed) - limit} more")
    return "\n".join(lines)


def _read_qadsm(path: Path, strict: bool, lang, split, stacklevel: int) -> QadsmSplit:
    columns, malformed = parse_qadsm(path)
    if malformed and strict:
        raise ValueError(f"{path}: {len(malformed)} malformed line(s):\n{_malformed_text(malformed)}")
    if malformed:
        warnings.warn(
            f"{path}: {len(malformed)} malformed line(s) left out ({_line_list(malformed)}); "
            f"the QadsmSplit's .malformed lists them with reasons",
            stacklevel=stacklevel + 1,
        )
    data = datasets.Dataset.from_dict(columns, features=QADSM_FEATURES)
    return QadsmSplit(data=data, malformed=malformed, path=path, lang=lang, split=split)


def read_qadsm(path: str | os.PathLike, *, strict: bool = False, lang: str | None = None,
               split: str | None = None) -> QadsmSplit:
    """Read a QADSM file (see :func:`parse_qadsm`) into a :class:`QadsmSplit`.

    Malformed lines are left out of ``data``, listed in ``malformed`` and reported with
    ``warnings.warn`` (count, file, first line numbers); with ``strict=True`` they raise
    ``ValueError`` listing them instead. ``lang`` and ``split`` only label the result.
    """
    return _read_qadsm(Path(path), strict, lang, split, stacklevel=2)


# --------------------------------------------------------------------------- QADSM: finding


def _qadsm_places(lang: str, split: str, root, cache) -> tuple[Path | None, Path]:
    """``(file in the data root or None, file in the cache)`` for one language and split."""
    root_folder = data_root(root)
    relative = Path("qadsm") / lang / f"{split}.tsv"
    return (root_folder / relative if root_folder is not None else None,
            cache_dir(cache) / relative)


def _qadsm_help(lang: str, split: str, local: Path | None, cached: Path, failure: str | None) -> str:
    """The message of the error raised when a QADSM file can be found nowhere."""
    searched = [str(local) if local is not None else f"(${DATA_ENV} is not set and no root was given)",
                str(cached)]
    lines = [f"XGLUE QADSM {lang}/{split} not found. Files searched: " + ", ".join(searched) + "."]
    if failure:
        lines.append(f"Download failed: {failure}.")
    where = (f"To fix: put the file at ${DATA_ENV}/qadsm/{lang}/{split}.tsv (set {DATA_ENV} to a "
             f"folder of your choice) or at {cached}. Format: UTF-8, no header, one pair per line, "
             f"'query<TAB>ad title<TAB>ad description<TAB>Good|Bad'.")
    if lang == "de":
        lines.append(where + f" The files are {QADSM_DE_BASE_URL}{{train,dev,test}}.txt, renamed to "
                             f"{{train,dev,test}}.tsv; online, they download into the cache by themselves.")
    else:
        lines.append(
            f"Only German QADSM can be downloaded by this course; {lang!r} needs XGLUE's own download "
            f"({XGLUE_HOME}, archive {XGLUE_ARCHIVE}), whose QADSM folder holds one file per language "
            f"and split (English has a training set; German and French only dev and test). " + where
        )
    return "\n".join(lines)


def find_qadsm(lang: str = "de", split: str = "train", root: str | os.PathLike | None = None,
               cache: str | os.PathLike | None = None, *, download_missing: bool = True,
               base_url: str = QADSM_DE_BASE_URL) -> Path:
    """Return the path of ``qadsm/<lang>/<split>.tsv``, downloading it (German only) if needed.

    Searched in order: ``data_root(root)/qadsm/<lang>/<split>.tsv`` and
    ``cache_dir(cache)/qadsm/<lang>/<split>.tsv`` (files found there are trusted, not hashed). Then, for
    German and if ``download_missing``, ``base_url + {train,dev,test}.txt`` is downloaded into the
    cache through :func:`kdtutorial.data.download`, which checks it against :data:`QADSM_DE_SHA256`
    and raises :class:`ChecksumError` (caching nothing) on a mismatch. Raises ``ValueError`` for an
    unknown language or split and :class:`DataNotFoundError`, saying where to put the file, when it
    can be found nowhere.
    """
    _check_choice("lang", lang, QADSM_LANGS)
    _check_choice("split", split, QADSM_SPLITS)
    local, cached = _qadsm_places(lang, split, root, cache)
    for candidate in (local, cached):
        if candidate is not None and candidate.is_file():
            return candidate
    failure = None
    if lang == "de" and download_missing:
        url = base_url.rstrip("/") + "/" + QADSM_DE_REMOTE[split]
        try:
            return download(url, cached, QADSM_DE_SHA256[split], progress=False)
        except DataNotFoundError as err:
            cause = err.__cause__
            failure = f"{url} ({type(cause).__name__}: {cause})" if cause is not None else str(err)
    elif lang == "de":
        failure = "not tried (download_missing=False)"
    raise DataNotFoundError(_qadsm_help(lang, split, local, cached, failure))


def load_qadsm(lang: str = "de", split: str = "train", root: str | os.PathLike | None = None,
               cache: str | os.PathLike | None = None, *, download_missing: bool = True,
               strict: bool = False, base_url: str = QADSM_DE_BASE_URL) -> QadsmSplit:
    """Load one XGLUE QADSM split as a :class:`QadsmSplit` (found by :func:`find_qadsm`, read by
    :func:`read_qadsm`).

    German ships in the course's mirror (train 9,000, dev 1,000, test 10,000, labelled); English and
    French are read from the same layout when you provide XGLUE's own files. Malformed lines are
    reported, never dropped silently: a warning, or ``ValueError`` with ``strict=True``.
    """
    path = find_qadsm(lang, split, root, cache, download_missing=download_missing, base_url=base_url)
    return _read_qadsm(path, strict, lang, split, stacklevel=2)


# --------------------------------------------------------------------------- QADSM: transfer set


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
        from .crossencoder import ad_text  # the one definition of the ad string

        return ad_text(self.titles, self.descriptions)

    def neighbour_ranks(self, split_data) -> np.ndarray:
        """For each pair of ``split_data`` (e.g. the labelled pairs the transfer set was drawn from): how many of
        this index's ads are nearer to its query than its own ad (:func:`neighbour_ranks`). Needs a
        ``"neighbours"`` index, and the split's queries and ads among this index's."""
        if self.query_vectors is None or self.ad_vectors is None:
            raise ValueError("neighbour_ranks needs the embeddings of a transfer_index(candidates='neighbours')")
        from .crossencoder import ad_text

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
    _check_choice("candidates", candidates, TRANSFER_CANDIDATES)
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
        from .crossencoder import ad_text

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
