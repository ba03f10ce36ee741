"""The training loop, the teacher cache (misalignment-proof) and the objectives."""
import pytest
import torch

from kdtutorial.common import losses
from kdtutorial.vision import models, objectives
from kdtutorial.vision.data import IndexedDataset, load_vision
from kdtutorial.common.environment import resolve_device, seed_everything
from kdtutorial.vision.experiments import train_model
from kdtutorial.vision.training import TeacherCache, batches, evaluate, fit
from kdtutorial.common import modules


@pytest.fixture(scope="module")
def digits():
    return load_vision("digits", n_train=600, n_val=100, n_test=300, seed=0)


@pytest.fixture(scope="module")
def teacher(digits):
    model, _, acc = train_model("mlp-medium", digits, objectives.CrossEntropy(), seed=0, epochs=15)
    return model, acc


def test_teacher_learns_digits(teacher):
    _, acc = teacher
    assert acc > 85.0


def test_cache_is_looked_up_by_index_not_position(digits, teacher):
    model, _ = teacher
    cache = TeacherCache.build(model, digits.train)
    cache.check(digits.train)
    g = torch.Generator().manual_seed(3)
    for idx in batches(len(digits.train), 64, shuffle=True, generator=g):
        with torch.no_grad():
            direct = model(digits.train.x[idx])
        assert torch.allclose(cache[idx], direct, atol=1e-5)


def test_cache_refuses_another_dataset(digits, teacher):
    model, _ = teacher
    cache = TeacherCache.build(model, digits.train)
    with pytest.raises(ValueError, match="another data set"):
        cache.check(digits.test)
    shuffled = IndexedDataset(digits.train.x.flip(0), digits.train.y.flip(0))
    with pytest.raises(ValueError, match="another data set"):
        cache.check(shuffled)


def test_distillation_objective_uses_each_examples_own_teacher_output(digits, teacher):
    model, _ = teacher
    cache = TeacherCache.build(model, digits.train)
    obj = objectives.Distillation(cache, T=4.0, alpha=0.5)
    idx = torch.tensor([5, 2, 99, 0])
    logits = torch.randn(4, 10)
    y = digits.train.y[idx]
    expected = losses.hinton_loss(logits, model(digits.train.x[idx]).detach(), y, 4.0, 0.5)
    assert torch.allclose(obj(logits, y, idx), expected, atol=1e-5)


def test_distillation_with_partial_labels(digits, teacher):
    model, _ = teacher
    cache = TeacherCache.build(model, digits.train)
    labelled = torch.zeros(len(digits.train), dtype=torch.bool)
    labelled[[2, 5]] = True
    obj = objectives.Distillation(cache, T=2.0, alpha=0.5, labelled=labelled)
    idx = torch.tensor([5, 2, 99, 0])
    logits = torch.randn(4, 10)
    y = digits.train.y[idx]
    soft = losses.kd_kl_loss(logits, cache[idx], 2.0)
    hard = losses.hard_cross_entropy(logits[:2], y[:2])
    assert torch.allclose(obj(logits, y, idx), 0.5 * soft + 0.5 * hard, atol=1e-6)
    none_labelled = objectives.Distillation(cache, T=2.0, alpha=0.5, labelled=torch.zeros_like(labelled))
    assert torch.allclose(none_labelled(logits, y, idx), soft, atol=1e-6)


def test_fit_is_repeatable_with_the_same_seed(digits):
    accs = []
    for _ in range(2):
        _, hist, acc = train_model("mlp-small", digits, objectives.CrossEntropy(), seed=7, epochs=3)
        accs.append((acc, hist.column("loss")))
    assert accs[0] == accs[1]


def test_fit_records_history_and_validation(digits):
    seed_everything(0)
    model = models.build("mlp-small", digits.input_shape, digits.n_classes)
    hist = fit(model, digits.train, objectives.LabelSmoothing(0.1), epochs=4, seed=0, val_set=digits.val)
    assert [r["epoch"] for r in hist.records] == [1, 2, 3, 4]
    assert hist.column("loss")[-1] < hist.column("loss")[0]
    assert len(hist.column("val_acc")) == 4
    assert 0 <= evaluate(model, digits.test) <= 100


def test_virtual_teacher_and_logit_matching_objectives_train(digits, teacher):
    model, _ = teacher
    cache = TeacherCache.build(model, digits.train)
    for obj in (objectives.VirtualTeacher(0.5, 4.0, 0.9), objectives.LogitMatching(cache)):
        _, hist, acc = train_model("mlp-small", digits, obj, seed=0, epochs=20)
        assert acc > 50


def test_models_and_counts():
    for name in models.ARCHITECTURES:
        m = models.build(name, (1, 8, 8), 10)
        assert m(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
        m = models.build(name, (1, 28, 28), 10)
        assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    small = modules.count_parameters(models.build("mlp-small", (1, 8, 8), 10))
    assert small == 64 * 32 + 32 + 32 * 10 + 10
    with pytest.raises(ValueError, match="unknown architecture"):
        models.build("resnet", (1, 8, 8), 10)


def test_seed_everything_gives_identical_initial_weights():
    seed_everything(3)
    a = modules.weight_norm(models.build("mlp-small", (1, 8, 8), 10))
    seed_everything(3)
    b = modules.weight_norm(models.build("mlp-small", (1, 8, 8), 10))
    assert a == b


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="not allowed"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")




def test_fit_visits_the_batches_of_batches_with_their_own_examples(digits):
    """fit copies each epoch's order to the device once and slices it there; the objective must still see the
    batches ``batches(n, batch_size, shuffle=True, generator)`` gives, epoch after epoch, and the labels of exactly
    those examples."""
    seen = []

    def recording(logits, labels, indices):
        seen.append((indices.clone(), labels.cpu().clone()))
        return losses.hard_cross_entropy(logits, labels)

    seed_everything(0)
    model = models.build("mlp-small", digits.input_shape, digits.n_classes)
    fit(model, digits.train, recording, epochs=2, batch_size=64, seed=5)
    generator = torch.Generator().manual_seed(5)
    expected = [b for _ in range(2) for b in batches(len(digits.train), 64, shuffle=True, generator=generator)]
    assert len(seen) == len(expected)
    for (indices, labels), want in zip(seen, expected):
        assert torch.equal(indices, want)
        assert torch.equal(labels, digits.train.y[want])
