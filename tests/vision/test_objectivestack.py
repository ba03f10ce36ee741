"""The grouped objectives of stacked models (issue 21): each model's loss and gradient equal what its own objective
gives on its own slice, for every kind the lessons stack, with per-model hyper-parameters and teacher caches."""
import pytest
import torch

from kdtutorial.common.schedules import AnnealingSchedule
from kdtutorial.vision import objectives
from kdtutorial.vision.objectivestack import stack_objectives
from kdtutorial.vision.training import TeacherCache

N, C, K, B = 40, 10, 6, 16


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    caches = [TeacherCache(3 * torch.randn(N, C, generator=g), "a"), TeacherCache(torch.randn(N, C, generator=g), "b")]
    labels = torch.randint(0, C, (N,), generator=g)
    logits = 2 * torch.randn(K, B, C, generator=g)
    indices = torch.stack([torch.randperm(N, generator=g)[:B] for _ in range(K)])
    return caches, labels, logits, indices


def check(objs, data, atol=1e-6):
    """The stack's [K] losses and their gradients equal each objective on its own slice (indices on the host)."""
    _, labels, logits, indices = data
    z_ref, z_stack = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    reference = torch.stack([o(z_ref[k], labels[indices[k]], indices[k]) for k, o in enumerate(objs)])
    stack = stack_objectives(objs, C)
    stack.start_epoch()  # reads Annealing KD's phi (a no-op for the other kinds)
    stacked = stack(z_stack, labels[indices], indices)
    assert stacked.shape == (len(objs),)
    torch.testing.assert_close(stacked, reference, atol=atol, rtol=1e-6)
    weights = torch.arange(1.0, len(objs) + 1)  # a different weight per model: each gradient goes to its own slice
    (reference * weights).sum().backward()
    (stacked * weights).sum().backward()
    torch.testing.assert_close(z_stack.grad, z_ref.grad, atol=1e-6, rtol=1e-5)
    return stack


def test_mixed_kinds_with_their_own_hyper_parameters(data):
    caches = data[0]
    objs = [objectives.CrossEntropy(), objectives.Distillation(caches[0], T=2.0, alpha=0.5),
            objectives.LabelSmoothing(0.1), objectives.Distillation(caches[0], T=8.0, alpha=0.9),
            objectives.VirtualTeacher(alpha=0.5, T=4.0, a=0.9), objectives.Distillation(caches[1], T=4.0, alpha=0.3)]
    stack = check(objs, data)
    assert len(stack.groups) == 5 and stack.looped == []  # the two T/alpha settings of one cache share a group


def test_distillation_without_labels_and_with_a_few_labels(data):
    caches = data[0]
    few = torch.zeros(N, dtype=torch.bool)
    few[:6] = True  # some batches hold labelled examples, and model 5's batch none at all (asserted below)
    indices = data[3]
    few[indices[5]] = False
    objs = [objectives.Distillation(caches[0], T=4.0, use_labels=False),
            *[objectives.Distillation(caches[0], T=t, alpha=0.7, labelled=few) for t in (1.0, 2.0, 4.0, 8.0, 3.0)]]
    assert not few[indices[5]].any() and few[indices[:5]].any()
    check(objs, data)


def test_annealed_logits_follow_each_epoch_phi(data):
    cache = data[0][0]
    objs = [objectives.AnnealedLogits(cache, AnnealingSchedule(tau_max=4, epochs_per_step=1)) for _ in range(K)]
    with pytest.raises(RuntimeError, match="start_epoch"):
        stack_objectives(objs, C).start_epoch()
    for epoch in (1, 3):
        for o in objs:
            o.start_epoch(epoch)
        assert check(objs, data).groups[0].phi.tolist() == pytest.approx([objs[0].phi] * K)


def test_an_objective_without_a_grouped_form_is_called_on_its_own_slice(data):
    objs = [objectives.LogitMatching(data[0][0]), objectives.CrossEntropy()] * 3
    stack = check(objs, data)
    assert stack.looped == [0, 2, 4]


@pytest.mark.parametrize("objective, message", [
    (lambda c: objectives.Distillation(c, T=4.0, alpha=1.5), "alpha must be in \\[0, 1\\], got 1.5"),
    (lambda c: objectives.LabelSmoothing(-0.1), "epsilon must be in \\[0, 1\\]"),
    (lambda c: objectives.VirtualTeacher(a=0.05), "a \\(correct-class probability\\) must be in \\[1/K, 1\\]"),
])
def test_a_hyper_parameter_out_of_range_raises_as_the_per_model_loss_does(data, objective, message):
    with pytest.raises(ValueError, match=message):
        stack_objectives([objectives.CrossEntropy(), objective(data[0][0])], C)
