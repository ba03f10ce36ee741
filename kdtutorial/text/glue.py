"""Four GLUE tasks with their reported metrics: SST-2, RTE, MRPC and CoLA.

GLUE (Wang et al. 2018, "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language
Understanding", arXiv:1804.07461) scores a model on its labelled **dev** sets (the test labels are not
public). Each task here has two splits: ``"train"``, GLUE's training set, and ``"dev"``, GLUE's labelled dev
set, the one reported. For model selection, hold out part of train with :func:`held_out`. Never select on dev.

* **SST-2**: sentiment of single sentences, 1 = positive (Socher et al. 2013, Stanford Sentiment Treebank).
  ``$KDTUTORIAL_DATA/sst2/`` as :mod:`kdtutorial.text.sst2` reads it: its ``train.tsv`` + ``dev.tsv``
  (60,614 + 6,735) make up GLUE's train (67,349), and its ``test.tsv`` (872) is GLUE's dev.
* **RTE**: textual entailment of sentence pairs, entailment = 0, not_entailment = 1 (the PASCAL RTE
  challenges RTE1-3 and RTE5: Dagan et al. 2006, Bar-Haim et al. 2006, Giampiccolo et al. 2007, Bentivogli et
  al. 2009). ``glue/rte/{train,dev}.tsv`` in GLUE's tsv format (header ``index sentence1 sentence2 label``),
  copied from GitHub ``marcwww/nlu_eval`` (commit ccd55c37), ``data/RTE/``. 2,490 / 277 pairs.
* **MRPC**: paraphrase of sentence pairs, 1 = paraphrase (Dolan & Brockett 2005, the Microsoft Research
  Paraphrase Corpus; non-commercial licence, MSR-SSLA). ``glue/mrpc/{train,dev}.tsv`` as GLUE's
  ``download_glue_data.py`` writes them (header ``Quality #1 ID #2 ID #1 String #2 String``, label column
  ``Quality``, a UTF-8 BOM at the start), copied from GitHub ``Nstats/my_bert`` (commit 733d7933),
  ``data/MRPC/``. 3,668 / 408 pairs. GLUE reports F1 of class 1 and accuracy.
* **CoLA**: grammatical acceptability of single sentences, 1 = acceptable (Warstadt, Singh & Bowman 2019,
  "Neural Network Acceptability Judgments"). The authors' raw v1.1 files ``glue/cola/in_domain_train.tsv``
  (train, 8,551) and ``in_domain_dev.tsv`` + ``out_of_domain_dev.tsv`` (527 + 516, in that order: GLUE's dev,
  1,043), without a header, 4 columns (source, label, author's mark, sentence), from GitHub
  ``nyu-mll/CoLA-baselines`` (commit dd095d36), ``acceptability_corpus/cola_public/raw/``. GLUE reports the
  Matthews correlation coefficient (Matthews 1975).

Every file is read as UTF-8 (a leading BOM dropped), tab-separated, with ``csv.QUOTE_NONE``: the sentences
hold ``"`` characters that are text, not quoting. A malformed file raises ``ValueError`` naming the file and
the line; no row is ever dropped. Without the local files, :func:`load_glue` falls back to the Hugging Face
hub (``datasets.load_dataset("nyu-mll/glue", task)``: ``train`` and ``validation``); label ids are the hub's
throughout. Nothing here keeps global state or touches the global random generators.
"""
from __future__ import annotations

import csv
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from kdtutorial.common.checks import check_choice
from kdtutorial.common.downloads import DATA_ENV, DataNotFoundError, data_root, searched_folder_text
from kdtutorial.common.splits import stratified_split
from kdtutorial.text.tokens import TokenizedText, tokenize_sentence_pairs

__all__ = [
    "GLUE_TASKS", "GLUE_SPLITS", "GLUE_SIZES", "GLUE_HUB", "GLUE_LABEL_NAMES", "TASK_METRICS", "GlueData",
    "load_glue", "read_glue_tsv", "held_out", "glue_scores", "main_metric", "glue_tokens",
]

