"""The full profile's one summary (issue 21): calls of the runner merged by notebook, the README table generated
from it (on a fixture), the device read from an executed notebook's banner."""
import json

import pytest

from pathlib import Path

from kdtutorial.course import fullsummary, runner

ROOT = Path(__file__).resolve().parents[2]


def nb_entry(name, seconds, device="NVIDIA H200", status="ok", **metrics):
    return {"name": name, "status": status, "seconds": seconds - 1, "wall_seconds": seconds, "peak_mib": 2048.0,
            "metrics": metrics, "device": device, "software": "python 3.12.3, torch 2.11.0", "commit": "abc1234"}


def call(notebooks, started="2026-12-06T10:00:00", params=None):
    return {"profile": "full", "started_at": started, "finished_at": started.replace("10:", "11:"),
            "total_seconds": sum(n["wall_seconds"] for n in notebooks), "versions": {"torch": "2.11.0"},
            "kernel": "python3", "parameters": params or {"PROFILE": "full"},
            "failed": sum(n["status"] != "ok" for n in notebooks), "notebooks": notebooks}


def test_calls_merge_by_notebook_and_a_rerun_replaces_its_entry():
    first = fullsummary.merge_summaries(None, call([nb_entry("02_b.ipynb", 100), nb_entry("01_a.ipynb", 50)]))
    assert [c["started_at"] for c in first["calls"]] == ["2026-12-06T10:00:00"]
    second = call([nb_entry("03_c.ipynb", 200, status="failed"), nb_entry("01_a.ipynb", 40)], "2026-12-06T10:30:00")
    merged = fullsummary.merge_summaries(first, second)
    assert [n["name"] for n in merged["notebooks"]] == ["01_a.ipynb", "02_b.ipynb", "03_c.ipynb"]
    assert [n["wall_seconds"] for n in merged["notebooks"]] == [40, 100, 200]  # 01 run again: the new entry
    assert merged["total_seconds"] == 340 and merged["failed"] == 1 and len(merged["calls"]) == 2
    assert merged["started_at"] == "2026-12-06T10:00:00"
    with pytest.raises(ValueError, match="cannot merge a 'quick' run into a summary of the 'full' profile"):
        fullsummary.merge_summaries(merged, {**second, "profile": "quick"})


def test_the_readme_table_names_the_device_once_and_shows_the_headlines():
    summary = fullsummary.merge_summaries(None, call([
        nb_entry("01_soft_targets.ipynb", 95, seeds=5, teacher_acc=92.4, kd_acc=89.1, not_a_headline=1),
        nb_entry("04_annealing_kd.ipynb", 61, status="failed")]))
    table = fullsummary.full_table(summary, headlines={
        "01_soft_targets": [("seeds", "seeds"), ("teacher_acc", "teacher (%)"), ("kd_acc", "distilled (%)")]})
    lines = table.splitlines()
    assert lines[0] == ("Full profile on NVIDIA H200 (python 3.12.3, torch 2.11.0): 2 notebook(s), 2 min 36 s in all, "
                        "1 failed.")
    assert lines[2] == "| notebook | wall time | peak memory | commit | headline metrics |"
    assert lines[4] == ("| [01_soft_targets](results/full/01_soft_targets.ipynb) | 1 min 35 s | 2.0 GiB | abc1234 | "
                        "seeds 5; teacher (%) 92.4; distilled (%) 89.1 |")
    assert lines[5].startswith("| [04_annealing_kd](results/full/04_annealing_kd.ipynb) (**FAILED**) | 1 min 1 s |")


def test_the_table_goes_between_the_markers_and_nowhere_else():
    readme = f"# Title\n\n{fullsummary.START}\nold table\n{fullsummary.END}\n\nmore\n"
    new = fullsummary.replace_table(readme, "| new |\n")
    assert new == f"# Title\n\n{fullsummary.START}\n| new |\n{fullsummary.END}\n\nmore\n"
    assert fullsummary.replace_table(new, "| new |\n") == new  # idempotent
    with pytest.raises(ValueError, match="the README has no generated table: put the two lines"):
        fullsummary.replace_table("# Title\n", "| new |\n")


