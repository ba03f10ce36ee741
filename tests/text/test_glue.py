"""Tests for kdtutorial.text.glue: the four GLUE tasks' readers, the hub fallback, held-out splits, scores, tokens.

Offline and fast: fixture files in each task's format are written to ``tmp_path``; the hub is a monkeypatched
fake. Only the tokenizer test loads the packaged all-MiniLM-L6-v2 tokenizer (skipped when it cannot be
loaded). The test on the real files runs when the course's data mirror is under $KDTUTORIAL_DATA.
"""
from __future__ import annotations

import os
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from kdtutorial.common import downloads
from kdtutorial.common.downloads import DataNotFoundError
from kdtutorial.text import glue, tokens
from kdtutorial.text.glue import (GLUE_SPLITS, GLUE_TASKS, TASK_METRICS, GlueData, glue_scores, glue_tokens,
                                  held_out, load_glue, main_metric, read_glue_tsv)


def _mirror() -> Path | None:
    """$KDTUTORIAL_DATA when it holds the GLUE and SST-2 files (looked up before the fixtures clear it)."""
    value = os.environ.get(downloads.DATA_ENV, "").strip()
    needed = ("glue/rte/dev.tsv", "glue/mrpc/dev.tsv", "glue/cola/out_of_domain_dev.tsv", "sst2/test.tsv")
    if value and all((Path(value) / name).is_file() for name in needed):
        return Path(value)
    return None


