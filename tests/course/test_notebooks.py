"""The course notebooks under papermill: the committed outputs reproduced, every slider moved, non-default and bad
parameters, hygiene.

``test_committed_outputs_reproduce`` runs each committed notebook once, top to bottom in a fresh kernel, and
compares its outputs with the committed ones (:mod:`kdtutorial.course.outputs`: strict, or within the tolerance a
training cell states), then, in the same kernel, moves every slider through its range as a person would. Each
notebook is copied into a temporary folder and run there, so its figures land in that folder and the committed
ones in ``figures/`` stay untouched.
"""
import copy
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from kdtutorial.course.outputs import compare_notebooks, load_sanitizers
from kdtutorial.course.report import metrics_from_notebook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
NBLINT = ROOT.parent / "shared" / "tools" / "nblint"

# Small but complete runs: every cell executes, with parameters other than the defaults.
SMALL = {  # text lessons: one seed (their verdict lines then say "not judged"), the cheapest complete run
    "01_soft_targets.ipynb": dict(N_SEEDS=2, EPOCHS=3, TEACHER_EPOCHS=2, GRID_T=[2.0], GRID_ALPHA=[0.5],
                                  TEMPERATURE=2.0, ALPHA=0.5, N_LABELS=30, SEED=3),
    "02_label_smoothing.ipynb": dict(N_SEEDS=2, EPOCHS=2, TEACHER_EPOCHS=2, KD_T=2.0, LS_EPSILON=0.2,
                                     DEFECTIVE_STEPS=1, TFKD_A=0.8, SEED=5),
    "03_distilbert_losses.ipynb": dict(N_SEEDS=1, BATCH_SIZE=16, HEAD_SENTENCES=64, HEAD_EPOCHS=1, DISTILL_SENTENCES=32,
                                       FINETUNE_SENTENCES=32, STUDENT_LAYERS=[0, 5], T=4.0, SEED=1),
    "04_annealing_kd.ipynb": dict(N_SEEDS=2, TEACHER_EPOCHS=2, TAU_MAX=2, EPOCHS_PER_STEP=1, STAGE2_EPOCHS=1,
                                  GAP_TEACHERS=["mlp-small"], TEACHER="mlp-medium", TA="mlp-small", SEED=1),
    "05_mate_kd.ipynb": dict(N_SEEDS=1, BATCH_SIZE=8, TEACHER_SENTENCES=48, STUDENT_SENTENCES=24, HEAD_SENTENCES=48,
                             HEAD_EPOCHS=1, N_GEN=1, N_STUDENT=2, FORM="release", SWEEP=True, SWEEP_N_GEN=[2],
                             STUDENT_LAYERS=[1], SEED=2),
    "06_qadsm_two_tower.ipynb": dict(N_SEEDS=1, TRAIN_PAIRS=64, TEST_PAIRS=256, TRANSFER_PAIRS=128, STUDENT_LAYERS=[1],
                                     KD_LOSS="bce", KD_TEMPERATURE=2.0, CANDIDATES="random", BATCH_SIZE=8, SEED=1,
                                     STUDENTS=["C-DSSM", "TwinBERT_1L", "TwinBERT_res"], MULTI_TEACHER=[],
                                     COMPARE_KD_LOSSES=True),
    "07_layer_distillation.ipynb": dict(N_SEEDS=1, BATCH_SIZE=16, TEACHER_SENTENCES=64, STUDENT_SENTENCES=32,
                                        SELECT_SENTENCES=32, STUDENT_SIZES=[2], RANDOM_INIT_VARIANT=True, T=2.0,
                                        BETA_PKD=10.0, PKD_BETAS=[1.0, 10.0], SEED=1),
    "08_language_model_distillation.ipynb": dict(N_SEEDS=1, STEPS=3, TRAIN_WINDOWS=16, HELDOUT_WINDOWS=8,
                                                 WIKI_WINDOWS=2, BATCH_SIZE=4, EVAL_BATCH=8, CONTINUATION_TOKENS=8,
                                                 STUDENT_LAYERS=[0, 29], TOP_K_SWEEP=[5], RANDOM_INIT_VARIANT=True,
                                                 BETA=1.0, LAM=1.0, SEED=1),
    "09_knn_augmentation.ipynb": dict(N_SEEDS=1, TEACHER_SENTENCES=64, STUDENT_SENTENCES=32, POOL_SENTENCES=500,
                                      STEPS=3, BATCH_SIZE=8, K=4, K1S=[2], RETRIEVER="tfidf", MAX_DISTANCE=1.0,
                                      STUDENT_LAYERS=[1], SEED=1),
    "10_all_methods.ipynb": dict(N_SEEDS=1, TASKS=["rte"], OPEN_TASK="rte", METHODS=["no KD", "KD", "Annealing + MATE",
                                                                                     "Minimax-kNN"],
                                 TEACHER_SENTENCES=48, STUDENT_SENTENCES=24, SELECT_SENTENCES=16, DEV_ROWS=32,
                                 HEAD_SENTENCES=48, HEAD_EPOCHS=1, PAIR_POOL_ROWS=32, UPDATES=3, BATCH_SIZE=8,
                                 CHECKPOINTS=1, K=2, K1=1, CKPT_SENTENCES=32, CKPT_EPOCHS=2, CKPT_EVERY=2,
                                 NOISE=[0.5], STUDENT_DEPTH=1, SEED=1),
}
# the data set each quick run reports (default: digits)
QUICK_DATASET = {"03_distilbert_losses.ipynb": "sst2", "05_mate_kd.ipynb": "sst2", "06_qadsm_two_tower.ipynb": "qadsm-de",
                 "07_layer_distillation.ipynb": "sst2", "08_language_model_distillation.ipynb": "imdb-unsup-sentences",
                 "09_knn_augmentation.ipynb": "sst2", "10_all_methods.ipynb": "glue"}