def test_the_command_writes_the_readme_from_the_summary(tmp_path, capsys):
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(fullsummary.merge_summaries(None, call([nb_entry("01_soft_targets.ipynb", 95)]))))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{fullsummary.START}\n{fullsummary.END}\n")
    args = fullsummary_args(summary, readme)
    assert fullsummary.command(args) == 0
    assert "| [01_soft_targets](results/full/01_soft_targets.ipynb) | 1 min 35 s |" in readme.read_text()
    assert fullsummary.command(fullsummary_args(tmp_path / "none.json", readme)) == 2
    assert "no summary at" in capsys.readouterr().out


def fullsummary_args(summary, readme, *add):
    import argparse

    parser = argparse.ArgumentParser()
    fullsummary.configure_parser(parser)
    return parser.parse_args(["--summary", str(summary), "--readme", str(readme)]
                             + (["--add", *map(str, add)] if add else []))


def test_summaries_made_elsewhere_are_merged_into_the_one_summary(tmp_path):
    """Two GPU calls whose output folders came back: each call's summary.json added in turn."""
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text(json.dumps(call([nb_entry("01_soft_targets.ipynb", 95)])))
    second.write_text(json.dumps(call([nb_entry("06_qadsm_two_tower.ipynb", 400)], "2026-12-06T10:40:00")))
    readme = tmp_path / "README.md"
    readme.write_text(f"{fullsummary.START}\n{fullsummary.END}\n")
    summary = tmp_path / "results" / "summary.json"
    assert fullsummary.command(fullsummary_args(summary, readme, first, second)) == 0
    merged = json.loads(summary.read_text())
    assert [n["name"] for n in merged["notebooks"]] == ["01_soft_targets.ipynb", "06_qadsm_two_tower.ipynb"]
    assert len(merged["calls"]) == 2 and "2 notebook(s), 8 min 15 s in all" in readme.read_text()
    (tmp_path / "quick.json").write_text(json.dumps({**call([]), "profile": "quick"}))
    assert fullsummary.command(fullsummary_args(summary, readme, tmp_path / "quick.json")) == 2


def test_the_device_is_read_from_the_executed_notebooks_banner():
    nb = {"cells": [{"cell_type": "markdown", "source": "x"},
                    {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout", "text": [
                        "python 3.12.3 | torch 2.11.0+cu130 | device cuda (NVIDIA H200) | cpu threads 16\n"]}]}]}
    assert fullsummary.device_of(nb) == ("NVIDIA H200", "python 3.12.3, torch 2.11.0+cu130")
    assert fullsummary.device_of({"cells": []}) == (None, None)


def test_the_runner_knows_the_checkouts_commit(tmp_path):
    assert runner._commit(tmp_path) is None  # not a git checkout


def test_the_commit_named_in_the_environment_wins(tmp_path, monkeypatch):
    """A GPU machine's copy of the tree may have no .git, or a stale one (a run of 2026-12-06 recorded
    7b18aba+changes for the tree of 2449004): $KDTUTORIAL_COMMIT, when set, is what the run records."""
    monkeypatch.delenv("KDTUTORIAL_COMMIT", raising=False)
    assert runner.run_commit(tmp_path) is None
    monkeypatch.setenv("KDTUTORIAL_COMMIT", "262959d")
    assert runner.run_commit(tmp_path) == "262959d"
    assert runner.run_commit(ROOT) == "262959d"  # even inside the git checkout


