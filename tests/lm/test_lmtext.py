"""Lesson 08's text: IMDB sentences by review split (the mirror and a small file written here), WikiText-2 with its
sha256 (mirror, missing, corrupt, downloaded from a loopback server), and fixed-length token windows."""
import gzip
import os
from pathlib import Path

import pytest
import torch

from _support import sha256_bytes
from kdtutorial.common.downloads import DATA_ENV, DataNotFoundError
from kdtutorial.lm import lmtext

MIRROR = Path(os.environ.get(DATA_ENV, "/nonexistent"))
needs_imdb = pytest.mark.skipif(not (MIRROR / lmtext.IMDB_FILE).is_file(),
                                reason=f"${DATA_ENV}/imdb-unsup-sentences is missing")
needs_wikitext = pytest.mark.skipif(not (MIRROR / lmtext.WIKITEXT_FILE).is_file(),
                                    reason=f"${DATA_ENV}/lm-small/wikitext-2/test.txt is missing")


class WordIds:
    """A tokenizer stand-in: one id per whitespace word (its length), as ``tokenizer(texts)["input_ids"]``."""

    def __init__(self):
        self.calls = []

    def __call__(self, texts, add_special_tokens=True):
        self.calls.append(add_special_tokens)
        return {"input_ids": [[len(w) for w in text.split()] for text in texts]}


# --- IMDB sentences -------------------------------------------------------------------------------------------

@needs_imdb
def test_imdb_sentences_from_the_mirror():
    train = lmtext.imdb_sentences("train", 20)
    heldout = lmtext.imdb_sentences("heldout", 5)
    assert len(train) == 20 and len(heldout) == 5
    assert all(isinstance(s, str) and 5 <= len(s.split()) <= 60 for s in train + heldout)
    assert not set(train) & set(heldout)
    assert lmtext.imdb_sentences("train", 3) == train[:3]  # file order: a prefix is a prefix
    long = lmtext.imdb_sentences("train", 5, min_words=16, max_words=20)
    assert all(16 <= len(s.split()) <= 20 for s in long)


def write_sentences(root, rows, header=("review_id", "sent_idx", "sentence")):
    path = Path(root) / lmtext.IMDB_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write("\t".join(header) + "\n")
        for review, idx, text in rows:
            f.write(f"{review}\t{idx}\t{text}\n")
    return path


FIVE = "one two three four five"


def test_the_splits_read_disjoint_review_ranges(tmp_path):
    rows = [(0, 0, f"{FIVE} a"), (0, 1, "too short here"), (39999, 0, f'{FIVE} "quoted" b'),
            (40000, 0, f"{FIVE} gap"), (44999, 0, f"{FIVE} gap too"), (45000, 0, f"{FIVE} c"),
            (49999, 3, f"{FIVE} d")]
    write_sentences(tmp_path, rows)
    assert lmtext.imdb_sentences("train", 2, root=tmp_path) == [f"{FIVE} a", f'{FIVE} "quoted" b']  # quotes kept
    assert lmtext.imdb_sentences("heldout", 2, root=tmp_path) == [f"{FIVE} c", f"{FIVE} d"]
    assert lmtext.imdb_sentences("train", 1, root=tmp_path, min_words=3, max_words=3) == ["too short here"]
    with pytest.raises(ValueError, match="only 2 train sentences have 5-60 words; asked for 3"):
        lmtext.imdb_sentences("train", 3, root=tmp_path)
    with pytest.raises(ValueError, match="only 2 heldout sentences"):
        lmtext.imdb_sentences("heldout", 3, root=tmp_path)


def test_a_file_with_another_header_is_refused(tmp_path):
    write_sentences(tmp_path, [(0, 0, FIVE)], header=("id", "n", "text"))
    with pytest.raises(ValueError, match="unexpected header"):
        lmtext.imdb_sentences("train", 1, root=tmp_path)


