"""Browser smoke test: notebook 01 in a live JupyterLab, driven by headless Chromium through selenium.

papermill and nbval run the notebooks without a frontend, so they never move a slider: an exception inside an
``ipywidgets.interact`` callback only shows up in a live session. This test

1. starts JupyterLab (no token, 127.0.0.1, a free port) on a temporary copy of ``notebooks/``, so the run never
   writes into the checkout, with isolated JupyterLab settings/workspaces (no news pop-up, every cell attached);
2. opens ``01_soft_targets.ipynb`` in headless Chromium (Debian's ``chromium`` + ``chromedriver``), clears the
   outputs and runs all cells (the copy's parameters cell set to a small run, ``SMALL_RUN``: every cell still
   runs, in seconds), failing early on the first error output;
3. moves the temperature slider ``T`` (keyboard on the slider handle; ``continuous_update=False`` redraws on
   release) and checks that the plot under it changed, that exactly one image is shown there, and that no
   traceback / error output appeared anywhere in the notebook (widget outputs included);
4. saves ``runs/browser/01_slider.png`` (and ``runs/browser/01_failure.png`` when it fails).

It skips itself when chromium, chromedriver or selenium are missing (``bash .ci/browser-deps.sh`` installs the
first two; selenium is in requirements.txt). The server, its kernels, chromedriver and Chromium are always stopped.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "01_soft_targets.ipynb"
SLIDER = "T"  # kd.widgets.explore(show_temperature, T=(0.5, 20.0, 0.5, 4.0))
SHOTS = ROOT / "runs" / "browser"

SERVER_TIMEOUT = 90      # s until the server answers /api/status
KERNEL_TIMEOUT = 180     # s until JupyterLab is loaded and the kernel idle
RUN_ALL_TIMEOUT = 480    # s for Run All Cells (the quick profile takes 1-2 min on 2 cores)
STALL_TIMEOUT = 30       # s of an idle kernel with cells still not run before we call the run stopped
WIDGET_TIMEOUT = 60      # s for the slider and its plot to render
REDRAW_TIMEOUT = 90      # s for the redraw after moving the slider
SETTLE = 3.0             # s to let late outputs (a second figure, a traceback) arrive after the redraw


# --------------------------------------------------------------------------- what is needed, else skip

def _missing(reason):
    """Skip, except where $KDTUTORIAL_REQUIRE_BROWSER is set (.ci/run sets it): there a missing tool fails."""
    if os.environ.get("KDTUTORIAL_REQUIRE_BROWSER"):
        pytest.fail(reason + "; $KDTUTORIAL_REQUIRE_BROWSER is set, so the browser test may not skip")
    pytest.skip(reason)


# A smaller run of the lesson: every cell still runs (the slider is made in section 1, before any training), but the
# trained parts take seconds instead of minutes. Set in the copy's parameters cell, as a Colab learner would.
SMALL_RUN = {"N_SEEDS": "1", "EPOCHS": "3", "TEACHER_EPOCHS": "2", "GRID_T": "[2.0]", "GRID_ALPHA": "[0.5]"}


def _small_parameters(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = []
    for line in cell.source.splitlines():
        name = line.split("=", 1)[0].strip()
        lines.append(f"{name} = {SMALL_RUN[name]}" if name in SMALL_RUN else line)
    cell.source = "\n".join(lines)
    nbformat.write(nb, path)


def _browser_tools():
    """(chromium, chromedriver) paths, or a skip with the reason."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("selenium is not installed (it is in requirements.txt: `make install`)")
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    if chromium is None:
        _missing("chromium is not installed (`bash .ci/browser-deps.sh` installs Debian's chromium)")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.access("/usr/bin/chromedriver", os.X_OK) else None)
    if driver is None:
        _missing("chromedriver is not installed (`bash .ci/browser-deps.sh` installs Debian's chromium-driver)")
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_tree(proc: subprocess.Popen | None, grace: float = 15.0) -> None:
    """SIGTERM a process and everything it started (kernels run in their own sessions), then SIGKILL leftovers."""
    if proc is None:
        return
    import psutil

    try:
        family = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    _kill_leftovers(family, timeout=5)