BAD = {
    "01_soft_targets.ipynb": ("N_SEEDS", 0, "N_SEEDS = 0 is not allowed: expected an integer from 1 to 50"),
    "02_label_smoothing.ipynb": ("DATASET", "cifar10",
                                 "DATASET = 'cifar10' is not allowed: expected one of 'digits', 'fashion-mnist'"),
    "03_distilbert_losses.ipynb": ("STUDENT_LAYERS", [0, 9],
                                   "STUDENT_LAYERS = [0, 9] is not allowed: the teacher has layers 0 to 5"),
    "04_annealing_kd.ipynb": ("TAU_MAX", 0, "TAU_MAX = 0 is not allowed: expected an integer from 1 to 100"),
    "05_mate_kd.ipynb": ("FORM", "both", "FORM = 'both' is not allowed: expected one of 'paper', 'release'"),
    "06_qadsm_two_tower.ipynb": ("CANDIDATES", "bm25",
                                 "CANDIDATES = 'bm25' is not allowed: expected one of 'neighbours', 'overlap', 'random'"),
    "07_layer_distillation.ipynb": ("STUDENT_SIZES", [6], "STUDENT_SIZES = [6] is not allowed: the teacher has 6 layers, "
                                    "a student 1 to 5"),
    "08_language_model_distillation.ipynb": ("STUDENT_LAYERS", [0, 30],
                                             "STUDENT_LAYERS: the teacher has layers 0..29; it lacks [30]"),
    "09_knn_augmentation.ipynb": ("K1S", [1, 16], "K1S = [1, 16] is not allowed with K = 8: expected every k1 in K1S "
                                  "at most K (Minimax-kNN keeps k1 of the K retrieved neighbours)"),
    "10_all_methods.ipynb": ("OPEN_TASK", "cola", "OPEN_TASK = 'cola' is not allowed with TASKS = ['sst2', 'mrpc']: "
                             "expected OPEN_TASK one of TASKS (the open problems reuse its prepared data)"),
}


SANITIZERS = ROOT / "tests" / "nbval_sanitize.cfg"
# appended to the copy that is run: move every slider the notebook made, after "Run All"
DRIVE_SLIDERS = ("import json\nfrom kdtutorial.course.widgets import drive_sliders\n"
                 "print('SLIDERS ' + json.dumps(drive_sliders(), default=str))")


