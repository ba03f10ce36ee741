"""Layer maps: which teacher layers teach which student layer (lesson 07).

A student with ``m`` layers learning from a teacher with ``n > m`` must choose, for each of its layers, what in the
teacher it imitates. The choice is a value here, a :class:`LayerMap`: for every student layer ``j`` (1 = the first
encoder layer; 0 = the embeddings, as in Hugging Face's ``hidden_states`` tuple) a tuple of ``(teacher layer,
weight)``. Hand-made maps have fixed weights; ALP-KD's are learned per batch and the map only lists the candidates.

* PKD-Skip and PKD-Last (Sun et al., "Patient Knowledge Distillation for BERT Model Compression", EMNLP 2019, §3.1):
  student layer ``j`` (``1 .. m-1``; the last is taught through the logits) learns from teacher layer ``j*k``
  (``k = n // m``) or from ``n - m + j``.
* TinyBERT's uniform map (Jiao et al., "TinyBERT", Findings of EMNLP 2020, §3.2, ``g(j) = j * n / m``): every
  student layer ``1 .. m`` and the embeddings (``0 <- 0``).
* CKD (Wu, Passban, Rezagholizadeh, Liu, "Why Skip If You Can Combine", 2020): student layer ``j`` learns from a
  *group* of teacher layers combined; no overlap (``NO``: the teacher's layers cut into ``m`` consecutive groups) or
  partly overlapping (``PO``: consecutive groups that share their border layer).
* ALP-KD (Passban, Wu, Rezagholizadeh, Liu, AAAI 2021, eq. 3-4): every student layer attends to every teacher layer.
"""
from __future__ import annotations

from dataclasses import dataclass

METHODS = ("pkd-skip", "pkd-last", "tinybert", "ckd-no", "ckd-po", "alp")


@dataclass(frozen=True)
class LayerMap:
    """``links[j]`` = ``((teacher layer, weight), ...)`` for student layer ``j``; ``learned``: weights come from the
    data (ALP-KD), the ones stored are only the uniform start."""

    method: str
    student_layers: int
    teacher_layers: int
    links: dict
    learned: bool = False

    def teachers_of(self, student_layer: int) -> tuple:
        return tuple(t for t, _ in self.links[student_layer])

    def describe(self) -> str:
        """``pkd-skip 6->3: s1 <- t2, s2 <- t4``; groups joined by ``+``."""
        parts = [f"s{j} <- " + "+".join(f"t{t}" for t, _ in links) for j, links in self.links.items()]
        return f"{self.method} {self.teacher_layers}->{self.student_layers}: " + ", ".join(parts)

    def check(self, student_layers: int | None = None, teacher_layers: int | None = None) -> "LayerMap":
        """Raise a ``ValueError`` naming the layer if the map uses a layer the student or the teacher lacks."""
        m = self.student_layers if student_layers is None else student_layers
        n = self.teacher_layers if teacher_layers is None else teacher_layers
        for j, links in self.links.items():
            if not 0 <= j <= m:
                raise ValueError(f"layer map {self.method!r} names student layer {j}: the student has layers 0 to {m}")
            for t, _ in links:
                if not 0 <= t <= n:
                    raise ValueError(f"layer map {self.method!r} maps student layer {j} to teacher layer {t}: "
                                     f"the teacher has layers 0 to {n}")
        return self


def _uniform(layers) -> tuple:
    return tuple((t, 1.0 / len(layers)) for t in layers)


def _groups(n: int, m: int, overlap: bool) -> list[list[int]]:
    """Teacher layers ``1..n`` in ``m`` consecutive groups of (nearly) equal size; with ``overlap`` each group also
    takes the last layer of the group before it."""
    bounds = [round(i * n / m) for i in range(m + 1)]
    groups = [list(range(bounds[i] + 1, bounds[i + 1] + 1)) for i in range(m)]
    if overlap:
        groups = [groups[0]] + [[groups[i - 1][-1], *g] for i, g in enumerate(groups) if i > 0]
    return groups


def layer_map(method: str, student_layers: int, teacher_layers: int) -> LayerMap:
    """The layer map of ``method`` (one of :data:`METHODS`) from a teacher of ``teacher_layers`` encoder layers to a
    student of ``student_layers``."""
    if method not in METHODS:
        raise ValueError(f"layer map method {method!r} is not known: expected one of {', '.join(METHODS)}")
    m, n = int(student_layers), int(teacher_layers)
    if not 1 <= m <= n:
        raise ValueError(f"student_layers = {m} is not allowed: expected 1 to the teacher's {n} layers")
    k = n // m
    if method == "pkd-skip":
        links = {j: ((j * k, 1.0),) for j in range(1, m)}
    elif method == "pkd-last":
        links = {j: ((n - m + j, 1.0),) for j in range(1, m)}
    elif method == "tinybert":
        links = {0: ((0, 1.0),), **{j: ((round(j * n / m), 1.0),) for j in range(1, m + 1)}}
    elif method in ("ckd-no", "ckd-po"):
        links = {j + 1: _uniform(g) for j, g in enumerate(_groups(n, m, overlap=method == "ckd-po"))}
    else:  # alp: every student layer attends to every teacher layer; the weights are learned per example
        links = {j: _uniform(range(1, n + 1)) for j in range(1, m + 1)}
    return LayerMap(method, m, n, links, learned=method == "alp").check()


def draw_map(ax, lmap: LayerMap, weights=None) -> None:
    """The map as two columns of layers joined by lines (width: weight); ``weights`` (``[m, n]``) overrides the
    stored weights, e.g. ALP-KD's mean attention after training."""
    m, n = lmap.student_layers, lmap.teacher_layers
    ys = lambda i, total: i / max(total, 1)  # noqa: E731
    for j, links in lmap.links.items():
        for t, w in links:
            if weights is not None and j >= 1 and t >= 1:
                w = float(weights[j - 1][t - 1])
            ax.plot([0, 1], [ys(j, m), ys(t, n)], color="#0173b2", lw=0.5 + 4 * w, alpha=0.3 + 0.7 * min(1.0, w * 2))
    ax.scatter([0] * (m + 1), [ys(j, m) for j in range(m + 1)], color="#0173b2", zorder=3, s=30)
    ax.scatter([1] * (n + 1), [ys(t, n) for t in range(n + 1)], color="#333333", zorder=3, s=30)
    for j in range(m + 1):
        ax.text(-0.08, ys(j, m), "emb" if j == 0 else f"s{j}", ha="right", va="center", fontsize=8)
    for t in range(n + 1):
        ax.text(1.08, ys(t, n), "emb" if t == 0 else f"t{t}", ha="left", va="center", fontsize=8)
    ax.set(xlim=(-0.4, 1.4), ylim=(-0.08, 1.08), title=f"{lmap.method} ({n} -> {m})")
    ax.axis("off")
