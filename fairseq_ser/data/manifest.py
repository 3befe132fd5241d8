"""fairseq manifests and the label files that sit beside them.

One reader and one writer for each format, used by every other module:

- ``{split}.tsv``: first line the root folder, then ``relpath<TAB>num_samples``
  per utterance (fairseq's ``audio_pretraining`` format; an absolute
  ``relpath`` is allowed and ignores the root, as ``os.path.join`` does).
- ``{split}.{ext}``: one label per line, line-aligned with the manifest.
- ``dict.{ext}.txt``: ``label count`` per line (fairseq ``Dictionary`` format);
  the line order is the class index order.
- ``{split}.spk`` (optional): one speaker id per line, line-aligned with the
  manifest; a fold folder without it has unknown speakers.
- ``unlabelled.tsv`` (optional, a manifest without labels): audio that only the
  label-free stages train on (:mod:`fairseq_ser.data.unlabelled`).

P-TAPT's pseudo-labels use the same layout with ``ext = km{K}`` (``{split}.km{K}``:
one line of cluster ids per utterance, read and checked by
:func:`~fairseq_ser.data.frame_labels.read_frame_labels`; ``dict.km{K}.txt``),
beside the k-means files they come from (``km{K}.centroids.npy``, ``km{K}.json``).
The paths of all of them are built here.
"""

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import DataError
from ..fileio import atomic_open

DEFAULT_LABEL_EXT = "emo"
SPEAKER_EXT = "spk"
UNLABELLED_SPLIT = "unlabelled"


@dataclass
class Manifest:
    """A parsed ``{split}.tsv``: root folder and ``(relpath, num_samples)`` rows."""

    path: str
    root: str
    entries: List[Tuple[str, int]] = field(default_factory=list)

    def __len__(self):
        return len(self.entries)

    def audio_path(self, index: int) -> str:
        """Absolute path of the audio file on row ``index``."""
        return os.path.join(self.root, self.entries[index][0])

    def utterance_id(self, index: int) -> str:
        """A stable id for row ``index``: the file name without folder and extension."""
        return os.path.splitext(os.path.basename(self.entries[index][0]))[0]


def manifest_path(data_dir: str, split: str) -> str:
    return os.path.join(data_dir, f"{split}.tsv")


def label_path(data_dir: str, split: str, ext: str = DEFAULT_LABEL_EXT) -> str:
    return os.path.join(data_dir, f"{split}.{ext}")


def dict_path(data_dir: str, ext: str = DEFAULT_LABEL_EXT) -> str:
    return os.path.join(data_dir, f"dict.{ext}.txt")


def speaker_path(data_dir: str, split: str) -> str:
    """``{split}.spk``: one speaker id per utterance of ``{split}.tsv`` (optional)."""
    return os.path.join(data_dir, f"{split}.{SPEAKER_EXT}")


def unlabelled_path(data_dir: str) -> str:
    """``unlabelled.tsv``: a fold's audio for the label-free stages only (optional)."""
    return manifest_path(data_dir, UNLABELLED_SPLIT)


def cluster_ext(k: int) -> str:
    """Label extension of the pseudo-labels of a ``k``-cluster k-means: ``km{k}``."""
    return f"km{int(k)}"


def cluster_label_path(label_dir: str, split: str, k: int) -> str:
    """``{split}.km{k}``: one line of cluster ids per utterance of ``{split}.tsv``."""
    return label_path(label_dir, split, cluster_ext(k))


def cluster_dict_path(label_dir: str, k: int) -> str:
    """``dict.km{k}.txt``: the ``k`` cluster ids (``id count`` lines)."""
    return dict_path(label_dir, cluster_ext(k))


def centroids_path(label_dir: str, k: int) -> str:
    """``km{k}.centroids.npy``: the ``k x dim`` float32 centroids."""
    return os.path.join(label_dir, f"{cluster_ext(k)}.centroids.npy")


def kmeans_record_path(label_dir: str, k: int) -> str:
    """``km{k}.json``: settings and result of the k-means, written after its centroids."""
    return os.path.join(label_dir, f"{cluster_ext(k)}.json")


def read_manifest(path: str, allow_empty: bool = False) -> Manifest:
    """Read and check a manifest; errors name the file and the line."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: manifest not found")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines:
        raise DataError(f"{path}: empty file (expected the root folder on the first line)")
    manifest = Manifest(path=path, root=lines[0].strip())
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            raise DataError(f"{path}:{lineno}: blank line inside the manifest")
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataError(
                f"{path}:{lineno}: expected 'relpath<TAB>num_samples', got {line!r}"
            )
        try:
            n = int(parts[1])
        except ValueError:
            raise DataError(f"{path}:{lineno}: num_samples {parts[1]!r} is not an integer")
        if n <= 0:
            raise DataError(f"{path}:{lineno}: num_samples must be positive, got {n}")
        manifest.entries.append((parts[0], n))
    if not manifest.entries and not allow_empty:
        raise DataError(f"{path}: the split is empty (no utterances after the root line)")
    return manifest


def write_manifest(path: str, root: str, entries: Iterable[Tuple[str, int]]) -> None:
    """Write a manifest atomically (temporary name, then rename)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(root + "\n")
        for relpath, n in entries:
            if "\t" in relpath or "\n" in relpath:
                raise DataError(f"{relpath!r}: audio paths may not contain tabs or newlines")
            f.write(f"{relpath}\t{int(n)}\n")


