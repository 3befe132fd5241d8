"""Labelled subsets of fold folders: nested, stratified, deterministic (the low-resource experiments).

For every fold folder of a root and every value (a fraction of each class's
training utterances, or a number per class), ``OUT_DIR/<subset>/<fold>/`` is a
fold folder of its own:

- ``train.tsv``, ``train.emo`` (and ``train.spk``): the labelled subset, rows
  in the source's order;
- ``valid.*``, ``test.*``: the source's files, copied byte for byte;
- ``dict.emo.txt``: the source's classes, in the same order, with the
  subset's training counts;
- ``unlabelled.tsv``: the fold's full training audio (labelled or not), plus
  the source's ``unlabelled.tsv`` and the extra unlabelled manifests, never a
  valid or test file (:func:`fairseq_ser.data.unlabelled.adaptation_rows`);
  root ``/``, absolute paths.

``OUT_DIR/subsets.json`` records the source, the kind, values and seed, and the
class counts of every subset and fold. A rerun with the same arguments on the
same source leaves everything as it is; other arguments rewrite it.

How utterances are chosen. Per fold and class, one seeded order ranks the
class's training utterances, and a subset of ``m`` utterances takes the first
``m`` of that order, so a smaller subset lies inside every larger one (same
seed). ``m`` is ``round(f * n)`` (halves up) for a fraction ``f`` of the class's
``n`` utterances, or ``N`` per class. With speakers (``train.spk``), the order
interleaves them: each speaker's utterances are ranked in a seeded random
order, and utterance ``r`` of a speaker with ``n_s`` of them gets the key
``(r + 0.5) / n_s``; the class is sorted by key (ties broken at random), so the
first ``m`` hold within one of ``m * n_s / n`` utterances of every speaker.
The random generator is seeded from the seed and crc32 hashes of the fold and
class names, so the choice depends on nothing else (not on dict or set order,
not on Python's hash seed).
"""

import hashlib
import json
import math
import os
import shutil
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError
from ..fileio import atomic_open, read_json_or_none
from .fold_dirs import SPLITS, FoldDir, find_fold_dirs
from .manifest import (DEFAULT_LABEL_EXT, dict_path, label_path, load_split, manifest_path, read_speakers,
                       speaker_path, unlabelled_path, write_label_dict, write_manifest, write_speakers,
                       write_split)
from .prepare import folder_in_place
from .unlabelled import ABSOLUTE_ROOT, adaptation_rows

RECORD = "subsets.json"
KINDS = ("fraction", "per_class")
_PREFIX = {"fraction": "frac", "per_class": "per_class"}
_FORMAT_VERSION = 1


def subset_name(kind: str, value) -> str:
    """The folder name of a subset: ``frac0.1``, ``frac1``, ``per_class20``."""
    if kind == "fraction":
        return f"frac{float(value):g}"
    if kind == "per_class":
        return f"per_class{int(value)}"
    raise DataError(f"subset kind {kind!r}: expected one of {', '.join(KINDS)}")


@dataclass
class SubsetResult:
    """What :func:`write_subsets` wrote (or found already written)."""

    out_dir: str
    kind: str
    values: List
    names: List[str]                          # subset folder names, in the order of ``values``
    seed: int
    class_names: List[str]
    folds: List[str]
    counts: Dict[str, Dict[str, Dict[str, int]]]   # subset -> fold -> class -> training utterances
    source_counts: Dict[str, Dict[str, int]]       # fold -> class -> training utterances of the source
    unlabelled: Dict[str, int]                     # fold -> files in its unlabelled.tsv
    reused: bool = False                           # found up to date, nothing written
    extra_audio: bool = False                      # unlabelled.tsv holds extra unlabelled audio too

    def format_summary(self) -> str:
        width = max([5] + [len(c) for c in self.class_names])
        name_width = max([6] + [len(n) for n in self.names]) + 2
        fold_width = max([4] + [len(f) for f in self.folds]) + 2
        header = (f"{'fold':<{fold_width}}{'subset':<{name_width}}{'total':>7}"
                  + "".join(f"{c:>{width + 1}}" for c in self.class_names) + f"{'unlabelled':>12}")
        verb = "up to date" if self.reused else "wrote"
        lines = [f"{verb}: {len(self.names)} labelled subset(s) of {len(self.folds)} fold(s) in {self.out_dir} "
                 f"(seed {self.seed}; each subset holds the smaller ones)", header]

        def row(fold, name, counts, unlabelled=""):
            cells = "".join(f"{counts.get(c, 0):>{width + 1}}" for c in self.class_names)
            return f"{fold:<{fold_width}}{name:<{name_width}}{sum(counts.values()):>7}{cells}{unlabelled:>12}"

        for fold in self.folds:
            lines.append(row(fold, "all", self.source_counts[fold], str(self.unlabelled[fold])))
            lines += [row("", name, self.counts[name][fold]) for name in self.names]
        lines.append("valid and test: the source's, unchanged; unlabelled.tsv: the fold's full training audio"
                     + (" plus the extra unlabelled audio" if self.extra_audio else ""))
        return "\n".join(lines)