GLUE_TASKS = ("sst2", "rte", "mrpc", "cola")
GLUE_SPLITS = ("train", "dev")
GLUE_HUB = "nyu-mll/glue"  # datasets.load_dataset(GLUE_HUB, task)
_HUB_SPLIT = {"train": "train", "dev": "validation"}

#: label names by task, index = label id (the ids of the hub's glue configs)
GLUE_LABEL_NAMES = {
    "sst2": ("negative", "positive"),
    "rte": ("entailment", "not_entailment"),
    "mrpc": ("not_equivalent", "equivalent"),
    "cola": ("unacceptable", "acceptable"),
}

#: rows of each split (GLUE's train, GLUE's labelled dev)
GLUE_SIZES = {
    "sst2": {"train": 67349, "dev": 872},
    "rte": {"train": 2490, "dev": 277},
    "mrpc": {"train": 3668, "dev": 408},
    "cola": {"train": 8551, "dev": 1043},
}

#: metrics GLUE reports per task, the main one first (percent)
TASK_METRICS = {"sst2": ("accuracy",), "rte": ("accuracy",), "mrpc": ("f1", "accuracy"), "cola": ("matthews",)}


@dataclass(frozen=True)
class _FileFormat:
    """How one task's files look: header (None: no header line), column count, text and label columns."""

    header: tuple | None
    n_columns: int
    text_columns: tuple  # one column (single sentences) or two (pairs)
    label_column: int
    labels: dict  # label string in the file -> label id
    description: str  # for "not found" messages
    source: str


_BINARY = {"0": 0, "1": 1}
_FORMATS = {
    "sst2": _FileFormat(("sentence", "label"), 2, (0,), 1, _BINARY,
                        "header line 'sentence<TAB>label', label 1 = positive, 0 = negative",
                        "GitHub forest-snow/alps (commit 3c7ef2c98249), data/SST-2/ (train, dev, test.tsv)"),
    "rte": _FileFormat(("index", "sentence1", "sentence2", "label"), 4, (1, 2), 3,
                       {"entailment": 0, "not_entailment": 1},
                       "header line 'index<TAB>sentence1<TAB>sentence2<TAB>label', label entailment or "
                       "not_entailment",
                       "GitHub marcwww/nlu_eval (commit ccd55c37de74), data/RTE/"),
    "mrpc": _FileFormat(("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"), 5, (3, 4), 0, _BINARY,
                        "header line 'Quality<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String' (a UTF-8 BOM "
                        "before it is fine), Quality 1 = paraphrase, 0 = not",
                        "GitHub Nstats/my_bert (commit 733d79335044), data/MRPC/"),
    "cola": _FileFormat(None, 4, (3,), 1, _BINARY,
                        "no header, 4 columns 'source<TAB>label<TAB>author mark<TAB>sentence', label 1 = "
                        "acceptable, 0 = unacceptable",
                        "GitHub nyu-mll/CoLA-baselines (commit dd095d3646ed), "
                        "acceptability_corpus/cola_public/raw/"),
}

#: the local files of each split, relative to the data root, in the order they are concatenated, with rows
_FILES = {
    "sst2": {"train": (("sst2/train.tsv", 60614), ("sst2/dev.tsv", 6735)), "dev": (("sst2/test.tsv", 872),)},
    "rte": {"train": (("glue/rte/train.tsv", 2490),), "dev": (("glue/rte/dev.tsv", 277),)},
    "mrpc": {"train": (("glue/mrpc/train.tsv", 3668),), "dev": (("glue/mrpc/dev.tsv", 408),)},
    "cola": {"train": (("glue/cola/in_domain_train.tsv", 8551),),
             "dev": (("glue/cola/in_domain_dev.tsv", 527), ("glue/cola/out_of_domain_dev.tsv", 516))},
}


def _check_task(task) -> None:
    check_choice("task", task, GLUE_TASKS)


def _is_pair_task(task: str) -> bool:
    return len(_FORMATS[task].text_columns) == 2


# --------------------------------------------------------------------------- the data


