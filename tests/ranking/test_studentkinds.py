"""Lesson 06's student kinds: what each builds, that a seed fixes its weights, that the pretrained encoder is left
untouched, and that a bad name says which kinds there are."""
import pytest
import torch

from _support import tiny_bert
from kdtutorial.ranking import studentkinds
from kdtutorial.ranking.twotower import CDSSM, TwinBERT

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_each_kind_builds_the_student_it_names():
    pretrained = tiny_bert(50)
    before = _state(pretrained)
    built = {name: studentkinds.build_student(name, pretrained, [1, 0], seed=3) for name in studentkinds.STUDENT_KINDS}
    assert isinstance(built["C-DSSM"], CDSSM)
    assert studentkinds.student_kind("C-DSSM").reads == "trigrams"
    tiny = built["TwinBERT-Tiny"]
    assert isinstance(tiny, TwinBERT) and tiny.dim == 128 and tiny.crossing_kind == "res"
    assert tiny.encoder.config.num_hidden_layers == 2 and tiny.encoder.config.vocab_size == 50
    assert len(built["TwinBERT_1L"].encoder.encoder.layer) == 1
    assert len(built["TwinBERT_res"].encoder.encoder.layer) == 2 and built["TwinBERT_cos"].crossing_kind == "cos"
    # the one copied layer of TwinBERT_1L is the first of `layers` (teacher layer 1)
    one = built["TwinBERT_1L"].encoder.encoder.layer[0].state_dict()
    for key, value in pretrained.encoder.layer[1].state_dict().items():
        assert torch.equal(one[key], value)
    assert all(torch.equal(before[k], v) for k, v in pretrained.state_dict().items())


@pytest.mark.parametrize("name", ["C-DSSM", "TwinBERT-Tiny", "TwinBERT_res"])
def test_a_seed_fixes_the_weights(name):
    pretrained = tiny_bert(50)
    a, b = (studentkinds.build_student(name, pretrained, [0], seed=s) for s in (5, 5))
    c = studentkinds.build_student(name, pretrained, [0], seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_bad_names_and_empty_layers_are_refused():
    with pytest.raises(ValueError, match="student kind 'BERT' is not allowed: expected one of"):
        studentkinds.build_student("BERT", tiny_bert(50), [0], seed=0)
    with pytest.raises(ValueError, match="layers is empty"):
        studentkinds.build_student("TwinBERT_res", tiny_bert(50), [], seed=0)


def test_random_students_take_the_scratch_rate_and_learn_their_embeddings():
    given = dict(labels=1e-4, distil=3e-4, finetune=5e-5, scratch=1e-3)
    assert studentkinds.student_kind("TwinBERT_res").rates(**given) == {"labels": 1e-4, "distil": 3e-4, "finetune": 5e-5}
    for name in ("C-DSSM", "TwinBERT-Tiny"):
        kind = studentkinds.student_kind(name)
        assert kind.rates(**given) == {"labels": 1e-3, "distil": 1e-3, "finetune": 1e-4}
        assert not kind.freezes_embeddings(True)
    assert studentkinds.student_kind("TwinBERT_1L").freezes_embeddings(True)
    assert not studentkinds.student_kind("TwinBERT_1L").freezes_embeddings(False)


def test_students_with_random_weights_train_their_own_number_of_label_epochs():
    assert studentkinds.student_kind("TwinBERT_res").label_epochs(epochs=3, scratch=12) == 3
    assert studentkinds.student_kind("TwinBERT_1L").label_epochs(epochs=3, scratch=12) == 3
    for name in ("C-DSSM", "TwinBERT-Tiny"):
        assert studentkinds.student_kind(name).label_epochs(epochs=3, scratch=12) == 12