def _kill_leftovers(family, timeout: float) -> None:
    """Wait up to ``timeout`` for the processes of ``family`` to end, then SIGKILL those still alive."""
    import psutil

    _, alive = psutil.wait_procs(family, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"({path} not readable)"


# --------------------------------------------------------------------------- JupyterLab server

@pytest.fixture
def browser_tools():
    """(chromium, chromedriver); skips the test before anything starts when one of the three is missing."""
    return _browser_tools()


@pytest.fixture
def jupyterlab(browser_tools, tmp_path):
    """A JupyterLab server on a copy of notebooks/; yields its base URL. Stops the server and its kernels."""
    root = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    _small_parameters(root / NOTEBOOK)
    settings = tmp_path / "lab-settings"
    for name, text in {
        # every cell attached to the DOM (no virtual scrolling), so the whole notebook can be inspected
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"windowingMode": "none"}',
        # no "fetch news?" toast over the notebook, no request to the internet
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
            '{"fetchNews": "false", "checkForUpdates": false, "doNotDisturbMode": true}',
    }.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(text)
    env = dict(os.environ)  # KDTUTORIAL_DATA, HF_*_OFFLINE, ... reach the kernel
    env.pop("MPLBACKEND", None)  # the kernel needs matplotlib's inline backend to show the plots
    env.pop("KDTUTORIAL_FIGURES", None)  # figures land beside the copied notebooks, never in the checkout
    env.update(JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
               PYTHONUNBUFFERED="1")
    port = _free_port()
    log = tmp_path / "jupyterlab.log"
    python = ROOT / ".venv" / "bin" / "python"
    cmd = [str(python if python.exists() else sys.executable), "-m", "jupyter", "lab", "--no-browser",
           "--ip=127.0.0.1", f"--port={port}", "--port-retries=0", "--IdentityProvider.token=",
           "--ServerApp.password=", f"--ServerApp.root_dir={root}", "--ServerApp.terminals_enabled=False",
           "--LabApp.expose_app_in_browser=True"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode} before answering:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer on {url} within {SERVER_TIMEOUT} s:\n{_tail(log)}")
            time.sleep(0.5)
        yield url
    finally:
        _stop_tree(proc)
        print(f"\n[browser] JupyterLab stopped; log tail:\n{_tail(log, 8)}")


# --------------------------------------------------------------------------- headless Chromium

@pytest.fixture
def browser(browser_tools, tmp_path):
    chromium, chromedriver = browser_tools
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1100", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(arg)
    # an explicit driver path: selenium-manager (which would download one) is never asked
    service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        import psutil

        try:
            family = psutil.Process(service.process.pid).children(recursive=True)
        except (psutil.NoSuchProcess, AttributeError):
            family = []
        try:
            driver.quit()
        finally:
            _kill_leftovers(family, timeout=10)


# --------------------------------------------------------------------------- the notebook, seen from the page

# State of the current notebook from JupyterLab's own model (window.jupyterapp: --LabApp.expose_app_in_browser).
STATE_JS = r"""
const app = window.jupyterapp;
if (!app || !app.shell) return {ready: false, why: 'JupyterLab not loaded'};
const w = app.shell.currentWidget;
if (!w || !w.content || !w.sessionContext || !w.content.widgets) return {ready: false, why: 'no notebook open'};
const ctx = w.sessionContext;
const kernel = ctx.session && ctx.session.kernel;
const ERR = /Traceback \(most recent call last\)|\b[A-Z]\w*Error\b/;
let code = 0, counted = 0, running = 0;
const errors = [];
w.content.widgets.forEach((cell, index) => {
  const m = cell.model;
  if (m.type !== 'code') return;
  code += 1;
  const prompt = cell.node.querySelector('.jp-InputPrompt');
  if (prompt && prompt.textContent.includes('*')) running += 1;
  if (m.executionCount !== null && m.executionCount !== undefined) counted += 1;
  for (let i = 0; i < m.outputs.length; i++) {
    const o = m.outputs.get(i).toJSON();
    if (o.output_type === 'error') {
      errors.push(`cell ${index}: ${o.ename}: ${o.evalue}\n` + (o.traceback || []).join('\n'));
    } else if (o.output_type === 'stream' && o.name === 'stderr') {
      const text = Array.isArray(o.text) ? o.text.join('') : String(o.text);
      if (ERR.test(text)) errors.push(`cell ${index} (stderr): ${text}`);
    }
  }
});
return {ready: true, kernel: kernel ? kernel.status : 'none', readyKernel: !!(kernel && ctx.isReady),
        code, counted, running, errors};
"""

