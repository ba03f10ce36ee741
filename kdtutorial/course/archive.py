"""The archived full-profile runs, shown beside a quick run's live numbers.

A quick run on a laptop CPU shows the mechanics of a lesson; only the full profile (a GPU, the whole data set,
more seeds) shows the result. The executed full-profile notebooks are archived in ``results/full/``. Their
headline metrics (what ``record_metrics`` recorded), their main results table, the device, the date and the
commit that archived them are collected into ``full_results.json`` beside this module, so a learner on Colab
or Binder, who has the package but not the repository's ``results/`` folder, sees them too.
``tests/course/test_archive.py`` rebuilds that file from ``results/full/`` and checks the two agree.

A lesson may also have *supplementary* full runs (``extras``): the same notebook run again in the full profile with
a few parameters changed (say, one task and a new section's grid, when the whole lesson with it would not fit one
GPU call). Each is archived beside the main run, names the parameters it changed, and contributes one table, shown
with ``show_full_table(lesson, extra=NAME)``. A main run may also name *parts* (``parts``): tables of its earlier
sections, shown where the lesson reaches them with ``show_full_table(lesson, part=NAME)``.

Maintainers: a full run made by the runner (``python -m kdtutorial run --profile full --merge --out results``) is
described by ``results/full/summary.json``: its ``SOURCES`` entry names only the notebook and its table, and the
commit, day and wall time are read from the summary. A run archived by hand declares them in ``SOURCES``. Then run
``python -m kdtutorial.course.archive`` to rewrite ``full_results.json``; ``python -m kdtutorial.course.archive
--compare`` first prints, for each lesson whose notebook in ``results/full/`` differs from the archived record, every
``mean ± std`` of its table beside the archived one and whether the difference is within seed noise
(:func:`~kdtutorial.course.fullsummary.compare_tables`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from kdtutorial.course.benchmarkarchive import BENCHMARK_FILE, build_benchmarks
from kdtutorial.course.fullsummary import compare_tables, device_of, minutes, summary_entry
from kdtutorial.course.outputs import output_text
from kdtutorial.course.report import metrics_from_notebook

ARCHIVE_FILE = Path(__file__).with_name("full_results.json")

#: lesson -> where its archived full run comes from: the notebook in results/full/, the commit that archived it,
#: its date, the wall time of the run, and the source line that starts the cell holding the main results table
#: (or a tuple of such lines: their cells' texts are joined); ``changed``: the parameters the main run changed from
#: the full profile, when a whole full profile would not fit one GPU call;
#: ``extras``: supplementary runs, name -> the same keys plus ``changed`` (the parameters that differ from the full
#: profile, as papermill got them; ``archived_as``: the file's name in the commit that archived it, when it was renamed
#: since); ``parts``: name -> ``table`` (start lines as above) and ``what`` (which sections
#: of the main run the table comes from)
#: lesson 06's results table and its gain lines, as the notebook printed them in November (two archived runs of then)
_NOVEMBER_06_TABLE = ("records, scores, servers = [], {}, {}", 'def mean_of(method, metric="roc_auc"):')

SOURCES = {
    "01_soft_targets": dict(notebook="01_soft_targets.ipynb", table="table = kd.statistics.summarize(records)"),
    "02_label_smoothing": dict(notebook="02_label_smoothing.ipynb", table="frame = pd.DataFrame(records)"),
    "03_distilbert_losses": dict(notebook="03_distilbert_losses.ipynb",
                                 table="table = kd.statistics.summarize(records)"),
    "04_annealing_kd": dict(notebook="04_annealing_kd.ipynb", table="ta_model, _, ta_acc ="),
    "05_mate_kd": dict(notebook="05_mate_kd.ipynb",
                       table="table = kd.statistics.summarize(records, order=list(METHODS))"),
    "06_qadsm_two_tower": dict(notebook="06_qadsm_two_tower.ipynb",
                               table=("train_speed = {", "from tqdm.auto import tqdm\n\nHOW = {",
                                      'def mean_of(method, metric="roc_auc"):'),
                               parts={"teachers": dict(
                                   table=("ads_text = kd.domainmlm.ads_side_texts(", "sample = transfer_pairs.subset(",
                                          "seeds = kd.statistics.seeds_from(P.SEED, P.N_SEEDS)\nteacher_records"),
                                   what="its sections up to the students: step (a), teacher scoring, the six teachers")},
                               extras={"recipe": dict(
                                   notebook="06_qadsm_two_tower_recipe.ipynb", commit="c03192d", date="2026-12-06",
                                   wall="6 min 28 s",
                                   table=("train_speed = {", "records, scores, servers = [], {}, {}",
                                          'def mean_of(method, metric="roc_auc"):'),
                                   changed="STUDENTS ['C-DSSM', 'TwinBERT_res'], MLM_EPOCHS 0, and label-only C-DSSM "
                                           "for 3 epochs (run before SCRATCH_EPOCHS, now 12, existed)"),
                                       "earlier": dict(
                                   notebook="06_qadsm_two_tower_earlier.ipynb", archived_as="06_qadsm_two_tower.ipynb",
                                   commit="e0e08f5", date="2026-11-22", wall="9 min 34 s",
                                   table=_NOVEMBER_06_TABLE,
                                   changed="the lesson as it was at commit e0e08f5: no step (a), one teacher, C-DSSM on "
                                           "labels only (6 epochs), TwinBERT_cos and TwinBERT_res"),
                                       "overlap": dict(
                                   notebook="06_qadsm_two_tower_overlap.ipynb", archived_as="06_qadsm_two_tower.ipynb",
                                   commit="940337c", date="2026-11-21", wall="9 min 16 s",
                                   table=_NOVEMBER_06_TABLE,
                                   changed="the lesson as it was at commit 940337c, whose transfer set paired each "
                                           "query with ads sharing a word first, then random ones (CANDIDATES "
                                           "'overlap'): one teacher, C-DSSM on labels only, TwinBERT_cos and "
                                           "TwinBERT_res")}),
    "07_layer_distillation": dict(notebook="07_layer_distillation.ipynb",
                                  table=("PAPER_SIZE = {m: 4 if m >= 3 else 2", "if len(P.TASKS) > 1:  # the average"),
                                  parts={"attention": dict(
                                      table="fig, axes = plt.subplots(1, len(alp_maps)",
                                      what="its section 7: the teacher layer each ALP-KD student layer attends to most"),
                                         "choices": dict(
                                      table=("search = kd.layercompare.beta_search(",
                                             "attention = {}  # the scaled variant's"),
                                      what="its section 8: PKD's beta chosen on held-out train, ALP-KD scaled"),
                                         "costs": dict(
                                      table="costs = pd.DataFrame(kd.layercompare.step_costs(",
                                      what="its section 9: each method's cost per step, on the GPU")},
                                  extras={"earlier": dict(
                                      notebook="07_layer_distillation_earlier.ipynb",
                                      archived_as="07_layer_distillation.ipynb", commit="5d40d14", date="2026-12-02",
                                      wall="8 min 16 s", table="PAPER_SIZE = {m: 4 if m >= 3 else 2",
                                      changed="the lesson as it was at commit 5d40d14, on an H200: no section 8, the "
                                              "students one after another")}),
    "08_language_model_distillation": dict(notebook="08_language_model_distillation.ipynb",
                                           table='METRICS = {"nll_reviews"',
                                           extras={"random_init": dict(
                                               notebook="08_language_model_distillation_random_init.ipynb",
                                               commit="3c00173", date="2026-12-06", wall="4 min 30 s",
                                               table="if P.RANDOM_INIT_VARIANT:",
                                               changed="METHODS ['supervised CE', 'word-level KD'], TOP_K_SWEEP [], "
                                                       "RANDOM_INIT_VARIANT True"),
                                               "earlier": dict(
                                               notebook="08_language_model_distillation_earlier.ipynb",
                                               archived_as="08_language_model_distillation.ipynb", commit="07d1c27",
                                               date="2026-12-02", wall="8 min 18 s", table='METRICS = {"nll_reviews"',
                                               changed="the lesson as it was at commit 813cfbc, on an H200: the "
                                                       "students one after another")}),
    "09_knn_augmentation": dict(notebook="09_knn_augmentation.ipynb", table="methods = kd.knnaug.knn_methods(P.K",
                                extras={"earlier": dict(
                                    notebook="09_knn_augmentation_earlier.ipynb",
                                    archived_as="09_knn_augmentation.ipynb", commit="80dbc54", date="2026-12-02",
                                    wall="5 min 35 s", table="methods = kd.knnaug.knn_methods(P.K",
                                    changed="the lesson as it was at commit 80dbc54, on an H200, archived by hand")}),
    "10_all_methods": dict(notebook="10_all_methods.ipynb", table="setting = kd.allmethods.AllSetting(",
                           extras={"earlier": dict(
                               notebook="10_all_methods_earlier.ipynb", archived_as="10_all_methods.ipynb",
                               commit="75d47f9", date="2026-12-02", wall="8 min 3 s",
                               table="setting = kd.allmethods.AllSetting(",
                               changed="the lesson as it was at commit fa69dc9, on an H200: its teachers' steps run "
                                       "eagerly; archived by hand")}),
}

#: lessons whose full run has not been archived yet, and why: a declared gap (the tests require every lesson to be
#: in SOURCES or here, never in both); beside() and show_full_table() say so in the notebook
PENDING: dict[str, str] = {}

#: lesson -> (metric key, label) of the headline numbers shown beside a quick run, in order
HEADLINES = {
    "01_soft_targets": [("dataset", "data set"), ("seeds", "seeds"), ("teacher_acc", "teacher accuracy (%)"),
                        ("scratch_acc", "student from scratch (%)"), ("kd_acc", "distilled student (%)"),
                        ("kd_chosen", "KD setting chosen on validation"), ("kd_gain", "gain of KD (points)"),
                        ("soft_only_acc", "soft targets only, no labels (%)")],
    "02_label_smoothing": [("dataset", "data set"), ("seeds", "seeds"), ("baseline_acc", "baseline student (%)"),
                           ("label_smoothing_gain", "label smoothing (gain, points)"),
                           ("normal_kd_gain", "normal KD (gain)"), ("reverse_kd_gain", "reverse KD (gain)"),
                           ("defective_kd_gain", "defective teacher (gain)"), ("tfkd_self_gain", "Tf-KD self (gain)"),
                           ("tfkd_reg_gain", "Tf-KD reg (gain)"), ("findings_reproduced", "findings reproduced")],
    "03_distilbert_losses": [("seeds", "seeds"), ("teacher_acc", "teacher, 6 layers (%)"),
                             ("distilled_acc", "distilled student, 3 layers (%)"),
                             ("no_distill_acc", "same student, no distillation (%)"),
                             ("random_init_acc", "random init + triple loss (%)"),
                             ("retained_pct", "retained (% of the teacher)"), ("speedup", "CPU speed-up (x)")],
    "04_annealing_kd": [("dataset", "data set"), ("seeds", "seeds"), ("teacher_acc", "teacher (%)"),
                        ("scratch_acc", "scratch (%)"), ("vanilla_kd_acc", "vanilla KD (%)"), ("takd_acc", "TAKD (%)"),
                        ("annealing_kd_acc", "Annealing KD (%)"), ("akd_minus_kd", "Annealing KD - KD (points)")],
    "05_mate_kd": [("seeds", "seeds"), ("teacher_acc", "teacher (%)"), ("no_kd_acc", "student, no KD (%)"),
                   ("kd_acc", "KD (%)"), ("random_mask_acc", "KD + random mask (%)"), ("mate_kd_acc", "MATE-KD (%)"),
                   ("mate_minus_kd", "MATE-KD - KD (points)")],
    "06_qadsm_two_tower": [("seeds", "seeds"), ("transfer_pairs", "transfer pairs"), ("teacher_auc", "teacher ROC-AUC"),
                           ("multi_teacher_auc", "mean of the teachers, ROC-AUC"),
                           ("teacher_scoring_pairs_per_s", "teacher scoring (pairs/s)"),
                           ("cdssm_auc", "C-DSSM, labels only"), ("cdssm_distilled_auc", "C-DSSM, distilled"),
                           ("cdssm_multi_auc", "C-DSSM, distilled from the mean"),
                           ("cdssm_gain_kept_pct", "C-DSSM: share of the teacher's gain kept (%)"),
                           ("best_small_student", "small student gaining most"),
                           ("best_small_gain_points", "its KD gain (AUC points)"),
                           ("res_label_auc", "TwinBERT_res, labels only"), ("res_distilled_auc", "TwinBERT_res, distilled"),
                           ("res_kd_gain_points", "KD gain, TwinBERT_res (AUC points)"),
                           ("retained_pct", "retained (% of the teacher's AUC)"),
                           ("serving_ratio_res", "serving speed-up, TwinBERT_res (x)")],
    "07_layer_distillation": [("task", "task (the first of the run)"), ("seeds", "seeds"),
                              ("student_layers", "student layers"), ("teacher_score", "teacher (dev)"),
                              ("no_kd", "no KD"), ("kd", "KD"), ("pkd_skip", "PKD-Skip"), ("pkd_last", "PKD-Last"),
                              ("tinybert", "TinyBERT"), ("ckd_no", "CKD-NO"), ("ckd_po", "CKD-PO"), ("alp_kd", "ALP-KD"),
                              ("alp_minus_pkd", "ALP-KD - PKD-Skip (points)"), ("alp_vs_pkd", "ALP-KD vs PKD-Skip")],
    "08_language_model_distillation": [
        ("seeds", "seeds"), ("student_layers", "student layers"), ("tokens", "training tokens per student"),
        ("teacher_ppl", "teacher perplexity (reviews)"), ("ce_ppl", "supervised CE"), ("word_kd_ppl", "word-level KD"),
        ("top_k_kd_ppl", "top-k KD"), ("seq_kd_ppl", "sequence-level KD"), ("on_policy_ppl", "on-policy JSD"),
        ("word_kd_logp", "teacher log p of samples: word-level KD"),
        ("on_policy_logp", "teacher log p of samples: on-policy JSD"),
        ("on_policy_vs_word_kd_logp", "on-policy vs word-level KD (teacher log p)")],
    "09_knn_augmentation": [
        ("seeds", "seeds"), ("pool_sentences", "pool sentences searched"), ("retriever", "retriever"),
        ("teacher_acc", "teacher (%)"), ("kd_acc", "KD (%)"), ("random_acc", "KD + random pool (%)"),
        ("vanilla_acc", "KD + vanilla kNN (%)"), ("minimax_acc", "KD + Minimax-kNN, largest k1 (%)"),
        ("minimax_minus_vanilla", "Minimax - vanilla (points)"), ("minimax_vs_vanilla", "Minimax vs vanilla"),
        ("time_saving_pct", "training time saved, Minimax vs vanilla (%)")],
    "10_all_methods": [
        ("tasks", "tasks"), ("seeds", "seeds"), ("updates", "student updates"), ("no_kd_avg", "no KD (task average)"),
        ("kd_avg", "KD"), ("pkd_avg", "PKD"), ("alp_avg", "ALP-KD"), ("annealing_avg", "Annealing KD"),
        ("mate_avg", "MATE-KD"), ("minimax_avg", "Minimax-kNN"), ("combined_avg", "Annealing + MATE"),
        ("ordering_reproduced", "steps of the talk's ordering reproduced"),
        ("inflation_avg", "dev-selection inflation (points)"),
        ("best_ckpt_student", "KD student of the best checkpoint"),
        ("early_ckpt_student", "KD student of the early checkpoint"),
        ("noisy_labels_only", "labels only, most noise"), ("noisy_kd_teacher", "KD alpha 0.9, most noise")],
}

_PROGRESS = re.compile(r"\d+%\|")  # a tqdm progress bar's line


@dataclass(frozen=True)
class FullRun:
    """One archived full-profile run of a lesson."""

    lesson: str
    notebook: str
    device: str
    software: str
    commit: str
    date: str
    wall: str
    metrics: dict = field(default_factory=dict)
    table: str = ""
    extras: dict = field(default_factory=dict)
    parts: dict = field(default_factory=dict)  # name -> {"what": which sections, "table": their text}
    changed: str | None = None  # parameters the main run changed from the full profile (when it did)

    @property
    def label(self) -> str:
        """``archived full run (NVIDIA H100 80GB HBM3, 2026-11-21, commit 618bf25)``."""
        return f"archived full run ({self.device}, {self.date}, commit {self.commit})"

    @property
    def short_label(self) -> str:
        """``full run: H100, 2026-11-21, 618bf25``: a table column's name."""
        gpu = self.device.removeprefix("NVIDIA ").split()[0]
        return f"full run: {gpu}, {self.date}, {self.commit}"


