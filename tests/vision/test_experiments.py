"""train_models (issue 21): the seeds of one configuration trained together give what train_model gives seed by seed
(the same test accuracies and histories' validation accuracies, the same weights to float32 rounding), and an
architecture that cannot be stacked falls back to train_model per seed, with identical results."""
import pytest
import torch

from kdtutorial.vision import objectives
from kdtutorial.vision.data import load_vision
from kdtutorial.common.schedules import AnnealingSchedule
from kdtutorial.vision.experiments import (train_annealing_kd, train_annealing_kd_models, train_model, train_models,
                                          train_recipes)
from kdtutorial.vision.training import TeacherCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py

SEEDS = [3, 4, 5]
TRAIN = dict(epochs=4, lr=3e-3, batch_size=32, weight_decay=1e-4)
# float32 rounding of batched vs one-at-a-time matrix products, after 4 epochs (as in test_seedbatch.py)
ATOL, RTOL = 2e-5, 1e-4


@pytest.fixture(scope="module")
def digits():
    return load_vision("digits", n_train=300, n_val=100, n_test=150, seed=0)


@pytest.fixture(scope="module")
def caches(digits):
    """One teacher cache per seed (per-seed state, as lesson 02's Tf-KD self: the seed's own baseline teaches it)."""
    out = []
    for s in SEEDS:
        teacher, _, _ = train_model("mlp-small", digits, objectives.CrossEntropy(), seed=100 + s, epochs=2)
        out.append(TeacherCache.build(teacher, digits.train))
    return out


def one_at_a_time(arch, data, objs, **kw):
    return [train_model(arch, data, o, seed=s, **kw) for s, o in zip(SEEDS, objs)]


@pytest.mark.parametrize("kind", ["cross-entropy", "distillation, a cache per seed"])
def test_train_models_gives_what_train_model_gives_per_seed(digits, caches, kind):
    if kind == "cross-entropy":
        objs = [objectives.CrossEntropy()] * len(SEEDS)  # one stateless objective repeated, as the lessons pass it
    else:
        objs = [objectives.Distillation(c, T=4.0, alpha=0.9) for c in caches]
    alone = one_at_a_time("mlp-medium", digits, objs, val_set=digits.val, **TRAIN)
    after_alone = torch.rand(3)  # the global random state the per-seed loop leaves behind
    together = train_models("mlp-medium", digits, objs, seeds=SEEDS, val_set=digits.val, **TRAIN)
    assert torch.equal(torch.rand(3), after_alone)  # ... and train_models leaves the same one
    assert len(together) == len(SEEDS)
    for (ma, ha, acc_a), (mb, hb, acc_b) in zip(alone, together):
        assert acc_b == acc_a  # the same predictions on every test example
        assert hb.column("val_acc") == ha.column("val_acc")
        assert hb.column("loss") == pytest.approx(ha.column("loss"), rel=1e-5)
        assert not mb.training
        for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values()):
            assert torch.allclose(pa, pb, atol=ATOL, rtol=RTOL), name
    assert together[0][1].column("loss") != together[1][1].column("loss")  # the seeds really differ


class Bar:
    """What fit needs of a shared tqdm bar: ``update(n)``."""

    n = 0

    def update(self, n=1):
        self.n += n


def test_a_shared_progress_bar_counts_every_model_and_epoch(digits):
    alone, together = Bar(), Bar()
    one_at_a_time("mlp-tiny", digits, [objectives.CrossEntropy()] * len(SEEDS), epochs=2, progress=alone)
    train_models("mlp-tiny", digits, [objectives.CrossEntropy()] * len(SEEDS), seeds=SEEDS, epochs=2, progress=together)
    assert together.n == alone.n == len(SEEDS) * 2