# Error text rendered anywhere in the notebook, widget outputs (which the notebook model does not hold) included.
DOM_ERRORS_JS = r"""
const ERR = /Traceback \(most recent call last\)|\b[A-Z]\w*Error\b/;
const found = [];
document.querySelectorAll('.jp-Notebook .jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')
  .forEach(el => { const t = el.innerText || el.textContent; if (ERR.test(t)) found.push(t); });
return found;
"""

# The interact box whose slider is labelled arguments[0], with its readout and the images of its output.
SLIDER_JS = r"""
for (const box of document.querySelectorAll('.jp-Notebook .widget-interact')) {
  for (const slider of box.querySelectorAll('.widget-slider')) {
    const label = slider.querySelector('.widget-label');
    if (!label || label.textContent.trim() !== arguments[0]) continue;
    const readout = slider.querySelector('.widget-readout');
    const imgs = Array.from(box.querySelectorAll('.widget-output img'));
    return {box, slider, handle: slider.querySelector('.noUi-handle'), readout,
            value: readout ? (readout.innerText || readout.textContent).trim() : null,
            srcs: imgs.map(i => i.getAttribute('src') || '')};
  }
}
return null;
"""


def _wait(what: str, timeout: float, poll, interval: float = 1.0):
    """Call ``poll()`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = poll()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _errors(driver, state=None) -> list[str]:
    state = state or driver.execute_script(STATE_JS)
    found = list(state.get("errors", [])) if state.get("ready") else []
    for text in driver.execute_script(DOM_ERRORS_JS):
        if not any(text.strip()[:200] in e for e in found):
            found.append(f"(rendered) {text}")
    return found


def _report(errors: list[str]) -> str:
    return "\n\n".join(e if len(e) < 4000 else e[:4000] + "\n[...]" for e in errors)


def _screenshot(driver, name: str, element=None) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    if element is not None:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        time.sleep(0.5)
    path = SHOTS / name
    driver.save_screenshot(str(path))
    print(f"[browser] screenshot {path}")
    return path


def test_temperature_slider_redraws_without_errors(jupyterlab, browser, report):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver = browser
    t0 = time.monotonic()
    try:
        driver.get(f"{jupyterlab}/lab/tree/{NOTEBOOK}")
        state = _wait("JupyterLab to open the notebook with an idle kernel", KERNEL_TIMEOUT, lambda: (
            s if (s := driver.execute_script(STATE_JS)).get("ready") and s["readyKernel"] and s["kernel"] == "idle"
            else None))
        print(f"\n[browser] notebook open, kernel idle after {time.monotonic() - t0:.0f} s ({state['code']} code cells)")

        # Run > Run All Cells on a notebook without outputs, so every output seen below comes from this session
        driver.execute_script("return window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs');")
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
        t_run = time.monotonic()
        stalled_since = None

        def run_finished():
            nonlocal stalled_since
            s = driver.execute_script(STATE_JS)
            if not s.get("ready"):
                return None
            if s["errors"]:
                pytest.fail(f"Run All Cells raised in the notebook ({s['counted']}/{s['code']} cells ran):\n"
                            f"{_report(s['errors'])}")
            if s["kernel"] in ("dead", "unknown", "terminating", "autorestarting"):
                pytest.fail(f"the kernel is {s['kernel']} after {s['counted']}/{s['code']} cells")
            if s["kernel"] == "idle" and s["running"] == 0:
                if s["counted"] == s["code"]:
                    return s
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > STALL_TIMEOUT:
                    pytest.fail(f"Run All Cells stopped: {s['counted']}/{s['code']} code cells ran, kernel idle")
            else:
                stalled_since = None
            return None

        state = _wait(f"Run All Cells to finish ({NOTEBOOK})", RUN_ALL_TIMEOUT, run_finished, interval=2.0)
        print(f"[browser] all {state['code']} code cells ran in {time.monotonic() - t_run:.0f} s")
        if errors := _errors(driver):
            pytest.fail(f"error output after Run All Cells:\n{_report(errors)}")

        # the temperature slider and the plot under it
        found = _wait(f"the slider {SLIDER!r} and its plot", WIDGET_TIMEOUT, lambda: (
            f if (f := driver.execute_script(SLIDER_JS, SLIDER)) and f["srcs"] and f["handle"] else None))
        before_srcs, before_value = found["srcs"], found["value"]
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", found["box"])
        print(f"[browser] slider {SLIDER} = {before_value}, {len(before_srcs)} image(s) under it before the move")

        # move it: keyboard on the noUiSlider handle (End = maximum); the model updates on release
        ActionChains(driver).click(found["handle"]).perform()
        found["handle"].send_keys(Keys.END)

        def moved():
            f = driver.execute_script(SLIDER_JS, SLIDER)
            return f if f and f["value"] != before_value else None

        try:
            _wait("the slider readout to change", 10, moved, interval=0.5)
        except pytest.fail.Exception:
            # fallback: type the value into the readout
            readout = driver.execute_script(SLIDER_JS, SLIDER)["readout"]
            ActionChains(driver).double_click(readout).perform()
            readout.send_keys(Keys.CONTROL, "a")
            readout.send_keys("12", Keys.ENTER)
            _wait("the slider readout to change (typed)", 10, moved, interval=0.5)
        t_move = time.monotonic()

        def redrawn():
            f = driver.execute_script(SLIDER_JS, SLIDER)
            s = driver.execute_script(STATE_JS)
            if _errors(driver, s):
                return f or True  # an error output is an answer too: reported below
            if f and f["srcs"] and f["srcs"] != before_srcs and s["kernel"] == "idle":
                return f
            return None

        _wait(f"the plot under {SLIDER!r} to redraw", REDRAW_TIMEOUT, redrawn, interval=0.5)
        time.sleep(SETTLE)
        _wait("the kernel to be idle after the redraw", REDRAW_TIMEOUT,
              lambda: driver.execute_script(STATE_JS).get("kernel") == "idle", interval=0.5)
        after = driver.execute_script(SLIDER_JS, SLIDER)
        print(f"[browser] slider {SLIDER} = {after['value']} after the move; {len(after['srcs'])} image(s) under it, "
              f"redraw took {time.monotonic() - t_move:.1f} s")
        _screenshot(driver, "01_slider.png", after["box"])

        problems = []
        if len(before_srcs) != 1:
            problems.append(f"{len(before_srcs)} images under the slider before it moved, expected exactly 1")
        if errors := _errors(driver):
            problems.append(f"error output in the notebook after moving the slider:\n{_report(errors)}")
        if not after["srcs"] or after["srcs"] == before_srcs:
            problems.append("the plot under the slider did not change")
        if len(after["srcs"]) != 1:
            problems.append(f"{len(after['srcs'])} images under the slider after the redraw, expected exactly 1")
        if problems:
            pytest.fail("\n\n".join(problems))
        print(f"[browser] passed in {time.monotonic() - t0:.0f} s")
        report(f"browser: lesson 01 in JupyterLab, slider {SLIDER} moved to {after['value']}: one new figure, no error "
               f"output ({time.monotonic() - t0:.0f} s); screenshot runs/browser/01_slider.png")
    except BaseException:
        try:
            found = driver.execute_script(SLIDER_JS, SLIDER)
            _screenshot(driver, "01_failure.png", found["box"] if found else None)
        except Exception as err:  # noqa: BLE001 - the original failure matters more
            print(f"[browser] no failure screenshot: {err}")
        raise
