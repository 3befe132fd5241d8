"""Figures written next to evaluation results."""

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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
