"""The two-tower students of lesson 06, from the one the Microsoft Ads talk distils to the ones TwinBERT adds.

Distillation pays where the student is far below its teacher. The talk's AdsBERT recipe distils into **C-DSSM**
(Shen et al., CIKM 2014), a letter-trigram convolutional tower trained from scratch, and reports that the distilled
C-DSSM keeps 70% of the teacher's AUC gain over the same model trained on labels only. TwinBERT (Lu et al., CIKM 2020)
starts its towers from a BERT's layers. Between the two lie the small towers of the KDD'22 tutorial on distilling
rankers: BERT-Tiny's shape (Turc et al., 2019; 2 layers, 128 wide), random weights. Each kind here is built the same
way for every seed, so a label-only and a distilled student of one seed start from the same weights.

* ``"C-DSSM"``: :class:`~kdtutorial.ranking.twotower.CDSSM`, letter trigrams, random weights;
* ``"TwinBERT-Tiny"``: a BERT-Tiny-shaped encoder with random weights
  (:func:`kdtutorial.text.students.small_encoder`) and the residual crossing;
* ``"TwinBERT_1L"``: the first of the copied teacher layers only, residual crossing;
* ``"TwinBERT_cos"`` / ``"TwinBERT_res"``: every copied layer, cosine or residual crossing (TwinBERT's two).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from kdtutorial.common.environment import seed_everything
from kdtutorial.ranking.twotower import CDSSM, TwinBERT
from kdtutorial.text.students import copy_layers_encoder, small_encoder

__all__ = ["StudentKind", "STUDENT_KINDS", "student_kind", "build_student"]


@dataclass(frozen=True)
class StudentKind:
    """One kind of two-tower student: its name, what it reads (``"trigrams"`` or ``"tokens"``), whether its weights
    start random (``from_scratch``: such students want a larger learning rate) and a one-line description."""

    name: str
    reads: str
    from_scratch: bool
    about: str

    def rates(self, *, labels: float, distil: float, finetune: float, scratch: float) -> dict:
        """The learning rates of the three training stages (``labels`` only, ``distil`` on the transfer set,
        ``finetune`` on the labels after distillation): the given ones for a student that starts from copied
        weights; ``scratch`` for the first two and a tenth of it for the third for one with random weights, which
        needs larger steps."""
        if self.from_scratch:
            return {"labels": scratch, "distil": scratch, "finetune": scratch / 10}
        return {"labels": labels, "distil": distil, "finetune": finetune}

    def label_epochs(self, *, epochs: int, scratch: int) -> int:
        """Epochs on the labels alone: ``epochs`` for a student from copied weights, ``scratch`` for one with random
        weights, which starts from nothing and needs more passes before it stops improving (lesson 06's benchmark,
        ``benchmarks/cdssm_distillation.py``, chose 12 for C-DSSM on QADSM's dev split; 3 left it 1.9 AUC points
        short). A comparison of distilled with label-only students is fair only if both are trained to their best."""
        return scratch if self.from_scratch else epochs

    def freezes_embeddings(self, freeze_embeddings: bool) -> bool:
        """Whether the word embeddings stay fixed: only copied ones can (random ones must be learned)."""
        return bool(freeze_embeddings) and not self.from_scratch


STUDENT_KINDS = {k.name: k for k in (
    StudentKind("C-DSSM", "trigrams", True, "letter trigrams, convolution, cosine; random weights (the talk's student)"),
    StudentKind("TwinBERT-Tiny", "tokens", True, "2 layers, 128 wide (BERT-Tiny's shape), random weights, res crossing"),
    StudentKind("TwinBERT_1L", "tokens", False, "1 layer copied from the teacher's encoder, res crossing"),
    StudentKind("TwinBERT_cos", "tokens", False, "every copied layer, cosine crossing"),
    StudentKind("TwinBERT_res", "tokens", False, "every copied layer, residual crossing"),
)}


def student_kind(name: str) -> StudentKind:
    """The :class:`StudentKind` called ``name``; ``ValueError`` naming the kinds there are."""
    if name not in STUDENT_KINDS:
        raise ValueError(f"student kind {name!r} is not allowed: expected one of {list(STUDENT_KINDS)}")
    return STUDENT_KINDS[name]


def build_student(name: str, pretrained: nn.Module, layers, seed: int) -> nn.Module:
    """A fresh student of kind ``name``, its random weights drawn from ``seed``: token students take their
    vocabulary (and, unless from scratch, the layers ``layers``) from ``pretrained``, the encoder the teacher
    starts from, which is left untouched."""
    kind = student_kind(name)
    layers = list(layers)
    if not layers and not kind.from_scratch:
        raise ValueError(f"layers is empty: {name} copies at least one layer of the pretrained encoder")
    seed_everything(seed)
    if name == "C-DSSM":
        return CDSSM()
    if name == "TwinBERT-Tiny":
        return TwinBERT(small_encoder(pretrained), crossing="res")
    if name == "TwinBERT_1L":
        return TwinBERT(copy_layers_encoder(pretrained, layers[:1]), crossing="res")
    return TwinBERT(copy_layers_encoder(pretrained, layers), crossing=name.split("_")[1])