def _cell_text(cell) -> str:
    """What a cell printed to stdout and showed as plain text (:func:`~kdtutorial.course.outputs.output_text`'s
    rule: no images, no widget views), without stderr and without progress-bar lines."""
    shown = [o for o in cell.get("outputs", []) if o.get("output_type") != "stream" or o.get("name") == "stdout"]
    text = output_text({"outputs": shown}).replace("[stdout] ", "")
    return "\n".join(line for line in text.splitlines() if not _PROGRESS.search(line)).strip("\n")


def _table(nb: dict, table, notebook: str) -> str:
    """The text shown by the cells of ``nb`` whose source starts with ``table`` (one start line, or a tuple of them:
    their cells' texts joined in that order)."""
    starts = (table,) if isinstance(table, str) else tuple(table)
    tables = {}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        text = _cell_text(cell)
        for start in starts:
            if "".join(cell["source"]).startswith(start) and text:
                tables.setdefault(start, text)
    if len(tables) < len(starts):
        raise ValueError(f"{notebook}: no cell starting {' or '.join(repr(s) for s in starts if s not in tables)}")
    return "\n\n".join(tables[s] for s in starts)


def _read_run(source: dict, results_dir: str | Path) -> tuple[dict, dict]:
    """The record of one archived notebook (file, device, software, commit, date, wall time, table; see
    :data:`SOURCES`), and the notebook itself."""
    nb = json.loads((Path(results_dir) / source["notebook"]).read_text())
    device, software = device_of(nb)
    if device is None:
        raise ValueError(f"{source['notebook']}: no banner line (python | torch | device)")
    table = _table(nb, source["table"], source["notebook"])
    when = {key: source.get(key) for key in ("commit", "date", "wall")}
    entry = summary_entry(Path(results_dir) / "summary.json", source["notebook"]) if None in when.values() else None
    if entry is not None:  # a run archived by the runner: its commit, day and wall time come from summary.json
        when = {"commit": when["commit"] or entry.get("commit"),
                "date": when["date"] or (entry.get("finished_at") or "")[:10] or None,
                "wall": when["wall"] or minutes(entry.get("wall_seconds") or entry.get("seconds"))}
    missing = [key for key, value in when.items() if not value]
    if missing:
        raise ValueError(f"{source['notebook']}: no {', '.join(missing)}: declare it in SOURCES, or archive the run "
                         f"with python -m kdtutorial run --profile full --merge --out results (summary.json)")
    return dict(notebook=source["notebook"], device=device, software=software, table=table, **when), nb


