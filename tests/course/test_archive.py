"""The archived full-profile results shown beside a quick run: the packaged copy agrees with results/full/."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kdtutorial.course import archive, lessons

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results" / "full"


def test_packaged_archive_is_rebuilt_from_results_full():
    packaged = json.loads(archive.ARCHIVE_FILE.read_text())
    assert packaged == archive.build_archive(RESULTS), "run: python -m kdtutorial.course.archive"


def test_every_lesson_has_an_archived_full_run_with_its_headlines():
    assert set(archive.SOURCES) | set(archive.PENDING) == set(lessons.LESSONS) == set(archive.HEADLINES)
    assert not set(archive.SOURCES) & set(archive.PENDING)  # archived, or declared pending: never both
    for lesson in archive.SOURCES:
        run = archive.full_run(lesson)
        assert run.device and run.device != "cpu" and run.metrics and "±" in run.table
        missing = [key for key, _ in archive.HEADLINES[lesson] if key not in run.metrics]
        assert not missing, f"{lesson}: headline metrics the archived run did not record: {missing}"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_each_commit_named_archived_that_notebook():
    runs = [(lesson, source) for lesson, main in archive.SOURCES.items()
            for source in [main, *main.get("extras", {}).values()]]
    assert len(runs) > len(archive.SOURCES)  # the supplementary runs are checked too
    for lesson, source in runs:
        if "commit" not in source:  # archived by the runner: the commit it ran at, from summary.json
            entry = json.loads((RESULTS / "summary.json").read_text())
            run = next(n for n in entry["notebooks"] if n["name"] == source["notebook"])
            ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", run["commit"], "HEAD"], cwd=ROOT)
            assert ancestor.returncode == 0, f"{lesson}: {run['commit']} is not in this history"
            continue
        changed = subprocess.run(["git", "show", "--name-only", "--format=%ad", "--date=short", source["commit"]],
                                 cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
        archived_as = f"results/full/{source.get('archived_as', source['notebook'])}"
        assert archived_as in changed, f"{lesson}: {source['commit']} did not archive it"
        if "archived_as" in source:  # renamed since: the file is the one that commit archived, byte for byte
            then = subprocess.run(["git", "show", f"{source['commit']}:{archived_as}"], cwd=ROOT, capture_output=True,
                                  check=True).stdout
            assert then == (RESULTS / source["notebook"]).read_bytes(), f"{lesson}: {source['notebook']} changed"
        assert changed[0] == source["date"], f"{lesson}: commit {source['commit']} is dated {changed[0]}"


def test_beside_labels_the_archived_column_and_refuses_unknown_metrics():
    table = archive.beside("04_annealing_kd", {"seeds": 5, "scratch_acc": 94.2, "seed_std": 1.0},
                           live_label="quick run")
    run = archive.full_run("04_annealing_kd")
    full = f"full run: H100, {run.date}, {run.commit}"  # the column names the archived run's device, day and commit
    assert list(table.columns) == ["quick run", full]
    assert table.loc["scratch (%)", "quick run"] == "94.2" and table.loc["scratch (%)", full] == "83.3"
    assert table.loc["TAKD (%)", "quick run"] == "-"
    assert "seed_std" not in table.index  # keys that are no headline are left out
    with pytest.raises(KeyError, match="none of scratch_accuracy is a headline metric"):
        archive.beside("04_annealing_kd", {"scratch_accuracy": 1.0})
    with pytest.raises(KeyError, match="no archived full run"):
        archive.full_run("99_nothing")


def test_show_full_table_prints_the_label_and_no_progress_bars(capsys):
    archive.show_full_table("06_qadsm_two_tower")
    out = capsys.readouterr().out
    assert out.startswith("archived full run (NVIDIA H100 80GB HBM3, 2026-12-07, commit cecfd5b), 9 min 30 s")
    assert "the full profile with" not in out.splitlines()[0]  # the whole full profile ran: nothing changed
    assert "TwinBERT_res, distilled                            3  0.813 ± 0.002" in out and "it/s" not in out
    archive.show_full_table("06_qadsm_two_tower", part="teachers")
    out = capsys.readouterr().out
    assert out.startswith("archived full run (NVIDIA H100 80GB HBM3, 2026-12-07, commit cecfd5b), 9 min 30 s")
    assert "its sections up to the students" in out.splitlines()[0] and "mean of 6 teachers" in out
    assert "C-DSSM, labels only" not in out and "it/s" not in out
    archive.show_full_table("06_qadsm_two_tower", extra="recipe")
    out = capsys.readouterr().out
    assert out.startswith("archived supplementary full run (NVIDIA H100 80GB HBM3, 2026-12-06, commit c03192d), "
                          "6 min 28 s")
    assert "; the full profile with STUDENTS ['C-DSSM', 'TwinBERT_res'], MLM_EPOCHS 0" in out
    assert "TwinBERT_res, distilled                            3  0.812 ± 0.001" in out
    archive.show_full_table("06_qadsm_two_tower", part="nothing")
    assert "no part 'nothing'" in capsys.readouterr().out
    with pytest.raises(ValueError, match="extra = 'recipe' and part = 'teachers'"):
        archive.show_full_table("06_qadsm_two_tower", extra="recipe", part="teachers")
    archive.show_full_table("06_qadsm_two_tower", extra="earlier")
    out = capsys.readouterr().out
    assert out.startswith("archived supplementary full run (NVIDIA H100 80GB HBM3, 2026-11-22, commit e0e08f5), 9 min 34 s")
    assert "TwinBERT_cos, distilled        3  0.813 ± 0.001" in out


def test_a_lesson_not_archived_yet_shows_its_live_numbers_only(tmp_path, capsys):
    empty = tmp_path / "full_results.json"
    empty.write_text("{}")
    archive.show_full_table("07_layer_distillation", archive=empty)
    assert "no archived full run of 07_layer_distillation yet" in capsys.readouterr().out
    table = archive.beside("07_layer_distillation", {"seeds": 2, "alp_kd": 70.1}, live_label="quick run", archive=empty)
    assert list(table.columns) == ["quick run"] and table.loc["ALP-KD", "quick run"] == "70.1"


def hand_declared_main_run(lesson):
    """A main-run declaration with commit, date and wall time of its own (no summary.json needed): the lesson's
    "earlier" run, archived by hand, declared as if it were the main one."""
    earlier = archive.SOURCES[lesson]["extras"]["earlier"]
    return {k: v for k, v in earlier.items() if k not in ("changed", "archived_as")}


def test_a_supplementary_run_is_read_beside_the_main_one_and_shown_by_name(tmp_path, monkeypatch, capsys):
    lesson = "10_all_methods"  # its earlier run, declared by hand, stands in for the main run: the notebook is enough
    main = hand_declared_main_run(lesson)
    shutil.copy(RESULTS / main["notebook"], tmp_path / main["notebook"])
    shutil.copy(RESULTS / main["notebook"], tmp_path / "10_extra.ipynb")  # stands in for a second run
    extra = dict(main, notebook="10_extra.ipynb", commit="abc1234", changed="K1=2")
    monkeypatch.setitem(archive.SOURCES, lesson, {**main, "extras": {"choices": extra}})
    record = archive.extract(lesson, tmp_path)
    assert record["table"] == record["extras"]["choices"]["table"]
    assert record["extras"]["choices"]["commit"] == "abc1234"
    assert record["extras"]["choices"]["changed"] == "K1=2"
    file = tmp_path / "full_results.json"
    file.write_text(json.dumps({lesson: record}))
    archive.show_full_table(lesson, archive=file, extra="choices")
    out = capsys.readouterr().out
    assert out.startswith("archived supplementary full run (NVIDIA H200, ") and "commit abc1234" in out
    assert "10_extra.ipynb; the full profile with K1=2:" in out and "±" in out
    archive.show_full_table(lesson, archive=file, extra="nothing")
    assert "no archived supplementary full run 'nothing' of 10_all_methods yet (archived: choices)" in \
        capsys.readouterr().out


def test_a_main_run_that_changed_parameters_says_so(tmp_path, monkeypatch, capsys):
    lesson = "10_all_methods"  # its earlier run, declared by hand, stands in for the main run: the notebook is enough
    main = hand_declared_main_run(lesson)
    shutil.copy(RESULTS / main["notebook"], tmp_path / main["notebook"])
    monkeypatch.setitem(archive.SOURCES, lesson, {**main, "changed": "K1 2"})
    record = archive.extract(lesson, tmp_path)
    assert record["changed"] == "K1 2"
    file = tmp_path / "full_results.json"
    file.write_text(json.dumps({lesson: record}))
    archive.show_full_table(lesson, archive=file)
    assert f"results/full/{main['notebook']}; the full profile with K1 2:" in capsys.readouterr().out
    monkeypatch.setitem(archive.SOURCES, lesson, main)  # without it: no such words
    file.write_text(json.dumps({lesson: archive.extract(lesson, tmp_path)}))
    archive.show_full_table(lesson, archive=file)
    assert "the full profile with" not in capsys.readouterr().out


def test_a_run_archived_by_the_runner_takes_commit_day_and_wall_time_from_the_summary(tmp_path, monkeypatch):
    lesson = "07_layer_distillation"
    main = {k: v for k, v in archive.SOURCES[lesson].items() if k not in ("extras", "commit", "date", "wall")}
    shutil.copy(RESULTS / main["notebook"], tmp_path / main["notebook"])
    monkeypatch.setitem(archive.SOURCES, lesson, main)
    with pytest.raises(ValueError, match="no commit, date, wall: declare it in SOURCES, or archive the run with"):
        archive.extract(lesson, tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"profile": "full", "notebooks": [
        {"name": main["notebook"], "status": "ok", "seconds": 290.0, "wall_seconds": 301.4, "commit": "262959d",
         "finished_at": "2026-12-06T16:01:02+00:00"}]}))
    record = archive.extract(lesson, tmp_path)
    assert (record["commit"], record["date"], record["wall"]) == ("262959d", "2026-12-06", "5 min 1 s")


def test_reproduction_compares_a_rerun_lesson_with_its_archived_table(tmp_path):
    records = json.loads(archive.ARCHIVE_FILE.read_text())
    old = records["04_annealing_kd"]
    table = old["table"].replace("83.3 ± 1.4", "86.3 ± 1.4")
    records["04_annealing_kd"] = {**old, "commit": "0000000", "table": table}
    file = tmp_path / "full_results.json"
    file.write_text(json.dumps(records))
    text = archive.reproduction(RESULTS, archive=file)
    assert "### 04_annealing_kd:" in text and "against the archived" in text
    assert "3 of 4 means within seed noise" in text
    assert "| scratch | test_acc | 86.3 ± 1.4 (5) | 83.3 ± 1.4 (5) | -3 | 1.871 | **no** |" in text
    assert "### 01_soft_targets" not in text  # same commit as archived: not a re-run


def test_archive_command_names_a_bad_folder_and_prints_help(capsys):
    with pytest.raises(SystemExit):
        archive.archive_command(["/no/such/folder"])
    assert "results_dir '/no/such/folder' is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        archive.archive_command(["--help"])
    assert done.value.code == 0 and "--compare" in capsys.readouterr().out
