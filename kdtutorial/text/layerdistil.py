"""Task-specific distillation with a layer term: no KD, KD, PKD, TinyBERT's layer losses, CKD and ALP-KD (lesson 07).

Every method trains the same student classifier with one objective,

    ``(1 - alpha) * CE(y, p_s) + alpha * T^2 KL(p_t^T || p_s^T) + beta * L_layer``,

where ``L_layer`` is the method's term on the states its :class:`~kdtutorial.text.layers.LayerMap` pairs up
(:mod:`kdtutorial.text.intermediate`): PKD's patient loss on [CLS] states (Sun et al. 2019, eq. 8), TinyBERT's
attention-score and hidden-state MSE (Jiao et al. 2020, eq. 7-10; a learned projection when the student is narrower),
CKD's combined groups on [CLS] states (Wu et al. 2020) and ALP-KD's attention over all teacher layers on [CLS]
states (Passban et al. 2021, whose total ``beta CE + eta KD + lambda ALP`` is this one with other names; term
``"alp-scaled"`` divides its dot products by ``sqrt(width)``, our variant). Which states CKD and ALP-KD compare is
our choice ([CLS], as PKD): neither gives a release that settles it.

The training loop is the text stack's one (:func:`kdtutorial.text.optim.train_steps`): :class:`LayerDistiller` is a
module whose forward runs the frozen teacher and the student on a batch, keeps the teacher's logits and the layer
term, and returns the student's logits, so the loss closure can add the three terms.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from kdtutorial.common.losses import kd_kl_loss
from kdtutorial.text import intermediate
from kdtutorial.text.layers import LayerMap
from kdtutorial.text.optim import graph_targets, to_device, train_steps
from kdtutorial.text.students import encoder_layers
from kdtutorial.text.tokens import padded_batches

TERMS = ("none", "kd", "pkd", "tinybert", "ckd", "alp", "alp-scaled")
_MAP_OF_TERM = {"pkd": ("pkd-skip", "pkd-last"), "tinybert": ("tinybert",), "ckd": ("ckd-no", "ckd-po"), "alp": ("alp",),
                "alp-scaled": ("alp",)}


class TeacherBatchCache:
    """The frozen teacher's outputs (logits and every hidden state) per batch, computed once and reused.

    They depend only on the batch, not on the student: in a comparison where every method of a seed sees the same
    batches (the batch order follows the seed), the teacher's forward pass is needed once per batch, not once per
    method. Batches are recognised by their token ids; an entry that would pass ``max_bytes`` is not stored (the
    teacher then simply runs again). Clear it when the batches change (:meth:`clear`)."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes, self.bytes, self.hits, self.misses = int(max_bytes), 0, 0, 0
        self._store = {}

    def clear(self) -> None:
        self._store.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def key(input_ids, attention_mask) -> tuple:
        """What recognises a batch: its shape and bytes. Made from the host's copy of the batch (the training loop's
        ``batches`` does), it costs the GPU nothing; made from device tensors it waits for them."""
        return (tuple(input_ids.shape), input_ids.cpu().numpy().tobytes(), attention_mask.cpu().numpy().tobytes())

    @torch.no_grad()
    def outputs(self, teacher, input_ids, attention_mask, key: tuple | None = None):
        """``(logits, hidden states)`` of ``teacher`` on the batch, from the store when it was seen before
        (``key``: :meth:`key` of the batch, made from its host copy; None makes it from ``input_ids`` here)."""
        key = self.key(input_ids, attention_mask) if key is None else key
        if key in self._store:
            self.hits += 1
            return self._store[key]
        self.misses += 1
        logits, states = teacher.logits_and_states(input_ids, attention_mask, hidden_states=True)
        size = logits.numel() * logits.element_size() + sum(h.numel() * h.element_size() for h in states)
        if self.bytes + size <= self.max_bytes:
            self._store[key] = (logits, tuple(states))
            self.bytes += size
        return logits, states


