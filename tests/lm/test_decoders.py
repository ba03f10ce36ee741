"""Lesson 08's students: teacher layers copied weight for weight, seeded random decoders, left-padding-safe logits."""
import pytest
import torch

from _lm_support import tiny_llama_config
from kdtutorial.lm import decoders


def layer_state(model, j):
    prefix = f"model.layers.{j}."
    return {k[len(prefix):]: v for k, v in model.state_dict().items() if k.startswith(prefix)}


def test_copied_layers_are_the_chosen_teacher_layers_exactly(teacher):
    student = decoders.layer_copied_decoder(teacher, [0, 3])
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    assert teacher.config.num_hidden_layers == 4  # the teacher's config was copied, not changed
    assert student.copied_layers == [0, 3]
    for j, k in enumerate([0, 3]):
        s, t = layer_state(student, j), layer_state(teacher, k)
        assert s.keys() == t.keys() and len(s) == 9  # q, k, v, o, gate, up, down and the two norms
        assert all(torch.equal(s[name], t[name]) for name in s)
    assert not torch.equal(layer_state(student, 1)["self_attn.q_proj.weight"],
                           layer_state(teacher, 1)["self_attn.q_proj.weight"])  # layer 1 of the student is 3's
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert torch.equal(student.model.norm.weight, teacher.model.norm.weight)
    assert student.lm_head.weight is student.model.embed_tokens.weight  # the output head stays tied
    # frozen (the default): the teacher's own embedding module, not a copy; trained: a copy of its own
    assert student.model.embed_tokens is teacher.model.embed_tokens
    trained = decoders.layer_copied_decoder(teacher, [0, 3], freeze_embeddings=False)
    assert trained.model.embed_tokens.weight.data_ptr() != teacher.model.embed_tokens.weight.data_ptr()
    assert torch.equal(trained.model.embed_tokens.weight, teacher.model.embed_tokens.weight)


def test_the_copy_is_the_students_own(teacher):
    before = teacher.model.layers[0].mlp.up_proj.weight.clone()
    student = decoders.layer_copied_decoder(teacher, [0, 3])
    with torch.no_grad():
        student.model.layers[0].mlp.up_proj.weight.add_(1.0)
    assert torch.equal(teacher.model.layers[0].mlp.up_proj.weight, before)


def test_freezing_the_embeddings(teacher):
    frozen = decoders.layer_copied_decoder(teacher, [0, 3])
    assert frozen.get_input_embeddings().weight.requires_grad is False
    assert frozen.lm_head.weight.requires_grad is False  # tied: one matrix
    assert all(p.requires_grad for p in frozen.model.layers.parameters())
    total = sum(p.numel() for p in frozen.parameters())
    assert decoders.trainable_parameters(frozen) == total - 64 * 32
    free = decoders.layer_copied_decoder(teacher, [0, 3], freeze_embeddings=False)
    assert free.get_input_embeddings().weight.requires_grad is True
    assert decoders.trainable_parameters(free) == total


def test_the_student_runs_over_the_teachers_vocabulary(teacher):
    student = decoders.layer_copied_decoder(teacher, [0, 3]).eval()
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = decoders.lm_logits(student, ids)
    assert logits.shape == (2, 7, teacher.config.vocab_size) and torch.isfinite(logits).all()


def test_copying_every_layer_gives_the_teachers_logits(teacher):
    student = decoders.layer_copied_decoder(teacher, [0, 1, 2, 3]).eval()
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(decoders.lm_logits(student, ids), decoders.lm_logits(teacher, ids), atol=1e-6)


@pytest.mark.parametrize("layers", [[0, 4], [4], [-1, 2], [0, 1, 2, 3, 4]])
def test_a_layer_the_teacher_lacks_is_named(teacher, layers):
    with pytest.raises(ValueError, match=r"STUDENT_LAYERS.*lacks"):
        decoders.layer_copied_decoder(teacher, layers)


@pytest.mark.parametrize("layers", [[3, 0], [0, 0], [1, 1, 2], [], "03", [0, 1.0], [True, 2]])
def test_layers_must_be_distinct_and_increasing(teacher, layers):
    with pytest.raises(ValueError, match="STUDENT_LAYERS must be a non-empty increasing list"):
        decoders.check_student_layers(layers, 4)
    with pytest.raises(ValueError, match="STUDENT_LAYERS must be a non-empty increasing list"):
        decoders.layer_copied_decoder(teacher, layers)


def test_check_student_layers_names_the_parameter_it_is_given():
    assert decoders.check_student_layers((0, 2), 4) == [0, 2]
    with pytest.raises(ValueError, match="LAYERS_B"):
        decoders.check_student_layers([2, 1], 4, parameter="LAYERS_B")


def test_random_decoders_follow_their_seed():
    config = tiny_llama_config()
    a, b, c = (decoders.random_decoder(config, 2, seed) for seed in (7, 7, 8))
    assert a.config.num_hidden_layers == 2 and a.copied_layers is None
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.embed_tokens.weight"], sc["model.embed_tokens.weight"])
    assert not torch.equal(sa["model.layers.0.self_attn.q_proj.weight"], sc["model.layers.0.self_attn.q_proj.weight"])
    assert config.num_hidden_layers == 4  # the teacher's config is not changed


def test_a_random_decoder_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    decoders.random_decoder(tiny_llama_config(), 2, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_spread_layers():
    assert decoders.spread_layers(4, 30) == [0, 10, 19, 29]
    assert decoders.spread_layers(6, 30) == [0, 6, 12, 17, 23, 29]  # the full profile's students
    assert decoders.spread_layers(2, 4) == [0, 3]
    assert decoders.spread_layers(1, 30) == [29]
    assert decoders.spread_layers(30, 30) == list(range(30))
    for n in (0, 31, 2.0):
        with pytest.raises(ValueError, match="number of student layers"):
            decoders.spread_layers(n, 30)


def test_left_padding_does_not_change_the_real_positions(teacher):
    g = torch.Generator().manual_seed(3)
    long_row, short_row = torch.randint(3, 64, (7,), generator=g), torch.randint(3, 64, (4,), generator=g)
    pad = 0
    ids = torch.stack([long_row, torch.cat([torch.full((3,), pad), short_row])])
    mask = torch.tensor([[1] * 7, [0, 0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        batched = decoders.lm_logits(teacher, ids, mask)
        alone_short = decoders.lm_logits(teacher, short_row[None])
        alone_long = decoders.lm_logits(teacher, long_row[None])
    assert torch.allclose(batched[1, 3:], alone_short[0], atol=1e-5)
    assert torch.allclose(batched[0], alone_long[0], atol=1e-5)
    assert not torch.allclose(batched[1, 3:], alone_long[0, 3:], atol=1e-3)  # a different text, other logits
