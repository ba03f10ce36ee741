"""One conceptual diagram per lesson, drawn with matplotlib: boxes for models and quantities, arrows for data flow.

Each function returns a ``matplotlib`` figure and draws nothing it would have to compute: the diagrams show the
idea, the lessons' own cells show the numbers. Colours follow :func:`kdtutorial.course.plotting.colour`
(teacher, student, the loss terms), so a teacher is the same colour in every lesson.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch

from kdtutorial.course.plotting import colour

ROLE = {"teacher": colour("teacher"), "student": colour("student"), "loss": "#c44e52", "data": "#8c8c8c",
        "generator": colour("MATE-KD"), "offline": "#55a868"}


def _canvas(width: float, height: float, title: str):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    ax.set_title(title, fontsize=11)
    return fig, ax


def _box(ax, x, y, text, role="data", w=1.6, h=0.55, fontsize=9):
    """A rounded box centred at (x, y); returns its centre and half sizes for arrows."""
    edge = ROLE[role]
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04,rounding_size=0.12",
                                facecolor=edge + "22", edgecolor=edge, linewidth=1.6))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return (x, y, w / 2, h / 2)


def _arrow(ax, a, b, text="", style="-|>", colour_="#444444", rad=0.0, fontsize=8, offset=(0.0, 0.12)):
    """An arrow from box ``a``'s edge to box ``b``'s edge (boxes as returned by :func:`_box`)."""
    (xa, ya, wa, ha), (xb, yb, wb, hb) = a, b
    dx, dy = xb - xa, yb - ya
    # leave each box through the side facing the other
    ta = min(wa / abs(dx) if dx else np.inf, ha / abs(dy) if dy else np.inf)
    tb = min(wb / abs(dx) if dx else np.inf, hb / abs(dy) if dy else np.inf)
    start, end = (xa + dx * ta, ya + dy * ta), (xb - dx * tb, yb - dy * tb)
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle=style, color=colour_, lw=1.4,
                                                           connectionstyle=f"arc3,rad={rad}"))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text, ha="center",
                va="bottom", fontsize=fontsize, color=colour_)


def kd_loss():
    """Lesson 01: Hinton et al. (2015), eq. 1-2. One temperature T on *both* softmaxes of the soft term, T = 1 on
    the hard term, the soft term scaled by T² and weighted by α."""
    fig, ax = _canvas(10.6, 4.2, "The KD loss: one input, two networks, two temperatures")
    x = _box(ax, 0.8, 2.1, "input x", "data", w=1.2)
    t = _box(ax, 2.7, 3.3, "teacher\n(frozen)", "teacher")
    s = _box(ax, 2.7, 0.9, "student", "student")
    zt = _box(ax, 4.5, 3.3, "logits $z_t$", "teacher", w=1.3)
    zs = _box(ax, 4.5, 0.9, "logits $z_s$", "student", w=1.3)
    pt = _box(ax, 7.1, 3.3, r"$p_t^T=\mathrm{softmax}(z_t/T)$", "teacher", w=2.4)
    ps = _box(ax, 7.1, 2.1, r"$p_s^T=\mathrm{softmax}(z_s/T)$", "student", w=2.4)
    p1 = _box(ax, 7.1, 0.9, r"$p_s=\mathrm{softmax}(z_s)$", "student", w=2.4)
    soft = _box(ax, 9.65, 2.7, r"$\alpha\,T^2\,\mathrm{KL}(p_t^T\Vert p_s^T)$", "loss", w=1.75, h=0.7)
    hard = _box(ax, 9.65, 0.9, r"$(1-\alpha)\,\mathrm{CE}(y, p_s)$", "loss", w=1.75, h=0.7)
    for a, b in ((x, t), (x, s), (t, zt), (s, zs), (pt, soft), (ps, soft), (p1, hard)):
        _arrow(ax, a, b)
    _arrow(ax, zt, pt, "÷ T")
    _arrow(ax, zs, ps, "÷ T (the same T)", offset=(-0.55, 0.0))
    _arrow(ax, zs, p1, "T = 1")
    ax.text(9.65, 1.8, "+", ha="center", va="center", fontsize=16)
    ax.text(9.65, 0.2, "label y", ha="center", fontsize=8, color=ROLE["data"])
    return fig


def label_smoothing_vs_kd(k: int = 10, epsilon: float = 0.1, seed: int = 0):
    """Lesson 02: Yuan et al. (CVPR 2020), §3. Label smoothing mixes the one-hot label with a *uniform* prior, KD
    with the teacher's distribution: the same formula, a fixed prior against a learned one. Log scale: the dark
    knowledge lives in the small probabilities."""
    rng = np.random.default_rng(seed)
    one_hot = np.eye(k)[3]
    logits = rng.normal(0, 1.5, k)
    logits[3], logits[5] = 6.0, 3.5  # the true class, and a look-alike
    teacher = np.exp(logits / 4) / np.exp(logits / 4).sum()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
    panels = ((axes[0], np.full(k, 1 / k), "uniform prior $u$", "label smoothing: $(1-\\epsilon)\\,q + \\epsilon\\,u$",
               colour("label smoothing")),
              (axes[1], teacher, "teacher $p_t^{T}$", "KD: $(1-\\alpha)\\,q + \\alpha\\,p_t^{T}$", colour("KD")))
    for ax, prior, name, title, c in panels:
        target = (1 - epsilon) * one_hot + epsilon * prior
        ax.bar(np.arange(k) - 0.2, prior, 0.4, color=c, alpha=0.45, label=name)
        ax.bar(np.arange(k) + 0.2, target, 0.4, color=c, label="training target")
        ax.set_yscale("log")
        ax.set_ylim(1e-3, 1.5)
        ax.set_xticks(range(k))
        ax.set_xlabel("class (true class 3; class 5 looks like it)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_ylabel("probability (log scale)")
    fig.suptitle(f"Same recipe, different prior ($\\epsilon = \\alpha = {epsilon}$)", fontsize=11)
    fig.tight_layout()
    return fig


def triple_loss(layers=(0, 2, 4), teacher_layers: int = 6):
    """Lesson 03: Sanh et al. (DistilBERT, 2019), §3. A masked sentence through the frozen teacher and the student
    copied from teacher layers ``layers``; L_ce on the teacher's soft targets, L_mlm on the masked tokens, L_cos
    between the last hidden states."""
    fig, ax = _canvas(10.4, 4.4, "DistilBERT's triple loss")
    x = _box(ax, 1.0, 2.2, "masked\nsentence", "data", w=1.4, h=0.8)
    t = _box(ax, 3.4, 3.5, f"teacher: {teacher_layers} layers\n(frozen)", "teacher", w=2.2, h=0.8)
    s = _box(ax, 3.4, 0.9, f"student: {len(layers)} layers\n(copied from teacher\nlayers {', '.join(map(str, layers))})",
             "student", w=2.2, h=1.0)
    ht = _box(ax, 6.0, 3.5, "hidden $h_t$, MLM logits $z_t$", "teacher", w=2.5)
    hs = _box(ax, 6.0, 0.9, "hidden $h_s$, MLM logits $z_s$", "student", w=2.5)
    ce = _box(ax, 9.1, 3.2, r"$L_{ce}$: KL($p_t^T \Vert p_s^T$)" "\nat the masked tokens", "loss", w=2.4, h=0.8)
    cos = _box(ax, 9.1, 2.0, r"$L_{cos}$: $1-\cos(h_t, h_s)$", "loss", w=2.4, h=0.6)
    mlm = _box(ax, 9.1, 0.8, r"$L_{mlm}$: CE(masked word, $p_s$)", "loss", w=2.4, h=0.6)
    for a, b in ((x, t), (x, s), (t, ht), (s, hs), (ht, ce), (hs, ce), (ht, cos), (hs, cos), (hs, mlm)):
        _arrow(ax, a, b)
    ax.text(9.1, 0.1, r"$L = \alpha_{ce} L_{ce} + \alpha_{mlm} L_{mlm} + \alpha_{cos} L_{cos}$", ha="center", fontsize=9)
    return fig


def annealing_stages(tau_max: int = 10, epochs_per_step: int = 1, stage2_epochs: int = 3):
    """Lesson 04: Jafari et al. (EACL 2021), eq. 5-6. Stage I regresses the student's logits on the teacher's
    logits scaled by φ(T) = 1 − (T − 1)/τ_max as T falls from τ_max to 1; stage II is cross-entropy on labels."""
    temps = np.arange(tau_max, 0, -1)
    phi = 1 - (temps - 1) / tau_max
    epochs = np.arange(len(temps) * epochs_per_step)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.step(epochs, np.repeat(phi, epochs_per_step), where="post", color=colour("Annealing KD"), lw=2,
            label=r"stage I: MSE($z_s$, $\phi(T)\,z_t$), $\phi(T) = 1 - (T-1)/\tau_{max}$")
    end = len(epochs)
    ax.axvspan(end, end + stage2_epochs, color=colour("scratch"), alpha=0.2, label="stage II: CE(y, $p_s$) on labels")
    for i, T in enumerate(temps):
        ax.text(i * epochs_per_step + 0.5 * epochs_per_step, phi[i] + 0.04, f"T={T}", ha="center", fontsize=7)
    ax.set_xlim(0, end + stage2_epochs)
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"teacher's scale $\phi(T)$")
    ax.set_title("Annealing KD: a softened teacher that sharpens step by step, then the labels", fontsize=11)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def mate_kd_loop():
    """Lesson 05: Rashid et al. (MATE-KD, ACL 2021), eq. 1-4. The generator rewrites masked words (Gumbel-softmax)
    to *raise* the teacher–student divergence; the student lowers it on the originals and the rewrites."""
    fig, ax = _canvas(10.0, 4.8, "MATE-KD: a maximisation step and a minimisation step")
    x = _box(ax, 0.9, 2.2, "sentence x", "data", w=1.3)
    m = _box(ax, 2.7, 2.2, "mask 30%\nof the words", "data", w=1.5, h=0.7)
    g = _box(ax, 4.6, 3.6, "generator G\n(masked LM)", "generator", w=1.7, h=0.7)
    xp = _box(ax, 4.6, 2.2, "rewrite x'\n(Gumbel-softmax)", "generator", w=1.8, h=0.7)
    t = _box(ax, 6.8, 2.9, "teacher (frozen)", "teacher", w=1.7)
    s = _box(ax, 6.8, 1.2, "student", "student", w=1.7)
    kl = _box(ax, 8.9, 2.2, r"KL($p_t(x') \Vert p_s(x')$)", "loss", w=1.9, h=0.6)
    for a, b in ((x, m), (m, g), (g, xp), (xp, t), (xp, s), (t, kl), (s, kl)):
        _arrow(ax, a, b)
    _arrow(ax, kl, g, colour_=ROLE["generator"], rad=0.3)
    ax.text(7.4, 4.15, "max over G: update G only", ha="center", fontsize=8, color=ROLE["generator"])
    _arrow(ax, kl, s, colour_=ROLE["student"], rad=-0.35)
    ax.text(8.6, 0.55, "min over S: update S only (KD on x and x', CE on x)", ha="center", fontsize=8,
            color=ROLE["student"])
    return fig


def serving():
    """Lesson 06: Lu, Jiao and Zhang (TwinBERT, CIKM 2020), §3. A cross-encoder runs the whole network on every
    (query, ad) pair; a two-tower model encodes each ad once, offline, and serves a query with one encoding and a
    cheap crossing per candidate."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9))
    for ax, title in zip(axes, ("cross-encoder (the teacher): N full passes per query",
                                "two towers (the student): 1 pass per query + N crossings")):
        ax.set_xlim(0, 5.5)
        ax.set_ylim(0, 4)
        ax.axis("off")
        ax.set_title(title, fontsize=10)
    a = axes[0]
    pairs = [_box(a, 1.2, 3.3 - 0.8 * i, f"[CLS] q [SEP] ad{i + 1}", "data", w=2.0, h=0.45, fontsize=8)
             for i in range(3)]
    a.text(1.2, 0.75, "... N pairs", ha="center", fontsize=8)
    enc = [_box(a, 3.6, 3.3 - 0.8 * i, "BERT, 6 layers", "teacher", w=1.5, h=0.45, fontsize=8) for i in range(3)]
    for p, e in zip(pairs, enc):
        _arrow(a, p, e)
        _box(a, 5.0, e[1], "score", "loss", w=0.7, h=0.4, fontsize=8)
        _arrow(a, e, (5.0, e[1], 0.35, 0.2))
    b = axes[1]
    q = _box(b, 0.8, 3.2, "query q", "data", w=1.2, h=0.45, fontsize=8)
    ads = _box(b, 0.8, 1.2, "N ads", "data", w=1.2, h=0.45, fontsize=8)
    tq = _box(b, 2.5, 3.2, "tower (online)", "student", w=1.5, h=0.45, fontsize=8)
    ta = _box(b, 2.5, 1.2, "tower (offline,\nonce per ad)", "offline", w=1.5, h=0.6, fontsize=8)
    vq = _box(b, 4.0, 3.2, "vector q", "student", w=1.0, h=0.45, fontsize=8)
    va = _box(b, 4.0, 1.2, "cached\nad vectors", "offline", w=1.1, h=0.6, fontsize=8)
    sc = _box(b, 4.9, 2.2, "N scores:\ncos or\nresidual", "loss", w=1.0, h=0.8, fontsize=8)
    for x_, y_ in ((q, tq), (ads, ta), (tq, vq), (ta, va), (vq, sc), (va, sc)):
        _arrow(b, x_, y_)
    fig.tight_layout()
    return fig


