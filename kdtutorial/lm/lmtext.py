"""Lesson 08's text: IMDB review sentences (training prompts and in-domain held-out text) and WikiText-2
(out-of-domain check), cut into prompt + continuation windows of a fixed number of tokens.

* ``imdb-unsup-sentences/imdb_unsup_sentences.tsv.gz``: 593,486 distinct sentences of the 50,000 unlabelled
  reviews of the Large Movie Review Dataset (Maas et al., ACL 2011), split by pysbd, in review order (columns
  ``review_id  sent_idx  sentence``; read with no quoting, ``"`` is frequent). Training sentences come from reviews
  ``0 <= id < 40000``, held-out ones from reviews ``id >= 45000``: no review gives text to both.
* ``lm-small/wikitext-2/test.txt``: WikiText-2's test split (Merity et al., 2016) in its *tokens* form, with
  ``<unk>`` and `` @-@ `` escapes kept as they are; the file is fetched with its sha256 when it is not on disk and
  the machine is online.

Every window is ``prompt_tokens + continuation_tokens`` long, so a batch needs no padding: sentences shorter
than that are skipped, longer ones cut. All methods of the lesson train on the same prompts and the same number
of continuation tokens; only where the continuation comes from differs (the real text, the teacher, the student).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kdtutorial.common.corpora import IMDB_FILE, IMDB_SHA256, imdb_pool_file, read_imdb_rows
from kdtutorial.common.downloads import (DataNotFoundError, cache_dir, data_root, download, searched_folder_text,
                                         sha256_file)

__all__ = ["IMDB_FILE", "IMDB_SHA256", "WIKITEXT_URL", "WIKITEXT_SHA256", "IMDB_SPLITS", "imdb_sentences",
           "wikitext_text", "Windows", "prompt_windows", "text_windows"]

WIKITEXT_FILE = "lm-small/wikitext-2/test.txt"
WIKITEXT_URL = ("https://raw.githubusercontent.com/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8/"
                "word_language_model/data/wikitext-2/test.txt")
WIKITEXT_SHA256 = "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"
#: split -> review ids it reads from (half-open)
IMDB_SPLITS = {"train": (0, 40000), "heldout": (45000, 50000)}


def imdb_sentences(split: str, n: int, *, min_words: int = 5, max_words: int = 60, root=None,
                   online: bool = True) -> list[str]:
    """The first ``n`` sentences of ``split`` ("train" or "heldout", see :data:`IMDB_SPLITS`) with
    ``min_words..max_words`` words, in file order. The file is read as a stream (it is ordered by review); without
    it on disk it is built once from the hub when ``online`` (:func:`~kdtutorial.common.corpora.imdb_pool_file`)."""
    if split not in IMDB_SPLITS:
        raise ValueError(f"split must be one of {tuple(IMDB_SPLITS)}, got {split!r}")
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    path, _ = imdb_pool_file(root, online=online)
    low, high = IMDB_SPLITS[split]
    out = []
    for review, _, sentence in read_imdb_rows(path):
        if review >= high:
            break
        if review >= low and min_words <= len(sentence.split()) <= max_words:
            out.append(sentence)
            if len(out) == n:
                break
    if len(out) < n:
        raise ValueError(f"only {len(out)} {split} sentences have {min_words}-{max_words} words; asked for {n}")
    return out


def wikitext_text(root=None, *, online: bool = True) -> str:
    """WikiText-2 test (tokens form) as one string, from the data root, the cache, or its pinned URL."""
    folder = data_root(root)
    local = folder / WIKITEXT_FILE if folder is not None else None
    if local is not None and local.is_file():
        if sha256_file(local) != WIKITEXT_SHA256:
            raise ValueError(f"{local} has the wrong sha256 (expected {WIKITEXT_SHA256}): replace the file")
        return local.read_text(encoding="utf-8")
    if not online:
        raise DataNotFoundError(f"WikiText-2 test not found. Folder searched: "
                                f"{searched_folder_text(folder, 'lm-small/wikitext-2')}; put test.txt (sha256 "
                                f"{WIKITEXT_SHA256}) there, or allow the download from {WIKITEXT_URL}")
    path = download(WIKITEXT_URL, cache_dir() / "wikitext-2" / "test.txt", WIKITEXT_SHA256)
    return path.read_text(encoding="utf-8")


@dataclass
class Windows:
    """Token windows ``ids`` ``[n, prompt + continuation]`` (no padding); ``prompt`` tokens come first."""

    ids: torch.Tensor
    prompt: int

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def continuation(self) -> int:
        return self.ids.shape[1] - self.prompt

    def target_mask(self) -> torch.Tensor:
        """``[n, length - 1]``: True where ``logits[:, t]`` predicts a continuation token ``ids[:, t + 1]``."""
        mask = torch.zeros(self.ids.shape[0], self.ids.shape[1] - 1, dtype=torch.bool)
        mask[:, self.prompt - 1:] = True
        return mask

    def prompts(self) -> torch.Tensor:
        return self.ids[:, :self.prompt]

    def __getitem__(self, item) -> "Windows":
        return Windows(self.ids[item], self.prompt)


def prompt_windows(sentences, tokenizer, prompt_tokens: int, continuation_tokens: int, n: int | None = None
                   ) -> Windows:
    """Windows of the first ``prompt_tokens + continuation_tokens`` tokens of each sentence long enough; the
    first ``n`` of them (all when None). Too few long sentences is an error that says how many there were."""
    for name, value in (("prompt_tokens", prompt_tokens), ("continuation_tokens", continuation_tokens)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    length = prompt_tokens + continuation_tokens
    encoded = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
    rows = [ids[:length] for ids in encoded if len(ids) >= length]
    if n is not None:
        if len(rows) < n:
            raise ValueError(f"only {len(rows)} of {len(encoded)} sentences have {length} tokens or more; "
                             f"asked for {n} (give more sentences or shorter windows)")
        rows = rows[:n]
    if not rows:
        raise ValueError(f"no sentence has {length} tokens or more")
    return Windows(torch.tensor(rows, dtype=torch.long), prompt_tokens)


def text_windows(text: str, tokenizer, length: int, n: int) -> Windows:
    """``n`` consecutive, non-overlapping windows of ``length`` tokens from ``text`` (prompt of one token: every
    later token is scored)."""
    ids = tokenizer(text[: 40 * length * n], add_special_tokens=False)["input_ids"]  # enough characters, not all
    if len(ids) < length * n:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than {n} windows of {length}")
    return Windows(torch.tensor(ids[: length * n], dtype=torch.long).view(n, length), 1)
