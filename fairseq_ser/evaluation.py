"""Scoring a trained emotion classifier on one split of a manifest folder.

:func:`evaluate` is what ``fairseq-ser evaluate`` and cross-validation both
run. It writes, under the results folder:

- ``predictions.tsv``: a header line, then one line per utterance: id, path
  (as the manifest lists it), reference, prediction, probability of every class;
- ``metrics.json``: UA, WA, macro/micro-F1, per-class scores and the confusion
  matrix (:func:`fairseq_ser.metrics.summarize`), with the checkpoint, data
  folder and split scored;
- ``confusion_matrix.png``.

Classes are matched by name: the data's label dictionary may order them
differently from the checkpoint's, name fewer of them, or name others (another
corpus). The summary and metrics.json say which classes are shared, which are
only in the model and which only in the data (``classes_shared``,
``classes_model_only``, ``classes_data_only``, each in the model's or the
data's order), and ``classes`` picks the protocol:

- ``"all"``: the argmax over every class of the model, as in training; an
  utterance whose label the model does not know is refused.
- ``"shared"``: the usual cross-corpus protocol. Only utterances whose label
  is a shared class are scored (``num_dropped`` counts the others,
  ``dropped`` by label), and the prediction is the argmax over the shared
  classes, their probabilities renormalised to sum to 1; metrics, confusion
  matrix and predictions.tsv are over the shared classes only.

Data that shares no class with the model is refused in both.
"""

import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import metrics
from .data.audio import SAMPLE_RATE, read_audio
from .data.manifest import (DEFAULT_LABEL_EXT, Manifest, dict_path, encode_labels, label_path, load_split,
                            read_label_dict)
from .errors import DataError
from .fileio import atomic_open
from .inference import EmotionClassifier
from .plots import save_confusion_matrix

PREDICTIONS = "predictions.tsv"
METRICS = "metrics.json"
FIGURE = "confusion_matrix.png"
CLASS_PROTOCOLS = ("all", "shared")


class ManifestAudio:
    """The manifest's audio as a sequence, read one file at a time as the batcher asks for it."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest

    def __len__(self):
        return len(self.manifest)

    def __getitem__(self, i):
        return read_audio(self.manifest.audio_path(i))


@dataclass
class ClassMatch:
    """The model's classes against the data's, by name."""

    model: List[str]
    data: List[str]

    @property
    def shared(self) -> List[str]:
        """In the model's order."""
        return [n for n in self.model if n in self.data]

    @property
    def model_only(self) -> List[str]:
        return [n for n in self.model if n not in self.data]

    @property
    def data_only(self) -> List[str]:
        return [n for n in self.data if n not in self.model]

    def record(self) -> Dict[str, List[str]]:
        return {"classes_shared": self.shared, "classes_model_only": self.model_only,
                "classes_data_only": self.data_only}


def match_classes(model_classes: Sequence[str], data_classes: Sequence[str], data_dir: str,
                  checkpoint: str = "the checkpoint") -> ClassMatch:
    """Match by name; data that shares no class with the model is a DataError naming both lists."""
    match = ClassMatch(list(model_classes), list(data_classes))
    if not match.shared:
        raise DataError(f"{data_dir}: the data shares no class with {checkpoint}: the model's classes are "
                        f"{', '.join(match.model)}, the data's {', '.join(match.data)}; nothing can be scored")
    return match