@dataclass
class GlueData:
    """One split of a GLUE task: ``sentence1`` (and ``sentence2`` for pair tasks, else None) and int64 ``labels``.

    Row ``i`` is ``(sentence1[i], sentence2[i], labels[i])``; ``label_names[labels[i]]`` names its label.
    """

    task: str
    split: str
    sentence1: list
    sentence2: list | None
    labels: np.ndarray

    def __post_init__(self):
        _check_task(self.task)
        self.sentence1 = list(self.sentence1)
        if _is_pair_task(self.task) != (self.sentence2 is not None):
            raise ValueError(f"sentence2 must be {'a list' if _is_pair_task(self.task) else 'None'} for "
                             f"task {self.task!r}")
        if self.sentence2 is not None:
            self.sentence2 = list(self.sentence2)
            if len(self.sentence2) != len(self.sentence1):
                raise ValueError(f"{len(self.sentence1)} sentence1 but {len(self.sentence2)} sentence2")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or len(labels) != len(self.sentence1):
            raise ValueError(f"labels must be one label per row ({len(self.sentence1)}), got shape {labels.shape}")
        if len(labels) and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.label_names)):
            raise ValueError(f"labels of {self.task!r} must be in 0..{len(self.label_names) - 1}, "
                             f"found {sorted(set(labels.tolist()))[:5]}")
        self.labels = labels

    @property
    def label_names(self) -> tuple:
        """The label names, index = label id (as in the hub's glue configs)."""
        return GLUE_LABEL_NAMES[self.task]

    def __len__(self) -> int:
        return len(self.sentence1)

    def subset(self, rows) -> "GlueData":
        """The rows at ``rows`` (indices such as ``range(100)``, or a boolean mask), in that order."""
        rows = np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64).reshape(-1)
        return GlueData(self.task, self.split, [self.sentence1[i] for i in rows],
                        None if self.sentence2 is None else [self.sentence2[i] for i in rows], self.labels[rows])


# --------------------------------------------------------------------------- reading


def read_glue_tsv(task: str, path: str | os.PathLike) -> tuple[list, list | None, np.ndarray]:
    """``(sentence1, sentence2 or None, labels)`` of one file in ``task``'s format (the module docstring).

    UTF-8 (a BOM is dropped), tab-separated, ``csv.QUOTE_NONE``, a missing final newline is fine. Raises
    ``ValueError`` naming the file and the line for a wrong header, a wrong number of columns or an unknown
    label.
    """
    _check_task(task)
    fmt = _FORMATS[task]
    first, second, labels = [], [] if len(fmt.text_columns) == 2 else None, []
    line = 0
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
            for row in reader:
                line = reader.line_num
                if fmt.header is not None and line == 1:
                    if tuple(row) != fmt.header:
                        raise ValueError(f"{path}, line 1: expected the header {'<TAB>'.join(fmt.header)!r}, "
                                         f"got {row}")
                    continue
                if len(row) != fmt.n_columns:
                    raise ValueError(f"{path}, line {line}: expected {fmt.n_columns} tab-separated columns, "
                                     f"got {len(row)}")
                label = fmt.labels.get(row[fmt.label_column])
                if label is None:
                    raise ValueError(f"{path}, line {line}: unknown label {row[fmt.label_column]!r} "
                                     f"(expected one of {tuple(fmt.labels)})")
                labels.append(label)
                first.append(row[fmt.text_columns[0]])
                if second is not None:
                    second.append(row[fmt.text_columns[1]])
    except csv.Error as err:
        raise ValueError(f"{path}, line {line + 1}: not a valid tsv line ({err})") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start} of a chunk: {err.reason})") from err
    if fmt.header is not None and line == 0:
        raise ValueError(f"{path}, line 1: the file is empty, expected the header {'<TAB>'.join(fmt.header)!r}")
    return first, second, np.asarray(labels, dtype=np.int64)


def _from_files(task: str, split: str, paths: list[Path]) -> GlueData:
    first, second, labels = [], [] if _is_pair_task(task) else None, []
    for path in paths:
        a, b, y = read_glue_tsv(task, path)
        first += a
        if second is not None:
            second += b
        labels.append(y)
    return GlueData(task, split, first, second, np.concatenate(labels))