def read_labels(path: str, expected: Optional[int] = None, manifest: Optional[str] = None) -> List[str]:
    """Read a line-aligned label file; with ``expected``, check it has that many lines."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: label file not found")
    with open(path, encoding="utf-8") as f:
        labels = [line.strip() for line in f.read().splitlines()]
    for lineno, label in enumerate(labels, start=1):
        if not label:
            raise DataError(f"{path}:{lineno}: empty label")
    if expected is not None and len(labels) != expected:
        against = f" but {manifest} lists {expected} utterances" if manifest else f", expected {expected}"
        raise DataError(f"{path}: has {len(labels)} labels{against}")
    return labels


def write_labels(path: str, labels: Iterable[str]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        for label in labels:
            f.write(f"{label}\n")


def read_speakers(data_dir: str, split: str, expected: Optional[int] = None) -> Optional[List[str]]:
    """The speakers of ``{split}.spk``, or None when the file is absent (speakers unknown)."""
    path = speaker_path(data_dir, split)
    if not os.path.isfile(path):
        return None
    return read_labels(path, expected, manifest_path(data_dir, split))


def write_speakers(path: str, speakers: Iterable[str]) -> None:
    """Write a ``{split}.spk`` file; speaker ids must be non-empty single lines without tabs."""
    speakers = list(speakers)
    for speaker in speakers:
        if not str(speaker).strip() or any(c in str(speaker) for c in "\t\n\r"):
            raise DataError(f"{path}: speaker id {speaker!r} is empty or holds a tab or line break")
    write_labels(path, [str(s).strip() for s in speakers])


def read_label_dict(path: str) -> List[str]:
    """The class names of a ``dict.{ext}.txt``, in class-index order."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: label dictionary not found")
    names = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) > 2:
                raise DataError(f"{path}:{lineno}: expected 'label [count]', got {line.strip()!r}")
            if parts[0] in names:
                raise DataError(f"{path}:{lineno}: label {parts[0]!r} listed twice")
            names.append(parts[0])
    if not names:
        raise DataError(f"{path}: no labels in the dictionary")
    return names


def write_label_dict(path: str, names: Sequence[str], counts: Optional[Dict[str, int]] = None) -> None:
    """Write ``dict.{ext}.txt`` with ``names`` in this (class index) order."""
    counts = counts or {}
    with atomic_open(path, "w", encoding="utf-8") as f:
        for name in names:
            if not name or any(c.isspace() for c in name):
                raise DataError(f"label {name!r}: labels must be non-empty and contain no white space")
            f.write(f"{name} {int(counts.get(name, 0))}\n")


def encode_labels(labels: Sequence[str], names: Sequence[str], where: str) -> List[int]:
    """Map label strings to class indices; an unknown label is an error naming ``where``."""
    index = {name: i for i, name in enumerate(names)}
    out = []
    for lineno, label in enumerate(labels, start=1):
        if label not in index:
            raise DataError(
                f"{where}:{lineno}: label {label!r} is not in the dictionary ({', '.join(names)})"
            )
        out.append(index[label])
    return out


@dataclass
class LabelledSplit:
    """A manifest with its labels, checked against each other and the dictionary."""

    manifest: Manifest
    labels: List[str]
    targets: List[int]
    class_names: List[str]


def load_split(data_dir: str, split: str, ext: str = DEFAULT_LABEL_EXT,
               class_names: Optional[Sequence[str]] = None) -> LabelledSplit:
    """Read ``{split}.tsv``, ``{split}.{ext}`` and ``dict.{ext}.txt`` of ``data_dir`` and check them."""
    manifest = read_manifest(manifest_path(data_dir, split))
    lpath = label_path(data_dir, split, ext)
    labels = read_labels(lpath, expected=len(manifest), manifest=manifest.path)
    names = list(class_names) if class_names is not None else read_label_dict(dict_path(data_dir, ext))
    targets = encode_labels(labels, names, lpath)
    return LabelledSplit(manifest, labels, targets, names)


def write_split(out_dir: str, split: str, root: str, rows: Sequence[Tuple[str, int, str]],
                ext: str = DEFAULT_LABEL_EXT) -> None:
    """Write ``{split}.tsv`` and ``{split}.{ext}`` from ``(relpath, num_samples, label)`` rows.

    The label file is written first and the manifest last, so a reader that
    finds the manifest finds its labels too.
    """
    if not rows:
        raise DataError(f"{out_dir}: split {split!r} would be empty")
    write_labels(label_path(out_dir, split, ext), [r[2] for r in rows])
    write_manifest(manifest_path(out_dir, split), root, [(r[0], r[1]) for r in rows])


def label_counts(labels: Iterable[str]) -> Dict[str, int]:
    return dict(Counter(labels))
