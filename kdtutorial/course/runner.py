"""Run the course notebooks with papermill and summarise how each one did.

``python -m kdtutorial run --profile quick`` executes every ``notebooks/NN_name.ipynb`` (sorted by name)
into ``runs/<profile>/NN_name.ipynb``, one notebook at a time (``--jobs N``: N at a time, on one machine), each in
its own child process so that the peak memory of its kernel can be measured. It then writes
``runs/<profile>/summary.json`` and ``runs/<profile>/summary.md`` and prints the Markdown table. The exit status is
0 when every notebook ran to the end, 1 when at least one failed, 2 for a usage error.

A notebook declares its time and memory budget in its notebook-level metadata::

    "kdtutorial": {"budget": {"quick": {"seconds": 180, "mib": 2048}, "full": {"seconds": 600}}}

A budget overrun is reported in the summary; it does not make the run fail.

The public helpers (``discover``, ``parse_value``, ``budget_for``, ``run_one``, ``summarize``,
``format_failure``, ``run_suite``) are small so that they can be tested and reused one by one.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from kdtutorial.course.parameters import PROFILES  # a light import: no torch

DEFAULT_BUDGETS = {"quick": {"seconds": 180, "mib": 2048}, "full": {}}
DEFAULT_KERNEL = "python3"
NOTEBOOK_PATTERN = re.compile(r"^[0-9][0-9]_.*\.ipynb$")

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the kdtutorial package
PACKAGE_PARENT = PACKAGE_DIR.parent

# papermill's own cell tags (papermill.execute.ERROR_MARKER_TAG and the tag of the cell it injects)
_ERROR_MARKER_TAG = "papermill-error-cell-tag"
_INJECTED_TAG = "injected-parameters"
_INTERRUPTED = {"ename": "KeyboardInterrupt", "evalue": "interrupted (Ctrl-C or SIGTERM)"}


class RunnerError(Exception):
    """A problem with how the runner was asked to run (no notebooks, bad folder, bad parameter)."""


# --------------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------------
def _is_checkout(root: Path) -> bool:
    return (root / "notebooks").is_dir() or (root / "pyproject.toml").is_file()


def repo_root() -> Path:
    """The checkout that holds this package (parent of ``kdtutorial/``); the cwd for an installed copy."""
    return PACKAGE_PARENT if _is_checkout(PACKAGE_PARENT) else Path.cwd()


def default_notebooks_dir() -> Path:
    candidate = repo_root() / "notebooks"
    return candidate if candidate.is_dir() else Path.cwd() / "notebooks"


def default_out_root() -> Path:
    return repo_root() / "runs"


# --------------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------------
def discover(notebooks_dir, only=None) -> list[Path]:
    """Notebooks named ``NN_*.ipynb`` in ``notebooks_dir``, sorted by name.

    ``only`` is an optional list of prefixes (``["01", "03"]``) or full names; a notebook is kept when its
    name starts with one of them.
    """
    folder = Path(notebooks_dir)
    if not folder.is_dir():
        raise RunnerError(f"notebooks folder not found: {folder}")
    found = sorted(p for p in folder.iterdir() if p.is_file() and NOTEBOOK_PATTERN.match(p.name))
    if only:
        found = [p for p in found if any(p.name.startswith(prefix) for prefix in only)]
    return found


def parse_value(text: str):
    """Turn a command-line parameter value into a Python value, as papermill's ``-p`` does.

    ``True``/``False``/``None`` become those constants, then an int is tried, then a float; a value in square
    brackets is read as a JSON list (``'["sst2", "rte"]'``, ``[1, 10]``, as papermill's ``-y`` reads one); anything
    else stays a string.
    """
    literals = {"True": True, "False": False, "None": None}
    if text in literals:
        return literals[text]
    if text.startswith("[") and text.endswith("]"):
        import json

        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise RunnerError(f"{text!r} looks like a list but is not valid JSON ({error.msg}): write it as "
                              f"'[\"sst2\", \"rte\"]' or [1, 10]") from None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_parameters(pairs) -> dict:
    """``[["X", "5"], ...]`` -> ``{"X": 5, ...}``; names must be Python identifiers, PROFILE is reserved."""
    params = {}
    for pair in pairs or []:
        if len(pair) != 2:
            raise RunnerError(f"-p needs a NAME and a VALUE, got {' '.join(pair) or 'nothing'}")
        name, value = pair
        if not name.isidentifier():
            raise RunnerError(f"-p {name} {value}: {name!r} is not a valid Python name")
        if name == "PROFILE":
            raise RunnerError("set PROFILE with --profile, not with -p")
        params[name] = parse_value(value)
    return params


def read_notebook(path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def budget_for(nb_metadata: dict, profile: str) -> dict:
    """The notebook's budget for ``profile``: the defaults, overridden key by key by its metadata.

    Returns e.g. ``{"seconds": 180, "mib": 2048}``; an empty dict means no budget. A key set to ``null``
    in the metadata removes that limit.
    """
    budget = dict(DEFAULT_BUDGETS.get(profile, {}))
    declared = ((nb_metadata or {}).get("kdtutorial") or {}).get("budget") or {}
    budget.update(declared.get(profile) or {})
    return {k: v for k, v in budget.items() if v is not None}


def runs_alone(nb_metadata: dict) -> str | None:
    """Why the notebook must not share the machine with another notebook (``"kdtutorial": {"alone": "why"}`` in its
    metadata: it measures times, which another notebook's work would change), or None. With ``--jobs`` the runner
    runs such notebooks one at a time, after the others."""
    why = ((nb_metadata or {}).get("kdtutorial") or {}).get("alone")
    return str(why) if why else None


def check_budget(budget: dict, seconds, peak_mib) -> tuple[bool | None, list[str]]:
    """``(within, overruns)``; ``within`` is None when there is no budget or nothing to compare."""
    measured = {"seconds": seconds, "mib": peak_mib}
    overruns, compared = [], False
    for key, limit in budget.items():
        value = measured.get(key)
        if value is None:
            continue
        compared = True
        if value > limit:
            unit = "s" if key == "seconds" else " MiB"
            overruns.append(f"{key}: {value:.1f}{unit} > {limit}{unit}")
    if not compared:
        return None, overruns
    return not overruns, overruns


def _first_line(text, limit=200) -> str:
    line = (str(text or "").strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _where(error: dict) -> str:
    cell = error.get("cell_index")
    if cell is None:
        return ""
    count = error.get("exec_count")
    return f", cell {cell}" + (f" (In [{count}])" if count is not None else "")


def _describe_error(result: dict) -> str:
    error = result.get("error") or {}
    what = error.get("ename") or "Error"
    value = _first_line(error.get("evalue"))
    text = f"{what}: {value}" if value else what
    if error.get("output_path"):
        text += f" [partial output: {error['output_path']}]"
    return text


def format_failure(result: dict) -> str:
    """One line naming the notebook, the cell and the error, e.g.
    ``FAILED 02_label_smoothing.ipynb, cell 7 (In [5]): ValueError: bad shape``."""
    where = _where(result.get("error") or {})
    return f"{result.get('status', 'failed').upper()} {result['name']}{where}: {_describe_error(result)}"


# --------------------------------------------------------------------------------------------------
# Markdown summary
# --------------------------------------------------------------------------------------------------
def _fmt_seconds(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:04.1f} s"


def _fmt_mib(mib) -> str:
    if not mib:
        return "-"
    return f"{mib:.0f} MiB" if mib < 1024 else f"{mib / 1024:.2f} GiB"


def _fmt_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _fmt_budget(result: dict) -> str:
    within = result.get("within_budget")
    if within is None:
        return "-"
    if within:
        return "yes"
    return "**no** (" + "; ".join(result.get("budget_overruns") or []) + ")"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_markdown(results, profile=None, total_seconds=None) -> str:
    """A Markdown report: one table row per notebook, the total time, and the failures."""
    title = f"# kdtutorial notebook run ({profile})" if profile else "# kdtutorial notebook run"
    lines = [
        title,
        "",
        "| notebook | status | wall time | peak memory | within budget | headline metrics |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        metrics = ", ".join(f"{k}={_fmt_value(v)}" for k, v in (r.get("metrics") or {}).items()) or "-"
        status = "ok" if r["status"] == "ok" else f"**{r['status'].upper()}**"
        row = [r["name"], status, _fmt_seconds(r.get("seconds")), _fmt_mib(r.get("peak_mib")),
               _fmt_budget(r), metrics]
        lines.append("| " + " | ".join(_cell(x) for x in row) + " |")
    failed = [r for r in results if r["status"] != "ok"]
    if total_seconds is None:
        total_seconds = sum(r.get("wall_seconds") or r.get("seconds") or 0 for r in results)
    lines += ["", f"Total: {_fmt_seconds(total_seconds)} for {len(results)} notebook(s), "
                  f"{len(failed)} failed."]
    if failed:
        lines += ["", "Failures (cells are counted from 0 in the source notebook):", ""]
        lines += [f"- {format_failure(r)}" for r in failed]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Running one notebook: the parent side
# --------------------------------------------------------------------------------------------------
def child_env(base=None, jobs: int = 1) -> dict:
    """Environment for the child: the checkout that holds this package goes first on PYTHONPATH, so the
    kernel can ``import kdtutorial`` without the package being installed. With ``jobs`` > 1 notebooks at a time, each
    kernel's torch gets its share of the CPU cores (``OMP_NUM_THREADS``: cores // jobs, at least 1) unless the
    caller set ``OMP_NUM_THREADS`` already, so that the kernels do not each start a thread per core; and
    ``KDTUTORIAL_JOBS`` = jobs, which the lessons' banner prints (their measured times include the others')."""
    env = dict(os.environ if base is None else base)
    if jobs > 1:
        env["KDTUTORIAL_JOBS"] = str(jobs)  # the lesson's banner says so (kd.environment.banner)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    if _is_checkout(PACKAGE_PARENT):
        parts = [str(PACKAGE_PARENT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env


# The child loads this file on its own, without ``kdtutorial/__init__.py`` (which imports torch and
# friends): the kernel is forked from the child, and on Linux a process's peak RSS (ru_maxrss) starts at
# the RSS of the process it was forked from, so a lean child keeps the kernel's measured peak honest.
_CHILD_CODE = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_kdtutorial_runner_child', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "sys.exit(module.child_main(sys.argv[2:]))\n"
)


def run_one(notebook, output, parameters=None, cwd=None, timeout=None, kernel=DEFAULT_KERNEL,
            progress=False, jobs: int = 1, stop: threading.Event | None = None) -> dict:
    """Execute one notebook with papermill in a child process.

    ``jobs``: how many notebooks run at once (:func:`child_env` shares the CPU cores out); ``stop``: an event that,
    once set, stops the child and raises ``KeyboardInterrupt`` here (how :func:`run_suite` interrupts notebooks
    running in other threads).

    Returns ``{"status": "ok"|"failed", "seconds", "wall_seconds", "peak_mib", "output", "error"}``:
    ``seconds`` is papermill's execution time (kernel start included), ``wall_seconds`` the parent's
    clock around the child, ``peak_mib`` the kernel's peak resident memory, ``error`` None or a dict
    with ``ename``, ``evalue``, ``cell_index``, ``exec_count``, ``output_path``.
    """
    notebook, output = Path(notebook).resolve(), Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)  # so that an output found afterwards is this run's
    with tempfile.TemporaryDirectory(prefix="kdtutorial-run-") as tmp:
        job_path, result_path = Path(tmp, "job.json"), Path(tmp, "result.json")
        job = {
            "input": str(notebook), "output": str(output), "parameters": parameters or {},
            "cwd": str(Path(cwd).resolve() if cwd else notebook.parent), "timeout": timeout,
            "kernel": kernel, "progress": bool(progress), "result": str(result_path),
        }
        job_path.write_text(json.dumps(job), encoding="utf-8")
        start = time.perf_counter()
        returncode = _wait_for_child([sys.executable, "-c", _CHILD_CODE, __file__, str(job_path)], jobs, stop)
        wall = time.perf_counter() - start
        if result_path.is_file():
            result = json.loads(result_path.read_text(encoding="utf-8"))
        else:
            result = {"status": "failed", "seconds": None, "peak_mib": None, "error": {
                "ename": "RunnerChildDied", "evalue": _describe_exit(returncode),
                "output_path": str(output) if output.exists() else None}}
    result["wall_seconds"] = wall
    result["output"] = str(output)
    return result


def _wait_for_child(cmd, jobs: int = 1, stop: threading.Event | None = None) -> int:
    """Run the child and wait. If the wait is interrupted (Ctrl-C, SIGTERM, or ``stop`` set by another thread), give
    the child a moment to stop its kernel (a Ctrl-C at the terminal reaches it too), then terminate it; a kernel whose
    parent is gone shuts itself down."""
    proc = subprocess.Popen(cmd, env=child_env(jobs=jobs), stdin=subprocess.DEVNULL)
    try:
        if stop is None:
            return proc.wait()
        while True:
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if stop.is_set():
                    raise KeyboardInterrupt("another notebook's run was interrupted") from None
    except BaseException:
        for halt in (None, proc.terminate, proc.kill):
            if halt is not None:
                halt()
            try:
                proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        raise


def _describe_exit(code: int) -> str:
    if code is not None and code < 0:
        import signal
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the process running the notebook was killed by {name}{hint}"
    return f"the process running the notebook exited with status {code} without a result"


# --------------------------------------------------------------------------------------------------
# Running one notebook: the child side
# --------------------------------------------------------------------------------------------------
def _peak_children_mib() -> float:
    import resource

    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _tags(cell) -> list:
    return cell.get("metadata", {}).get("tags", [])


def _executed_cells(output_path) -> list:
    """Cells of papermill's output notebook, without the error banners papermill adds on failure."""
    try:
        cells = read_notebook(output_path)["cells"]
    except (OSError, ValueError, KeyError):
        return []
    return [c for c in cells if _ERROR_MARKER_TAG not in _tags(c)]


def _source_cell_index(input_path, out_cells, out_index):
    """Map a cell index of the executed notebook (which has papermill's injected-parameters cell) to the
    index of the same cell in the source notebook."""
    try:
        in_cells = read_notebook(input_path)["cells"]
    except (OSError, ValueError, KeyError):
        return out_index
    position = sum(1 for c in out_cells[:out_index] if _INJECTED_TAG not in _tags(c))
    seen = 0
    for index, cell in enumerate(in_cells):
        if _INJECTED_TAG in _tags(cell):
            continue
        if seen == position:
            return index
        seen += 1
    return out_index


def _last_started_cell(out_cells):
    """Index of the last cell papermill started (the one running when the kernel died or timed out)."""
    started = [i for i, c in enumerate(out_cells)
               if (c.get("metadata", {}).get("papermill") or {}).get("start_time")]
    return started[-1] if started else None


def _execute(job: dict) -> dict:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    engine_kwargs = {"execution_timeout": job["timeout"]} if job.get("timeout") else {}
    start = time.perf_counter()
    error = None
    try:
        papermill.execute_notebook(
            job["input"], job["output"], parameters=job["parameters"], kernel_name=job["kernel"],
            cwd=job["cwd"], progress_bar=job["progress"], log_output=False, **engine_kwargs)
    except PapermillExecutionError as exc:  # a cell raised
        error = {"ename": exc.ename, "evalue": exc.evalue, "output_cell_index": exc.cell_index,
                 "exec_count": exc.exec_count}
    except Exception as exc:  # kernel died, cell timeout, missing file or kernel, bad parameter...
        error = {"ename": type(exc).__name__, "evalue": str(exc) or repr(exc)}
    seconds = time.perf_counter() - start
    if error is not None:
        _locate_error(error, job)
    return {"status": "failed" if error else "ok", "seconds": seconds,
            "peak_mib": _peak_children_mib(), "error": error}


def _locate_error(error: dict, job: dict) -> None:
    """Add the failing cell (index in the source notebook) and the partial output's path to ``error``."""
    exists = Path(job["output"]).exists()
    error["output_path"] = job["output"] if exists else None
    out_cells = _executed_cells(job["output"]) if exists else []
    out_index = error.get("output_cell_index")
    if out_index is None and out_cells:
        out_index = _last_started_cell(out_cells)
        if out_index is not None:
            error["output_cell_index"] = out_index
            error["exec_count"] = out_cells[out_index].get("execution_count")
    if out_index is not None:
        error["cell_index"] = _source_cell_index(job["input"], out_cells, out_index)


def child_main(argv) -> int:
    """Hidden entry point of the child process: ``child_main([job_json_path])``."""
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        result = _execute(job)
    except KeyboardInterrupt:
        result = {"status": "interrupted", "seconds": None, "peak_mib": _peak_children_mib(),
                  "error": dict(_INTERRUPTED)}
    Path(job["result"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------------------
def _versions() -> dict:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("torch", "papermill"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _echo(text: str) -> None:
    print(text, flush=True)


def run_suite(profile, notebooks_dir=None, out_root=None, only=None, parameters=None, timeout=None,
              kernel=DEFAULT_KERNEL, progress=None, echo=_echo, merge: bool = False, jobs: int = 1) -> dict:
    """Run every discovered notebook, write ``summary.json``/``summary.md`` and return the summary dict.

    The summary holds ``profile``, ``started_at``, ``finished_at``, ``total_seconds``, ``versions``,
    ``parameters``, ``out_dir``, ``markdown`` (not written to the JSON), ``failed`` (count) and
    ``notebooks`` (one dict per notebook: name, status, seconds, wall_seconds, peak_mib, budget,
    within_budget, budget_overruns, metrics, output, error, device, software, slowest_cells, commit, finished_at;
    the commit is :func:`run_commit`'s; ``slowest_cells`` is :func:`slowest_cells`'s).
    ``merge``: merge this call's notebooks into the ``summary.json`` already in the output folder
    (:func:`kdtutorial.course.fullsummary.merge_summaries`), so several ``--only`` calls make one summary.
    ``jobs``: notebooks run at once (each in its own process, on one machine and its one GPU), except those whose
    metadata says they must run alone (:func:`runs_alone`), which run one at a time after the others. Each entry
    records how many ran at once with it (``jobs``), its call (``call``: the call's start) and, for those that ran
    together, the wall time of that part of the call (``together_seconds``), since a notebook's own wall time then
    includes its neighbours' competition for the device; ``total_seconds`` is the call's wall time, less than the
    notebooks' sum.
    """
    if profile not in PROFILES:
        raise RunnerError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    notebooks_dir = Path(notebooks_dir or default_notebooks_dir()).resolve()
    notebooks = discover(notebooks_dir, only)
    if not notebooks:
        which = f" matching {' '.join(only)}" if only else ""
        raise RunnerError(f"no notebooks NN_*.ipynb{which} in {notebooks_dir}")
    out_dir = Path(out_root or default_out_root()).resolve() / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"PROFILE": profile, **(parameters or {})}
    if progress is None:
        progress = sys.stdout.isatty()

    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise RunnerError(f"jobs must be a whole number of notebooks to run at once, 1 or more; got {jobs!r}")
    jobs = min(jobs, len(notebooks))

    started_at, t0 = _now(), time.perf_counter()
    commit = run_commit(notebooks_dir)
    stop = threading.Event() if jobs > 1 else None

    def _alone(notebook: Path) -> bool:
        try:
            return runs_alone(read_notebook(notebook).get("metadata", {})) is not None
        except (OSError, ValueError):
            return False

    def run_numbered(notebook: Path, at_once: int) -> dict:
        tag = f"[{notebooks.index(notebook) + 1}/{len(notebooks)}] {notebook.name}"
        echo(f"{tag} started at {_dt.datetime.now():%H:%M:%S}")
        try:
            budget = budget_for(read_notebook(notebook).get("metadata", {}), profile)
        except (OSError, ValueError) as exc:
            budget = budget_for({}, profile)
            echo(f"{tag}: cannot read the notebook's metadata ({exc})")
        try:
            run = run_one(notebook, out_dir / notebook.name, params, cwd=notebooks_dir, timeout=timeout,
                          kernel=kernel, progress=progress and at_once == 1, jobs=at_once, stop=stop)
        except KeyboardInterrupt:
            run = {"status": "interrupted", "error": dict(_INTERRUPTED)}
        result = {**_finish_result(notebook, out_dir / notebook.name, budget, run), "commit": commit,
                  "finished_at": _now(), "jobs": at_once, "call": started_at}
        echo(_progress_line(tag, result))
        return result

    alone = [nb for nb in notebooks if jobs > 1 and _alone(nb)]
    together = [nb for nb in notebooks if nb not in alone]
    at_once = min(jobs, len(together))
    results, one_by_one = [], notebooks
    if at_once > 1:
        previous = out_dir / "summary.json"
        order = start_order(together, json.loads(previous.read_text(encoding="utf-8")) if previous.is_file() else None)
        echo(f"{len(together)} notebooks, {at_once} at a time, started in the order "
             + " ".join(n.name.split("_")[0] for n in order)
             + (f"; then {' '.join(n.name.split('_')[0] for n in alone)} one at a time (they time themselves)"
                if alone else ""))
        start = time.perf_counter()
        results = _run_at_once(lambda nb: run_numbered(nb, at_once), together, at_once, stop, order)
        together_seconds = time.perf_counter() - start
        for result in results:
            result["together_seconds"] = together_seconds
        one_by_one = alone
    if not any(r["status"] == "interrupted" for r in results):
        for notebook in one_by_one:
            results.append(run_numbered(notebook, 1))
            if results[-1]["status"] == "interrupted":
                break
    results.sort(key=lambda r: r["name"])

    total = time.perf_counter() - t0
    summary = {
        "profile": profile, "started_at": started_at, "finished_at": _now(), "total_seconds": total,
        "versions": _versions(), "kernel": kernel, "parameters": params,
        "notebooks_dir": str(notebooks_dir), "out_dir": str(out_dir), "jobs": jobs,
        "failed": sum(r["status"] != "ok" for r in results), "notebooks": results,
    }
    if merge and (out_dir / "summary.json").is_file():
        from kdtutorial.course.fullsummary import merge_summaries

        previous = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
        try:
            summary = merge_summaries(previous, summary)
        except ValueError as exc:
            raise RunnerError(str(exc)) from None
    markdown = summary_markdown(summary["notebooks"], profile, summary["total_seconds"])
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out_dir / "summary.md").write_text(markdown, encoding="utf-8")
    summary["markdown"] = markdown
    return summary


def start_order(notebooks: list[Path], previous: dict | None) -> list[Path]:
    """The order to start ``notebooks`` in when several run at once: the longest first by their wall times in a
    ``previous`` summary (a notebook it does not time, first of all, in name order), so that the longest does not start
    last and hold the suite up alone (the longest-processing-time rule). Without a previous summary: name order."""
    seconds = {n.get("name"): n.get("wall_seconds") or n.get("seconds")
               for n in (previous or {}).get("notebooks", []) if n.get("status") == "ok"}
    if not any(seconds.get(nb.name) for nb in notebooks):
        return list(notebooks)
    return sorted(notebooks, key=lambda nb: (seconds.get(nb.name) is not None, -(seconds.get(nb.name) or 0), nb.name))


def _run_at_once(run, notebooks, jobs: int, stop: threading.Event, order=None) -> list[dict]:
    """``run(notebook)`` for every notebook, ``jobs`` at a time in threads (each waits on its own child process),
    started in ``order`` (default: ``notebooks``'); results in notebook order. An interrupt (Ctrl-C, SIGTERM) sets
    ``stop``: the notebooks running stop and report "interrupted", those not started are left out, as the
    one-at-a-time loop leaves them."""
    from concurrent.futures import ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="kdtutorial-run")
    submitted = {nb: pool.submit(run, nb) for nb in (order or notebooks)}
    futures = [submitted[nb] for nb in notebooks]
    try:
        wait(futures)
    except KeyboardInterrupt:
        stop.set()
        for future in futures:
            future.cancel()
        wait([f for f in futures if not f.cancelled()])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [f.result() for f in futures if not f.cancelled()]


def run_commit(folder: Path) -> str | None:
    """The commit a run records: ``$KDTUTORIAL_COMMIT`` when set (a copy of the tree on a GPU machine, whose ``.git``
    may be missing or stale), else the checkout's (:func:`_commit`); ``None`` when neither says."""
    return os.environ.get("KDTUTORIAL_COMMIT") or _commit(folder) or None


def _commit(folder: Path) -> str | None:
    """The short commit of the checkout ``folder`` is in (``+changes`` when it has uncommitted changes), or None."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def slowest_cells(nb, limit: int = 8, at_least: float = 1.0) -> list[dict]:
    """Where an executed notebook's time went: its ``limit`` slowest code cells of at least ``at_least`` seconds,
    slowest first, each ``{"cell", "seconds", "starts"}`` (index in the executed notebook, papermill's duration,
    the first line of the source). Read from papermill's cell metadata, which nbstripout later removes, so the
    runner keeps it in the summary."""
    timed = []
    for index, cell in enumerate(nb["cells"]):
        seconds = ((cell.get("metadata") or {}).get("papermill") or {}).get("duration")
        if cell.get("cell_type") == "code" and isinstance(seconds, (int, float)) and seconds >= at_least:
            source = cell.get("source", "")
            starts = _first_line("".join(source) if isinstance(source, list) else source, limit=80)
            timed.append({"cell": index, "seconds": round(float(seconds), 1), "starts": starts})
    return sorted(timed, key=lambda c: -c["seconds"])[:limit]


def _finish_result(notebook: Path, output: Path, budget: dict, run: dict) -> dict:
    from kdtutorial.course.fullsummary import device_of
    from kdtutorial.course.report import metrics_from_notebook

    metrics, device, software, slow = {}, None, None, []
    if output.is_file():
        try:
            executed = read_notebook(output)
            metrics = metrics_from_notebook(executed)
            device, software = device_of(executed)
            slow = slowest_cells(executed)
        except (OSError, ValueError, KeyError):
            pass
    seconds, peak = run.get("seconds"), run.get("peak_mib")
    within, overruns = check_budget(budget, seconds, peak)
    return {
        "name": notebook.name, "status": run.get("status", "failed"), "seconds": seconds,
        "wall_seconds": run.get("wall_seconds"), "peak_mib": peak, "budget": budget,
        "within_budget": within, "budget_overruns": overruns, "metrics": metrics,
        "output": str(output), "error": run.get("error"), "device": device, "software": software,
        "slowest_cells": slow,
    }


def _progress_line(tag: str, result: dict) -> str:
    measured = f"{_fmt_seconds(result['seconds'])}, peak {_fmt_mib(result['peak_mib'])}"
    if result["status"] == "ok":
        over = "" if result["within_budget"] is not False else \
            " - over budget: " + "; ".join(result["budget_overruns"])
        slow = ", ".join(f"cell {c['cell']} {_fmt_seconds(c['seconds'])}" for c in result.get("slowest_cells", [])[:3])
        return f"{tag} ok in {measured}{over}" + (f" (slowest: {slow})" if slow else "")
    where = _where(result.get("error") or {}).lstrip(", ")
    return f"{tag} {result['status'].upper()} after {measured}: " + \
        (f"{where}: " if where else "") + _describe_error(result)


# --------------------------------------------------------------------------------------------------
# Command line: ``python -m kdtutorial run``
# --------------------------------------------------------------------------------------------------
COMMAND_HELP = "execute the notebooks with papermill and summarise time, memory and metrics"
COMMAND_DESCRIPTION = """\
Execute every notebooks/NN_*.ipynb (sorted by name) with papermill, each in its own process, passing
PROFILE=<profile> and any -p NAME VALUE parameters. Executed notebooks land in <out>/<profile>/, with
summary.json and summary.md next to them; the Markdown summary is printed at the end.
Exit status: 0 if every notebook ran, 1 if any failed (the others still run), 2 for a usage error."""
COMMAND_EPILOG = """\
examples:
  python -m kdtutorial run --profile quick
  python -m kdtutorial run --profile full --only 01 03 -p EPOCHS 2 -p LR 0.01
  python -m kdtutorial run --profile full --jobs 3 --merge --out results
Budgets come from each notebook's metadata "kdtutorial": {"budget": {"quick": {"seconds": ..,
"mib": ..}}}; quick defaults to 180 s and 2048 MiB, full has none. An overrun is reported, not failed.
Failing cells are named by their index in the source notebook, counted from 0."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``run`` subcommand's options to ``parser``."""
    parser.add_argument("--profile", required=True, choices=PROFILES,
                        help="quick: small data and few epochs (CI, a first look); full: the real run")
    parser.add_argument("-p", "--parameter", dest="parameters", action="append", nargs=2,
                        metavar=("NAME", "VALUE"), default=[],
                        help="extra notebook parameter; VALUE is read as int, float, True/False/None, "
                             "else string (repeatable)")
    parser.add_argument("--only", nargs="+", metavar="PREFIX",
                        help="run only notebooks whose name starts with one of these, e.g. --only 01 03")
    parser.add_argument("--notebooks-dir", type=Path, metavar="DIR",
                        help="folder of NN_*.ipynb notebooks (default: notebooks/ of the checkout, "
                             "else ./notebooks)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="output root; results go to DIR/<profile>/ (default: runs/ of the checkout)")
    parser.add_argument("--merge", action="store_true",
                        help="merge this run's notebooks into the summary.json already in the output folder (a full "
                             "profile run as several --only calls: python -m kdtutorial run --profile full --merge "
                             "--out results; then python -m kdtutorial readme-table)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="run N notebooks at once, each in its own process on this machine (default: 1). On a GPU "
                             "whose lessons leave it idle part of the time (small steps, data loading, the CPU's "
                             "work) the suite ends sooner; each notebook's own wall time grows")
    parser.add_argument("--timeout", type=int, metavar="SECONDS",
                        help="fail a cell that runs longer than this (default: no limit)")
    parser.add_argument("--kernel", default=DEFAULT_KERNEL, metavar="NAME",
                        help=f"Jupyter kernel to run the notebooks with (default: {DEFAULT_KERNEL})")


def _interrupt_on_sigterm():
    """Treat SIGTERM (a CI job cancelled, ``timeout``) like Ctrl-C: stop and still write the summary.
    Returns a function that puts the previous handler back."""
    import signal
    import threading

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def command(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Run the ``run`` subcommand from parsed arguments; returns the exit status."""
    restore_sigterm = _interrupt_on_sigterm()
    try:
        parameters = parse_parameters(args.parameters)
        summary = run_suite(args.profile, notebooks_dir=args.notebooks_dir, out_root=args.out,
                            only=args.only, parameters=parameters, timeout=args.timeout,
                            kernel=args.kernel, merge=args.merge, jobs=args.jobs)
    except RunnerError as exc:
        if parser is not None:
            parser.error(str(exc))  # exits with status 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        restore_sigterm()
    print()
    print(summary["markdown"], end="", flush=True)
    failures = [r for r in summary["notebooks"] if r["status"] != "ok"]
    for result in failures:
        print(format_failure(result), file=sys.stderr, flush=True)
    print(f"summary: {Path(summary['out_dir']) / 'summary.md'}", flush=True)
    if any(r["status"] == "interrupted" for r in failures):
        return 130
    return 1 if failures else 0


if __name__ == "__main__":  # ``python -m kdtutorial.course.runner _one JOB.json`` (the child process)
    if len(sys.argv) == 3 and sys.argv[1] == "_one":
        sys.exit(child_main(sys.argv[2:]))
    sys.exit("usage: python -m kdtutorial run --help")
