"""The objectives of ``K`` stacked models computed together: one loss per model from one pass over ``[K, B, C]``.

:func:`~kdtutorial.vision.seedbatch.fit_seeds` trains ``K`` models in one vmapped pass per step. Calling each model's
objective on its own slice of the logits would cost ``K`` small rounds of kernels (and, for a teacher cache kept on
the host, ``K`` host-to-device copies) per step: with 45 stacked students that loop, not the students, is what the GPU
waits for. :func:`stack_objectives` groups the objectives once, before training: objectives of one kind (and one
teacher cache) form a group whose hyper-parameters become ``[K_g]`` tensors on the device, and each group's loss is
computed for all its models at once, with the teacher logits gathered from a device copy of the cache by the
models' ``[K, B]`` batch indices. No step reads a value back to the host.

Every grouped loss is the formula the per-model objective computes (``kdtutorial.vision.objectives`` and
:mod:`kdtutorial.common.losses`), reduced per model instead of over the whole batch, so each model's loss is the same
number up to float32 rounding (``tests/vision/test_objectivestack.py`` checks every kind against the per-model
objective). With ``L_k`` the loss of model ``k`` on its batch of ``B`` examples:

* :class:`~kdtutorial.vision.objectives.CrossEntropy`: ``L_k = mean_b CE(y_kb, p_kb)``;
* :class:`~kdtutorial.vision.objectives.LabelSmoothing`: ``L_k = mean_b H((1 - eps_k) q_kb + eps_k / C, p_kb)``;
* :class:`~kdtutorial.vision.objectives.Distillation` (Hinton et al., 2015, section 2):
  ``L_k = alpha_k T_k^2 KL(p_t^T_k || p_s^T_k) + (1 - alpha_k) CE`` (the KL summed over classes, averaged over the
  batch); without labels the soft term alone; with a ``labelled`` mask the CE is averaged over the batch's labelled
  examples, and a batch without any is the soft term alone;
* :class:`~kdtutorial.vision.objectives.VirtualTeacher` (Tf-KD_reg, Yuan et al., 2020, eq. 9): the same with
  ``log p_d`` as the teacher's logits;
* :class:`~kdtutorial.vision.objectives.AnnealedLogits` (Annealing KD stage I, Jafari et al., 2021, eq. 5):
  ``L_k = mean_b || z_s - phi_k z_t ||^2``, ``phi_k`` refreshed by :meth:`ObjectiveStack.start_epoch`.

Any other objective is called per model on its slice (:attr:`ObjectiveStack.looped` names them), with its indices on
the host as :func:`~kdtutorial.vision.training.fit` passes them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtutorial.vision.objectives import AnnealedLogits, CrossEntropy, Distillation, LabelSmoothing, VirtualTeacher

__all__ = ["ObjectiveStack", "stack_objectives"]


def _key(objective):
    """The group an objective joins: its kind, plus the teacher cache (and label mask) it reads."""
    if type(objective) is CrossEntropy:
        return ("ce",)
    if type(objective) is LabelSmoothing:
        return ("ls",)
    if type(objective) is VirtualTeacher:
        return ("vt",)
    if type(objective) is Distillation:
        return ("kd", id(objective.cache), objective.use_labels, None if objective.labelled is None
                else id(objective.labelled))
    if type(objective) is AnnealedLogits:
        return ("akd", id(objective.cache))
    return None


def _kl_per_model(student, teacher, T, T2):
    """``T^2 KL(softmax(t / T) || softmax(s / T))`` summed over classes and averaged over the batch, per model:
    ``student``/``teacher`` ``[K, B, C]``, ``T`` and ``T2`` (its square) ``[K]``."""
    t = T[:, None, None]
    log_s = F.log_softmax(student / t, dim=-1)
    log_t = F.log_softmax(teacher.detach() / t, dim=-1)
    kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(dim=(1, 2)) / student.shape[1]
    return kl * T2


def _ce_per_example(logits, labels):
    """Cross-entropy of every example, ``[K, B]``."""
    k, b, c = logits.shape
    return F.cross_entropy(logits.reshape(k * b, c), labels.reshape(k * b), reduction="none").view(k, b)


class _Group:
    """One kind of objective over the models ``rows`` (a ``[K_g]`` index tensor into the stack)."""

    def __init__(self, key, objectives, rows, n_classes, device):
        self.kind, self.objectives = key[0], objectives
        self.rows = torch.as_tensor(rows, device=device)

        def column(value):  # a per-model constant, computed in Python (double) as the per-model loss computes it
            return torch.tensor([float(value(o)) for o in objectives], device=device)

        first = objectives[0]
        if self.kind in ("kd", "akd"):
            self.teacher = first.cache.logits.to(device)
        if self.kind in ("kd", "vt"):
            self.T, self.alpha = column(lambda o: o.T), column(lambda o: o.alpha)
            self.beta = column(lambda o: 1 - o.alpha)
            self.T2 = column(lambda o: o.T**2)
        if self.kind == "kd":
            self.use_labels = first.use_labels
            self.labelled = None if first.labelled is None else first.labelled.to(device)
        elif self.kind == "vt":
            self.a, self.off = column(lambda o: o.a), column(lambda o: (1.0 - o.a) / (n_classes - 1))
        elif self.kind == "ls":
            self.epsilon, self.keep = column(lambda o: o.epsilon), column(lambda o: 1.0 - o.epsilon)
        elif self.kind == "akd":
            self.phi = torch.zeros(len(objectives), device=device)

    def start_epoch(self):
        if self.kind == "akd":
            if any(o.phi is None for o in self.objectives):
                raise RuntimeError("AnnealedLogits.start_epoch(epoch) was never called: pass it to "
                                   "fit_seeds(on_epoch_start=...)")
            self.phi.copy_(torch.tensor([o.phi for o in self.objectives]))

    def __call__(self, logits, labels, indices):
        z, y, idx = logits[self.rows], labels[self.rows], indices[self.rows]
        if self.kind == "ce":
            return _ce_per_example(z, y).mean(dim=1)
        if self.kind == "ls":
            c = z.shape[-1]
            prior = torch.full((c,), 1.0 / c, device=z.device)
            target = self.keep[:, None, None] * F.one_hot(y, c).to(z.dtype) + self.epsilon[:, None, None] * prior
            return -(target * F.log_softmax(z, dim=-1)).sum(dim=-1).mean(dim=1)
        if self.kind == "akd":
            return ((z - self.phi[:, None, None] * self.teacher[idx]) ** 2).sum(dim=-1).mean(dim=1)
        if self.kind == "vt":
            c = z.shape[-1]
            p_d = torch.where(F.one_hot(y, c).bool(), self.a[:, None, None], self.off[:, None, None])
            soft = _kl_per_model(z, p_d.clamp_min(1e-12).log(), self.T, self.T2)
            return self.alpha * soft + self.beta * _ce_per_example(z, y).mean(dim=1)
        soft = _kl_per_model(z, self.teacher[idx], self.T, self.T2)  # "kd"
        if not self.use_labels:
            return soft
        if self.labelled is None:
            return self.alpha * soft + self.beta * _ce_per_example(z, y).mean(dim=1)
        mask = self.labelled[idx].to(z.dtype)  # [K_g, B]: 1 where the example may use its label
        n = mask.sum(dim=1)
        hard = (_ce_per_example(z, y) * mask).sum(dim=1) / n.clamp_min(1.0)
        return torch.where(n > 0, self.alpha * soft + self.beta * hard, soft)


class ObjectiveStack:
    """The objectives of ``K`` stacked models, grouped (see the module docstring); build it with
    :func:`stack_objectives`. ``stack(logits [K, B, C], labels [K, B], indices [K, B])`` returns the ``[K]`` losses,
    model ``k``'s from ``objectives[k]``; the indices live on the logits' device."""

    def __init__(self, objectives, n_classes, device):
        self.objectives = list(objectives)
        groups, looped = {}, []
        for k, objective in enumerate(self.objectives):
            key = _key(objective)
            if key is None:
                looped.append(k)
            else:
                groups.setdefault(key, []).append(k)
        self.groups = [_Group(key, [self.objectives[k] for k in rows], rows, n_classes, device)
                       for key, rows in groups.items()]
        #: the positions of the objectives computed one model at a time (a kind this module does not group)
        self.looped = looped

    def start_epoch(self) -> None:
        """Read each objective's per-epoch state (Annealing KD's ``phi``) after its ``start_epoch`` hook ran."""
        for group in self.groups:
            group.start_epoch()

    def __call__(self, logits, labels, indices):
        out = logits.new_empty(logits.shape[0])
        for group in self.groups:
            out = out.index_copy(0, group.rows, group(logits, labels, indices))
        for k in self.looped:  # a kind without a grouped form: its own call, host indices as fit passes them
            out = out.index_copy(0, torch.tensor([k], device=logits.device),
                                 self.objectives[k](logits[k], labels[k], indices[k].cpu()).reshape(1))
        return out


def stack_objectives(objectives, n_classes: int, device="cpu") -> ObjectiveStack:
    """Group ``objectives`` (one per stacked model) for :class:`ObjectiveStack`: teacher caches and label masks are
    copied to ``device`` once, hyper-parameters become device tensors. A hyper-parameter out of its range raises the
    ``ValueError`` of the per-model loss (each objective is evaluated once, on two examples, here)."""
    for objective in objectives:
        _check(objective, n_classes)
    return ObjectiveStack(objectives, n_classes, torch.device(device))


def _check(objective, n_classes: int) -> None:
    """Run the per-model objective once on two examples, so an invalid T, alpha, epsilon or a raises as it would in
    ``fit`` (the grouped formulas do not check their inputs)."""
    if isinstance(objective, AnnealedLogits) or _key(objective) is None:
        return  # phi is checked each epoch by the schedule; looped objectives are called as they are
    indices = torch.arange(2)
    objective(torch.zeros(2, n_classes), torch.zeros(2, dtype=torch.long), indices)
