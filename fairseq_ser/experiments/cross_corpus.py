"""Scoring checkpoints on another corpus (``fairseq-ser cv --also-test NAME=FOLDS_DIR``).

A checkpoint trained on one corpus has seen none of another, so all of the
other corpus is test data: the union of the test splits of its folds (with
leave-one-session-out or speaker folds, that is every utterance once, in fold
order; an audio file listed by the test splits of two folds is scored once).
The union is written as a manifest folder under the results folder
(``<results>/data/test.{tsv,emo}``, ``dict.emo.txt``) and scored by the
shared-class protocol (:func:`fairseq_ser.evaluation.evaluate` with
``classes="shared"``): only utterances of the classes the model and that
corpus share, argmax over those classes.

How cross-validation calls it, for each run after scoring the run's own
test split, and what it adds to the run's ``metrics.json``::

    from .cross_corpus import also_test_entry, score_also_test

    record["also_test"] = {}
    for name, folds_dir in also_test.items():    # parse_also_test(["emodb=manifests/emodb"])
        summary = score_also_test(stage.path("checkpoint_best.pt"), folds_dir,
                                  stage.path(f"eval-{name}"), device, progress)
        record["also_test"][name] = also_test_entry(summary)

``record["also_test"][NAME]`` then holds :data:`ALSO_TEST_KEYS` (UA, WA,
macro-F1 as fractions, the utterances scored and dropped, the class match, the
confusion matrix, the corpus folder and the results folder), which is what
:func:`fairseq_ser.experiments.report.cross_corpus` reads to build the
train corpus x test corpus table.
"""

import json
import os
import re
from typing import Dict, List, Optional, Sequence

from ..data.manifest import (DEFAULT_LABEL_EXT, dict_path, label_counts, load_split, read_label_dict,
                             write_label_dict, write_split)
from ..errors import DataError, SerError
from ..fileio import atomic_open
from ..data.fold_dirs import find_fold_dirs

UNION_DIR = "data"   # under the results folder: the union of the other corpus's test splits
ALSO_TEST_KEYS = ("ua", "wa", "macro_f1", "micro_f1", "num_utterances", "num_dropped", "classes",
                  "classes_shared", "classes_model_only", "classes_data_only", "confusion_matrix", "corpus",
                  "results_path")


def parse_also_test(values: Sequence[str]) -> Dict[str, str]:
    """``NAME=FOLDS_DIR`` values -> {NAME: FOLDS_DIR}, in order; NAME names the ``eval-NAME`` folders."""
    out: Dict[str, str] = {}
    for value in values:
        name, sep, folds_dir = value.partition("=")
        if not sep or not folds_dir:
            raise SerError(f"--also-test {value!r}: expected NAME=FOLDS_DIR (e.g. emodb=manifests/emodb)")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise SerError(f"--also-test {value!r}: NAME must be letters, digits, '_', '.' or '-' "
                           "(it names the eval-NAME folder of every run)")
        if name in out:
            raise SerError(f"--also-test: the name {name!r} is given twice")
        if not os.path.isdir(folds_dir):
            raise DataError(f"{folds_dir}: --also-test {name}: folds folder not found")
        out[name] = folds_dir
    return out


def write_union_test(folds_dir: str, out_dir: str, ext: str = DEFAULT_LABEL_EXT) -> List[str]:
    """The union of the test splits of ``folds_dir``'s folds as ``out_dir``/test.tsv; returns the fold names."""
    folds = find_fold_dirs(folds_dir, ext)
    rows, seen, names = [], {}, []
    for fold in folds:
        split = load_split(fold.path, "test", ext)
        names += [n for n in read_label_dict(dict_path(fold.path, ext)) if n not in names]
        for i, label in enumerate(split.labels):
            audio = os.path.normpath(os.path.abspath(split.manifest.audio_path(i)))
            if audio in seen:
                if seen[audio][1] != label:
                    raise DataError(f"{audio}: labelled {seen[audio][1]!r} in {seen[audio][0]} but {label!r} "
                                    f"in {split.manifest.path}")
                continue
            seen[audio] = (split.manifest.path, label)
            rows.append((audio, split.manifest.entries[i][1], label))
    root = os.path.commonpath([os.path.dirname(a) for a, _, _ in rows])
    os.makedirs(out_dir, exist_ok=True)
    write_label_dict(dict_path(out_dir, ext), names, label_counts(r[2] for r in rows))
    write_split(out_dir, "test", root, [(os.path.relpath(a, root), n, label) for a, n, label in rows], ext)
    return [f.name for f in folds]


def score_also_test(checkpoint: str, folds_dir: str, results_path: str, device: Optional[str] = None,
                    progress: bool = True) -> Dict:
    """Score ``checkpoint`` on all of another corpus (its folds' test splits), shared classes only.

    Writes what :func:`~fairseq_ser.evaluation.evaluate` writes under
    ``results_path``, plus the union manifest in ``results_path/data``; the
    summary (also in ``metrics.json``) adds ``corpus`` (the folds folder) and
    ``folds`` (the folds whose test splits were pooled).
    """
    from ..evaluation import METRICS, evaluate   # torch: only when something is scored

    union = os.path.join(results_path, UNION_DIR)
    folds = write_union_test(folds_dir, union)
    summary = evaluate(union, checkpoint, "test", results_path, device=device, progress=progress,
                       classes="shared")
    summary.update(corpus=os.path.abspath(folds_dir), folds=folds)
    with atomic_open(os.path.join(results_path, METRICS), "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in summary.items() if k != "results_path"}, f, indent=2)
    return summary


def also_test_entry(summary: Dict) -> Dict:
    """What a run's ``metrics.json`` keeps of one other corpus's score: :data:`ALSO_TEST_KEYS`."""
    return {k: summary[k] for k in ALSO_TEST_KEYS}