MIRROR = _mirror()
needs_mirror = pytest.mark.skipif(MIRROR is None, reason="no GLUE data mirror under $KDTUTORIAL_DATA")


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    monkeypatch.delenv(downloads.DATA_ENV, raising=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


# Fixture files, one per format (the quirks of the real files: MRPC's BOM, quote characters, CoLA's lack of a
# header and of a final newline).
RTE_TRAIN = ("index\tsentence1\tsentence2\tlabel\n"
             '0\tHe said "yes".\tHe agreed.\tentailment\n'
             "1\tIt rained.\tThe sun shone all day.\tnot_entailment\n"
             "2\tA \"b\tc\tentailment\n")
RTE_DEV = "index\tsentence1\tsentence2\tlabel\n0\tx y\tx\tentailment\n"
MRPC_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
MRPC_TRAIN = (MRPC_HEADER
              + '1\t702876\t702977\tAmrozi called him "the witness".\tReferring to him as only "the witness".\n'
              + "0\t2108705\t2108831\tYucaipa owned Dominick's.\tYucaipa sold it in 1998.\n")
MRPC_DEV = MRPC_HEADER + "1\t1\t2\ta\tb\n0\t3\t4\tc\td\n1\t5\t6\te\tf\n"
COLA_TRAIN = "gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tThey drank the pub.\n"
COLA_IN_DEV = "gj04\t1\t\tThe sailors rode the breeze.\n"
COLA_OUT_DEV = "clc95\t0\t*\tHe \"left.\nclc95\t1\t\tSomebody just left - guess who."  # no final newline
SST2_TRAIN = "sentence\tlabel\nwhen are bears bears \t1\n'' a \" b\t0\n"
SST2_DEV = "sentence\tlabel\nnull\t1\n"
SST2_TEST = "sentence\tlabel\nit 's charming . \t1\nbad\t0\n"


@pytest.fixture
def root(tmp_path) -> Path:
    files = {"glue/rte/train.tsv": RTE_TRAIN, "glue/rte/dev.tsv": RTE_DEV,
             "glue/mrpc/train.tsv": MRPC_TRAIN, "glue/mrpc/dev.tsv": MRPC_DEV,
             "glue/cola/in_domain_train.tsv": COLA_TRAIN, "glue/cola/in_domain_dev.tsv": COLA_IN_DEV,
             "glue/cola/out_of_domain_dev.tsv": COLA_OUT_DEV,
             "sst2/train.tsv": SST2_TRAIN, "sst2/dev.tsv": SST2_DEV, "sst2/test.tsv": SST2_TEST}
    for name, text in files.items():
        write(tmp_path / name, text)
    return tmp_path


class FakeHub:
    """Stands in for datasets.load_dataset: records its arguments, returns a tiny glue-shaped DatasetDict."""

    def __init__(self):
        self.calls: list = []
        self.error: Exception | None = None

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        task = args[1]
        columns = ["sentence1", "sentence2"] if task in ("rte", "mrpc") else ["sentence"]
        features = datasets.Features({**{c: datasets.Value("string") for c in columns},
                                      "label": datasets.ClassLabel(names=list(glue.GLUE_LABEL_NAMES[task])),
                                      "idx": datasets.Value("int32")})

        def part(prefix, n, labelled=True):
            data = {c: [f"{prefix} {c} {i}" for i in range(n)] for c in columns}
            return datasets.Dataset.from_dict({**data, "label": [i % 2 if labelled else -1 for i in range(n)],
                                               "idx": list(range(n))}, features=features)

        return datasets.DatasetDict({"train": part("train", 7), "validation": part("validation", 3),
                                     "test": part("test", 2, labelled=False)})


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(datasets, "load_dataset", fake)
    return fake


# --------------------------------------------------------------------------- reading the files


def test_rte_pairs_keep_quote_characters(root):
    train = load_glue("rte", "train", root=root, online=False)
    assert (train.task, train.split, len(train)) == ("rte", "train", 3)
    assert train.sentence1 == ['He said "yes".', "It rained.", 'A "b']
    assert train.sentence2 == ["He agreed.", "The sun shone all day.", "c"]
    assert train.labels.dtype == np.int64 and train.labels.tolist() == [0, 1, 0]
    assert train.label_names == ("entailment", "not_entailment")
    assert len(load_glue("rte", "dev", root=root, online=False)) == 1


def test_mrpc_with_bom_and_quotes(root):
    train = load_glue("mrpc", "train", root=root, online=False)
    assert train.sentence1 == ['Amrozi called him "the witness".', "Yucaipa owned Dominick's."]
    assert train.sentence2 == ['Referring to him as only "the witness".', "Yucaipa sold it in 1998."]
    assert train.labels.tolist() == [1, 0] and train.label_names[1] == "equivalent"
    write(root / "glue/mrpc/dev.tsv", MRPC_DEV.lstrip("\ufeff"))  # without the BOM too
    assert load_glue("mrpc", "dev", root=root, online=False).labels.tolist() == [1, 0, 1]


def test_cola_dev_is_in_domain_then_out_of_domain(root):
    dev = load_glue("cola", "dev", root=root, online=False)
    assert dev.sentence2 is None
    assert dev.sentence1 == ["The sailors rode the breeze.", 'He "left.', "Somebody just left - guess who."]
    assert dev.labels.tolist() == [1, 0, 1] and dev.label_names == ("unacceptable", "acceptable")
    assert load_glue("cola", "train", root=root, online=False).labels.tolist() == [1, 0]


def test_sst2_train_is_the_train_and_dev_files(root):
    train = load_glue("sst2", "train", root=root, online=False)
    assert train.sentence1 == ["when are bears bears ", "'' a \" b", "null"] and train.sentence2 is None
    assert train.labels.tolist() == [1, 0, 1]
    dev = load_glue("sst2", "dev", root=root, online=False)
    assert dev.sentence1 == ["it 's charming . ", "bad"] and dev.labels.tolist() == [1, 0]


def test_data_root_from_the_environment(root, monkeypatch, hub):
    monkeypatch.setenv(downloads.DATA_ENV, str(root))
    assert len(load_glue("rte", "train")) == 3
    assert hub.calls == []


@pytest.mark.parametrize("task, name, text, message", [
    ("rte", "glue/rte/train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n", "line 2: unknown label 'maybe'"),
    ("rte", "glue/rte/train.tsv", "idx\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n", "line 1: expected the header"),
    ("rte", "glue/rte/train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n",
     "line 3: expected 4 tab-separated columns, got 3"),
    ("rte", "glue/rte/train.tsv", "", "line 1: the file is empty"),
    ("mrpc", "glue/mrpc/train.tsv", MRPC_HEADER + "2\t1\t2\ta\tb\n", "line 2: unknown label '2'"),
    ("mrpc", "glue/mrpc/train.tsv", MRPC_HEADER + "1\t1\t2\ta\tb\textra\n", "line 2: expected 5"),
    ("cola", "glue/cola/in_domain_train.tsv", "gj04\t1\t\ta\ngj04\tyes\t\tb", "line 2: unknown label 'yes'"),
    ("cola", "glue/cola/in_domain_train.tsv", "gj04\t1\t\ta\n\ngj04\t1\t\tb\n", "line 2: expected 4"),
    ("sst2", "sst2/test.tsv", "sentence\tlabel\na\tpositive\n", "line 2: unknown label 'positive'"),
])
def test_malformed_files_name_the_file_and_line(root, task, name, text, message):
    path = write(root / name, text)
    split = "dev" if name == "sst2/test.tsv" else "train"
    with pytest.raises(ValueError, match=message) as info:
        load_glue(task, split, root=root, online=False)
    assert str(path) in str(info.value)


def test_read_glue_tsv_of_one_file(root):
    first, second, labels = read_glue_tsv("cola", root / "glue/cola/out_of_domain_dev.tsv")
    assert first == ['He "left.', "Somebody just left - guess who."] and second is None
    assert labels.tolist() == [0, 1]


# --------------------------------------------------------------------------- missing files, the hub, bad arguments


def test_missing_file_offline_says_which_path_to_create(root, hub):
    (root / "glue/cola/out_of_domain_dev.tsv").unlink()
    with pytest.raises(DataNotFoundError) as info:
        load_glue("cola", "dev", root=root, online=False)
    message = str(info.value)
    for part in (str(root / "glue/cola/out_of_domain_dev.tsv"), "$KDTUTORIAL_DATA/glue/cola/out_of_domain_dev.tsv",
                 "$KDTUTORIAL_DATA/glue/cola/in_domain_dev.tsv", "online=False", "no header", "1,043",
                 "nyu-mll/CoLA-baselines"):
        assert part in message
    assert str(root / "glue/cola/in_domain_dev.tsv") not in message.split("To fix")[0]  # that one exists
    assert hub.calls == []  # a split is never half local, half hub


def test_hub_fallback_maps_train_and_validation(tmp_path, hub):
    dev = load_glue("mrpc", "dev", root=tmp_path)
    assert hub.calls == [(("nyu-mll/glue", "mrpc"), {})]
    assert dev.sentence1 == [f"validation sentence1 {i}" for i in range(3)]
    assert dev.sentence2 == [f"validation sentence2 {i}" for i in range(3)]
    assert dev.labels.dtype == np.int64 and dev.labels.tolist() == [0, 1, 0]
    train = load_glue("cola", "train", root=tmp_path)
    assert len(train) == 7 and train.sentence2 is None and train.sentence1[0] == "train sentence 0"


def test_online_true_skips_the_local_files(root, hub):
    assert len(load_glue("rte", "train", root=root, online=True)) == 7
    assert len(hub.calls) == 1


def test_hub_failure_is_wrapped_with_where_to_put_the_file(tmp_path, hub):
    hub.error = ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (offline)")
    with pytest.raises(DataNotFoundError) as info:
        load_glue("rte", "dev", root=tmp_path)
    message = str(info.value)
    for part in ("$KDTUTORIAL_DATA/glue/rte/dev.tsv", str(tmp_path / "glue/rte/dev.tsv"), "277",
                 "index<TAB>sentence1<TAB>sentence2<TAB>label", "marcwww/nlu_eval",
                 "ConnectionError: Couldn't reach 'nyu-mll/glue' on the Hub (offline)"):
        assert part in message
    assert isinstance(info.value.__cause__, ConnectionError)
    with pytest.raises(DataNotFoundError, match="KDTUTORIAL_DATA is not set"):
        load_glue("sst2", "train")


@pytest.mark.parametrize("task, split, name", [("foo", "dev", "task"), ("qnli", "train", "task"),
                                                ("rte", "test", "split"), ("rte", "validation", "split")])
def test_bad_task_or_split_names_the_parameter(tmp_path, task, split, name):
    with pytest.raises(ValueError, match=rf"^{name}\b.*{split if name == 'split' else task}") as info:
        load_glue(task, split, root=tmp_path, online=False)
    assert all(t in str(info.value) for t in (GLUE_SPLITS if name == "split" else GLUE_TASKS))


def test_glue_data_checks_its_fields():
    with pytest.raises(ValueError, match="sentence2"):
        GlueData("rte", "train", ["a"], None, np.array([0]))
    with pytest.raises(ValueError, match="sentence2"):
        GlueData("cola", "train", ["a"], ["b"], np.array([0]))
    with pytest.raises(ValueError, match="labels"):
        GlueData("cola", "train", ["a", "b"], None, np.array([0]))
    with pytest.raises(ValueError, match="labels"):
        GlueData("cola", "train", ["a"], None, np.array([2]))
    with pytest.raises(ValueError, match="task"):
        GlueData("qqp", "train", ["a"], None, np.array([0]))


# --------------------------------------------------------------------------- held-out part of train


def toy_data(n_pos=60, n_neg=40) -> GlueData:
    labels = np.array([1] * n_pos + [0] * n_neg)[np.random.default_rng(3).permutation(n_pos + n_neg)]
    return GlueData("mrpc", "train", [f"a{i}" for i in range(len(labels))], [f"b{i}" for i in range(len(labels))],
                    labels)


def test_held_out_is_stratified_disjoint_and_seeded():
    data = toy_data()
    train, selection = held_out(data, 0.2, seed=0)
    assert (len(train), len(selection)) == (80, 20)
    assert np.bincount(selection.labels).tolist() == [8, 12] and np.bincount(train.labels).tolist() == [32, 48]
    assert not set(train.sentence1) & set(selection.sentence1)
    assert sorted(train.sentence1 + selection.sentence1) == sorted(data.sentence1)
    rows = [data.sentence1.index(s) for s in selection.sentence1]
    assert rows == sorted(rows)  # the data's order is kept
    assert selection.sentence2 == [s.replace("a", "b") for s in selection.sentence1]  # pairs stay together
    again, other = held_out(data, 0.2, seed=0)[1], held_out(data, 0.2, seed=1)[1]
    assert again.sentence1 == selection.sentence1 != other.sentence1
    assert (selection.task, selection.split) == ("mrpc", "train")


@pytest.mark.parametrize("share", [0, 1, -0.1, 1.5, float("nan"), "0.2", True, 0.001])
def test_held_out_bad_share_names_share(share):
    with pytest.raises(ValueError, match="share"):
        held_out(toy_data(), share, seed=0)


def test_subset_takes_rows_in_order_and_masks():
    data = toy_data(3, 2)
    part = data.subset([4, 0])
    assert part.sentence1 == [data.sentence1[4], data.sentence1[0]]
    assert part.labels.tolist() == [data.labels[4], data.labels[0]]
    assert len(data.subset(data.labels == 1)) == 3 and len(data.subset([])) == 0


# --------------------------------------------------------------------------- scores


def test_task_metrics_and_main_metric():
    assert TASK_METRICS == {"sst2": ("accuracy",), "rte": ("accuracy",), "mrpc": ("f1", "accuracy"),
                            "cola": ("matthews",)}
    assert [main_metric(t) for t in GLUE_TASKS] == ["accuracy", "accuracy", "f1", "matthews"]
    with pytest.raises(ValueError, match="task"):
        main_metric("stsb")


@pytest.mark.parametrize("seed", range(5))
def test_glue_scores_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 500))
    labels = rng.integers(0, 2, n)
    logits = rng.normal(size=(n, 2)) + 0.8 * np.eye(2)[labels]  # better than chance
    predictions = logits.argmax(1)
    expected = {"accuracy": 100 * accuracy_score(labels, predictions), "f1": 100 * f1_score(labels, predictions),
                "matthews": 100 * matthews_corrcoef(labels, predictions)}
    for task in GLUE_TASKS:
        for given in (logits, predictions, torch.from_numpy(logits)):
            scores = glue_scores(task, given, labels)
            assert list(scores) == list(TASK_METRICS[task])
            for metric, value in scores.items():
                assert isinstance(value, float)
                assert value == pytest.approx(expected[metric], abs=1e-9)


