"""Every parameter of every lesson rejected by name: bad values generated from the declarations in
``kdtutorial.course.lessons``; the declarations checked against the notebooks' parameters cells and the lesson code."""
import json
from pathlib import Path

import pytest

from kdtutorial.course import lessons
from kdtutorial.course.parameters import Choice, Flag, Float, Int, ListOf, ParameterError, Text

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def parameters_cell(name):
    """The notebook's ``parameters`` cell, executed: name -> value, in the cell's order."""
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    values = {}
    exec("".join(cell["source"]), {}, values)
    return values


def bad_values(rule):
    """Values ``rule`` must reject, each with the phrase of what is allowed that its error must show."""
    if isinstance(rule, Choice):
        return [("no-such-option", "one of"), (3.5, "one of")]
    if isinstance(rule, Int):
        out = [("3", rule.describe()), (2.5, rule.describe()), (True, rule.describe())]
        if rule.low is not None:
            out.append((rule.low - 1, rule.describe()))
        if rule.high is not None:
            out.append((rule.high + 1, rule.describe()))
        return out
    if isinstance(rule, Float):
        out = [("0.5", rule.describe()), (float("nan"), rule.describe())]
        if rule.low is not None:
            out.append((rule.low if rule.low_open else rule.low - 0.5, rule.describe()))
        if rule.high is not None:
            out.append((rule.high + 0.5, rule.describe()))
        return out
    if isinstance(rule, ListOf):
        if rule.empty:
            return [("[1]", "a list")] + [([v], allowed) for v, allowed in bad_values(rule.item)[:1]]
        return [([], "a non-empty list"), ("[1]", "a non-empty list")] + [
            ([v], allowed) for v, allowed in bad_values(rule.item)[:1]]
    if isinstance(rule, Text):
        return [("", "a non-empty string"), (7, "a non-empty string")]
    if isinstance(rule, Flag):
        return [("yes", "True or False"), (1, "True or False")]
    raise AssertionError(f"no bad values known for {rule!r}")


CASES = [(name, param, value, allowed) for name, lesson in lessons.LESSONS.items()
         for param, rule in lesson.all_rules.items() for value, allowed in bad_values(rule)]


def test_count_of_bad_values_tried(report):
    params = {(n, p) for n, p, _, _ in CASES}
    declared = sum(len(lesson.all_rules) for lesson in lessons.LESSONS.values())
    report(f"parameters: {len(CASES)} bad values tried for {len(params)} parameters of {len(lessons.LESSONS)} lessons")
    assert len(params) == declared  # every declared parameter of every lesson has at least one bad value


@pytest.mark.parametrize("name, param, value, allowed", CASES,
                         ids=[f"{n[:2]}-{p}-{v!r}" for n, p, v, _ in CASES])
def test_every_parameter_rejects_a_bad_value_by_name(name, param, value, allowed):
    given = {**parameters_cell(name), param: value}
    with pytest.raises(ParameterError) as err:
        lessons.settle(name, given)
    message = str(err.value)
    shown = f"{param}[0]" if isinstance(value, list) and value else param
    assert message.startswith(f"{shown} = "), message
    assert repr(value[0] if isinstance(value, list) and value else value) in message, message
    assert allowed in message, message


@pytest.mark.parametrize("name", sorted(lessons.LESSONS))
def test_declaration_matches_the_notebook_and_its_defaults_pass(name):
    cell = parameters_cell(name)
    assert list(cell) == list(lessons.lesson(name).all_rules), "parameters cell and declaration differ"
    for profile in ("quick", "full"):
        settled = lessons.settle(name, {**cell, "PROFILE": profile})
        assert None not in vars(settled).values()


@pytest.mark.parametrize("name", sorted(lessons.LESSONS))
def test_papermill_reads_every_parameter(name):
    """papermill's own reader (``papermill --help-notebook``) sees each parameter with its default and comment; a line
    it cannot parse (say, '=' inside the comment) is logged as a warning at every run and its help is lost."""
    from papermill.translators import PythonTranslator

    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    seen = [p.name for p in PythonTranslator.inspect({"source": "".join(cell["source"])})]
    assert seen == list(parameters_cell(name))


def test_every_notebook_has_a_declaration():
    assert {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")} == set(lessons.LESSONS)


def test_cross_parameter_rule_names_both_parameters():
    cell = parameters_cell("06_qadsm_two_tower")
    with pytest.raises(ParameterError, match=r"KD_TEMPERATURE = 2.0 is not allowed with KD_LOSS = 'mse': expected"):
        lessons.settle("06_qadsm_two_tower", {**cell, "KD_TEMPERATURE": 2.0})
    assert lessons.settle("06_qadsm_two_tower", {**cell, "KD_TEMPERATURE": 2.0, "KD_LOSS": "bce"}).KD_TEMPERATURE == 2.0


def test_a_missing_parameter_and_an_unknown_lesson_are_clear_errors():
    cell = parameters_cell("01_soft_targets")
    del cell["ALPHA"]
    with pytest.raises(ParameterError, match="does not set ALPHA"):
        lessons.settle("01_soft_targets", cell)
    with pytest.raises(ParameterError, match="no lesson named '99_x'"):
        lessons.settle("99_x", {})


def test_literal_choices_match_the_lesson_code():
    from kdtutorial.ranking.qadsm import QADSM_LANGS
    from kdtutorial.ranking.transfer import TRANSFER_CANDIDATES
    from kdtutorial.vision.data import VISION_NAMES
    from kdtutorial.vision.models import ARCHITECTURES

    assert lessons.ARCHITECTURES == tuple(ARCHITECTURES)
    assert lessons.VISION_DATASETS == VISION_NAMES
    assert set(lessons.TRANSFER_CANDIDATES) == set(TRANSFER_CANDIDATES)
    assert lessons.QADSM_LANGS == QADSM_LANGS
    from kdtutorial.ranking.studentkinds import STUDENT_KINDS

    assert lessons.TWO_TOWER_STUDENTS == tuple(STUDENT_KINDS)
    from kdtutorial.text.glue import GLUE_TASKS
    from kdtutorial.text.layercompare import INITS, METHODS

    assert lessons.GLUE_TASKS == GLUE_TASKS
    assert lessons.LAYER_METHODS == tuple(METHODS) and lessons.STUDENT_INITS == INITS
    from kdtutorial.lm.lmcompare import LM_INITS
    from kdtutorial.lm.lmdistil import LM_METHODS

    assert lessons.LM_METHODS == LM_METHODS and lessons.LM_INITS == LM_INITS