#: lesson -> its diagram
def skip_and_search(student_layers: int = 4, teacher_layers: int = 12):
    """Lesson 07: the two problems of intermediate-layer KD (Passban et al., ALP-KD, AAAI 2021, §1) and three
    answers. PKD (Sun et al., EMNLP 2019) picks one teacher layer per student layer: the others are *skipped*, and
    which to pick is a *search*. CKD (Wu et al., 2020) combines a fixed group per student layer (no skip, still a
    search over groups); ALP-KD lets every student layer attend to every teacher layer (neither)."""
    m, n = int(student_layers), int(teacher_layers)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    k = n // m
    groups = [list(range(round(i * n / m) + 1, round((i + 1) * n / m) + 1)) for i in range(m)]
    panels = [("PKD-Skip: one teacher layer each\n(skip: greyed layers teach nothing)",
               {j: [j * k] for j in range(1, m + 1)}),
              ("CKD-NO: a fixed group each\n(no skip; the groups are a choice)", {j + 1: g for j, g in enumerate(groups)}),
              ("ALP-KD: attention over all\n(the data chooses the weights)", {j: list(range(1, n + 1)) for j in range(1, m + 1)})]
    for ax, (title, links) in zip(axes, panels):
        used = {t for ts in links.values() for t in ts}
        for j, ts in links.items():
            for t in ts:
                ax.plot([0, 1], [j / m, t / n], color=colour("student"), lw=2.2 if len(ts) == 1 else 1.0,
                        alpha=0.9 if len(ts) < n else 0.35)
        ax.scatter([0] * m, [j / m for j in range(1, m + 1)], s=60, color=colour("student"), zorder=3)
        ax.scatter([1] * n, [t / n for t in range(1, n + 1)], s=60, zorder=3,
                   color=[colour("teacher") if t in used else "#cccccc" for t in range(1, n + 1)])
        for j in range(1, m + 1):
            ax.text(-0.1, j / m, f"S{j}", ha="right", va="center", fontsize=8)
        for t in range(1, n + 1):
            ax.text(1.1, t / n, f"T{t}", ha="left", va="center", fontsize=7)
        ax.set(xlim=(-0.45, 1.45), ylim=(0, 1.08))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"Which teacher layers teach which student layer? ({n} -> {m} layers)", fontsize=11)
    fig.tight_layout()
    return fig


