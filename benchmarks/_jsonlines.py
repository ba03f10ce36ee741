"""What the benchmarks share: one JSON line per measurement, printed and appended to a file."""
from __future__ import annotations

import json
import time


def emitter(path):
    """A function ``emit(**record)`` that adds ``elapsed_s`` (seconds since this call), prints the record as one JSON
    line and appends it to ``path``: a run stopped part-way keeps the lines it wrote."""
    began = time.perf_counter()

    def emit(**record):
        record["elapsed_s"] = round(time.perf_counter() - began, 1)
        line = json.dumps(record)
        print(line, flush=True)
        with open(path, "a") as f:
            f.write(line + "\n")

    return emit
