"""Temperature schedules: Annealing KD's stepwise annealing of the teacher's logits.

Jafari, Rezagholizadeh, Sharma, Ghodsi, *Annealing Knowledge Distillation*, EACL 2021, eq. 5-6. Stage I
trains the student to regress the teacher's logits scaled by

    phi(T) = 1 - (T - 1) / tau_max,      T = tau_max, tau_max - 1, ..., 1,

for ``epochs_per_step`` epochs at each integer T, so the targets go from ``z_t / tau_max`` (soft) to ``z_t``
(sharp). Stage II then trains on the labels alone.

The authors' released code counts the temperature *upward* instead: ``phi = T / tau_max`` for
``T = 1, ..., tau_max``. Both give the same sequence of multipliers, 1/tau_max, 2/tau_max, ..., 1:
``release_phis`` and ``AnnealingSchedule.phis`` are equal, and ``tests/test_schedules.py`` checks it.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["phi", "release_phi", "AnnealingSchedule", "release_phis"]


def phi(T: int, tau_max: int) -> float:
    """The paper's multiplier ``1 - (T - 1) / tau_max`` for an integer temperature ``1 <= T <= tau_max``."""
    if not (isinstance(T, int) and isinstance(tau_max, int)) or not 1 <= T <= tau_max:
        raise ValueError(f"need integers 1 <= T <= tau_max, got T={T!r}, tau_max={tau_max!r}")
    return 1.0 - (T - 1) / tau_max


def release_phi(T: int, tau_max: int) -> float:
    """The released code's multiplier ``T / tau_max`` (its T counts up from 1 to tau_max)."""
    if not (isinstance(T, int) and isinstance(tau_max, int)) or not 1 <= T <= tau_max:
        raise ValueError(f"need integers 1 <= T <= tau_max, got T={T!r}, tau_max={tau_max!r}")
    return T / tau_max


def release_phis(tau_max: int) -> list[float]:
    """The multipliers in the order the released code uses them (T = 1, 2, ..., tau_max)."""
    return [release_phi(T, tau_max) for T in range(1, tau_max + 1)]


@dataclass(frozen=True)
class AnnealingSchedule:
    """Stage I of Annealing KD: ``tau_max`` temperature steps of ``epochs_per_step`` epochs each.

    ``temperatures``: T per step (``tau_max`` down to 1); ``phis``: the multiplier per step;
    ``phi_at_epoch(e)``: the multiplier in force during stage-I epoch ``e`` (1-based);
    ``stage1_epochs = tau_max * epochs_per_step``.
    """

    tau_max: int
    epochs_per_step: int = 1

    def __post_init__(self):
        if not isinstance(self.tau_max, int) or self.tau_max < 1:
            raise ValueError(f"tau_max must be an integer >= 1, got {self.tau_max!r}")
        if not isinstance(self.epochs_per_step, int) or self.epochs_per_step < 1:
            raise ValueError(f"epochs_per_step must be an integer >= 1, got {self.epochs_per_step!r}")

    @property
    def temperatures(self) -> list[int]:
        return list(range(self.tau_max, 0, -1))

    @property
    def phis(self) -> list[float]:
        return [phi(T, self.tau_max) for T in self.temperatures]

    @property
    def stage1_epochs(self) -> int:
        return self.tau_max * self.epochs_per_step

    def temperature_at_epoch(self, epoch: int) -> int:
        if not 1 <= epoch <= self.stage1_epochs:
            raise ValueError(f"stage I has epochs 1..{self.stage1_epochs}, got {epoch}")
        return self.temperatures[(epoch - 1) // self.epochs_per_step]

    def phi_at_epoch(self, epoch: int) -> float:
        return phi(self.temperature_at_epoch(epoch), self.tau_max)