def three_sources():
    """Lesson 08: where the distilled tokens come from. Word-level KD (Hinton et al. 2015; Kim & Rush 2016) matches
    the teacher's next-token distribution on real text; sequence-level KD (Kim & Rush 2016) trains on the teacher's
    own continuations; on-policy distillation (GKD, Agarwal et al. 2024; MiniLLM, Gu et al. 2024) lets the student
    write and the teacher grade each of its tokens."""
    fig, ax = _canvas(11, 4.4, "Three ways to distil a language model: who writes the continuation?")
    rows = [(3.5, "real text", "data", "word-level KD", "KL(p_T || q_S) per token"),
            (2.2, "teacher writes\n(once, greedy)", "teacher", "sequence-level KD", "CE on the teacher's tokens"),
            (0.9, "student writes\n(every step, sampled)", "student", "on-policy", "JSD(beta) per token, graded by T")]
    prompt = _box(ax, 1.1, 2.2, "prompt\n(first tokens of\na review sentence)", "data", w=1.8, h=1.0)
    for y, who, role, name, loss in rows:
        source = _box(ax, 3.9, y, who, role, w=2.2, h=0.75)
        text = _box(ax, 6.5, y, "prompt + continuation", "data", w=2.0, h=0.55)
        target = _box(ax, 9.3, y, f"{name}\n{loss}", "loss", w=2.6, h=0.75, fontsize=8)
        _arrow(ax, prompt, source)
        _arrow(ax, source, text)
        _arrow(ax, text, target)
    ax.text(5.5, 0.15, "the same prompts and the same number of continuation tokens for every method",
            ha="center", fontsize=8, color="#444444")
    return fig


