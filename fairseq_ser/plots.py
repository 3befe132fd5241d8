"""Figures written next to evaluation results: the confusion matrix, the low-resource curve."""

from typing import Sequence

import numpy as np

from .fileio import atomic_path


def save_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str, title: str = "") -> None:
    """Confusion matrix as a PNG: row-normalised colours (recall), raw counts as text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    support = cm.sum(axis=1, keepdims=True)
    recall = np.divide(cm, support, out=np.zeros(cm.shape, dtype=float), where=support > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2, 1.2 * n + 1.5))
    image = ax.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of reference class")
    ax.set_xticks(range(n), labels=class_names)
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for r in range(n):
        for p in range(n):
            ax.text(p, r, str(int(cm[r, p])), ha="center", va="center",
                    color="white" if recall[r, p] > 0.5 else "black")
    if title:
        ax.set_title(title)
    _save_png(fig, path)


def save_fraction_curve(fractions: Sequence[float], series: dict, path: str, ylabel: str = "UA (%)",
                        title: str = "") -> None:
    """A score against the labelled fraction: one line per method, error bars, a logarithmic x axis.

    ``series``: method name -> (means, spreads), one value per fraction (a spread of None draws no bar).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(fractions, dtype=float)
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for i, (name, (means, spreads)) in enumerate(series.items()):
        errors = None if spreads is None or any(s is None for s in spreads) else np.asarray(spreads, float)
        # methods share the x values: a small offset per line keeps their error bars apart
        shift = x * (1.0 + 0.02 * (i - (len(series) - 1) / 2))
        ax.errorbar(shift, means, yerr=errors, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xticks(x, labels=[f"{100 * f:g} %" for f in x])
    ax.minorticks_off()
    ax.set_xlabel("labelled training data (fraction of each fold's training set)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    _save_png(fig, path)


def _save_png(fig, path: str) -> None:
    """Lay out ``fig``, write it to ``path`` as a PNG atomically, and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