ARCHIVED = """student = mlp-medium (101,770 parameters)
               seeds     val_acc    test_acc
method
scratch            5  89.0 ± 0.2  88.6 ± 0.3
KD T=4 a=0.9       5  89.3 ± 0.1  89.1 ± 0.2
only here          5  50.0 ± 1.0  50.0 ± 1.0

teacher architecture = cnn-teacher (824,650 parameters)
               seeds    test_acc
method
scratch            5  92.0 ± 0.3"""
FRESH = """student = mlp-medium (101,770 parameters)
               seeds     val_acc    test_acc
method
scratch            5  89.1 ± 0.2  88.9 ± 0.3
KD T=4 a=0.9       5  89.3 ± 0.0  88.6 ± 0.2
new row            3  1.0 ± 0.1  1.0 ± 0.1

teacher architecture = cnn-teacher (824,650 parameters)
               seeds    test_acc
method
scratch            5  91.9 ± 0.1"""


def test_two_runs_tables_are_compared_mean_by_mean_within_seed_noise():
    rows = fullsummary.compare_tables(ARCHIVED, FRESH)
    assert [(r["row"], r["column"]) for r in rows] == [
        ("student: scratch", "val_acc"), ("student: scratch", "test_acc"), ("student: KD T=4 a=0.9", "val_acc"),
        ("student: KD T=4 a=0.9", "test_acc"), ("teacher architecture: scratch", "test_acc")]
    scratch_test, kd_val, kd_test, teacher = rows[1], rows[2], rows[3], rows[4]
    # 2 * sqrt(0.3^2/5 + 0.3^2/5) + 0.1 (printed precision) = 0.479: +0.3 is within
    assert scratch_test["difference"] == pytest.approx(0.3) and scratch_test["allowed"] == pytest.approx(0.479)
    # 2 * sqrt(0.2^2/5 * 2) + 0.1 = 0.353: -0.5 is not
    assert scratch_test["within_noise"] and not kd_test["within_noise"] and kd_test["allowed"] == pytest.approx(0.353)
    # a std printed as 0.0 counts as 0.05: 2 * sqrt((0.1^2 + 0.05^2) / 5) + 0.1 = 0.2
    assert kd_val["allowed"] == pytest.approx(0.2) and kd_val["within_noise"]
    assert teacher["archived"] == "92.0 ± 0.3 (5)" and teacher["within_noise"]  # its own row, not the student's


def test_a_table_without_a_count_column_is_compared_only_when_the_seeds_are_given():
    archived = ("nats per token, mean ± std over seeds:\n              NLL reviews  teacher log p\nmethod\n"
                "teacher        4.38 ± 0.00   -3.54 ± 0.00\nword-level KD  5.91 ± 0.00   -7.19 ± 0.07\n")
    fresh = archived.replace("-7.19 ± 0.07", "-7.40 ± 0.05")
    assert fullsummary.compare_tables(archived, fresh) == []  # no count: nothing is guessed
    rows = fullsummary.compare_tables(archived, fresh, seeds=3)
    assert [(r["row"], r["column"]) for r in rows] == [("teacher", "#1"), ("teacher", "#2"), ("word-level KD", "#1"),
                                                        ("word-level KD", "#2")]
    log_p = rows[3]
    # 2 * sqrt((0.07^2 + 0.05^2) / 3) + 0.01 = 0.109: -0.21 is not within noise
    assert log_p["archived"] == "-7.19 ± 0.07 (3)" and log_p["difference"] == pytest.approx(-0.21)
    assert log_p["allowed"] == pytest.approx(0.109, abs=1e-3) and not log_p["within_noise"]
    assert rows[0]["within_noise"] and rows[0]["allowed"] == pytest.approx(2 * (2 * 0.005**2 / 3) ** 0.5 + 0.01,
                                                                          abs=1e-3)