def minimax_knn(K: int = 8, k1: int = 4):
    """Lesson 09: Kamalloo et al. (Minimax-kNN, ACL 2021). Retrieve ``K`` neighbours of a training sentence from
    unlabelled text; drop those too far from it in the teacher's output space; keep the ``k1`` on which teacher and
    student disagree most, chosen again at every step; distil the student on them."""
    fig, ax = _canvas(11.5, 4.4, f"Minimax-kNN: retrieve K = {K}, keep the k1 = {k1} the student gets most wrong")
    x = _box(ax, 1.0, 2.4, "training\nsentence x\n(labelled)", "data", w=1.5, h=0.9)
    pool = _box(ax, 1.0, 0.7, "unlabelled pool\n(593k sentences)", "data", w=1.8, h=0.7)
    knn = _box(ax, 3.4, 2.4, f"{K} nearest\nneighbours\n(embedding / TF-IDF)", "data", w=2.0, h=0.9)
    near = _box(ax, 5.9, 2.4, "not far away:\nteacher distance\nd(p_T(x), p_T(x')) <= max", "teacher", w=2.3,
                h=0.9, fontsize=8)
    close = _box(ax, 8.4, 2.4, f"not so close:\ntop {k1} by\nKL(p_T(x') || p_S(x'))", "student", w=2.1, h=0.9,
                 fontsize=8)
    loss = _box(ax, 10.5, 2.4, "KD on x and\nthe k1 chosen\n+ CE on x", "loss", w=1.6, h=0.9, fontsize=8)
    for a, b in ((x, knn), (pool, knn), (knn, near), (near, close), (close, loss)):
        _arrow(ax, a, b)
    _arrow(ax, (10.5, 2.9, 0.01, 0.01), (8.4, 2.9, 0.01, 0.01), colour_=ROLE["student"], rad=0.5)  # top to top
    ax.text(9.45, 3.55, "the student changes: choose again every step", ha="center", fontsize=8,
            color=ROLE["student"])
    ax.text(5.9, 0.55, f"vanilla kNN: KD on all {K} | random control: {K} pool sentences drawn at random",
            ha="center", fontsize=8, color="#444444")
    return fig


