"""Training objectives: a loss from ``kdtutorial.common.losses`` bound to what it needs at training time.

``fit`` calls ``objective(student_logits, labels, indices)``. Distillation objectives read the teacher's
logits for exactly those examples from a ``TeacherCache`` (looked up by index, never by position).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from kdtutorial.common import losses
from kdtutorial.common.schedules import AnnealingSchedule
from kdtutorial.vision.training import TeacherCache

__all__ = ["CrossEntropy", "LabelSmoothing", "Distillation", "LogitMatching", "VirtualTeacher", "AnnealedLogits"]


@dataclass
class CrossEntropy:
    """Plain training on the labels: ``CE(y, p_s)``."""

    def __call__(self, logits, labels, indices):
        return losses.hard_cross_entropy(logits, labels)


@dataclass
class LabelSmoothing:
    """Uniform label smoothing: ``H(q', p_s)`` with ``q' = (1 - epsilon) q + epsilon / K``."""

    epsilon: float = 0.1

    def __call__(self, logits, labels, indices):
        return losses.label_smoothing_loss(logits, labels, self.epsilon)


@dataclass
class Distillation:
    """Hinton KD from cached teacher logits: ``alpha * T^2 KL + (1 - alpha) CE``.

    ``use_labels=False`` trains on the soft targets alone (a transfer set without labels).
    ``labelled`` (optional bool tensor over the whole training set) marks which examples may use their
    label: the others contribute only the soft term (a transfer set with a few labels).
    """

    cache: TeacherCache
    T: float = 4.0
    alpha: float = 0.9
    use_labels: bool = True
    labelled: object = None

    def __call__(self, logits, labels, indices):
        teacher = self.cache[indices].to(logits.device)
        if not self.use_labels:
            return losses.kd_kl_loss(logits, teacher, self.T)
        if self.labelled is None:
            return losses.hinton_loss(logits, teacher, labels, self.T, self.alpha)
        mask = self.labelled[indices].to(logits.device)
        soft = losses.kd_kl_loss(logits, teacher, self.T)
        if not mask.any():
            return soft
        hard = losses.hard_cross_entropy(logits[mask], labels[mask])
        return self.alpha * soft + (1 - self.alpha) * hard


@dataclass
class LogitMatching:
    """Regression on the teacher's (centred) logits: KD's high-temperature limit."""

    cache: TeacherCache

    def __call__(self, logits, labels, indices):
        return losses.logit_matching_loss(logits, self.cache[indices].to(logits.device))


@dataclass
class VirtualTeacher:
    """Teacher-free KD with a hand-designed teacher (Tf-KD_reg, Yuan et al. 2020)."""

    alpha: float = 0.5
    T: float = 4.0
    a: float = 0.9

    def __call__(self, logits, labels, indices):
        return losses.tfkd_reg_loss(logits, labels, self.alpha, self.T, self.a)


@dataclass
class AnnealedLogits:
    """Stage I of Annealing KD: regress ``phi * z_t`` with ``phi`` stepping along ``schedule``.

    Pass ``start_epoch`` to ``fit(..., on_epoch_start=objective.start_epoch)`` so that ``phi`` follows the
    schedule; ``phis_seen`` records the multiplier of every epoch trained.
    """

    cache: TeacherCache
    schedule: AnnealingSchedule
    phi: float = field(init=False, default=None)
    phis_seen: list = field(init=False, default_factory=list)

    def start_epoch(self, epoch: int) -> None:
        self.phi = self.schedule.phi_at_epoch(epoch)
        self.phis_seen.append(self.phi)

    def __call__(self, logits, labels, indices):
        if self.phi is None:
            raise RuntimeError("AnnealedLogits.start_epoch(epoch) was never called: pass it to fit(on_epoch_start=...)")
        return losses.annealing_kd_loss(logits, self.cache[indices].to(logits.device), self.phi)