def test_matthews_undefined_is_zero_and_perfect_is_100():
    labels = np.array([0, 1, 1, 0, 1])
    assert glue_scores("cola", np.ones(5, dtype=int), labels) == {"matthews": 0.0}  # one predicted class
    assert glue_scores("cola", np.array([0, 1, 0, 1, 0]), np.ones(5, dtype=int)) == {"matthews": 0.0}  # one true class
    assert glue_scores("cola", labels, labels) == {"matthews": 100.0}
    assert glue_scores("cola", 1 - labels, labels) == {"matthews": -100.0}
    assert glue_scores("mrpc", np.zeros(3, dtype=int), np.zeros(3, dtype=int)) == {"f1": 0.0, "accuracy": 100.0}
    assert glue_scores("mrpc", np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0])) == {"f1": 50.0, "accuracy": 50.0}


@pytest.mark.parametrize("given, labels, message", [
    (np.zeros((4, 3)), np.zeros(4, dtype=int), r"\[N, 2\]"),
    (np.array([0.2, 0.9]), np.array([0, 1]), "integer"),
    (np.array([0, 1, 1]), np.array([0, 1]), "3 predictions but 2 labels"),
    (np.array([0, 2]), np.array([0, 1]), "predictions must be 0 or 1"),
    (np.array([0, 1]), np.array([0, -1]), "labels must be 0 or 1"),
    (np.zeros(0, dtype=int), np.zeros(0, dtype=int), "non-empty"),
])
def test_glue_scores_bad_inputs(given, labels, message):
    with pytest.raises(ValueError, match=message):
        glue_scores("rte", given, labels)


