"""Scoring a trained emotion classifier on one split of a manifest folder.

:func:`evaluate` is what ``fairseq-ser evaluate`` and cross-validation both
run. It writes, under the results folder:

- ``predictions.tsv``: a header line, then one line per utterance: id, path
  (as the manifest lists it), reference, prediction, probability of every class;
- ``metrics.json``: UA, WA, macro/micro-F1, per-class scores and the confusion
  matrix (:func:`fairseq_ser.metrics.summarize`), with the checkpoint, data
  folder and split scored;
- ``confusion_matrix.png``.

The data's label dictionary may order (or name a subset of) the classes
differently from the checkpoint's; labels are matched by name.
"""

import json
import os
from typing import Dict, Optional, Sequence

import numpy as np

from . import metrics
from .data.audio import SAMPLE_RATE, read_audio
from .data.manifest import DEFAULT_LABEL_EXT, Manifest, encode_labels, label_path, load_split
from .fileio import atomic_open
from .inference import EmotionClassifier
from .plots import save_confusion_matrix

PREDICTIONS = "predictions.tsv"
METRICS = "metrics.json"
FIGURE = "confusion_matrix.png"


class _ManifestAudio:
    """The manifest's audio as a sequence, read one file at a time as the batcher asks for it."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest

    def __len__(self):
        return len(self.manifest)

    def __getitem__(self, i):
        return read_audio(self.manifest.audio_path(i))


def default_results_path(checkpoint: str, subset: str) -> str:
    """``<checkpoint folder>/eval-<subset>``."""
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint)), f"eval-{subset}")


def write_predictions(path: str, manifest: Manifest, class_names: Sequence[str], refs: Sequence[int],
                      preds: np.ndarray, probs: np.ndarray) -> None:
    """``predictions.tsv``: id, path, reference, prediction and ``p_<class>`` per utterance."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(["id", "path", "reference", "prediction"] + [f"p_{n}" for n in class_names]) + "\n")
        for i, (relpath, _) in enumerate(manifest.entries):
            row = [manifest.utterance_id(i), relpath, class_names[refs[i]], class_names[preds[i]]]
            f.write("\t".join(row + [f"{p:.6f}" for p in probs[i]]) + "\n")


def evaluate(data_dir: str, checkpoint: str, subset: str = "test", results_path: Optional[str] = None,
             labels_ext: str = DEFAULT_LABEL_EXT, batch_seconds: float = 160.0, device: Optional[str] = None,
             progress: bool = True) -> Dict:
    """Score ``checkpoint`` on ``subset`` of ``data_dir``, write the results, return the metrics summary.

    ``device``: a torch device (``cpu``, ``cuda``, ``cuda:1``); None: CUDA when
    available, else the CPU. ``results_path`` defaults to
    :func:`default_results_path`; the summary returned holds it as ``results_path``.
    """
    from tqdm import tqdm

    clf = EmotionClassifier.from_checkpoint(checkpoint, device=device)
    split = load_split(data_dir, subset, labels_ext)
    refs = encode_labels(split.labels, clf.class_names, label_path(data_dir, subset, labels_ext))
    manifest = split.manifest

    with tqdm(total=len(manifest), desc=f"evaluate {subset}", unit="utt", disable=not progress) as bar:
        probs = clf.predict_proba(_ManifestAudio(manifest), lengths=[n for _, n in manifest.entries],
                                  max_batch_samples=int(batch_seconds * SAMPLE_RATE), progress=bar.update)
    preds = probs.argmax(axis=1)
    cm = metrics.confusion_matrix(refs, preds, len(clf.class_names))
    summary = metrics.summarize(cm, clf.class_names)
    summary.update({"checkpoint": os.path.abspath(checkpoint), "data": os.path.abspath(data_dir),
                    "subset": subset})

    results_path = results_path or default_results_path(checkpoint, subset)
    os.makedirs(results_path, exist_ok=True)
    write_predictions(os.path.join(results_path, PREDICTIONS), manifest, clf.class_names, refs, preds, probs)
    with atomic_open(os.path.join(results_path, METRICS), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    save_confusion_matrix(cm, clf.class_names, os.path.join(results_path, FIGURE),
                          title=f"{subset}: UA {100 * summary['ua']:.1f}  WA {100 * summary['wa']:.1f}")
    summary["results_path"] = results_path
    return summary