# Notebooks whose quick profile runs torch on one thread (``set_cpu_threads(1 ...)``, checked below): two of them
# run side by side on a 2-core machine, with the same results as one at a time. The others use two threads and run
# alone (two 2-thread kernels on 2 cores slow each other down many times over).
SINGLE_THREADED = {"01_soft_targets.ipynb", "02_label_smoothing.ipynb", "04_annealing_kd.ipynb"}
SIDE_BY_SIDE = 2


def all_notebooks():
    return sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def run(name, tmp_path, copy=True, **parameters):
    """Execute ``name`` in ``tmp_path`` (a fresh copy of the committed notebook unless ``copy=False``: one is there)."""
    if copy:
        shutil.copy(NOTEBOOKS / name, tmp_path / name)
    out = tmp_path / f"out_{name}"
    pm.execute_notebook(str(tmp_path / name), str(out), parameters=parameters, kernel_name="python3",
                        cwd=str(tmp_path), progress_bar=False)
    return nbformat.read(out, as_version=4)


def committed_copy(name, folder):
    """The committed notebook, copied into ``folder`` with a last cell that moves every slider it made."""
    committed = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb = copy.deepcopy(committed)
    nb.cells.append(nbformat.v4.new_code_cell(DRIVE_SLIDERS))
    nbformat.write(nb, folder / name)
    return committed


# A cell that takes longer than this has hung: once, on a 2-core machine, a kernel finished the slider-driving cell
# while papermill, beside another kernel, kept waiting for its reply. Such a job is run once more, alone.
CELL_TIMEOUT_S = 600


def papermill_process(source, out, folder, parameters=None):
    """papermill in a process of its own (several run side by side), each cell limited to CELL_TIMEOUT_S."""
    command = [sys.executable, "-m", "papermill", str(source), str(out), "-k", "python3", "--cwd", str(folder),
               "--no-progress-bar", "--execution-timeout", str(CELL_TIMEOUT_S)]
    if parameters:
        command += ["-y", json.dumps(parameters)]
    log = open(Path(folder) / "papermill.log", "w")  # a file, not a pipe: a full pipe would block papermill
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def side_by_side(request, tmp_path_factory):
    """Runs the selected tests' single-threaded notebooks (committed copies and SMALL cases) SIDE_BY_SIDE at a time,
    before any two-thread notebook starts; maps (kind, name) to (folder, output path, papermill's stderr or None)."""
    wanted = []
    for item in request.session.items:
        name = getattr(item, "callspec", None) and item.callspec.params.get("name")
        kind = {"test_committed_outputs_reproduce_and_sliders_work": "committed",
                "test_runs_with_non_default_parameters": "small"}.get(item.originalname)
        if kind and name in SINGLE_THREADED:
            wanted.append((kind, name))
    done, queue, running, retried = {}, list(wanted), [], set()

    def may_start():
        if not queue or any(key in retried for key, _, _ in running):
            return False  # a job run again runs alone
        return len(running) < (1 if queue[0] in retried else SIDE_BY_SIDE)

    while queue or running:
        while may_start():
            kind, name = queue.pop(0)
            folder = tmp_path_factory.mktemp(f"{kind}_{name[:2]}")
            if kind == "committed":
                committed_copy(name, folder)
                process = papermill_process(folder / name, folder / f"out_{name}", folder)
            else:
                shutil.copy(NOTEBOOKS / name, folder / name)
                process = papermill_process(folder / name, folder / f"out_{name}", folder, SMALL[name])
            running.append(((kind, name), folder, process))
        time.sleep(0.5)
        for entry in list(running):
            key, folder, process = entry
            if process.poll() is not None:
                error = (folder / "papermill.log").read_text() if process.returncode else None
                running.remove(entry)
                if error and "timed out" in error.lower() and key not in retried:
                    retried.add(key)  # hung, not failed: once more, alone (see CELL_TIMEOUT_S)
                    queue.insert(0, key)
                    continue
                done[key] = (folder, folder / f"out_{key[1]}", error)
    return done