class LayerDistiller(nn.Module):
    """A frozen teacher classifier beside the student classifier, with the projections ``term`` needs; its forward
    returns the student's logits and keeps ``teacher_logits``, ``layer_loss`` (and, for ALP-KD, ``alp_weights``,
    ``[m, batch, n]``) of the batch. ``cache``: a :class:`TeacherBatchCache` shared by several distillers."""

    def __init__(self, teacher, student, term: str, lmap: LayerMap | None = None, cache: TeacherBatchCache | None = None):
        super().__init__()
        if term not in TERMS:
            raise ValueError(f"term = {term!r} is not allowed: expected one of {', '.join(TERMS)}")
        if term in _MAP_OF_TERM and (lmap is None or lmap.method not in _MAP_OF_TERM[term]):
            raise ValueError(f"term = {term!r} needs a layer map of kind {' or '.join(_MAP_OF_TERM[term])}, "
                             f"got {None if lmap is None else lmap.method!r}")
        self.teacher, self.student, self.term, self.lmap, self.cache = teacher, student, term, lmap, cache
        n, m = len(encoder_layers(teacher.encoder)), len(encoder_layers(student.encoder))
        if lmap is not None:
            lmap.check(student_layers=m, teacher_layers=n)
        ws, wt = student.encoder.config.hidden_size, teacher.encoder.config.hidden_size
        self.projections = nn.ModuleDict()
        if term == "tinybert" and ws != wt:
            self.projections.update({str(j): nn.Linear(ws, wt) for j in lmap.links})
        if term == "ckd":
            self.projections.update({str(j): nn.Linear(len(links) * wt, ws) for j, links in lmap.links.items()})
        if term in ("pkd", "alp", "alp-scaled") and ws != wt:
            raise ValueError(f"term = {term!r} compares states of one width: the student is {ws} wide, the teacher "
                             f"{wt}; use 'tinybert' or 'ckd' (they learn a projection)")
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher_logits = self.layer_loss = self.alp_weights = None

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher is never trained, and never drops out
        return self

    def forward(self, input_ids, attention_mask, batch_key: tuple | None = None):
        """``batch_key``: the batch's :meth:`TeacherBatchCache.key` from its host copy, for the cache (optional)."""
        needs_states = self.term not in ("none", "kd")
        if self.cache is not None:
            self.teacher_logits, t_states = self.cache.outputs(self.teacher, input_ids, attention_mask, batch_key)
        else:
            with torch.no_grad():
                self.teacher_logits, t_states = self.teacher.logits_and_states(input_ids, attention_mask,
                                                                               hidden_states=needs_states)
        logits, s_states = self.student.logits_and_states(input_ids, attention_mask, hidden_states=needs_states)
        self.layer_loss = self._layer_term(s_states, t_states, attention_mask) if needs_states else logits.new_zeros(())
        return logits

    def _layer_term(self, s, t, mask):
        links = self.lmap.links
        if self.term == "pkd":
            return intermediate.pkd_patient_loss([s[j][:, 0] for j in links], [t[ts[0][0]][:, 0] for ts in links.values()])
        if self.term == "ckd":
            combined = [intermediate.ckd_combine([t[k][:, 0] for k, _ in ts], self.projections[str(j)])
                        for j, ts in links.items()]
            return intermediate.ckd_loss([s[j][:, 0] for j in links], combined)
        if self.term in ("alp", "alp-scaled"):
            loss, self.alp_weights = intermediate.alp_loss([s[j][:, 0] for j in links],
                                                           [t[k][:, 0] for k in range(1, len(t))],
                                                           scale=self.term == "alp-scaled")
            return loss
        # tinybert: hidden states (and embeddings) through the projection, attention scores of mapped layers
        s_layers, t_layers = encoder_layers(self.student.encoder), encoder_layers(self.teacher.encoder)
        s_bias = intermediate.position_bias(self.student.encoder, s[0])  # MPNet's relative positions; else None
        with torch.no_grad():
            t_bias = intermediate.position_bias(self.teacher.encoder, t[0])
        total = 0.0
        for j, ts in links.items():
            k = ts[0][0]
            proj = self.projections[str(j)] if str(j) in self.projections else None
            total = total + intermediate.tinybert_hidden_loss(s[j], t[k], proj)
            if j >= 1:
                a_s = intermediate.attention_scores(s_layers[j - 1].attention, s[j - 1], mask, s_bias)
                with torch.no_grad():
                    a_t = intermediate.attention_scores(t_layers[k - 1].attention, t[k - 1], mask, t_bias)
                total = total + intermediate.tinybert_attention_loss(a_s, a_t, mask)
        return total