def _from_hub(task: str, split: str) -> GlueData:
    """The split from ``datasets.load_dataset("nyu-mll/glue", task)``; errors of the hub propagate."""
    part = datasets.load_dataset(GLUE_HUB, task)[_HUB_SPLIT[split]]
    names = getattr(part.features.get("label"), "names", None)
    if names is not None and tuple(names) != GLUE_LABEL_NAMES[task]:
        raise ValueError(f"the hub's {GLUE_HUB}/{task} labels are {names}, expected {GLUE_LABEL_NAMES[task]}")
    if _is_pair_task(task):
        return GlueData(task, split, part["sentence1"], part["sentence2"], np.asarray(part["label"]))
    return GlueData(task, split, part["sentence"], None, np.asarray(part["label"]))


def _glue_help(task: str, split: str, root_folder: Path | None, missing: list[Path] | None,
               hub_reason: str | None) -> str:
    """The message of the error raised when a split can be found nowhere."""
    files = _FILES[task][split]
    fmt = _FORMATS[task]
    where = (f"its hub copy ({GLUE_HUB}, {task}, {_HUB_SPLIT[split]!r}) could not be loaded: {hub_reason}"
             if hub_reason is not None else "the hub was not tried (online=False)")
    folder = str(Path(files[0][0]).parent)
    missing_text = f" (missing: {', '.join(map(str, missing))})" if missing else ""
    targets = " + ".join(f"${DATA_ENV}/{name} ({rows:,} rows)" for name, rows in files)
    return (
        f"GLUE {task} split {split!r} not found. Folder searched: {searched_folder_text(root_folder, folder)}"
        f"{missing_text}; {where}.\n"
        f"To fix: put the file{'s' if len(files) > 1 else ''} at {targets} (set {DATA_ENV} to a folder of your "
        f"choice). Format: tab-separated, UTF-8, {fmt.description}; expected {GLUE_SIZES[task][split]:,} rows "
        f"in all. The course's mirror copies {fmt.source}."
    )


def load_glue(task: str, split: str, root: str | os.PathLike | None = None, *,
              online: bool | None = None) -> GlueData:
    """Load ``split`` (``"train"``: GLUE's training set; ``"dev"``: GLUE's labelled dev set) of a GLUE ``task``.

    The files under ``data_root(root)`` (the module docstring lists them) are read when all of the split's
    files exist (see :func:`read_glue_tsv`); otherwise the split comes from the Hugging Face hub
    (``nyu-mll/glue``: its ``train`` and ``validation`` splits, the same sets). ``online=None`` does exactly
    that; ``online=False`` never contacts the hub; ``online=True`` skips the local files and uses the hub.
    Raises ``ValueError`` for an unknown task or split, and :class:`DataNotFoundError`, saying where to put
    the files, their format, the expected rows and why the hub failed, when neither source works.
    """
    _check_task(task)
    check_choice("split", split, GLUE_SPLITS)
    root_folder = data_root(root)
    missing = None
    if root_folder is not None:
        paths = [root_folder / name for name, _ in _FILES[task][split]]
        missing = [p for p in paths if not p.is_file()]
        if online is not True and not missing:
            return _from_files(task, split, paths)
    if online is False:
        raise DataNotFoundError(_glue_help(task, split, root_folder, missing, None))
    try:
        return _from_hub(task, split)
    except Exception as err:  # the hub's errors vary (ConnectionError, OSError, hub-specific ones)
        reason = f"{type(err).__name__}: {err}"
        raise DataNotFoundError(_glue_help(task, split, root_folder, missing, reason)) from err


# --------------------------------------------------------------------------- held-out part, tokens


