"""Headline metrics that a notebook hands to the suite runner.

A notebook calls ``record_metrics(teacher_acc=97.1, ...)`` once near its end. The call displays a short
text line for the reader and, under a private MIME type, the same numbers as JSON. The runner
(``python -m kdtutorial run``) reads that MIME type back out of the executed notebook, so no file or
environment variable has to pass between the kernel and the runner.
"""
from __future__ import annotations

import json
import math

METRICS_MIME = "application/vnd.kdtutorial.metrics+json"


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Recorded(dict):
    """The metrics ``record_metrics`` returns: a plain dict that Jupyter does not echo when a cell ends with the call
    (``record_metrics`` already showed them once)."""

    def _ipython_display_(self):
        pass


def record_metrics(**metrics) -> dict:
    """Display ``metrics`` (name -> number or short string) for the reader and for the suite runner; return them
    (plain Python values), e.g. for :func:`kdtutorial.course.archive.beside`."""
    clean = {k: _plain(v) for k, v in metrics.items()}
    text = "headline metrics: " + ", ".join(f"{k}={v}" for k, v in clean.items())
    try:
        from IPython.display import display
    except ImportError:  # plain Python: just print
        print(text)
        return Recorded(clean)
    display({"text/plain": text, METRICS_MIME: json.loads(json.dumps(clean))}, raw=True)
    return Recorded(clean)


def metrics_from_notebook(nb) -> dict:
    """Collect every recorded metric from an executed notebook (an ``nbformat`` node or a dict)."""
    found = {}
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if METRICS_MIME in data:
                payload = data[METRICS_MIME]
                if isinstance(payload, str):
                    payload = json.loads(payload)
                found.update(payload)
    return found


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
            source = "".join(source) if isinstance(source, list) else source
            first = next((line for line in source.splitlines() if line.strip()), "")
            timed.append({"cell": index, "seconds": round(float(seconds), 1), "starts": first[:80]})
    return sorted(timed, key=lambda c: -c["seconds"])[:limit]