@pytest.mark.parametrize("split", ["test", "Train", "", None])
def test_a_bad_split_is_named(split, tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        lmtext.imdb_sentences(split, 3, root=tmp_path)


@pytest.mark.parametrize("n", [0, -1, 2.0])
def test_n_must_be_a_positive_integer(n, tmp_path):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        lmtext.imdb_sentences("train", n, root=tmp_path)


def test_a_missing_sentence_file_says_what_to_put_where(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="imdb_unsup_sentences.tsv.gz") as err:
        lmtext.imdb_sentences("train", 3, root=tmp_path, online=False)
    assert str(tmp_path / "imdb-unsup-sentences") in str(err.value) and lmtext.IMDB_SHA256 in str(err.value)
    assert "online=False" in str(err.value)  # online, the file would be built from the hub (corpora.imdb_pool_file)
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DataNotFoundError, match=r"\$KDTUTORIAL_DATA is not set"):
        lmtext.imdb_sentences("heldout", 3, online=False)


# --- WikiText-2 -----------------------------------------------------------------------------------------------

@needs_wikitext
def test_wikitext_from_the_mirror():
    text = lmtext.wikitext_text(online=False)
    assert text.startswith(" \n = Robert <unk> = \n") and " @-@ " in text  # the tokens form, escapes kept
    assert len(text) > 1_000_000


def test_wikitext_missing_offline_is_not_found(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="WikiText-2 test not found") as err:
        lmtext.wikitext_text(tmp_path, online=False)
    assert str(tmp_path / "lm-small" / "wikitext-2") in str(err.value) and lmtext.WIKITEXT_URL in str(err.value)
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DataNotFoundError, match=r"\$KDTUTORIAL_DATA is not set"):
        lmtext.wikitext_text(online=False)


def test_a_wikitext_file_with_the_wrong_sha256_is_refused(tmp_path):
    local = tmp_path / lmtext.WIKITEXT_FILE
    local.parent.mkdir(parents=True)
    local.write_text(" = Not WikiText = \n")
    with pytest.raises(ValueError, match="wrong sha256"):
        lmtext.wikitext_text(tmp_path, online=False)
    with pytest.raises(ValueError, match="wrong sha256"):
        lmtext.wikitext_text(tmp_path, online=True)  # a bad local file is not silently replaced by a download