def layer_objective(logits, labels, distiller: "LayerDistiller", *, T: float, alpha: float, beta: float):
    """The module's objective on one batch, after ``distiller`` ran on it: ``(1 - alpha) CE(y, p_s) + alpha T^2
    KL(p_t^T || p_s^T) + beta L_layer`` (``term = "none"``: CE only; ``"kd"``: no layer term)."""
    if distiller.term == "none":
        alpha, beta = 0.0, 0.0
    if distiller.term == "kd":
        beta = 0.0
    loss = (1 - alpha) * F.cross_entropy(logits, labels)
    if alpha:
        loss = loss + alpha * kd_kl_loss(logits, distiller.teacher_logits.float(), T)
    return loss + beta * distiller.layer_loss if beta else loss


def distil_with_layers(teacher, student, text, labels, *, term: str, lmap: LayerMap | None = None, T: float = 5.0,
                       alpha: float = 0.5, beta: float = 1.0, epochs: int = 1, lr: float = 5e-5, batch_size: int = 32,
                       seed: int = 0, device="cpu", amp: bool = False, max_steps: int | None = None,
                       freeze_embeddings: bool = False, after_epoch=None, cache: TeacherBatchCache | None = None,
                       progress: bool = True, after_step=None, graphs: bool = False):
    """Train ``student`` (a :class:`~kdtutorial.text.finetuning.SentenceClassifier`) on ``text`` / ``labels`` by
    ``term`` (see the module docstring; ``none``: cross-entropy only, whatever ``alpha`` and ``beta``). Returns
    ``(losses per step, the LayerDistiller)``; the student is trained in place. ``freeze_embeddings`` keeps the
    student's embedding layer fixed (a cheaper CPU step); ``after_epoch`` and ``after_step`` as in ``train_steps``;
    ``cache`` reuses the teacher's outputs of batches seen before (:class:`TeacherBatchCache`).

    ``graphs=True`` (CUDA): every step after the warm-up, the teacher's forward pass included, is replayed from a
    CUDA graph (``optim.train_steps``; batches padded to the longest sentence of ``text``, labels on the device).
    A replayed step cannot look batches up in a cache, so ``cache`` must then be None: the teacher runs every step,
    which costs the graph little. Not for ``term="tinybert"``: its terms average over every position, padding
    included, so padding to one width would change the loss."""
    if graphs and cache is not None:
        raise ValueError("cache is not allowed with graphs=True: a replayed step runs the teacher itself")
    if graphs and term == "tinybert":
        raise ValueError("graphs=True is not allowed with term='tinybert': its MSEs average over padded positions, "
                         "so the one width a graph needs would change the loss")
    distiller = LayerDistiller(teacher, student, term, lmap, cache)
    labels = graph_targets(torch.as_tensor(np.asarray(labels), dtype=torch.long), device, graphs)
    width = "longest" if graphs else None

    def batches(epoch):
        for rows, batch in padded_batches(text, batch_size, shuffle=True, seed=seed * 1000 + epoch, width=width):
            ids, mask = batch["input_ids"], batch["attention_mask"]
            if cache is None:
                yield rows, (ids, mask)
            else:  # the cache's key from the host copy: one from the device copy would make every step wait
                yield rows, (ids, mask, TeacherBatchCache.key(ids, mask))

    def loss_of(logits, rows):
        return layer_objective(logits, to_device(labels[rows], logits.device), distiller, T=T, alpha=alpha, beta=beta)

    frozen = list(teacher.parameters()) + (list(student.encoder.embeddings.parameters()) if freeze_embeddings else [])
    losses = train_steps(distiller, batches, loss_of, n_rows=len(text), epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=0.01, warmup=0.1, device=device, amp=amp, max_steps=max_steps,
                         frozen=frozen, desc=f"distil ({term})", progress=progress, after_epoch=after_epoch,
                         after_step=after_step, graphs=graphs)
    for p in teacher.parameters():  # train_steps gives frozen parameters their requires_grad back (the teacher's not)
        p.requires_grad_(False)
    return losses, distiller
