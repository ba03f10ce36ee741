"""Checking a fresh run of a notebook against its committed outputs: strictly, or within a stated tolerance.

The committed outputs are the reference (nbval's idea). A cell whose text is deterministic by construction (a
formula, a data description, the parameters) must match exactly, after the sanitizers (ConfigParser
``regex:``/``replace:`` pairs, nbval's file format) have normalised timings and addresses. A cell whose numbers
come out of training differs in the last digits between CPUs (AVX2 vs AVX-512 kernels round differently), so its
cell metadata states a tolerance, e.g. ``{"tolerance": {"abs": 0.5, "why": "..."}}``: its text must still match
everywhere except in the numbers, and each number may differ from the committed one by at most
``abs + rel * |committed|``. Where a training result decides a word (which method the validation split picks, an
ordering of methods within noise), ``"vary"`` lists regular expressions of the spans allowed to differ; they are
masked on both sides before the comparison, and everything else must still match (runs of spaces folded: a number
one digit wider re-pads its table column).
Cells tagged ``nbval-ignore-output`` (or marked ``# NBVAL_IGNORE_OUTPUT``; timings, versions, live widgets) are not compared. Images and widget
views are never compared (a figure's pixels are not a test).
"""
from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NUMBER", "load_sanitizers", "sanitize", "output_text", "tolerance_of", "compare_text", "compare_notebooks",
           "differing_lines", "Mismatch"]

IGNORE_MARK = "# NBVAL_IGNORE_OUTPUT"
IGNORE_TAG = "nbval-ignore-output"  # nbval's cell tag: the same, out of the learner's way
#: a number as the notebooks print it: 1,234.5 / -0.25 / 3e-05 / 99.8% (the sign belongs to the number)
NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
_SPACES = re.compile(r"[ \t]+")
_SKIPPED_MIME = ("image/", "application/vnd.jupyter.widget-view+json")


@dataclass
class Mismatch:
    """One cell whose fresh output differs from the committed one beyond what is allowed."""

    cell: int
    execution_count: int | None
    reason: str

    def __str__(self) -> str:
        return f"cell {self.cell} (In [{self.execution_count}]): {self.reason}"


def load_sanitizers(path: str | Path) -> list[tuple[re.Pattern, str]]:
    """The ``(pattern, replacement)`` pairs of an nbval sanitize file."""
    parser = configparser.ConfigParser()
    parser.read(path)
    return [(re.compile(parser[s]["regex"]), parser[s]["replace"]) for s in parser.sections()]


def sanitize(text: str, sanitizers) -> str:
    for pattern, replacement in sanitizers:
        text = pattern.sub(replacement, text)
    return text


def output_text(cell: dict) -> str:
    """The comparable text of a code cell's outputs: streams, plain-text results and errors, in order.

    Consecutive pieces of one stream are joined first, as a reader sees them: where a kernel happened to flush
    a printed line in two pieces is not part of the output.
    """
    parts, stream = [], None
    for out in cell.get("outputs", []):
        kind = out["output_type"]
        if kind == "stream":
            text = out["text"] if isinstance(out["text"], str) else "".join(out["text"])
            if stream == out["name"]:
                parts[-1] += text
            else:
                parts.append(f"[{out['name']}] {text}")
            stream = out["name"]
            continue
        stream = None
        if kind in ("execute_result", "display_data"):
            data = out.get("data", {})
            if any(m.startswith(_SKIPPED_MIME) for m in data):
                continue
            text = data.get("text/plain", "")
            parts.append(text if isinstance(text, str) else "".join(text))
        elif kind == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
    return "\n".join(p.rstrip("\n") for p in parts)


def tolerance_of(cell: dict) -> dict | None:
    """The cell's stated tolerance (``metadata.tolerance``: ``abs`` and/or ``rel``), or ``None`` (strict)."""
    tol = cell.get("metadata", {}).get("tolerance")
    if tol is None:
        return None
    unknown = set(tol) - {"abs", "rel", "vary", "why"}
    if unknown or not ({"abs", "rel"} & set(tol)) or not tol.get("why"):
        raise ValueError(f"metadata.tolerance takes 'abs' and/or 'rel', optional 'vary', and a 'why', got {tol!r}")
    return {"abs": float(tol.get("abs", 0.0)), "rel": float(tol.get("rel", 0.0)),
            "vary": [re.compile(v, re.M) for v in tol.get("vary", [])]}


def _number(token: str) -> float:
    return float(token.replace(",", ""))


