"""Annealing KD: the phi schedule, the paper vs release counting, and the stage-I loss."""
import pytest
import torch

from kdtutorial.common import losses
from kdtutorial.common.schedules import AnnealingSchedule, phi, release_phi, release_phis


def test_phi_values_match_the_paper():
    tau = 10
    assert phi(tau, tau) == pytest.approx(1 / tau)   # start: the softest targets, z_t / tau_max
    assert phi(1, tau) == 1.0                        # end: the teacher's own logits
    assert phi(4, tau) == pytest.approx(1 - 3 / 10)
    with pytest.raises(ValueError, match="1 <= T <= tau_max"):
        phi(0, tau)
    with pytest.raises(ValueError):
        phi(11, tau)


def test_step_sequence_and_epochs_per_step():
    s = AnnealingSchedule(tau_max=4, epochs_per_step=3)
    assert s.temperatures == [4, 3, 2, 1]
    assert s.phis == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert s.stage1_epochs == 12
    assert [s.temperature_at_epoch(e) for e in range(1, 13)] == [4, 4, 4, 3, 3, 3, 2, 2, 2, 1, 1, 1]
    assert s.phi_at_epoch(1) == 0.25 and s.phi_at_epoch(12) == 1.0
    with pytest.raises(ValueError, match="epochs 1..12"):
        s.phi_at_epoch(13)
    with pytest.raises(ValueError, match="tau_max"):
        AnnealingSchedule(tau_max=0)
    with pytest.raises(ValueError, match="epochs_per_step"):
        AnnealingSchedule(tau_max=3, epochs_per_step=0)


@pytest.mark.parametrize("tau_max", [1, 2, 7, 14])
def test_paper_and_release_give_the_same_targets(tau_max):
    """The paper counts T down with 1 - (T - 1)/tau; the release counts T up with T/tau: same multipliers."""
    assert AnnealingSchedule(tau_max).phis == pytest.approx(release_phis(tau_max))
    for T in range(1, tau_max + 1):
        assert phi(T, tau_max) == pytest.approx(release_phi(tau_max + 1 - T, tau_max))


def test_annealing_loss_reference():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    ref = sum(((s[i] - 0.3 * t[i]) ** 2).sum() for i in range(6)) / 6
    assert torch.allclose(losses.annealing_kd_loss(s, t, 0.3), ref)
    assert torch.allclose(losses.annealing_kd_loss(s, t, 0.3), torch.nn.functional.mse_loss(s, 0.3 * t) * 10)
    assert losses.annealing_kd_loss(0.5 * t, t, 0.5) == 0
    t = t.clone().requires_grad_(True)
    z = s.clone().requires_grad_(True)
    losses.annealing_kd_loss(z, t, 1.0).backward()
    assert t.grad is None
    assert torch.allclose(z.grad, 2 * (s - t.detach()) / 6)
    with pytest.raises(ValueError, match="phi"):
        losses.annealing_kd_loss(s, t, 0.0)


def test_annealed_objective_follows_the_schedule_in_fit():
    from kdtutorial.vision import models, objectives
    from kdtutorial.vision.data import load_vision
    from kdtutorial.common.environment import seed_everything
    from kdtutorial.vision.training import TeacherCache, fit

    data = load_vision("digits", n_train=200, n_val=50, n_test=100)
    seed_everything(0)
    teacher = models.build("mlp-small", data.input_shape, data.n_classes)
    cache = TeacherCache.build(teacher, data.train)
    schedule = AnnealingSchedule(tau_max=3, epochs_per_step=2)
    objective = objectives.AnnealedLogits(cache, schedule)
    with pytest.raises(RuntimeError, match="start_epoch"):
        objective(torch.zeros(2, 10), torch.zeros(2, dtype=torch.long), torch.tensor([0, 1]))
    student = models.build("mlp-tiny", data.input_shape, data.n_classes)
    fit(student, data.train, objective, epochs=schedule.stage1_epochs, seed=0, on_epoch_start=objective.start_epoch)
    assert objective.phis_seen == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0, 1.0])


def test_train_annealing_kd_runs_both_stages():
    from kdtutorial.vision import models
    from kdtutorial.vision.data import load_vision
    from kdtutorial.common.environment import seed_everything
    from kdtutorial.vision.experiments import train_annealing_kd
    from kdtutorial.vision.training import TeacherCache

    data = load_vision("digits", n_train=200, n_val=50, n_test=100)
    seed_everything(0)
    cache = TeacherCache.build(models.build("mlp-small", data.input_shape, data.n_classes), data.train)
    schedule = AnnealingSchedule(tau_max=2, epochs_per_step=2)
    model, history, acc = train_annealing_kd("mlp-tiny", data, cache, schedule, seed=0, stage2_epochs=3,
                                             val_set=data.val)
    assert [r["epoch"] for r in history.records] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["stage"] for r in history.records] == [1, 1, 1, 1, 2, 2, 2]
    assert history.column("phi") == pytest.approx([0.5, 0.5, 1.0, 1.0])
    assert len(history.column("val_acc")) == 7 and 0 <= acc <= 100
