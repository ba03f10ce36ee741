"""One plotting style for the whole course, and byte-stable figure files (``figures_dir`` says where).

Plotting helpers draw; they never train or load anything. ``savefig`` writes PNGs without the
"Software" metadata, so the same figure gives the same bytes on every run.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

FIGSIZE = (7.0, 3.6)
DPI = 90

# one colour per method in every panel of every lesson (seaborn's colour-blind palette); the first matching
# key wins, so "TwinBERT_res, distilled" is a distilled student and "KD + random mask" is not plain KD
_PALETTE = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133",
            "#56b4e9"]
METHOD_COLOURS = (
    ("teacher", "#333333"), ("Annealing + MATE", "#ece133"), ("Minimax-kNN", "#56b4e9"),
    ("ALP-KD (scaled)", "#fbafe4"), ("ALP-KD", "#cc78bc"),
    ("PKD", "#029e73"), ("MATE-KD", "#d55e00"), ("random mask", "#de8f05"), ("random pool", "#de8f05"),
    ("k1 = 1)", "#fbafe4"), ("k1 = 2)", "#cc78bc"), ("Minimax-", "#d55e00"), ("vanilla-", "#029e73"), ("Annealing KD", "#ca9161"),
    ("TAKD", "#cc78bc"), ("label smoothing", "#029e73"), ("Tf-KD", "#ca9161"), ("defective", "#fbafe4"),
    ("reverse", "#56b4e9"), ("random init", "#ca9161"), ("without L", "#cc78bc"), ("internal", "#56b4e9"),
    ("no distillation", "#949494"), ("no KD", "#949494"), ("labels only", "#949494"), ("scratch", "#949494"),
    ("baseline", "#949494"), ("distilled", "#0173b2"), ("KD", "#0173b2"), ("student", "#0173b2"),
)


def colour(method: str) -> str:
    """The course's colour for ``method`` (a teacher is dark grey, a label-only student light grey, KD blue, ...).

    Names are matched by the known keys of ``METHOD_COLOURS`` (first match wins); any other name gets a palette
    colour chosen by a stable hash of the name, so it is the same in every panel and every run.
    """
    for key, value in METHOD_COLOURS:
        if key.lower() in method.lower():
            return value
    import zlib

    return _PALETTE[zlib.crc32(method.encode()) % len(_PALETTE)]


def layer_weights(ax, weights, title: str):
    """Draw a student-layer x teacher-layer weight matrix (ALP-KD's ``alpha_jk``: rows ``s1..sm``, columns
    ``t1..tn``, values in [0, 1]) as a heatmap with every value printed; returns the image (for a colour bar)."""
    weights = np.asarray(weights)
    im = ax.imshow(weights, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (j, k), w in np.ndenumerate(weights):
        ax.text(k, j, f"{w:.2f}", ha="center", va="center", fontsize=7, color="white" if w > 0.5 else "black")
    ax.set_xticks(range(weights.shape[1]), [f"t{k}" for k in range(1, weights.shape[1] + 1)], fontsize=7)
    ax.set_yticks(range(weights.shape[0]), [f"s{j}" for j in range(1, weights.shape[0] + 1)])
    ax.grid(False)
    ax.set_title(title, fontsize=9)
    return im


def set_style() -> None:
    """The course style (seaborn's whitegrid theme, compact fonts). Call once per notebook."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind")
    plt.rcParams.update({"figure.figsize": FIGSIZE, "figure.dpi": DPI, "savefig.dpi": DPI, "axes.titlesize": 11})


FIGURES_ENV = "KDTUTORIAL_FIGURES"


def figures_dir(start: str | Path = ".") -> Path:
    """The folder a notebook saves its figures in (created if needed).

    ``$KDTUTORIAL_FIGURES`` when set (``make figures`` sets it to the committed ``figures/`` while it re-runs the
    committed notebooks); else ``runs/figures`` of the course checkout when run from its ``notebooks/`` folder
    (a workshop run, a test run or a JupyterLab session never writes over the tracked ``figures/``); else
    ``./figures`` beside the notebook (Colab, a copied notebook).
    """
    import os

    if os.environ.get(FIGURES_ENV, "").strip():
        out = Path(os.environ[FIGURES_ENV]).expanduser().resolve()
    else:
        start = Path(start).resolve()
        checkout = start.parent if (start.parent / "kdtutorial").is_dir() else start if (start / "kdtutorial").is_dir() else None
        out = checkout / "runs" / "figures" if checkout is not None else start / "figures"
    out.mkdir(parents=True, exist_ok=True)
    return out


def savefig(fig, name: str, folder: str | Path | None = None) -> Path:
    """Save ``fig`` as ``<folder>/<name>.png`` with byte-stable metadata; returns the path."""
    folder = Path(folder) if folder is not None else figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, bbox_inches="tight", metadata={"Software": None})
    return path


def bar_distributions(ax, dists: dict, class_names, title: str = "") -> None:
    """Grouped bars: one group per class, one bar per entry of ``dists`` (label -> probabilities)."""
    k = len(class_names)
    width = 0.8 / max(len(dists), 1)
    for i, (label, p) in enumerate(dists.items()):
        p = p.detach().cpu() if hasattr(p, "detach") else p  # a tensor that requires grad cannot become an array
        ax.bar(np.arange(k) + (i - (len(dists) - 1) / 2) * width, np.asarray(p), width, label=label)
    ax.set_xticks(np.arange(k), class_names, rotation=45 if max(len(c) for c in class_names) > 2 else 0, ha="right" if max(len(c) for c in class_names) > 2 else "center")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)


def image_with_distribution(axes_pair, image, probs, class_names, title: str = "") -> None:
    """An input image beside a bar chart of a model's (soft) distribution over the classes."""
    ax_img, ax_bar = axes_pair
    ax_img.imshow(np.asarray(image).squeeze(), cmap="gray_r")
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    ax_img.set_title(title, fontsize=9)
    ax_bar.bar(range(len(class_names)), np.asarray(probs), color="C0")
    ax_bar.set_yscale("log")
    ax_bar.set_ylim(1e-5, 1.5)
    ax_bar.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)


def heatmap(ax, table, fmt: str = ".1f", title: str = "", cmap: str = "viridis") -> None:
    """Annotated heatmap of a pandas DataFrame (index on the y axis, columns on the x axis)."""
    import seaborn as sns

    sns.heatmap(table, annot=True, fmt=fmt, cmap=cmap, ax=ax, cbar=False)
    if title:
        ax.set_title(title)


def interval_bars(ax, labels, means, lows, highs, title: str = "", xlabel: str = "") -> None:
    """Horizontal bars of ``means`` with interval whiskers ``lows``..``highs`` (nan: no whisker), one colour per
    label (:func:`colour`), a line at 0: a gain over a baseline with its confidence interval."""
    y = np.arange(len(labels))[::-1]
    means, lows, highs = (np.asarray(v, float) for v in (means, lows, highs))
    ax.barh(y, means, color=[colour(m) for m in labels], alpha=0.85)
    ok = ~np.isnan(lows)
    ax.errorbar(means[ok], y[ok], xerr=[means[ok] - lows[ok], highs[ok] - means[ok]], fmt="none", ecolor="#333333",
                capsize=3, lw=1)
    ax.axvline(0, color="#333333", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set(title=title, xlabel=xlabel)