def extract(lesson: str, results_dir: str | Path) -> dict:
    """Read one lesson's archived notebook (and its supplementary runs) in ``results_dir`` into the record
    ``full_results.json`` holds."""
    if lesson not in SOURCES:
        raise KeyError(f"no archived full run is declared for {lesson!r}: known are {', '.join(SOURCES)}")
    run, nb = _read_run(SOURCES[lesson], results_dir)
    table = run.pop("table")
    record = dict(lesson=lesson, **run, metrics=metrics_from_notebook(nb), table=table)
    if SOURCES[lesson].get("changed"):
        record["changed"] = SOURCES[lesson]["changed"]
    if SOURCES[lesson].get("parts"):
        record["parts"] = {name: dict(what=part["what"], table=_table(nb, part["table"], run["notebook"]))
                           for name, part in SOURCES[lesson]["parts"].items()}
    extras = {name: {**_read_run(extra, results_dir)[0], "changed": extra["changed"]}
              for name, extra in SOURCES[lesson].get("extras", {}).items()}
    return {**record, "extras": extras} if extras else record


def build_archive(results_dir: str | Path) -> dict:
    """Every declared lesson's record, as ``full_results.json`` stores them."""
    return {lesson: extract(lesson, results_dir) for lesson in SOURCES}


def full_run(lesson: str, archive: str | Path = ARCHIVE_FILE) -> FullRun:
    """The archived full-profile run of ``lesson`` (e.g. ``"01_soft_targets"``)."""
    records = json.loads(Path(archive).read_text())
    if lesson not in records:
        raise KeyError(f"no archived full run of {lesson!r}: archived are {', '.join(records)}")
    return FullRun(**records[lesson])