def test_wikitext_is_downloaded_once_with_its_sha256(server, tmp_path, monkeypatch):
    payload = " = Tiny = \n a b @-@ c <unk> \n".encode()
    sha = server.serve("test.txt", payload)
    monkeypatch.setattr(lmtext, "WIKITEXT_URL", server.url + "test.txt")
    monkeypatch.setattr(lmtext, "WIKITEXT_SHA256", sha)
    monkeypatch.setenv("KDTUTORIAL_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "data"
    empty.mkdir()
    assert lmtext.wikitext_text(empty) == payload.decode()
    assert (tmp_path / "cache" / "wikitext-2" / "test.txt").read_bytes() == payload
    assert lmtext.wikitext_text(empty) == payload.decode()  # from the cache
    assert server.requests == ["/test.txt"]
    # a local copy with this sha256 is read first
    local = empty / lmtext.WIKITEXT_FILE
    local.parent.mkdir(parents=True)
    local.write_bytes(payload)
    assert lmtext.wikitext_text(empty, online=False) == payload.decode() and sha256_bytes(local.read_bytes()) == sha


# --- windows --------------------------------------------------------------------------------------------------

def test_prompt_windows_are_fixed_length_and_skip_short_sentences():
    sentences = ["a bb ccc dddd eeeee", "x y", "aa bb cc dd ee ff gg", "p q r s", "zz zz zz zz zz zz"]
    tokenizer = WordIds()
    windows = lmtext.prompt_windows(sentences, tokenizer, 2, 3)
    assert tokenizer.calls == [False]  # no special tokens added
    assert windows.ids.dtype == torch.long and windows.ids.shape == (3, 5)
    assert windows.ids.tolist() == [[1, 2, 3, 4, 5], [2, 2, 2, 2, 2], [2, 2, 2, 2, 2]]  # longer ones cut
    assert (len(windows), windows.prompt, windows.continuation) == (3, 2, 3)
    assert windows.prompts().tolist() == [[1, 2], [2, 2], [2, 2]]
    assert lmtext.prompt_windows(sentences, WordIds(), 2, 3, n=2).ids.tolist() == windows.ids[:2].tolist()
    first = windows[0:1]
    assert isinstance(first, lmtext.Windows) and first.prompt == 2 and first.ids.shape == (1, 5)


def test_too_few_long_sentences_is_an_error_that_counts_them():
    sentences = ["a b c d e", "a b", "a b c d e f"]
    with pytest.raises(ValueError, match="only 2 of 3 sentences have 5 tokens or more; asked for 3"):
        lmtext.prompt_windows(sentences, WordIds(), 2, 3, n=3)
    with pytest.raises(ValueError, match="no sentence has 5 tokens or more"):
        lmtext.prompt_windows(["a b"], WordIds(), 2, 3)


@pytest.mark.parametrize("name, prompt, continuation", [("prompt_tokens", 0, 3), ("continuation_tokens", 2, 0),
                                                       ("prompt_tokens", 1.5, 3)])
def test_window_lengths_must_be_positive_integers(name, prompt, continuation):
    with pytest.raises(ValueError, match=f"^{name} must be a positive integer"):
        lmtext.prompt_windows(["a b c d e"], WordIds(), prompt, continuation)


def test_the_target_mask_marks_the_continuation_predictions():
    """logits[:, t] predicts ids[:, t + 1]: the continuation tokens ids[:, P:] are predicted at t = P - 1 .. end."""
    windows = lmtext.Windows(torch.arange(14).view(2, 7), prompt=3)
    mask = windows.target_mask()
    assert mask.dtype == torch.bool and mask.shape == (2, 6)
    assert mask.tolist() == [[False, False, True, True, True, True]] * 2
    targets = windows.ids[:, 1:][mask].view(2, -1)
    assert torch.equal(targets, windows.ids[:, 3:])  # exactly the continuation is scored
    assert lmtext.Windows(torch.zeros(1, 4, dtype=torch.long), 1).target_mask().all()  # prompt of one: all


def test_text_windows_are_consecutive_and_disjoint():
    class CharIds:
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) for c in text]}

    text = "".join(chr(97 + i % 26) for i in range(200))
    windows = lmtext.text_windows(text, CharIds(), 8, 3)
    assert windows.ids.shape == (3, 8) and windows.prompt == 1
    assert windows.ids.flatten().tolist() == [ord(c) for c in text[:24]]
    with pytest.raises(ValueError, match="the text has 20 tokens, fewer than 3 windows of 8"):
        lmtext.text_windows(text[:20], CharIds(), 8, 3)


def test_without_the_mirror_a_pool_file_in_the_cache_is_read(tmp_path, monkeypatch):
    """corpora.imdb_pool_file: the data root first, then the cache (where a file built from the hub is kept)."""
    import gzip

    from kdtutorial.common.downloads import CACHE_ENV

    cached = tmp_path / "cache" / lmtext.IMDB_FILE
    cached.parent.mkdir(parents=True)
    with gzip.open(cached, "wt", encoding="utf-8") as f:
        f.write("review_id\tsent_idx\tsentence\n0\t0\tone two three four five six\n45000\t0\tsix five four three two one\n")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    empty = tmp_path / "data"
    empty.mkdir()
    assert lmtext.imdb_sentences("train", 1, root=empty, online=False) == ["one two three four five six"]
    assert lmtext.imdb_sentences("heldout", 1, root=empty, online=False) == ["six five four three two one"]
