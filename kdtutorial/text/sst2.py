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

Downloads, checksums, the data root and the cache come from :mod:`kdtutorial.vision.data`. Nothing here keeps
global state: every function takes what it needs and never touches the global random generators.
"""
from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from kdtutorial.common.downloads import DATA_ENV, DataNotFoundError, data_root
from kdtutorial.common.splits import stratified_split
from kdtutorial.common.checks import check_choice
from kdtutorial.common.downloads import searched_folder_text

# --------------------------------------------------------------------------- SST-2 constants

SST2_SPLITS = ("train", "dev", "test")
SST2_SIZES = {"train": 60614, "dev": 6735, "test": 872}
SST2_HUB = ("nyu-mll/glue", "sst2")
SST2_HUB_SPLIT_SEED = 0  # seed of the permutation that re-splits the hub's "train" into train/dev
SST2_SOURCE = "GitHub forest-snow/alps (commit 3c7ef2c98249), data/SST-2/"
SST2_FEATURES = datasets.Features({"sentence": datasets.Value("string"),
                                   "label": datasets.Value("int64")})

# --------------------------------------------------------------------------- QADSM constants


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
    check_choice("split", split, SST2_SPLITS)
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
        f"SST-2 split {split!r} not found. Folder searched: {searched_folder_text(root_folder, 'sst2')}; "
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
    check_choice("split", split, SST2_SPLITS)
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


# --------------------------------------------------------------------------- QADSM: finding


# --------------------------------------------------------------------------- QADSM: transfer set


