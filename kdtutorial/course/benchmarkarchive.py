"""Archived GPU benchmarks whose numbers a lesson's prose quotes, shown by a cell of that lesson.

Some findings of a lesson come from a benchmark script run on a GPU (``benchmarks/``), not from the notebook's own
cells: say, how far a C-DSSM trained longer on the labels closes the gap to the distilled one. The script writes JSON
lines, archived in ``results/full/``. A learner on Colab or Binder has the package but not that folder, so the lines
a lesson quotes are collected into ``benchmark_results.json`` beside this module, and
:func:`show_benchmark` prints them as a table under a label naming the device, the date, the commit that archived the
file and the script. A lesson's prose then quotes numbers that a cell of the lesson shows.

Maintainers: declare a benchmark in :data:`BENCHMARKS` (after committing its file: ``commit`` is the commit that last
changed it), then run ``python -m kdtutorial.course.archive``, which rewrites ``benchmark_results.json`` together with
the full runs' archive; ``tests/course/test_benchmarkarchive.py`` rebuilds it from ``results/full/`` and checks the two
agree.
"""
from __future__ import annotations

import json
from pathlib import Path

BENCHMARK_FILE = Path(__file__).with_name("benchmark_results.json")

#: lesson -> name -> an archived benchmark: its JSON-lines ``file`` in results/full/, the ``script`` that wrote it, the
#: ``commit`` that last changed the file, its ``date``, the ``device``, ``what`` it measured; which lines to keep
#: (``select``: key -> value every kept line has, None for "has the key"; or a list of such, a line kept when it
#: matches one) and which of their keys to show (``columns``; a nested value's key is joined to its parent's with a
#: dot; a kept line may lack a column that another kept line has)
BENCHMARKS = {
    "06_qadsm_two_tower": {
        "cdssm_distillation": dict(
            file="06_cdssm_distillation_h100.jsonl", script="benchmarks/cdssm_distillation.py", commit="d33ec69",
            date="2026-12-07", device="NVIDIA H100 80GB HBM3",
            what="C-DSSM on the labels for 3, 6 and 12 epochs against distilled over 1, 3 and 8 passes of the "
                 "million-pair transfer set (then 2 epochs on the labels with the KD term), seeds 0-2; each side's "
                 "setting chosen on the dev split, test ROC-AUC read once",
            select={"step": "summary"},
            columns=["teacher_test_auc", "test_auc.labels only, 3 epochs", "test_auc.labels only, 6 epochs",
                     "test_auc.labels only, 12 epochs", "test_auc.distilled, 1 pass", "test_auc.distilled, 3 passes",
                     "test_auc.distilled, 8 passes", "best_on_dev.labels only", "best_on_dev.distilled",
                     "gain_points", "ci95_points", "higher_in", "verdict", "gain_kept_pct"]),
        "linear_bound": dict(
            file="06_lean_scoring_h100.jsonl", script="benchmarks/lean_scoring.py", commit="3c00173",
            date="2026-12-06", device="NVIDIA H100 80GB HBM3",
            what="MiniLM-L6's linear layers alone (no attention, no layer norm) at the median pair length, in bf16: "
                 "a ceiling for a scorer that computes every position of every layer; two calls, two batch sizes each",
            select={"linear_bound": None},
            columns=["linear_bound.length", "linear_bound.batch", "linear_bound.pairs_per_s", "linear_bound.tflops"]),
        "student_processes": dict(
            file="06_student_processes_h100.jsonl", script="benchmarks/two_tower_processes.py", commit="fa91d1e",
            date="2026-12-07", device="NVIDIA H100 80GB HBM3",
            what="the lesson's student jobs (full-profile epochs and batches, a million random transfer pairs, "
                 "stand-in teacher logits) one after another (workers 1) against in processes sharing the GPU, and how far "
                 "each job's test logits moved between the two ways; run 1: C-DSSM and TwinBERT_res, run 2: all four "
                 "students, one seed, labels only and distilled",
            select=[{"step": "students"}, {"step": "agreement"}],
            columns=["run", "step", "jobs", "workers", "seconds", "seconds_per_job", "max_abs_logit_gap",
                     "jobs_identical"]),
        "teacher_room": dict(
            file="06_teacher_room_h200.jsonl", script="benchmarks/qadsm_teacher_room.py", commit="d937ad9",
            date="2026-12-07", device="NVIDIA H200",
            what="C-DSSM and TwinBERT-Tiny on the labels only and distilled (the full profile's steps d and e, seeds "
                 "0-2) from a cross-encoder teacher on all-MiniLM-L6-v2 or on all-mpnet-base-v2 (12 layers, 768 wide) "
                 "fine-tuned at rate teacher_lr, one teacher seed; the same transfer set, student weights and seeds "
                 "for all; test ROC-AUC; two runs",
            select={"step": "summary"},
            columns=["run", "teacher", "teacher_lr", "teacher_test_auc", "student", "labels_only", "distilled",
                     "gain_points", "ci95_points", "higher_in", "verdict", "gain_kept_pct"]),
        "kd_gain": dict(
            file="06_kd_gain_h100.jsonl", script="benchmarks/qadsm_transfer_sets.py", commit="dc9ba76",
            date="2026-11-22", device="NVIDIA H100 80GB HBM3",
            what="TwinBERT_res, one seed (0), the neighbours transfer set: on the labels only, and distilled from one "
                 "teacher or the mean of three over 1 or 3 passes, then fine-tuned on the labels; test ROC-AUC",
            select=[{"step": "teacher"}, {"step": "ensemble"}, {"step": "label_only"}, {"step": "distilled"}],
            columns=["step", "seed", "teacher", "distil_epochs", "roc_auc_before_labels", "roc_auc"]),
    },
    "07_layer_distillation": {
        "step_graphs": dict(
            file="07_step_graphs_h100.jsonl", script="benchmarks/text_step_graphs.py", commit="299f4bc",
            date="2026-12-07", device="NVIDIA H100 80GB HBM3",
            what="the PKD-Skip step (distil_with_layers) of a 3-layer MiniLM student under a 6-layer teacher (MiniLM with "
                 "a fresh head), 8,000 SST-2 sentences, batch 64, bf16: eager (each batch padded to its longest "
                 "sentence, the teacher run every step) against graphs=True (one width, 63 tokens), one seed alone, "
                 "then 8 processes at once (--term pkd-skip --batch 64 --seeds 1 --sentences 8000; the code of 98e98c9)",
            select=[{"step": "alone"}, {"step": "together"}],
            columns=["step", "mode", "procs", "steps", "ms_per_step", "steps_per_s", "dev_acc"]),
    },
}