def test_tables_under_a_title_line_keep_their_rows_apart():
    block = "{task}, 12 -> 4 layers (GLUE dev accuracy); teacher 93.6\n          seeds         dev  steps\nmethod\n" \
            "no KD         3  {a} ± 0.4    126\nKD            3  {b} ± 0.3    126\n  KD vs no KD: -0.3 points\n\n"
    archived = block.format(task="sst2", a="84.0", b="83.7") + block.format(task="rte", a="57.5", b="56.7")
    fresh = block.format(task="sst2", a="84.0", b="83.7") + block.format(task="rte", a="57.5", b="50.0")
    rows = fullsummary.compare_tables(archived, fresh)
    assert [r["row"] for r in rows] == ["sst2, 12 -> 4 layers: no KD", "sst2, 12 -> 4 layers: KD",
                                        "rte, 12 -> 4 layers: no KD", "rte, 12 -> 4 layers: KD"]
    assert [r["within_noise"] for r in rows] == [True, True, True, False]  # rte's KD row, not overwritten by sst2's


def test_a_notebooks_summary_entry_is_found_only_when_it_ran_ok(tmp_path):
    file = tmp_path / "summary.json"
    assert fullsummary.summary_entry(file, "01_a.ipynb") is None  # no summary at all
    file.write_text(json.dumps(call([nb_entry("01_a.ipynb", 50), nb_entry("02_b.ipynb", 60, status="failed")])))
    assert fullsummary.summary_entry(file, "01_a.ipynb")["wall_seconds"] == 50
    assert fullsummary.summary_entry(file, "02_b.ipynb") is None
    assert fullsummary.minutes(450) == "7 min 30 s" and fullsummary.minutes(45) == "45 s"


def test_the_readmes_table_is_the_one_generated_from_the_committed_summary():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    summary = json.loads((ROOT / "results" / "full" / "summary.json").read_text(encoding="utf-8"))
    start, end = readme.index(fullsummary.START) + len(fullsummary.START), readme.index(fullsummary.END)
    assert readme[start:end] == "\n" + fullsummary.full_table(summary)  # run python -m kdtutorial readme-table


def test_notebooks_run_at_once_count_their_calls_wall_time_once():
    def together(names_seconds, started, wall):
        entries = [{**nb_entry(name, seconds), "jobs": 3, "call": started, "together_seconds": wall}
                   for name, seconds in names_seconds]
        return {**call(entries, started), "total_seconds": wall, "jobs": 3}

    first = fullsummary.merge_summaries(None, together([("01_a.ipynb", 100), ("02_b.ipynb", 90), ("03_c.ipynb", 80)],
                                                       "2026-12-06T10:00:00", 120))
    assert first["total_seconds"] == 120
    alone = call([nb_entry("04_d.ipynb", 50)], "2026-12-06T10:30:00")  # one at a time: its own wall time
    merged = fullsummary.merge_summaries(first, alone)
    assert merged["total_seconds"] == 120 + 50
    assert merged["calls"][0]["total_seconds"] == 120 and merged["calls"][0]["jobs"] == 3
    # 01 and 02 run again, alone: what is kept of the first call counts at most its wall time (here 03's 80 s)
    again = fullsummary.merge_summaries(merged, call([nb_entry("01_a.ipynb", 40), nb_entry("02_b.ipynb", 30)],
                                                     "2026-12-06T11:00:00"))
    assert again["total_seconds"] == 80 + 50 + 40 + 30
    table = fullsummary.full_table(merged, headlines={})
    assert "4 notebook(s), 2 min 50 s in all (up to 3 notebooks at a time, so a notebook's wall time includes" in table
    assert "at a time" not in fullsummary.full_table(fullsummary.merge_summaries(None, alone), headlines={})


def test_the_banner_says_when_notebooks_ran_at_once_and_the_device_is_still_read():
    from kdtutorial.common.environment import banner

    alone, shared = banner("cpu", environ={}), banner("cpu", environ={"KDTUTORIAL_JOBS": "5"})
    assert "at once" not in alone and banner("cpu", environ={"KDTUTORIAL_JOBS": "1"}) == alone
    assert shared == alone + " | 5 notebooks at once on this machine"
    executed = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "stream", "text": shared + "\n"}]}]}
    assert fullsummary.device_of(executed)[0] == "cpu"