def executed(kind, name, tmp_path, side_by_side):
    """The executed copy of ``name`` (a committed copy or its SMALL case), run here or taken from side_by_side."""
    if name in SINGLE_THREADED:
        folder, out, error = side_by_side[kind, name]
        assert error is None, f"{name} ({kind}) failed under papermill:\n{error[-4000:]}"
        return folder, out
    if kind == "committed":
        committed_copy(name, tmp_path)
        run(name, tmp_path, copy=False)
    else:
        run(name, tmp_path, **SMALL[name])
    return tmp_path, tmp_path / f"out_{name}"


def test_single_threaded_notebooks_use_one_thread():
    for name in all_notebooks():
        source = "".join(c.source for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells)
        one = 'set_cpu_threads(1 if P.PROFILE == "quick"' in source
        assert one == (name in SINGLE_THREADED), f"{name}: SINGLE_THREADED does not match its set_cpu_threads call"


def test_every_notebook_has_a_small_and_a_bad_case():
    assert set(all_notebooks()) <= set(SMALL) and set(all_notebooks()) <= set(BAD)


@pytest.mark.parametrize("name", all_notebooks())
def test_committed_outputs_reproduce_and_sliders_work(name, tmp_path, report, side_by_side):
    committed = nbformat.read(NOTEBOOKS / name, as_version=4)
    _, out = executed("committed", name, tmp_path, side_by_side)
    fresh = nbformat.read(out, as_version=4)
    kept = ROOT / "runs" / "outputs" / "test"  # git-ignored: the fresh run, for a maintainer to diff or inspect
    kept.mkdir(parents=True, exist_ok=True)
    shutil.copy(out, kept / name)
    mismatches, counts = compare_notebooks(committed, fresh, load_sanitizers(SANITIZERS))
    printed = "".join(o.text for o in fresh.cells[-1].outputs if o.output_type == "stream" and o.name == "stdout")
    redraws = json.loads(next(line for line in printed.splitlines() if line.startswith("SLIDERS "))[len("SLIDERS "):])
    report(f"{name}: {counts['strict']} cells strict, {counts['tolerance']} within their stated tolerance, "
          f"{counts['ignored']} not compared (largest gap: {counts['most_used']:.0%} of its tolerance); "
          f"{len(redraws)} slider redraws")
    assert not mismatches, f"{name}: outputs differ from the committed ones:\n" + "\n".join(map(str, mismatches))
    broken = [r for r in redraws if r["figures"] != 1 or r["error"]]
    assert not broken, f"{name}: a slider redraw failed or did not show exactly one figure: {broken}"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_runs_with_non_default_parameters(name, tmp_path, side_by_side):
    folder, out = executed("small", name, tmp_path, side_by_side)
    metrics = metrics_from_notebook(nbformat.read(out, as_version=4))
    assert metrics["seeds"] == SMALL[name]["N_SEEDS"]
    assert metrics["dataset"] == QUICK_DATASET.get(name, "digits")
    assert any(p.suffix == ".png" for p in (folder / "figures").iterdir())


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_parameter_fails_with_a_clear_message(name, tmp_path):
    param, value, message = BAD[name]
    with pytest.raises(pm.PapermillExecutionError) as err:
        run(name, tmp_path, **{param: value})
    assert err.value.ename == "ParameterError"
    assert message in err.value.evalue


def test_knn_lesson_refuses_more_neighbours_than_the_pool_has(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as err:
        run("09_knn_augmentation.ipynb", tmp_path, POOL_SENTENCES=100, K=101, K1S=[1])
    assert err.value.ename == "ParameterError"
    assert "K = 101 is not allowed: the pool searched has 100 sentences (POOL_SENTENCES = 100)" in err.value.evalue


def test_bad_profile_fails_with_a_clear_message(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as err:
        run("01_soft_targets.ipynb", tmp_path, PROFILE="fast")
    assert "PROFILE = 'fast' is not allowed: expected one of 'quick', 'full'" in err.value.evalue


@pytest.mark.skipif(not NBLINT.exists(), reason="nblint lives in ../shared/tools (course maintainers' checkout)")
def test_nblint_clean():
    result = subprocess.run([sys.executable, str(NBLINT), "notebooks"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