def _shown(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return "-" if value is None else str(value)


def beside(lesson: str, live: dict, live_label: str = "this run", archive: str | Path = ARCHIVE_FILE):
    """A table of the lesson's headline numbers: ``live`` (metric key -> value, this run's, e.g. what
    ``record_metrics`` returned; other keys are left out) beside the archived full run's, one row per headline
    metric, labelled with the archived run's device, date and commit (``FullRun.short_label``)."""
    import pandas as pd

    if lesson not in json.loads(Path(archive).read_text()):  # a lesson whose full run is not archived yet
        return pd.DataFrame({live_label: {label: _shown(live.get(key)) for key, label in HEADLINES[lesson]
                                          if key in live}})
    run = full_run(lesson, archive)
    if not set(live) & {key for key, _ in HEADLINES[lesson]}:
        raise KeyError(f"{lesson}: none of {', '.join(sorted(live))} is a headline metric "
                       f"({', '.join(key for key, _ in HEADLINES[lesson])})")
    rows = {label: {live_label: _shown(live.get(key)), run.short_label: _shown(run.metrics.get(key))}
            for key, label in HEADLINES[lesson] if key in live or key in run.metrics}
    return pd.DataFrame(rows).T


def show_full_table(lesson: str, archive: str | Path = ARCHIVE_FILE, extra: str | None = None,
                    part: str | None = None) -> None:
    """Print the archived full run's main results table under a label naming its device, date and commit;
    ``extra``: the table of that supplementary run instead, labelled the same way and naming what it changed;
    ``part``: the table of those earlier sections of the main run."""
    if extra is not None and part is not None:
        raise ValueError(f"extra = {extra!r} and part = {part!r}: give one of them (a part belongs to the main run)")
    if lesson not in json.loads(Path(archive).read_text()):
        print(f"no archived full run of {lesson} yet: run the full profile (make full) to make one")
        return
    run = full_run(lesson, archive)
    if part is not None:
        if part not in run.parts:
            print(f"no part {part!r} in the archived full run of {lesson} (parts: {', '.join(run.parts) or 'none'})")
            return
        print(f"{run.label}, {run.wall}, {run.software}; results/full/{run.notebook}, {run.parts[part]['what']}:")
        print(run.parts[part]["table"])
        return
    if extra is None:
        what = f"; the full profile with {run.changed}" if run.changed else ""
        print(f"{run.label}, {run.wall}, {run.software}; results/full/{run.notebook}{what}:")
        print(run.table)
        return
    if extra not in run.extras:  # like a lesson without an archived run: said, not raised
        print(f"no archived supplementary full run {extra!r} of {lesson} yet (archived: "
              f"{', '.join(run.extras) or 'none'})")
        return
    x = run.extras[extra]
    print(f"archived supplementary full run ({x['device']}, {x['date']}, commit {x['commit']}), {x['wall']}, {x['software']}; "
          f"results/full/{x['notebook']}; the full profile with {x['changed']}:")
    print(x["table"])


def reproduction(results_dir: str | Path, archive: str | Path = ARCHIVE_FILE) -> str:
    """Markdown: for each lesson whose main notebook in ``results_dir`` is another run than the archived record (its
    commit differs), every ``mean ± std`` of the main table in both runs, the difference and whether it is within seed
    noise (:func:`~kdtutorial.course.fullsummary.compare_tables`)."""
    records = json.loads(Path(archive).read_text())
    parts = ["# Full-profile re-runs against the archived records", "",
             "Generated by `python -m kdtutorial.course.archive --compare` before `full_results.json` was rebuilt: for "
             "each lesson run again, every mean ± std of its results table beside the archived run's.", ""]
    for lesson in SOURCES:
        fresh = extract(lesson, results_dir)
        old = records.get(lesson)
        if old is None or old["commit"] == fresh["commit"]:
            continue
        seeds = old.get("metrics", {}).get("seeds")  # for a table that prints no count column
        rows = compare_tables(old["table"], fresh["table"], seeds=seeds if isinstance(seeds, int) else None)
        within = sum(r["within_noise"] for r in rows)
        parts += [f"### {lesson}: {fresh['device']}, commit {fresh['commit']} ({fresh['wall']}) against the archived "
                  f"{old['device']}, commit {old['commit']} ({old['wall']})", "",
                  f"{within} of {len(rows)} means within seed noise (|difference| <= 2 standard errors of the "
                  f"difference, plus the printed precision).", "",
                  "| row | column | archived (seeds) | fresh (seeds) | difference | allowed | within noise |",
                  "|---|---|---|---|---|---|---|"]
        parts += [f"| {r['row']} | {r['column']} | {r['archived']} | {r['fresh']} | {r['difference']:+g} | "
                  f"{r['allowed']:g} | {'yes' if r['within_noise'] else '**no**'} |" for r in rows]
        parts.append("")
    return "\n".join(parts)


def archive_command(argv=None) -> None:
    """``python -m kdtutorial.course.archive [--compare] [RESULTS_DIR]``: rebuild ``full_results.json`` from the
    executed notebooks in ``RESULTS_DIR`` (default: the checkout's ``results/full``), and ``benchmark_results.json``
    from the benchmark files there (:mod:`~kdtutorial.course.benchmarkarchive`); or with ``--compare`` print
    :func:`reproduction` instead (run it before rebuilding)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kdtutorial.course.archive", description=archive_command.__doc__)
    parser.add_argument("results_dir", nargs="?", type=Path,
                        default=Path(__file__).resolve().parents[2] / "results" / "full",
                        help="the folder holding the executed full-profile notebooks and summary.json")
    parser.add_argument("--compare", action="store_true",
                        help="print every re-run lesson's means beside the archived record's, write nothing")
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        parser.error(f"results_dir {str(args.results_dir)!r} is not a folder: give the folder of the executed "
                     f"full-profile notebooks (results/full in a checkout)")
    if args.compare:
        print(reproduction(args.results_dir))
    else:
        ARCHIVE_FILE.write_text(json.dumps(build_archive(args.results_dir), indent=1, ensure_ascii=False) + "\n")
        BENCHMARK_FILE.write_text(json.dumps(build_benchmarks(args.results_dir), indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {ARCHIVE_FILE} and {BENCHMARK_FILE}")


if __name__ == "__main__":
    archive_command()
