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
