"""Seeds that cannot be stacked, each in its own process (issue 21): every seed's model, history and test accuracy
equal the one-at-a-time loop's bit for bit, the parent's CPU generator ends where the loop leaves it, and the bar
counts every epoch."""
import pytest
import torch

from kdtutorial.vision import objectives
from kdtutorial.vision.data import load_vision
from kdtutorial.vision.experiments import train_architectures, train_model, train_models
from kdtutorial.vision.training import TeacherCache

SEEDS = [3, 4, 5]


class Bar:
    n = 0

    def update(self, n=1):
        self.n += n


def test_seeds_in_their_own_processes_equal_the_loop_bit_for_bit(one_torch_thread):
    data = load_vision("digits", n_train=200, n_val=60, n_test=100, seed=0)
    teacher, _, _ = train_model("mlp-small", data, objectives.CrossEntropy(), seed=9, epochs=1)
    objs = [objectives.CrossEntropy(), objectives.Distillation(TeacherCache.build(teacher, data.train)),
            objectives.LabelSmoothing(0.1)]
    kw = dict(epochs=2, batch_size=32, lr=3e-3, val_set=data.val)
    alone = [train_model("cnn-small", data, o, seed=s, **kw) for s, o in zip(SEEDS, objs)]  # batch norm: not stackable
    after_alone = torch.rand(3)
    bar = Bar()
    apart = train_models("cnn-small", data, objs, seeds=SEEDS, workers=2, progress=bar, **kw)
    assert torch.equal(torch.rand(3), after_alone)
    assert bar.n == len(SEEDS) * 2
    for (ma, ha, acc_a), (mb, hb, acc_b) in zip(alone, apart, strict=True):
        assert acc_b == acc_a and hb.records == ha.records and not mb.training
        for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values()):
            assert torch.equal(pa, pb), name


def test_architectures_of_one_seed_in_their_own_processes_equal_the_loop(one_torch_thread):
    """Teachers of several sizes from one seed (lesson 04's capacity gap): each process gives the loop's model."""
    data = load_vision("digits", n_train=200, n_val=60, n_test=100, seed=0)
    archs, kw = ["mlp-small", "cnn-small", "mlp-medium"], dict(epochs=2, batch_size=32, lr=3e-3)
    alone = [train_model(a, data, objectives.CrossEntropy(), seed=7, **kw) for a in archs]
    after_alone = torch.rand(3)
    bar = Bar()
    apart = train_architectures(archs, data, objectives.CrossEntropy(), seed=7, workers=3, progress=bar, **kw)
    assert torch.equal(torch.rand(3), after_alone) and bar.n == len(archs) * 2
    assert train_architectures(archs[:1], data, objectives.CrossEntropy(), seed=7, **kw)[0][2] == alone[0][2]
    for (ma, ha, acc_a), (mb, hb, acc_b) in zip(alone, apart, strict=True):
        assert acc_b == acc_a and hb.records == ha.records and type(ma) is type(mb)
        for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values()):
            assert torch.equal(pa, pb), name


def test_runs_without_an_architecture_are_refused():
    with pytest.raises(ValueError, match="archs"):
        train_architectures([], None, objectives.CrossEntropy(), seed=0, epochs=1)


def test_a_negative_number_of_workers_is_refused():
    with pytest.raises(ValueError, match="workers = -1"):
        train_architectures(["mlp-small"], None, objectives.CrossEntropy(), seed=0, epochs=1, workers=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_processes_train_the_loops_runs():
    """On a GPU (spawned children, each with its own CUDA context) each process trains the loop's run: the same
    initial weights, batch order and objective, so the same losses epoch by epoch up to rounding. Weights are not
    compared: cuDNN's convolution gradients are not deterministic, and Adam turns the rounding noise of a gradient that
    is zero in exact arithmetic (a convolution bias before batch norm) into steps of the full learning rate (on an H100
    after 2 epochs the first layer's bias was apart by more than 1e-3; this loss check itself has not run on a GPU yet)."""
    data = load_vision("digits", n_train=200, n_val=60, n_test=100, seed=0)
    objs = [objectives.CrossEntropy(), objectives.LabelSmoothing(0.1)]
    kw = dict(epochs=2, batch_size=32, lr=3e-3, device="cuda")
    alone = [train_model("cnn-small", data, o, seed=s, **kw) for s, o in zip(SEEDS, objs)]
    apart = train_models("cnn-small", data, objs, seeds=SEEDS[:2], workers=2, **kw)
    for (ma, ha, acc_a), (mb, hb, acc_b) in zip(alone, apart, strict=True):
        assert abs(acc_a - acc_b) <= 2.0 and next(mb.parameters()).is_cuda and not mb.training
        assert ha.column("epoch") == hb.column("epoch")
        torch.testing.assert_close(torch.tensor(hb.column("loss")), torch.tensor(ha.column("loss")),
                                   rtol=1e-3, atol=1e-4)