def check_values(fractions=None, per_class=None) -> Tuple[str, List]:
    """``(kind, values)`` from exactly one of ``fractions`` (in (0, 1]) and ``per_class`` (>= 1)."""
    if (fractions is None) == (per_class is None) or not (fractions or per_class):
        raise DataError("labelled subsets: give either fractions or per-class counts (one of them, not empty)")
    if fractions is not None:
        kind, values = "fraction", [float(f) for f in fractions]
        bad = [f for f in values if not 0 < f <= 1]
        if bad:
            raise DataError(f"labelled fractions must lie in (0, 1], got {', '.join(f'{f:g}' for f in bad)}")
    else:
        kind, values = "per_class", []
        for n in per_class:
            if int(n) != n or n < 1:
                raise DataError(f"per-class counts must be integers >= 1, got {n!r}")
            values.append(int(n))
    names = [subset_name(kind, v) for v in values]
    if len(set(names)) != len(names):
        raise DataError(f"labelled subsets: a value is given twice ({', '.join(names)})")
    return kind, values


def ranked(indices: Sequence[int], speakers: Optional[Sequence[str]], rng: np.random.Generator) -> List[int]:
    """``indices`` (one class of one fold) in the order subsets take them; see the module docstring."""
    indices = list(indices)
    if speakers is None:
        return [indices[i] for i in rng.permutation(len(indices))]
    by_speaker: Dict[str, List[int]] = {}
    for i in indices:
        by_speaker.setdefault(speakers[i], []).append(i)
    keyed = []
    for speaker in sorted(by_speaker):
        own = by_speaker[speaker]
        keyed += [((rank + 0.5) / len(own), own[j]) for rank, j in enumerate(rng.permutation(len(own)))]
    ties = rng.random(len(keyed))
    return [i for _, _, i in sorted((key, tie, i) for (key, i), tie in zip(keyed, ties))]


def subset_size(kind: str, value, n: int, class_name: str, fold: str) -> int:
    """How many of a class's ``n`` training utterances a subset takes; a DataError when none or too many."""
    if kind == "per_class":
        if value > n:
            raise DataError(f"per class {value} needs {value} training utterances of class {class_name!r} "
                            f"in {fold}, it has {n}")
        return value
    m = int(math.floor(value * n + 0.5))   # round half up: Python's round() would round 2.5 to 2
    if m == 0:
        raise DataError(f"fraction {value:g} leaves class {class_name!r} of {fold} with no training utterance "
                        f"(it has {n})")
    return m


def _rng(seed: int, fold: str, class_name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) % 2 ** 32, zlib.crc32(fold.encode("utf-8")),
                                  zlib.crc32(class_name.encode("utf-8"))])


def choose(fold: FoldDir, kind: str, values: Sequence, seed: int,
           ext: str = DEFAULT_LABEL_EXT) -> Dict[object, List[int]]:
    """value -> the sorted training rows of ``fold`` its subset keeps (nested across values)."""
    train = load_split(fold.path, "train", ext)
    speakers = read_speakers(fold.path, "train", expected=len(train.manifest))
    order = {}
    for c in train.class_names:
        rows = [i for i, label in enumerate(train.labels) if label == c]
        order[c] = ranked(rows, speakers, _rng(seed, fold.name, c))
    return {v: sorted(i for c in train.class_names
                      for i in order[c][:subset_size(kind, v, len(order[c]), c, fold.name)])
            for v in values}


def source_fingerprint(folds: Sequence[FoldDir], unlabelled: Sequence[str], ext: str = DEFAULT_LABEL_EXT) -> str:
    """sha1 over the source files a subset is built from, so a changed source is noticed."""
    digest = hashlib.sha1()
    paths = []
    for fold in folds:
        for split in SPLITS:
            paths += [manifest_path(fold.path, split), label_path(fold.path, split, ext),
                      speaker_path(fold.path, split)]
        paths += [dict_path(fold.path, ext), unlabelled_path(fold.path)]
    for path in paths + list(unlabelled):
        digest.update(path.encode("utf-8", "surrogateescape") + b"\0")
        if os.path.isfile(path):
            with open(path, "rb") as f:
                digest.update(f.read())
        digest.update(b"\0")
    return digest.hexdigest()


