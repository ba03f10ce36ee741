"""Tests of the notebook runner (``python -m kdtutorial run``) on tiny notebooks built in tmp_path."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from kdtutorial.course import runner
from kdtutorial.__main__ import main

REPO = Path(__file__).resolve().parents[2]
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def make_notebook(path: Path, body: list[str], metadata: dict | None = None) -> Path:
    """A notebook: a title, a ``parameters`` cell (PROFILE, X), then one code cell per item of ``body``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.update(metadata or {})
    params = nbformat.v4.new_code_cell('PROFILE = "quick"\nX = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), params]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in body]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


RECORD = "from kdtutorial.course.report import record_metrics\nrecord_metrics(x=X, profile=PROFILE)"


# -- small pieces ------------------------------------------------------------------------------------
def test_discover_sorts_filters_and_ignores_other_names(tmp_path):
    for name in ["03_c.ipynb", "01_a.ipynb", "02_b.ipynb", "10_z.ipynb"]:
        make_notebook(tmp_path / name, [])
    for name in ["notes.ipynb", "1_short.ipynb", "01_a.py", "ab_c.ipynb", "01-dash.ipynb"]:
        (tmp_path / name).write_text("{}")
    (tmp_path / "04_folder.ipynb").mkdir()

    names = [p.name for p in runner.discover(tmp_path)]
    assert names == ["01_a.ipynb", "02_b.ipynb", "03_c.ipynb", "10_z.ipynb"]
    assert [p.name for p in runner.discover(tmp_path, ["03", "01"])] == ["01_a.ipynb", "03_c.ipynb"]
    assert [p.name for p in runner.discover(tmp_path, ["02_b.ipynb"])] == ["02_b.ipynb"]
    assert runner.discover(tmp_path, ["99"]) == []
    with pytest.raises(runner.RunnerError, match="not found"):
        runner.discover(tmp_path / "missing")


@pytest.mark.parametrize("text, expected", [
    ("5", 5), ("-3", -3), ("0", 0), ("2.5", 2.5), ("1e-3", 0.001), ("-0.5", -0.5),
    ("True", True), ("False", False), ("None", None),
    ("true", "true"), ("resnet18", "resnet18"), ("", ""), ("1.2.3", "1.2.3"), ("5 epochs", "5 epochs"),
    ('["sst2", "rte"]', ["sst2", "rte"]), ("[1, 10.5]", [1, 10.5]), ("[]", []),
])
def test_parse_value(text, expected):
    value = runner.parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_a_bracketed_value_that_is_not_json_is_refused_with_the_form_to_use():
    with pytest.raises(runner.RunnerError, match="looks like a list but is not valid JSON"):
        runner.parse_value("[sst2, rte]")


def test_parse_parameters_checks_names():
    assert runner.parse_parameters([["X", "5"], ["NAME", "abc"]]) == {"X": 5, "NAME": "abc"}
    with pytest.raises(runner.RunnerError, match="not a valid Python name"):
        runner.parse_parameters([["1x", "5"]])
    with pytest.raises(runner.RunnerError, match="--profile"):
        runner.parse_parameters([["PROFILE", "full"]])


def test_budget_defaults_and_overrides():
    assert runner.budget_for({}, "quick") == {"seconds": 180, "mib": 2048}
    assert runner.budget_for({}, "full") == {}
    meta = {"kdtutorial": {"budget": {"quick": {"seconds": 60}, "full": {"seconds": 600, "mib": None}}}}
    assert runner.budget_for(meta, "quick") == {"seconds": 60, "mib": 2048}
    assert runner.budget_for(meta, "full") == {"seconds": 600}
    assert runner.check_budget({"seconds": 60, "mib": 2048}, 10.0, 500.0) == (True, [])
    within, overruns = runner.check_budget({"seconds": 60}, 75.0, 500.0)
    assert within is False and overruns and "seconds" in overruns[0]
    assert runner.check_budget({}, 75.0, 500.0) == (None, [])


def test_summarize_and_failure_line():
    results = [
        {"name": "01_a.ipynb", "status": "ok", "seconds": 1.5, "peak_mib": 300.0, "within_budget": True,
         "budget_overruns": [], "metrics": {"acc": 0.912345, "note": "a|b"}, "error": None},
        {"name": "02_b.ipynb", "status": "failed", "seconds": 2.0, "peak_mib": 310.0,
         "within_budget": False, "budget_overruns": ["seconds: 2.0s > 1s"], "metrics": {},
         "error": {"ename": "ValueError", "evalue": "bad shape\nmore", "cell_index": 7, "exec_count": 5,
                   "output_path": "runs/quick/02_b.ipynb"}},
    ]
    line = runner.format_failure(results[1])
    assert line.startswith("FAILED 02_b.ipynb, cell 7 (In [5]): ValueError: bad shape")
    markdown = runner.summary_markdown(results, "quick", 3.5)
    assert "| 01_a.ipynb | ok | 1.5 s | 300 MiB | yes | acc=0.9123, note=a\\|b |" in markdown
    assert "02_b.ipynb | **FAILED**" in markdown and "**no**" in markdown
    assert "Total: 3.5 s for 2 notebook(s), 1 failed." in markdown
    assert line in markdown


def test_cli_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--profile", "slow"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "quick" in err and "full" in err

    with pytest.raises(SystemExit) as info:
        main(["run", "--profile", "quick", "-p", "X"])
    assert info.value.code == 2
    assert "-p" in capsys.readouterr().err

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "run" in capsys.readouterr().out


def test_no_matching_notebook_is_a_usage_error(tmp_path, capsys):
    make_notebook(tmp_path / "nb" / "01_a.ipynb", [RECORD])
    with pytest.raises(SystemExit) as info:
        main(["run", "--profile", "quick", "--notebooks-dir", str(tmp_path / "nb"), "--only", "07"])
    assert info.value.code == 2
    assert "no notebooks" in capsys.readouterr().err


def test_child_env_puts_checkout_first_on_pythonpath():
    env = runner.child_env({"PYTHONPATH": os.pathsep.join(["/elsewhere", str(REPO)])})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/elsewhere"]
    assert runner.child_env({})["PYTHONPATH"] == str(REPO)


# -- real runs (each notebook starts a kernel: a few seconds each) --------------------------------------
def test_end_to_end_run(tmp_path, capsys, monkeypatch):
    nb_dir, out = tmp_path / "notebooks", tmp_path / "runs"
    make_notebook(nb_dir / "01_first.ipynb", [RECORD])
    make_notebook(nb_dir / "02_second.ipynb",
                  ["from kdtutorial.course.report import record_metrics\nrecord_metrics(acc=0.75)",
                   "import time\n\ntime.sleep(1.5)  # a slow cell"],
                  metadata={"kdtutorial": {"budget": {"quick": {"seconds": 0.001}}}})
    make_notebook(nb_dir / "scratch.ipynb", ["raise RuntimeError('must not run')"])
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the runner must hand the checkout to the kernel

    code = main(["run", "--profile", "quick", "--notebooks-dir", str(nb_dir), "--out", str(out),
                 "-p", "X", "5"])
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err

    summary = json.loads((out / "quick" / "summary.json").read_text())
    assert summary["profile"] == "quick" and summary["started_at"]
    assert summary["versions"]["python"]
    first, second = summary["notebooks"]
    assert [first["name"], second["name"]] == ["01_first.ipynb", "02_second.ipynb"]
    assert first["status"] == second["status"] == "ok"
    assert first["metrics"] == {"x": 5, "profile": "quick"}
    assert second["metrics"] == {"acc": 0.75}
    slow = second["slowest_cells"]  # papermill's cell times, kept before nbstripout would remove them
    assert [c["seconds"] >= 1.5 for c in slow if c["starts"] == "import time"] == [True]
    assert all(c["seconds"] >= 1.0 for c in first["slowest_cells"] + slow)  # only cells of a second or more
    for nb in (first, second):
        assert nb["seconds"] > 0 and nb["peak_mib"] > 0 and nb["error"] is None
        assert Path(nb["output"]).is_file()
    assert first["budget"] == {"seconds": 180, "mib": 2048} and first["within_budget"] is True
    assert second["within_budget"] is False  # reported, yet the run passed
    assert not (out / "quick" / "scratch.ipynb").exists()

    markdown = (out / "quick" / "summary.md").read_text()
    assert "01_first.ipynb" in markdown and "02_second.ipynb" in markdown
    assert "x=5" in markdown
    assert markdown.strip() in printed.out
    assert "[1/2] 01_first.ipynb started" in printed.out  # progress lines
    assert "[2/2] 02_second.ipynb ok" in printed.out


def test_failing_notebook_is_reported_and_the_others_still_run(tmp_path, capsys):
    nb_dir, out = tmp_path / "notebooks", tmp_path / "runs"
    make_notebook(nb_dir / "01_broken.ipynb",  # the raise is in the 2nd code cell (cell 2 of the file)
                  ["raise ValueError('wrong number of classes')", RECORD])
    make_notebook(nb_dir / "02_fine.ipynb", [RECORD])

    code = main(["run", "--profile", "quick", "--notebooks-dir", str(nb_dir), "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 1

    summary = json.loads((out / "quick" / "summary.json").read_text())
    broken, fine = summary["notebooks"]
    assert broken["status"] == "failed" and summary["failed"] == 1
    error = broken["error"]
    assert error["ename"] == "ValueError" and "wrong number of classes" in error["evalue"]
    assert error["cell_index"] == 2 and error["exec_count"] == 3  # In [2] is papermill's injected cell
    assert Path(error["output_path"]).is_file()
    assert fine["status"] == "ok" and fine["metrics"] == {"x": 1, "profile": "quick"}

    line = "FAILED 01_broken.ipynb, cell 2 (In [3]): ValueError: wrong number of classes"
    assert line in printed.err
    assert line in printed.out  # in the printed summary
    assert line in (out / "quick" / "summary.md").read_text()


def test_runs_of_one_profile_merge_into_one_summary_with_the_device_and_commit(tmp_path, capsys):
    nb_dir, out = tmp_path / "notebooks", tmp_path / "runs"
    banner = "print('python 3.12.3 | torch 2.11.0 | device cuda (NVIDIA H200) | cpu threads 16')"
    make_notebook(nb_dir / "01_first.ipynb", [banner, RECORD])
    make_notebook(nb_dir / "02_second.ipynb", [RECORD])
    base = ["run", "--profile", "quick", "--notebooks-dir", str(nb_dir), "--out", str(out), "--merge"]
    assert main([*base, "--only", "01"]) == 0
    assert main([*base, "--only", "02", "-p", "X", "7"]) == 0
    summary = json.loads((out / "quick" / "summary.json").read_text())
    first, second = summary["notebooks"]
    assert (first["name"], first["metrics"]["x"], second["name"], second["metrics"]["x"]) == \
        ("01_first.ipynb", 1, "02_second.ipynb", 7)
    assert first["device"] == "NVIDIA H200" and first["software"] == "python 3.12.3, torch 2.11.0"
    assert second["device"] is None and "commit" in second  # no banner printed; not a git checkout: None
    assert len(summary["calls"]) == 2 and summary["calls"][1]["parameters"]["X"] == 7
    assert "01_first.ipynb" in (out / "quick" / "summary.md").read_text()  # the merged table
    capsys.readouterr()


def test_slowest_cells_reads_papermill_durations_slowest_first():
    from kdtutorial.course.runner import slowest_cells

    def cell(kind, source, seconds=None):
        meta = {} if seconds is None else {"papermill": {"duration": seconds}}
        return {"cell_type": kind, "source": source, "metadata": meta}

    nb = {"cells": [cell("markdown", "# title", 9.0), cell("code", ["\n", "x = 1\n", "y = 2"], 2.25),
                    cell("code", "fast()", 0.5), cell("code", "slow()", 30.0), cell("code", "untimed()")]}
    assert slowest_cells(nb) == [{"cell": 3, "seconds": 30.0, "starts": "slow()"},
                                 {"cell": 1, "seconds": 2.2, "starts": "x = 1"}]
    assert slowest_cells(nb, limit=1) == [{"cell": 3, "seconds": 30.0, "starts": "slow()"}]
    assert slowest_cells(nb, at_least=60) == []


# -- several notebooks at once (--jobs) ------------------------------------------------------------------
THREADS = ("import os\nfrom kdtutorial.course.report import record_metrics\n"
           "record_metrics(omp=os.environ.get('OMP_NUM_THREADS'), jobs=os.environ.get('KDTUTORIAL_JOBS'))")


def test_notebooks_run_at_once_end_sooner_in_order_and_share_the_cores(tmp_path, capsys, monkeypatch):
    nb_dir, out = tmp_path / "notebooks", tmp_path / "runs"
    for name in ("01_a", "02_b", "03_c"):
        make_notebook(nb_dir / f"{name}.ipynb", [THREADS, "import time\n\ntime.sleep(4)"])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    alone = runner.run_suite("quick", nb_dir, tmp_path / "alone", only=["01"], echo=lambda t: None)
    code = main(["run", "--profile", "quick", "--notebooks-dir", str(nb_dir), "--out", str(out), "--jobs", "3"])
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err
    summary = json.loads((out / "quick" / "summary.json").read_text())
    assert [n["name"] for n in summary["notebooks"]] == ["01_a.ipynb", "02_b.ipynb", "03_c.ipynb"]
    assert all(n["status"] == "ok" and n["jobs"] == 3 and n["call"] == summary["started_at"]
               for n in summary["notebooks"])
    assert summary["jobs"] == 3
    shares = {n["metrics"]["omp"] for n in summary["notebooks"]}
    assert shares == {str(max(1, (os.cpu_count() or 1) // 3))}  # each kernel's share of the cores
    assert {n["metrics"]["jobs"] for n in summary["notebooks"]} == {"3"}  # the lessons' banner says so
    assert alone["notebooks"][0]["metrics"]["omp"] is None  # one at a time: torch's own default
    assert alone["notebooks"][0]["metrics"]["jobs"] is None
    # three 4-second notebooks at once end before three run one after another would
    assert summary["total_seconds"] < sum(n["wall_seconds"] for n in summary["notebooks"])
    assert summary["total_seconds"] < 3 * alone["total_seconds"]
    for name in ("01_a", "02_b", "03_c"):
        assert f"{name}.ipynb started" in printed.out and f"{name}.ipynb ok" in printed.out


def test_a_bad_jobs_value_is_refused_by_name(tmp_path, capsys):
    nb_dir = tmp_path / "notebooks"
    make_notebook(nb_dir / "01_a.ipynb", [RECORD])
    with pytest.raises(runner.RunnerError, match="jobs must be a whole number of notebooks to run at once, 1 or more; "
                                                 "got 0"):
        runner.run_suite("quick", nb_dir, tmp_path / "runs", jobs=0)
    with pytest.raises(SystemExit):
        main(["run", "--profile", "quick", "--notebooks-dir", str(nb_dir), "--jobs", "0"])
    assert "jobs must be a whole number" in capsys.readouterr().err


def test_an_interrupt_stops_every_notebook_running_at_once(tmp_path, capsys):
    import signal
    import threading
    import time

    nb_dir, out = tmp_path / "notebooks", tmp_path / "runs"
    for name in ("01_a", "02_b", "03_c"):
        make_notebook(nb_dir / f"{name}.ipynb", ["import time\n\ntime.sleep(120)"])
    timer = threading.Timer(8.0, os.kill, (os.getpid(), signal.SIGTERM))  # as `timeout` or a cancelled CI job would
    start = time.perf_counter()
    timer.start()
    try:
        code = main(["run", "--profile", "quick", "--notebooks-dir", str(nb_dir), "--out", str(out), "--jobs", "2"])
    finally:
        timer.cancel()
    assert time.perf_counter() - start < 60
    assert code == 130
    summary = json.loads((out / "quick" / "summary.json").read_text())
    assert [(n["name"], n["status"]) for n in summary["notebooks"]] == \
        [("01_a.ipynb", "interrupted"), ("02_b.ipynb", "interrupted")]  # the third never started
    capsys.readouterr()


def test_notebooks_run_at_once_start_with_the_longest_of_the_last_run():
    names = [Path(f"{n}.ipynb") for n in ("01_a", "02_b", "03_c", "04_d")]
    last = {"notebooks": [{"name": "01_a.ipynb", "status": "ok", "wall_seconds": 40},
                          {"name": "02_b.ipynb", "status": "ok", "wall_seconds": 300},
                          {"name": "03_c.ipynb", "status": "failed", "wall_seconds": 5}]}
    assert runner.start_order(names, last) == [names[2], names[3], names[1], names[0]]  # untimed first, then longest
    assert runner.start_order(names, None) == names
    assert runner.start_order(names, {"notebooks": []}) == names


def test_a_notebook_that_times_itself_runs_alone_after_the_others(tmp_path, capsys):
    nb_dir, out = tmp_path / "notebooks", tmp_path / "runs"
    started = ("import time\nfrom kdtutorial.course.report import record_metrics\nrecord_metrics(t0=time.time())\n"
               "time.sleep(3)")
    make_notebook(nb_dir / "01_a.ipynb", [started])
    make_notebook(nb_dir / "02_timer.ipynb", [started], metadata={"kdtutorial": {"alone": "it times the CPU"}})
    make_notebook(nb_dir / "03_c.ipynb", [started])
    assert runner.runs_alone({"kdtutorial": {"alone": "it times the CPU"}}) == "it times the CPU"
    assert runner.runs_alone({"kdtutorial": {"budget": {}}}) is None and runner.runs_alone({}) is None

    code = main(["run", "--profile", "quick", "--notebooks-dir", str(nb_dir), "--out", str(out), "--jobs", "3"])
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err
    assert "2 notebooks, 2 at a time, started in the order 01 03; then 02 one at a time (they time themselves)" in printed.out
    summary = json.loads((out / "quick" / "summary.json").read_text())
    a, timer, c = summary["notebooks"]
    assert [n["name"] for n in (a, timer, c)] == ["01_a.ipynb", "02_timer.ipynb", "03_c.ipynb"]
    assert (a["jobs"], timer["jobs"], c["jobs"]) == (2, 1, 2)
    assert timer["metrics"]["t0"] > max(a["metrics"]["t0"], c["metrics"]["t0"]) + 2.5  # it started after both ended
    assert a["together_seconds"] == c["together_seconds"] and "together_seconds" not in timer
    from kdtutorial.course.fullsummary import total_seconds
    assert total_seconds(summary["notebooks"]) == pytest.approx(a["together_seconds"] + timer["wall_seconds"])
