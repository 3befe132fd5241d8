"""Classification metrics of speech emotion recognition, in one place.

Everything is computed from a confusion matrix ``cm[reference, prediction]``
of counts, so the criterion (which sums counts over a whole validation set),
``fairseq-ser evaluate`` and cross-validation report the same numbers.

- UA (unweighted accuracy): mean recall over the classes that have reference
  examples. A class absent from the test set has no recall and is left out of
  the mean instead of producing NaN.
- WA (weighted accuracy): plain accuracy, correct / total. For single-label
  classification this equals micro-F1.
- macro-F1: mean F1 over the classes that occur in the reference or the
  predictions (a class predicted but never present has F1 0; a class neither
  present nor predicted is left out).
"""

from typing import Dict, List, Optional, Sequence

import numpy as np


def confusion_matrix(references: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts ``cm[r, p]`` of reference class ``r`` predicted as ``p``."""
    refs = np.asarray(references, dtype=np.int64)
    preds = np.asarray(predictions, dtype=np.int64)
    if refs.shape != preds.shape:
        raise ValueError(f"{refs.shape[0]} references but {preds.shape[0]} predictions")
    for name, arr in (("reference", refs), ("prediction", preds)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} class index outside 0..{num_classes - 1}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (refs, preds), 1)
    return cm


def per_class_recall(cm: np.ndarray) -> List[Optional[float]]:
    """Recall of each class; ``None`` for a class with no reference examples."""
    cm = np.asarray(cm)
    support = cm.sum(axis=1)
    return [float(cm[i, i] / support[i]) if support[i] > 0 else None for i in range(len(cm))]


def per_class_precision(cm: np.ndarray) -> List[Optional[float]]:
    """Precision of each class; ``None`` for a class never predicted."""
    cm = np.asarray(cm)
    predicted = cm.sum(axis=0)
    return [float(cm[i, i] / predicted[i]) if predicted[i] > 0 else None for i in range(len(cm))]


def per_class_f1(cm: np.ndarray) -> List[Optional[float]]:
    """F1 of each class; ``None`` for a class neither present nor predicted."""
    cm = np.asarray(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    out: List[Optional[float]] = []
    for i in range(len(cm)):
        denom = support[i] + predicted[i]
        out.append(float(2 * cm[i, i] / denom) if denom > 0 else None)
    return out


def _mean(values: Sequence[Optional[float]]) -> float:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else 0.0


def unweighted_accuracy(cm: np.ndarray) -> float:
    return _mean(per_class_recall(cm))


def weighted_accuracy(cm: np.ndarray) -> float:
    cm = np.asarray(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else 0.0


def macro_f1(cm: np.ndarray) -> float:
    return _mean(per_class_f1(cm))


def summarize(cm: np.ndarray, class_names: Optional[Sequence[str]] = None) -> Dict:
    """All metrics of a confusion matrix as a JSON-ready dict (fractions in 0..1)."""
    cm = np.asarray(cm, dtype=np.int64)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(cm))]
    if len(names) != len(cm):
        raise ValueError(f"{len(names)} class names for a {len(cm)}x{len(cm)} confusion matrix")
    wa = weighted_accuracy(cm)
    return {
        "num_utterances": int(cm.sum()),
        "ua": unweighted_accuracy(cm),
        "wa": wa,
        "macro_f1": macro_f1(cm),
        "micro_f1": wa,
        "classes": names,
        "support": {n: int(s) for n, s in zip(names, cm.sum(axis=1))},
        "recall": dict(zip(names, per_class_recall(cm))),
        "precision": dict(zip(names, per_class_precision(cm))),
        "f1": dict(zip(names, per_class_f1(cm))),
        "confusion_matrix": cm.tolist(),
    }


def format_report(summary: Dict) -> str:
    """A plain-text table: headline metrics, per-class scores and the confusion matrix."""
    names = summary["classes"]
    width = max(8, max(len(n) for n in names) + 2)

    def pct(v):
        return "     -" if v is None else f"{100 * v:6.2f}"

    lines = [
        f"utterances {summary['num_utterances']}  "
        f"UA {100 * summary['ua']:.2f}  WA {100 * summary['wa']:.2f}  "
        f"macro-F1 {100 * summary['macro_f1']:.2f}",
        "",
        f"{'class':<{width}}{'support':>8}{'recall':>8}{'prec.':>8}{'F1':>8}",
    ]
    for n in names:
        lines.append(
            f"{n:<{width}}{summary['support'][n]:>8d}  {pct(summary['recall'][n])}"
            f"  {pct(summary['precision'][n])}  {pct(summary['f1'][n])}"
        )
    lines += ["", "confusion matrix (rows: reference, columns: prediction)"]
    lines.append(" " * width + "".join(f"{n:>{width}}" for n in names))
    for n, row in zip(names, summary["confusion_matrix"]):
        lines.append(f"{n:<{width}}" + "".join(f"{c:>{width}d}" for c in row))
    return "\n".join(lines)