def compare_text(committed: str, fresh: str, tolerance: dict | None = None) -> str | None:
    """``None`` when ``fresh`` matches ``committed`` (exactly, or number by number within ``tolerance``), else why not."""
    if committed == fresh:
        return None
    if tolerance is None:
        return _first_difference(committed, fresh)
    committed, fresh = _mask(committed, tolerance), _mask(fresh, tolerance)
    # a number one digit wider re-pads a printed table's column: compare the words with runs of spaces folded
    skeleton_a, skeleton_b = (_SPACES.sub(" ", NUMBER.sub("#", s)) for s in (committed, fresh))
    if skeleton_a != skeleton_b:
        return "text differs outside the numbers: " + _first_difference(skeleton_a, skeleton_b)
    gap, allowed, a, b = _worst_gap(committed, fresh, tolerance)
    if gap <= allowed + 1e-12:
        return None
    return f"committed {a}, now {b}: off by more than the stated tolerance ({allowed:g})"


def _mask(text: str, tolerance: dict) -> str:
    """``text`` with the spans the tolerance lets vary replaced by ``<varies>`` (masking twice changes nothing)."""
    for pattern in tolerance.get("vary", ()):
        text = pattern.sub("<varies>", text)
    return text


def _worst_gap(committed: str, fresh: str, tolerance: dict) -> tuple[float, float, str, str]:
    """The number pair that uses most of its allowance: (gap, allowed, committed number, fresh number)."""
    committed, fresh = _mask(committed, tolerance), _mask(fresh, tolerance)
    worst = (0.0, 1.0, "", "")
    for a, b in zip(NUMBER.findall(committed), NUMBER.findall(fresh)):
        allowed = tolerance["abs"] + tolerance["rel"] * abs(_number(a))
        gap = abs(_number(a) - _number(b))
        if gap / max(allowed, 1e-300) > worst[0] / max(worst[1], 1e-300):
            worst = (gap, allowed, a, b)
    return worst


def _first_difference(a: str, b: str) -> str:
    la, lb = a.splitlines(), b.splitlines()
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return f"line {i + 1}: committed {x!r}, now {y!r}"
    return f"committed {len(la)} lines, now {len(lb)}"


def _paired_code_cells(committed: dict, fresh: dict):
    """``(index in committed, committed cell, fresh cell)`` for every code cell (papermill's injected cell skipped);
    the committed cell is ``None`` where it is marked ``# NBVAL_IGNORE_OUTPUT`` or tagged ``nbval-ignore-output``."""
    code_a = [(i, c) for i, c in enumerate(committed["cells"]) if c["cell_type"] == "code"]
    code_b = [c for c in fresh["cells"] if c["cell_type"] == "code"
              and "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for (index, a), b in zip(code_a, code_b):
        source = a["source"] if isinstance(a["source"], str) else "".join(a["source"])
        ignored = IGNORE_MARK in source or IGNORE_TAG in a.get("metadata", {}).get("tags", [])
        yield index, (None if ignored else a), b


def compare_notebooks(committed: dict, fresh: dict, sanitizers=()) -> tuple[list[Mismatch], dict]:
    """Compare every code cell of ``committed`` with the same cell of ``fresh`` (an executed copy).

    Returns the mismatches and a count of the cells compared strictly, with a tolerance, and not at all, with
    ``most_used``: the largest share of its tolerance that any number used (1.0 = right at the limit).
    """
    counts = {"strict": 0, "tolerance": 0, "ignored": 0, "most_used": 0.0}  # most_used: largest gap / allowed
    mismatches = []
    for index, a, b in _paired_code_cells(committed, fresh):
        if a is None:
            counts["ignored"] += 1
            continue
        tol = tolerance_of(a)
        counts["tolerance" if tol else "strict"] += 1
        text_a, text_b = sanitize(output_text(a), sanitizers), sanitize(output_text(b), sanitizers)
        why = compare_text(text_a, text_b, tol)
        if tol and not why:
            gap, allowed, _, _ = _worst_gap(text_a, text_b, tol)
            counts["most_used"] = max(counts["most_used"], gap / allowed if allowed else 0.0)
        if why:
            mismatches.append(Mismatch(index, a.get("execution_count"), why))
    return mismatches, counts


def differing_lines(committed: dict, fresh: dict, sanitizers=()) -> list[str]:
    """Every output line of a compared cell that differs, committed and fresh side by side (for a maintainer who
    sets or checks a tolerance; the test shows the first difference of each failing cell)."""
    rows = []
    for index, a, b in _paired_code_cells(committed, fresh):
        if a is None:
            continue
        ta, tb = sanitize(output_text(a), sanitizers).splitlines(), sanitize(output_text(b), sanitizers).splitlines()
        for k in range(max(len(ta), len(tb))):
            x, y = (ta[k] if k < len(ta) else "<none>"), (tb[k] if k < len(tb) else "<none>")
            if x != y:
                rows.append(f"cell {index} line {k + 1}\n  committed: {x}\n  now:       {y}")
    return rows