def _flat(row: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: a nested line's keys joined with dots."""
    out = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_rows(path: str | Path, select: dict | list[dict], columns: list) -> list[dict]:
    """The lines of the JSON-lines file ``path`` that match ``select`` (key -> value, None: the key is there; or a
    list of such, any of them), each reduced to ``columns`` (dotted keys of its flattened form; None where a line lacks
    one). Raises ``ValueError`` when no line matches or no kept line has a column."""
    choices = select if isinstance(select, list) else [select]
    rows = []
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        if any(all(key in row and (want is None or row[key] == want) for key, want in choice.items())
               for choice in choices):
            flat = _flat(row)
            rows.append({c: flat.get(c) for c in columns})
    if not rows:
        raise ValueError(f"{Path(path).name}: no line has {select}")
    missing = [c for c in columns if all(r[c] is None for r in rows)]
    if missing:
        raise ValueError(f"{Path(path).name}: no kept line has {', '.join(missing)}")
    return rows


def build_benchmarks(results_dir: str | Path) -> dict:
    """Every declared benchmark's record (lesson -> name -> file, script, commit, date, device, what, rows), as
    ``benchmark_results.json`` stores them."""
    return {lesson: {name: {**{k: v for k, v in spec.items() if k not in ("select", "columns")},
                            "rows": read_rows(Path(results_dir) / spec["file"], spec["select"], spec["columns"])}
                     for name, spec in named.items()}
            for lesson, named in BENCHMARKS.items()}


def show_benchmark(lesson: str, name: str, archive: str | Path = BENCHMARK_FILE) -> None:
    """Print the archived benchmark ``name`` of ``lesson``: a label (device, date, commit, script, file, what it
    measured), then its kept lines as a table (one line: one value per row)."""
    import pandas as pd

    records = json.loads(Path(archive).read_text())
    known = records.get(lesson, {})
    if name not in known:
        raise KeyError(f"no archived benchmark {name!r} for {lesson!r}: archived are {', '.join(known) or 'none'}")
    b = known[name]
    print(f"archived benchmark ({b['device']}, {b['date']}, commit {b['commit']}): {b['script']}, "
          f"results/full/{b['file']}; {b['what']}:")
    frame = pd.DataFrame([{key: _cell(value) for key, value in row.items()} for row in b["rows"]])
    if len(frame) == 1:
        print(frame.iloc[0].to_string())
    else:
        print(frame.to_string(index=False))


def _cell(value) -> str:
    """A value as the table shows it: "-" for a column the line lacks, large numbers with thousands separators (and one
    decimal), other numbers as written in the file (0.8139, 73.2, 90.0)."""
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) >= 100:
        return f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return repr(value) if isinstance(value, float) else str(value)