# --------------------------------------------------------------------------- tokens


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from kdtutorial.text import hub

    try:
        return hub.load_tokenizer(hub.DEFAULT_TEACHER)
    except Exception as err:  # no packaged weights and no network
        pytest.skip(f"the MiniLM tokenizer is not available: {type(err).__name__}: {err}")


def test_tokenize_sentence_pairs_on_minilm(minilm_tokenizer):
    tok = minilm_tokenizer
    text = tokens.tokenize_sentence_pairs(tok, ["a short one", "the first sentence is rather long here"],
                                          ["second", "and the second one too"], max_length=9)
    assert len(text) == 2 and text.pad_id == tok.pad_token_id and tok.sep_token_id in text.special_ids
    for ids in text.ids:
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert ids.count(tok.sep_token_id) == 2 and len(ids) <= 9
    assert text.ids[0] == tok("a short one", "second")["input_ids"]
    assert len(text.ids[1]) == 9  # truncated
    single = tokens.tokenize_sentence_pairs(tok, ["a short one"], None, max_length=9)
    assert single.ids == tokens.tokenize(tok, ["a short one"], max_length=9).ids
    assert single.ids[0].count(tok.sep_token_id) == 1
    with pytest.raises(ValueError, match="2 first sentences but 1"):
        tokens.tokenize_sentence_pairs(tok, ["a", "b"], ["c"], max_length=9)
    with pytest.raises(ValueError, match="max_length"):
        tokens.tokenize_sentence_pairs(tok, ["a"], ["b"], max_length=4)
    with pytest.raises(TypeError):
        tokens.tokenize_sentence_pairs(tok, "a", "b", max_length=9)