def all_in_one(methods=("no KD", "KD", "PKD", "ALP-KD", "Annealing KD", "MATE-KD", "Minimax-kNN",
                         "Annealing + MATE")):
    """Lesson 10: one setting for every method (the talk's all-in-one comparison): one teacher and one student
    architecture per task, the same seeds, rows and number of student updates; each student is scored at fixed
    update counts, the checkpoint is chosen on held-out train, and the dev set is read once."""
    fig, ax = _canvas(11.5, 4.6, "One setting, every method: only the loss (and what it is computed on) differs")
    shared = _box(ax, 1.3, 2.3, "shared by all:\nteacher, student start,\nseeds, training rows,\nU student updates",
                  "data", w=2.3, h=1.4, fontsize=8)
    ys = np.linspace(4.0, 0.6, len(methods))
    for y, m in zip(ys, methods):
        box = _box(ax, 4.6, y, m, "student", w=1.9, h=0.34, fontsize=8)
        _arrow(ax, shared, box)
    pick = _box(ax, 7.6, 2.3, "score at fixed\nupdate counts:\nheld-out train\nand dev", "teacher", w=1.9, h=1.2,
                fontsize=8)
    report = _box(ax, 10.2, 3.0, "choose on held-out\n-> report dev once", "loss", w=2.1, h=0.7, fontsize=8)
    oracle = _box(ax, 10.2, 1.5, "choose on dev\n(the release's way)\n-> inflated", "data", w=2.1, h=0.8, fontsize=8)
    ax.annotate("", xy=(pick[0] - pick[2], pick[1]), xytext=(5.6, pick[1]),
                arrowprops=dict(arrowstyle="-|>", color="#444444", lw=1.4))
    _arrow(ax, pick, report)
    _arrow(ax, pick, oracle)
    return fig