@pytest.mark.parametrize("arch", ["mlp-large", "cnn-small"])  # dropout; batch normalisation
def test_an_architecture_that_cannot_be_stacked_is_trained_seed_by_seed(digits, arch):
    objs = [objectives.LabelSmoothing(0.1)] * 2
    kw = dict(epochs=2, batch_size=64)
    alone = [train_model(arch, digits, o, seed=s, **kw) for s, o in zip(SEEDS[:2], objs)]
    together = train_models(arch, digits, objs, seeds=SEEDS[:2], **kw)
    for (ma, ha, acc_a), (mb, hb, acc_b) in zip(alone, together):
        assert acc_b == acc_a and hb.records == ha.records
        for pa, pb in zip(ma.state_dict().values(), mb.state_dict().values()):
            assert torch.equal(pa, pb)  # the same code path: the same bits (dropout masks included)


def test_one_objective_per_seed_is_required(digits):
    with pytest.raises(ValueError, match="one objective per seed: got 3 seeds and 1 objectives"):
        train_models("mlp-tiny", digits, [objectives.CrossEntropy()], seeds=SEEDS, epochs=1)


def assert_same_runs(alone, together):
    for (ma, ha, acc_a), (mb, hb, acc_b) in zip(alone, together, strict=True):
        assert acc_b == acc_a
        assert hb.column("val_acc") == ha.column("val_acc")
        assert hb.column("loss") == pytest.approx(ha.column("loss"), rel=1e-5)
        assert [r.get("stage") for r in hb.records] == [r.get("stage") for r in ha.records]
        assert [r.get("phi") for r in hb.records] == [r.get("phi") for r in ha.records]
        for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values()):
            assert torch.allclose(pa, pb, atol=ATOL, rtol=RTOL), name


def test_several_recipes_trained_in_one_stack_give_each_recipe_per_seed(digits, caches):
    """A lesson passes seeds * n_recipes: scratch, two KD settings and label smoothing over the same seeds."""
    recipes = [objectives.CrossEntropy(), objectives.Distillation(caches[0], T=2.0, alpha=0.5),
               objectives.Distillation(caches[0], T=8.0, alpha=0.9), objectives.LabelSmoothing(0.1)]
    seeds = SEEDS[:2] * len(recipes)
    objs = [r for r in recipes for _ in SEEDS[:2]]
    alone = [train_model("mlp-small", digits, o, seed=s, val_set=digits.val, **TRAIN) for s, o in zip(seeds, objs)]
    together = train_models("mlp-small", digits, objs, seeds=seeds, val_set=digits.val, **TRAIN)
    assert_same_runs(alone, together)


def test_annealing_kd_seeds_trained_together_equal_one_at_a_time(digits, caches):
    schedule = AnnealingSchedule(tau_max=3, epochs_per_step=1)
    kw = dict(stage2_epochs=2, stage1_lr=1e-3, lr=3e-3, batch_size=32, val_set=digits.val)
    alone = [train_annealing_kd("mlp-tiny", digits, caches[0], schedule, seed=s, **kw) for s in SEEDS]
    after_alone = torch.rand(3)
    bar = Bar()
    together = train_annealing_kd_models("mlp-tiny", digits, caches[0], schedule, seeds=SEEDS, progress=bar, **kw)
    assert torch.equal(torch.rand(3), after_alone)
    assert bar.n == len(SEEDS) * (schedule.stage1_epochs + 2)
    assert_same_runs(alone, together)
    assert together[0][1].column("phi") == [schedule.phi_at_epoch(e) for e in (1, 2, 3)]


def test_train_recipes_names_each_recipes_runs_in_seed_order(digits, caches):
    recipes = {"scratch": objectives.CrossEntropy(), "self": [objectives.Distillation(c) for c in caches[:2]]}
    runs = train_recipes("mlp-tiny", digits, recipes, seeds=SEEDS[:2], epochs=1)
    alone = {name: [train_model("mlp-tiny", digits, o, seed=s, epochs=1)
                    for s, o in zip(SEEDS[:2], objs if isinstance(objs, list) else [objs] * 2)]
             for name, objs in recipes.items()}
    assert list(runs) == ["scratch", "self"]
    for name in recipes:
        assert [acc for _, _, acc in runs[name]] == [acc for _, _, acc in alone[name]]
    with pytest.raises(ValueError, match="recipe 'self' has 3 objectives for 2 seeds"):
        train_recipes("mlp-tiny", digits, {"self": [objectives.CrossEntropy()] * 3}, seeds=SEEDS[:2], epochs=1)
