r"""Mode covering and mode seeking on a 1-D toy: one Gaussian fitted to a two-mode target by JSD(beta).

The target :math:`p` is a mixture of two Gaussians on a grid of points (the "vocabulary"); the model
:math:`q_{\mu,\sigma}` is a single discretised Gaussian. Minimising the forward KL(p || q) (beta = 0) puts mass
wherever :math:`p` has it: :math:`q` spreads over both modes (mode covering, as word-level KD asks of a student).
The reverse KL(q || p) (beta = 1) punishes mass where :math:`p` has none: :math:`q` settles on one mode (mode
seeking, MiniLLM's argument for it: Gu et al., ICLR 2024, figure 2). JSD(beta) moves between the two (GKD,
Agarwal et al., ICLR 2024, figure A.16 draws the same picture).
"""
from __future__ import annotations

import numpy as np
import torch

from kdtutorial.lm.divergences import generalized_jsd

__all__ = ["two_mode_target", "fit_one_mode", "plot_mode_fits"]


def two_mode_target(grid: torch.Tensor, means=(-2.0, 2.5), stds=(0.6, 0.9), weights=(0.55, 0.45)) -> torch.Tensor:
    """Log-probabilities of a two-Gaussian mixture on ``grid`` (normalised over the grid)."""
    dens = sum(w * torch.exp(-0.5 * ((grid - m) / s) ** 2) / s for m, s, w in zip(means, stds, weights))
    return torch.log(dens / dens.sum())


def _gaussian_logits(grid, mu, log_sigma):
    return -0.5 * ((grid - mu) / log_sigma.exp()) ** 2  # softmax normalises over the grid


def fit_one_mode(beta: float, *, steps: int = 400, lr: float = 0.05, start_mu: float = -0.5,
                 start_sigma: float = 0.5, grid: torch.Tensor | None = None) -> dict:
    """Fit one Gaussian (mu, sigma) to :func:`two_mode_target` by minimising JSD(beta); Adam from
    (``start_mu``, ``start_sigma``).

    The reverse KL has a third, worse local minimum besides the two modes: a broad Gaussian between them
    (mu ~ 1.05, sigma ~ 2.2, loss 0.83 against 0.59 on the left mode). A wide start, or one near the middle
    (sigma 1 at mu 0.3, say), ends there; the default start, narrow and left of the middle, ends on a mode for
    beta >= 0.8 while the forward KL still spreads over both."""
    grid = torch.linspace(-6, 6, 241, dtype=torch.float64) if grid is None else grid
    target = two_mode_target(grid)
    mu = torch.tensor(start_mu, dtype=torch.float64, requires_grad=True)
    log_sigma = torch.tensor(float(np.log(start_sigma)), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mu, log_sigma], lr=lr)
    for _ in range(steps):
        loss = generalized_jsd(_gaussian_logits(grid, mu, log_sigma)[None], target[None], beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
    q = torch.softmax(_gaussian_logits(grid, mu, log_sigma), -1).detach()
    return {"beta": beta, "mu": mu.item(), "sigma": log_sigma.exp().item(), "loss": loss.item(),
            "grid": grid.numpy(), "target": target.exp().numpy(), "fit": q.numpy()}


def plot_mode_fits(ax, fits) -> None:
    """The target and each fit of ``fits`` (dicts of :func:`fit_one_mode`) on one axis."""
    ax.fill_between(fits[0]["grid"], fits[0]["target"], color="0.85", label="target p (two modes)")
    for f, colour in zip(fits, ["#1f77b4", "#9467bd", "#d62728", "#2ca02c", "#ff7f0e"]):
        label = {0: "forward KL (beta 0)", 1: "reverse KL (beta 1)"}.get(f["beta"], f"JSD(beta {f['beta']:g})")
        ax.plot(f["grid"], f["fit"], color=colour, lw=2, label=f"{label}: mu {f['mu']:+.2f}, sigma {f['sigma']:.2f}")
    ax.set_xlabel("x (a 'vocabulary' of 241 grid points)")
    ax.set_ylabel("probability")
    ax.set_xlim(float(np.min(fits[0]["grid"])), float(np.max(fits[0]["grid"])))
    ax.legend(fontsize=8, loc="upper left")