def held_out(data: GlueData, share: float, seed: int) -> tuple[GlueData, GlueData]:
    """``(train_part, selection_part)``: a seeded, label-stratified split of ``data`` for model selection.

    ``selection_part`` gets ``round(share * len(data))`` rows with the label proportions of ``data`` (up to
    rounding), ``train_part`` the rest; both keep the rows' order in ``data``. Deterministic in ``(data,
    share, seed)``. Raises ``ValueError`` unless ``0 < share < 1`` and both parts get at least one row.
    """
    if (isinstance(share, bool) or not isinstance(share, numbers.Real)) or not 0 < share < 1:
        raise ValueError(f"share must be a number strictly between 0 and 1, got {share!r}")
    n_selection = int(round(float(share) * len(data)))
    if not 0 < n_selection < len(data):
        raise ValueError(f"share = {share!r} of {len(data)} rows leaves an empty part "
                         f"({n_selection} rows for selection)")
    (selection,) = stratified_split(data.labels, [n_selection], seed)
    keep = np.ones(len(data), dtype=bool)
    keep[selection] = False
    return data.subset(np.flatnonzero(keep)), data.subset(np.sort(selection))


def glue_tokens(tokenizer, data: GlueData, max_length: int) -> TokenizedText:
    """Token ids of ``data``: ``[CLS] s1 [SEP]`` or ``[CLS] s1 [SEP] s2 [SEP]``, at most ``max_length`` tokens.

    Unpadded (:func:`kdtutorial.text.tokens.tokenize_sentence_pairs`); pairs are truncated longest-first.
    """
    return tokenize_sentence_pairs(tokenizer, data.sentence1, data.sentence2, max_length)


# --------------------------------------------------------------------------- scores


def main_metric(task: str) -> str:
    """The metric GLUE ranks ``task`` by: the first of ``TASK_METRICS[task]``."""
    _check_task(task)
    return TASK_METRICS[task][0]


def _as_numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, on any device
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def glue_scores(task: str, logits_or_predictions, labels) -> dict:
    """GLUE's metrics of ``task`` in percent, e.g. ``{"f1": 88.1, "accuracy": 84.0}`` for MRPC.

    ``logits_or_predictions`` is ``[N, 2]`` (logits or probabilities: the prediction is the argmax) or ``[N]``
    predicted label ids 0/1; ``labels`` is ``[N]``. ``accuracy``; ``f1`` of the positive class 1
    (``2 TP / (2 TP + FP + FN)``, 0 when there are no positives predicted nor true); ``matthews``, the Matthews
    correlation coefficient ``(TP TN - FP FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN))`` (Matthews 1975),
    0 when a factor under the root is 0 (all predictions or all labels of one class). Keys in the order of
    ``TASK_METRICS[task]``.
    """
    _check_task(task)
    scores = _as_numpy(logits_or_predictions)
    y = _as_numpy(labels)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    if scores.ndim == 2 and scores.shape[1] == 2:
        predicted = scores.argmax(axis=1)
    elif scores.ndim == 1:
        if scores.dtype != bool and not np.issubdtype(scores.dtype, np.integer):
            raise ValueError(f"1-D predictions must be integer label ids 0/1, got dtype {scores.dtype} "
                             "(pass [N, 2] logits for scores)")
        predicted = scores
    else:
        raise ValueError(f"logits_or_predictions must be [N, 2] logits or [N] predictions, got shape {scores.shape}")
    if len(predicted) != len(y):
        raise ValueError(f"{len(predicted)} predictions but {len(y)} labels")
    for name, values in (("predictions", predicted), ("labels", y)):
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"{name} must be 0 or 1, found {sorted(set(values.tolist()) - {0, 1})[:5]}")
    predicted, y = predicted.astype(bool), y.astype(bool)
    # counts as Python ints: the products below are exact, whatever N
    tp = int(np.sum(predicted & y))
    tn = int(np.sum(~predicted & ~y))
    fp = int(np.sum(predicted & ~y))
    fn = int(np.sum(~predicted & y))
    values = {"accuracy": (tp + tn) / len(y)}
    values["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    values["matthews"] = (tp * tn - fp * fn) / denominator if denominator else 0.0
    return {metric: 100.0 * float(values[metric]) for metric in TASK_METRICS[task]}