def checkpoint_choice():
    """Lesson 10, open problem 1 ("more accurate teachers are not necessarily better teachers"): one teacher run,
    four checkpoints of it (early, middle, best on held-out, over-trained), the same KD students from each."""
    fig, ax = _canvas(11, 3.6, "Which checkpoint of the teacher should teach?")
    run = _box(ax, 1.3, 1.8, "one teacher\nfine-tuning run\n(many epochs)", "teacher", w=2.0, h=1.0, fontsize=8)
    names = ("early", "middle", "best (held-out)", "over-trained")
    for y, name in zip((3.0, 2.2, 1.4, 0.6), names):
        c = _box(ax, 4.3, y, name, "teacher", w=2.0, h=0.45, fontsize=8)
        s = _box(ax, 7.1, y, "KD student\n(same seeds)", "student", w=1.8, h=0.55, fontsize=8)
        _arrow(ax, run, c)
        _arrow(ax, c, s)
    _box(ax, 9.8, 1.8, "student score\nagainst\nteacher score", "loss", w=1.7, h=1.0, fontsize=8)
    return fig


def noisy_labels(share: float = 0.3):
    """Lesson 10, open problem 2: a share of the training labels flipped; a teacher fine-tuned on the noisy labels;
    students on the same noisy rows from labels alone, KD, and KD weighted towards the teacher; scored on clean dev."""
    fig, ax = _canvas(11, 3.6, f"Noisy labels: {share:.0%} of the training labels flipped, does KD refine them?")
    data = _box(ax, 1.3, 1.8, "training rows\nwith flipped labels", "data", w=2.0, h=0.8, fontsize=8)
    teacher = _box(ax, 4.2, 2.8, "teacher fine-tuned\non the noisy labels", "teacher", w=2.2, h=0.7, fontsize=8)
    rows = (("labels only", 2.8), ("KD, alpha 0.5", 1.8), ("KD, alpha 0.9\n(towards the teacher)", 0.8))
    for name, y in rows:
        s = _box(ax, 7.4, y, name, "student", w=2.1, h=0.6, fontsize=8)
        _arrow(ax, data, s)
        if name != "labels only":
            _arrow(ax, teacher, s, colour_=ROLE["teacher"])
    _arrow(ax, data, teacher)
    _box(ax, 9.9, 1.8, "clean dev\nscore", "loss", w=1.3, h=0.7, fontsize=8)
    ax.text(4.2, 0.3, "and: on how many flipped rows does the teacher predict the true label?", ha="center",
            fontsize=8, color="#444444")
    return fig


LESSON_DIAGRAMS = {"01_soft_targets": kd_loss, "02_label_smoothing": label_smoothing_vs_kd,
                   "03_distilbert_losses": triple_loss, "04_annealing_kd": annealing_stages,
                   "05_mate_kd": mate_kd_loop, "06_qadsm_two_tower": serving,
                   "07_layer_distillation": skip_and_search, "08_language_model_distillation": three_sources,
                   "09_knn_augmentation": minimax_knn, "10_all_methods": all_in_one}