def _counts(labels: Sequence[str]) -> str:
    return ", ".join(f"{n} ({c})" for n, c in Counter(labels).items())


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
             progress: bool = True, classes: str = "all") -> Dict:
    """Score ``checkpoint`` on ``subset`` of ``data_dir``, write the results, return the metrics summary.

    ``device``: a torch device (``cpu``, ``cuda``, ``cuda:1``); None: CUDA when
    available, else the CPU. ``results_path`` defaults to
    :func:`default_results_path`; the summary returned holds it as ``results_path``.
    ``classes``: ``"all"`` or ``"shared"`` (the module's docstring); the summary
    holds it as ``class_protocol``, with the class match and ``num_dropped``.
    """
    from tqdm import tqdm

    if classes not in CLASS_PROTOCOLS:
        raise DataError(f"classes={classes!r}: expected one of {', '.join(CLASS_PROTOCOLS)}")
    clf = EmotionClassifier.from_checkpoint(checkpoint, device=device)
    split = load_split(data_dir, subset, labels_ext)
    labels_file = label_path(data_dir, subset, labels_ext)
    match = match_classes(clf.class_names, read_label_dict(dict_path(data_dir, labels_ext)), data_dir, checkpoint)
    unknown = [label for label in split.labels if label not in clf.class_names]
    if classes == "all" and unknown:
        raise DataError(f"{labels_file}: {len(unknown)} utterances have labels the model does not know: "
                        f"{_counts(unknown)}; the model's classes are {', '.join(match.model)}, the data's "
                        f"{', '.join(match.data)} (shared: {', '.join(match.shared)}); to score the shared "
                        "classes only (the cross-corpus protocol), use --classes shared")
    class_names = match.shared if classes == "shared" else list(clf.class_names)
    keep = [i for i, label in enumerate(split.labels) if label in class_names]
    if not keep:
        raise DataError(f"{labels_file}: no utterance of {subset!r} has a shared class "
                        f"({', '.join(match.shared)}); its labels: {_counts(split.labels)}")
    manifest = Manifest(split.manifest.path, split.manifest.root, [split.manifest.entries[i] for i in keep])
    refs = encode_labels([split.labels[i] for i in keep], class_names, labels_file)

    with tqdm(total=len(manifest), desc=f"evaluate {subset}", unit="utt", disable=not progress) as bar:
        probs = clf.predict_proba(ManifestAudio(manifest), lengths=[n for _, n in manifest.entries],
                                  max_batch_samples=int(batch_seconds * SAMPLE_RATE), progress=bar.update)
    if classes == "shared":   # the model's distribution restricted to the shared classes
        probs = probs[:, [clf.class_names.index(n) for n in class_names]]
        probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), np.finfo(probs.dtype).tiny)
    preds = probs.argmax(axis=1)
    cm = metrics.confusion_matrix(refs, preds, len(class_names))
    summary = metrics.summarize(cm, class_names)
    dropped = [label for label in split.labels if label not in class_names]
    summary.update({"checkpoint": os.path.abspath(checkpoint), "data": os.path.abspath(data_dir),
                    "subset": subset, "class_protocol": classes, **match.record(),
                    "num_dropped": len(dropped), "dropped": dict(Counter(dropped))})

    results_path = results_path or default_results_path(checkpoint, subset)
    os.makedirs(results_path, exist_ok=True)
    write_predictions(os.path.join(results_path, PREDICTIONS), manifest, class_names, refs, preds, probs)
    with atomic_open(os.path.join(results_path, METRICS), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    save_confusion_matrix(cm, class_names, os.path.join(results_path, FIGURE),
                          title=f"{subset}: UA {100 * summary['ua']:.1f}  WA {100 * summary['wa']:.1f}")
    summary["results_path"] = results_path
    return summary


def describe_classes(summary: Dict) -> str:
    """The class match and the utterances left out, in a few lines (what ``fairseq-ser evaluate`` prints)."""
    def names(key):
        return ", ".join(summary[key]) or "none"

    lines = [f"classes shared with the data: {names('classes_shared')}",
             f"only in the model: {names('classes_model_only')}; only in the data: {names('classes_data_only')}"]
    if summary["class_protocol"] == "shared":
        dropped = ", ".join(f"{n} ({c})" for n, c in summary["dropped"].items())
        lines.append(f"--classes shared: argmax over the shared classes; scored {summary['num_utterances']} "
                     f"utterances, dropped {summary['num_dropped']}" + (f": {dropped}" if dropped else ""))
    return "\n".join(lines)
