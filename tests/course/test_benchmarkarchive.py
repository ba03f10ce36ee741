"""The archived GPU benchmarks a lesson quotes: the packaged file equals a rebuild from results/full/, each declared
commit archived its file, and the printed table names where the numbers come from."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kdtutorial.course import benchmarkarchive

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results" / "full"


def test_packaged_benchmarks_equal_a_rebuild_from_results():
    packaged = json.loads(benchmarkarchive.BENCHMARK_FILE.read_text())
    assert packaged == benchmarkarchive.build_benchmarks(RESULTS), "run: python -m kdtutorial.course.archive"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_each_declared_commit_last_changed_its_file():
    for lesson, named in benchmarkarchive.BENCHMARKS.items():
        for name, spec in named.items():
            last = subprocess.run(["git", "log", "-1", "--format=%h %ad", "--date=short", "--",
                                   f"results/full/{spec['file']}"], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout.split()
            assert last, f"{lesson}/{name}: {spec['file']} is not committed"
            assert last[0].startswith(spec["commit"]) or spec["commit"].startswith(last[0]), (lesson, name, last)
            assert last[1] == spec["date"], (lesson, name, last)
            assert (ROOT / spec["script"]).is_file(), spec["script"]


def test_show_benchmark_labels_the_numbers_and_refuses_unknown_names(capsys):
    benchmarkarchive.show_benchmark("06_qadsm_two_tower", "student_processes")
    out = capsys.readouterr().out
    assert out.startswith("archived benchmark (NVIDIA H100 80GB HBM3, 2026-12-07, commit fa91d1e): "
                          "benchmarks/two_tower_processes.py, results/full/06_student_processes_h100.jsonl;")
    assert "140.4" in out and "103.6" in out  # 8 jobs one after another and in 6 processes
    assert "agreement" in out and "0.319" in out  # the largest logit gap between the two ways
    benchmarkarchive.show_benchmark("06_qadsm_two_tower", "cdssm_distillation")
    out = capsys.readouterr().out
    assert "test_auc.labels only, 12 epochs          0.7676 +- 0.0023" in out and "-2.5" in out
    benchmarkarchive.show_benchmark("06_qadsm_two_tower", "kd_gain")
    out = capsys.readouterr().out  # a column a line lacks shows as "-"; AUCs as written in the file
    assert "label_only    -" in out and "0.8267" in out and "0.7845" in out
    benchmarkarchive.show_benchmark("06_qadsm_two_tower", "teacher_room")
    out = capsys.readouterr().out  # the H200 label and the numbers lesson 06 quotes
    assert out.startswith("archived benchmark (NVIDIA H200, 2026-12-07, commit d937ad9): ")
    for quoted in ("0.6396", "0.8326", "0.8142", "-2.47", "-1.2 ", "-0.68", "0.25", "0.8316"):
        assert quoted in out
    with pytest.raises(KeyError, match="archived are cdssm_distillation, linear_bound, student_processes, "
                                       "teacher_room, kd_gain"):
        benchmarkarchive.show_benchmark("06_qadsm_two_tower", "nothing")


def test_read_rows_selects_flattens_and_names_what_is_missing(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"device": "x"}, {"step": "a", "n": {"k": 1}},
                                                       {"step": "b", "n": {"k": 2}}, {"bound": {"k": 3}}]) + "\n")
    assert benchmarkarchive.read_rows(path, {"step": "b"}, ["n.k"]) == [{"n.k": 2}]
    assert benchmarkarchive.read_rows(path, {"step": None}, ["step"]) == [{"step": "a"}, {"step": "b"}]
    assert benchmarkarchive.read_rows(path, {"bound": None}, ["bound.k"]) == [{"bound.k": 3}]
    assert benchmarkarchive.read_rows(path, [{"step": "a"}, {"bound": None}], ["step", "bound.k"]) == [
        {"step": "a", "bound.k": None}, {"step": None, "bound.k": 3}]  # either choice; a missing column is None
    with pytest.raises(ValueError, match="b.jsonl: no kept line has m"):
        benchmarkarchive.read_rows(path, {"step": "a"}, ["m"])
    with pytest.raises(ValueError, match="no line has"):
        benchmarkarchive.read_rows(path, {"step": "c"}, ["n.k"])
