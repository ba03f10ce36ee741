"""The committed-output check: strict comparison, numbers within a stated tolerance, spans allowed to vary."""
import pytest

from kdtutorial.course.outputs import NUMBER, compare_notebooks, compare_text, output_text, tolerance_of


def tol(**kw):
    return tolerance_of({"metadata": {"tolerance": {"why": "test", **kw}}})


def test_strict_cells_must_match_to_the_character():
    assert compare_text("acc 98.6%", "acc 98.6%") is None
    assert "committed 'acc 98.6%', now 'acc 98.5%'" in compare_text("acc 98.6%", "acc 98.5%")


def test_numbers_within_the_stated_tolerance_pass_and_beyond_it_fail():
    t = tol(abs=0.5)
    assert compare_text("KD 98.6 ± 0.4, gain +1.0", "KD 98.2 ± 0.5, gain +0.7", t) is None
    why = compare_text("KD 98.6 ± 0.4", "KD 97.9 ± 0.4", t)
    assert "committed 98.6, now 97.9" in why and "0.5" in why
    assert compare_text("9,610 parameters", "9,611 parameters", tol(abs=0.0, rel=1e-3)) is None


def test_text_outside_the_numbers_must_still_match():
    why = compare_text("chosen: KD T=8 a=0.5", "chosen: scratch", tol(abs=10))
    assert why.startswith("text differs outside the numbers")


def test_vary_masks_only_the_spans_it_names():
    t = tol(abs=0.5, vary=[r"KD T=\S+ a=\S+"])
    assert compare_text("chosen KD T=8 a=0.5: 98.6", "chosen KD T=8 a=0.9: 98.2", t) is None
    assert compare_text("chosen KD T=8 a=0.5: 98.6", "picked KD T=8 a=0.9: 98.2", t) is not None


def test_number_pattern_reads_signs_thousands_and_exponents():
    assert NUMBER.findall("+1.4 of -0.25, 87,370 and 3e-05 at 99.8%") == ["+1.4", "-0.25", "87,370", "3e-05", "99.8"]
    assert NUMBER.findall("[0, 2, 4]") == ["0", "2", "4"]


def test_a_tolerance_must_say_why():
    with pytest.raises(ValueError, match="why"):
        tolerance_of({"metadata": {"tolerance": {"abs": 1}}})


def cell(text, source="print()", **metadata):
    return {"cell_type": "code", "source": source, "metadata": metadata, "execution_count": 1,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": text}]}


def test_compare_notebooks_counts_and_reports():
    committed = {"cells": [cell("a 1.0\n"), cell("b 2.0\n", tolerance={"abs": 0.5, "why": "t"}),
                           cell("t 3 s\n", source="# NBVAL_IGNORE_OUTPUT\nprint()"),
                           cell("t 4 s\n", tags=["nbval-ignore-output"])]}  # the tag: the same, out of sight
    fresh = {"cells": [cell("a 1.0\n"), cell("b 2.4\n"), cell("t 9 s\n"), cell("t 8 s\n")]}
    mismatches, counts = compare_notebooks(committed, fresh)
    assert not mismatches and counts == {"strict": 1, "tolerance": 1, "ignored": 2, "most_used": pytest.approx(0.8)}
    fresh["cells"][0] = cell("a 1.1\n")
    mismatches, _ = compare_notebooks(committed, fresh)
    assert len(mismatches) == 1 and mismatches[0].cell == 0


def test_images_and_widget_views_are_not_compared():
    c = {"outputs": [{"output_type": "display_data", "data": {"image/png": "x", "text/plain": "<Figure>"}},
                     {"output_type": "display_data", "data": {"application/vnd.jupyter.widget-view+json": {},
                                                              "text/plain": "0%|"}},
                     {"output_type": "execute_result", "data": {"text/plain": "42"}}]}
    assert output_text(c) == "42"


def test_a_line_flushed_in_two_pieces_reads_as_one():
    pieces = {"outputs": [{"output_type": "stream", "name": "stdout", "text": "gain +1.0"},
                          {"output_type": "stream", "name": "stdout", "text": " <- chosen\n"}]}
    whole = {"outputs": [{"output_type": "stream", "name": "stdout", "text": "gain +1.0 <- chosen\n"}]}
    assert output_text(pieces) == output_text(whole) == "[stdout] gain +1.0 <- chosen"


def test_a_wider_number_may_re_pad_its_table_column():
    committed = "cnn-teacher   87370    99.8   93.9 ± 1.4"
    fresh = "cnn-teacher   87370   100.0   94.0 ± 1.1"
    assert compare_text(committed, fresh, tol(abs=0.5)) is None
    assert compare_text(committed, fresh) is not None  # strict cells: the exact characters