def write_subsets(folds_root: str, out_dir: str, fractions: Optional[Sequence[float]] = None,
                  per_class: Optional[Sequence[int]] = None, seed: int = 1, unlabelled: Sequence[str] = (),
                  progress: bool = True, ext: str = DEFAULT_LABEL_EXT) -> SubsetResult:
    """Write the labelled subsets of every fold folder of ``folds_root`` under ``out_dir``.

    ``unlabelled``: extra unlabelled manifests (``.tsv``), added to each
    subset's ``unlabelled.tsv`` (see :func:`fairseq_ser.data.unlabelled.prepare_unlabelled`).
    Every choice is made (and every error raised) before anything is written.
    """
    from tqdm import tqdm

    kind, values = check_values(fractions, per_class)
    names = [subset_name(kind, v) for v in values]
    out_dir = os.path.abspath(out_dir)
    folds = find_fold_dirs(folds_root, ext)
    unlabelled = [os.path.abspath(m) for m in unlabelled]
    for manifest in unlabelled:
        if not os.path.isfile(manifest):
            raise DataError(f"{manifest}: unlabelled manifest not found")
    settings = dict(version=_FORMAT_VERSION, source=os.path.abspath(folds_root), kind=kind, values=values,
                    seed=int(seed), unlabelled=unlabelled, folds=[f.name for f in folds],
                    fingerprint=source_fingerprint(folds, unlabelled, ext))
    record_path = os.path.join(out_dir, RECORD)
    old = read_json_or_none(record_path)
    if old is not None and {k: old.get(k) for k in settings} == settings and all(
            os.path.isfile(manifest_path(os.path.join(out_dir, n, f.name), "train")) for n in names for f in folds):
        return _result(out_dir, old, reused=True)

    chosen = {f.name: choose(f, kind, values, seed, ext) for f in folds}   # every error before any write
    if old is not None:
        os.remove(record_path)   # the folders below stop matching it as soon as one is rewritten
    record = dict(settings, names=names, counts={n: {} for n in names}, source_counts={}, unlabelled_counts={})
    with tqdm(total=len(folds) * len(names), desc="writing subsets", unit="fold", disable=not progress) as bar:
        for fold in folds:
            train = load_split(fold.path, "train", ext)
            speakers = read_speakers(fold.path, "train", expected=len(train.manifest))
            pool = adaptation_rows(fold.path, unlabelled).rows
            record["source_counts"][fold.name] = _count(train.labels, train.class_names)
            record["unlabelled_counts"][fold.name] = len(pool)
            for name, value in zip(names, values):
                rows = chosen[fold.name][value]
                record["counts"][name][fold.name] = _count([train.labels[i] for i in rows], train.class_names)
                _write_subset_fold(os.path.join(out_dir, name, fold.name), fold, train, speakers, rows, pool, ext)
                bar.update(1)
    _remove_stale(out_dir, old, names, [f.name for f in folds])
    with atomic_open(record_path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    return _result(out_dir, record, reused=False)


def _count(labels: Sequence[str], class_names: Sequence[str]) -> Dict[str, int]:
    return {c: sum(1 for label in labels if label == c) for c in class_names}


def _write_subset_fold(final: str, fold: FoldDir, train, speakers, rows: Sequence[int],
                       pool: Sequence[Tuple[str, int]], ext: str) -> None:
    manifest = train.manifest
    with folder_in_place(final) as tmp:
        for split in ("valid", "test"):
            for path in (label_path(fold.path, split, ext), speaker_path(fold.path, split),
                         manifest_path(fold.path, split)):
                if os.path.isfile(path):
                    shutil.copyfile(path, os.path.join(tmp, os.path.basename(path)))
        write_label_dict(dict_path(tmp, ext), train.class_names, _count([train.labels[i] for i in rows],
                                                                        train.class_names))
        write_manifest(unlabelled_path(tmp), ABSOLUTE_ROOT, pool)
        if speakers is not None:
            write_speakers(speaker_path(tmp, "train"), [speakers[i] for i in rows])
        write_split(tmp, "train", manifest.root,
                    [(manifest.entries[i][0], manifest.entries[i][1], train.labels[i]) for i in rows], ext)


def _remove_stale(out_dir: str, old: Optional[dict], names: Sequence[str], folds: Sequence[str]) -> None:
    # subsets and folds of an earlier run with other arguments must not be picked up as current
    for name in (old or {}).get("names", []):
        if name not in names and os.path.isdir(os.path.join(out_dir, name)):
            shutil.rmtree(os.path.join(out_dir, name))
    for name in names:
        for entry in os.listdir(os.path.join(out_dir, name)):
            path = os.path.join(out_dir, name, entry)
            if entry not in folds and os.path.isfile(manifest_path(path, "train")):
                shutil.rmtree(path)


def _result(out_dir: str, record: dict, reused: bool) -> SubsetResult:
    names, folds = record["names"], record["folds"]
    class_names = list(next(iter(record["source_counts"].values())))
    return SubsetResult(out_dir, record["kind"], list(record["values"]), list(names), record["seed"],
                        class_names, list(folds), record["counts"], record["source_counts"],
                        record["unlabelled_counts"], reused, extra_audio=bool(record["unlabelled"]))
