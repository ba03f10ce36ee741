"""Lesson 08's comparison (``kdtutorial.lm.lmcompare.compare_lm_methods``) on a tiny random Llama: each student is
one job; in processes (``workers=2``) every record, loss curve and sample equals the one-after-another run, bit for
bit on the CPU with as many threads; the progress bar counts training steps either way; each job equals the
training loop written out by hand. No network, no data files."""
import pytest
import torch

from _lm_support import tiny_llama, word_tokenizer
from kdtutorial.common.environment import seed_everything
from kdtutorial.lm import lmcompare, lmdistil, lmeval
from kdtutorial.lm.lmtext import Windows

PROMPT, CONT = 4, 6
METHODS = ["supervised CE", "word-level KD", "top-k KD", "sequence-level KD", "on-policy JSD"]
SETTING = lmdistil.LMSetting(steps=3, batch_size=4, lr=1e-3, top_k=8, lam=0.5, beta=0.5, eval_batch=4)


def windows(n, seed, prompt=PROMPT, length=PROMPT + CONT):
    g = torch.Generator().manual_seed(seed)
    return Windows(torch.randint(3, 64, (n, length), generator=g), prompt)


@pytest.fixture(scope="module")
def data():
    return lmcompare.LMData(train=windows(8, 1), heldout=windows(6, 2), wiki=windows(3, 3, prompt=1, length=12))


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer([f"w{i}" for i in range(64)])


class Steps:
    def __init__(self):
        self.n = 0

    def update(self, n=1):
        self.n += n


def compare(data, tokenizer, workers, progress=None, methods=METHODS):
    return lmcompare.compare_lm_methods(tiny_llama(0), tokenizer, data, SETTING, [0, 1], methods, layers=[0, 3],
                                        n_samples=2, workers=workers, threads=1, progress=progress)


def test_students_in_processes_equal_the_students_trained_here(data, tokenizer):
    here_bar, there_bar = Steps(), Steps()
    here = compare(data, tokenizer, 1, here_bar)
    there = compare(data, tokenizer, 2, there_bar)
    records, samples, curves = here
    assert len(records) == 1 + 2 * len(METHODS) and records[0]["method"] == "teacher"
    assert [(r["method"], r["seed"]) for r in records[1:]] == [(m, s) for s in (0, 1) for m in METHODS]
    assert set(samples) == {"prompt", "teacher", *METHODS} and len(samples["word-level KD"]) == 2
    assert all(len(c) == SETTING.steps for c in curves.values())
    drop = {"train_seconds"}  # wall time differs
    assert [{k: v for k, v in r.items() if k not in drop} for r in there[0]] == \
           [{k: v for k, v in r.items() if k not in drop} for r in records]
    assert there[1] == samples and there[2] == curves
    assert here_bar.n == there_bar.n == 2 * len(METHODS) * SETTING.steps


def test_a_job_is_the_training_loop_written_out(data, tokenizer):
    teacher = tiny_llama(0)
    top_k = lmdistil.teacher_top_k(teacher, data.train, SETTING.top_k, batch_size=4)
    shared = lmcompare.LMRuns(teacher, data, SETTING, top_k, None, [0, 3], "copied", True,
                              data.heldout.prompts()[:2])
    out = lmcompare.run_lm_student(shared, ("top-k KD", 1, False))
    seed_everything(1)
    student = lmcompare.new_lm_student(tiny_llama(0), "copied", [0, 3], 1)
    history = lmdistil.train_lm_student("top-k KD", student, teacher, data.train, SETTING, 1, top_k=top_k)
    scores = lmeval.score_lm(student, teacher, data.heldout, data.wiki, seed=1, batch_size=4)
    assert out["losses"] == history["losses"] and out["samples"] is None
    assert {k: out["record"][k] for k in scores} == scores


def test_an_unknown_method_is_refused_by_name(data, tokenizer):
    with pytest.raises(ValueError, match="METHODS"):
        compare(data, tokenizer, 1, methods=["word-level KD", "soft labels"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_students_in_processes_on_one_gpu_match_the_students_trained_here(data, tokenizer):
    """On a GPU the processes share the device; results agree up to its run-to-run variation."""
    setting = lmdistil.LMSetting(**{**vars(SETTING), "device": "cuda"})
    runs = [lmcompare.compare_lm_methods(tiny_llama(0), tokenizer, data, setting, [0, 1], METHODS, layers=[0, 3],
                                         n_samples=2, workers=w) for w in (1, 2)]
    for a, b in zip(runs[0][0], runs[1][0]):
        assert (a["method"], a["seed"]) == (b["method"], b["seed"])
        assert a["nll_reviews"] == pytest.approx(b["nll_reviews"], rel=1e-3)
    assert all(runs[0][2][k] == pytest.approx(runs[1][2][k], rel=1e-3) for k in runs[0][2])