def test_glue_tokens_of_pair_and_single_tasks(root, minilm_tokenizer):
    tok = minilm_tokenizer
    rte = glue_tokens(tok, load_glue("rte", "train", root=root, online=False), max_length=32)
    assert [ids.count(tok.sep_token_id) for ids in rte.ids] == [2, 2, 2]
    assert rte.ids[0] == tok('He said "yes".', "He agreed.")["input_ids"]
    cola = glue_tokens(tok, load_glue("cola", "dev", root=root, online=False), max_length=32)
    assert len(cola) == 3 and all(ids.count(tok.sep_token_id) == 1 for ids in cola.ids)
    (_, batch), = tokens.padded_batches(rte, 3)
    assert batch["input_ids"].shape[0] == 3


# --------------------------------------------------------------------------- the real mirror


@needs_mirror
def test_real_glue_mirror(hub):
    expected = {  # rows of train / dev, and label counts (ids 0, 1) of train, from the mirror's READMEs
        "rte": (2490, 277, [1249, 1241]),
        "mrpc": (3668, 408, [1194, 2474]),
        "cola": (8551, 1043, [2528, 6023]),
        "sst2": (67349, 872, None),
    }
    for task, (n_train, n_dev, train_counts) in expected.items():
        train = load_glue(task, "train", root=MIRROR, online=False)
        dev = load_glue(task, "dev", root=MIRROR, online=False)
        assert (len(train), len(dev)) == (n_train, n_dev) == tuple(glue.GLUE_SIZES[task].values())
        if train_counts is not None:
            assert np.bincount(train.labels).tolist() == train_counts
        assert (train.sentence2 is None) == (task in ("sst2", "cola"))
    assert np.bincount(load_glue("rte", "dev", root=MIRROR).labels).tolist() == [146, 131]
    assert np.bincount(load_glue("mrpc", "dev", root=MIRROR).labels).tolist() == [129, 279]
    cola_dev = load_glue("cola", "dev", root=MIRROR)
    assert np.bincount(cola_dev.labels[:527]).tolist() == [162, 365]  # in-domain first
    assert np.bincount(cola_dev.labels[527:]).tolist() == [162, 354]
    assert np.bincount(load_glue("sst2", "dev", root=MIRROR).labels).tolist() == [428, 444]
    assert hub.calls == []
