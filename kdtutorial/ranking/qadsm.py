"""XGLUE QADSM"""
from __future__ import annotations
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
import datasets
import numpy as np
from kdtutorial.common.downloads import DATA_ENV, DataNotFoundError, cache_dir, data_root, download
from kdtutorial.common.checks import check_choice


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
    cache through :func:`kdtutorial.vision.data.download`, which checks it against :data:`QADSM_DE_SHA256`
    and raises :class:`ChecksumError` (caching nothing) on a mismatch. Raises ``ValueError`` for an
    unknown language or split and :class:`DataNotFoundError`, saying where to put the file, when it
    can be found nowhere.
    """
    check_choice("lang", lang, QADSM_LANGS)
    check_choice("split", split, QADSM_SPLITS)
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


# ------------------------------------------------------------------------------------------- text
def _join(title, description) -> str:
    return " ".join(part for part in (str(title).strip(), str(description).strip()) if part)

def ad_text(title, description):
    """The ad as one string, ``"title description"`` (stripped; an empty part leaves no stray space).

    Takes two strings, or two equally long sequences of strings (e.g. ``data["title"]``, ``data["description"]``)
    and then returns a list. Teacher and student both build their ad input with this function.
    """
    if isinstance(title, str) and isinstance(description, str):
        return _join(title, description)
    if isinstance(title, str) or isinstance(description, str):
        raise TypeError("title and description must both be strings or both be sequences of strings")
    title, description = list(title), list(description)
    if len(title) != len(description):
        raise ValueError(f"{len(title)} titles but {len(description)} descriptions")
    return [_join(t, d) for t, d in zip(title, description)]
