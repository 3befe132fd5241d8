"""The fold folders of a manifest root, found on disk and checked before anything trains.

A root holds one folder per fold (``fold1`` .. ``foldN``, or any names, taken
in natural order: ``fold2`` before ``fold10``), each with ``{train,valid,test}.tsv``,
``{train,valid,test}.emo`` and ``dict.emo.txt`` as ``fairseq-ser prepare``
writes them, optionally ``{split}.spk`` (speakers) and ``unlabelled.tsv``
(audio for the label-free stages, as ``fairseq-ser subset`` writes it). Other
folders (``audio_cache``) are passed over. A root that is itself a fold folder
is one fold.

It lives in the data layer because :mod:`.subsets` reads fold folders too;
:mod:`fairseq_ser.experiments.fold_dirs` re-exports it for cross-validation.
"""

import os
import re
from dataclasses import dataclass
from typing import List

from ..errors import DataError
from .manifest import (DEFAULT_LABEL_EXT, dict_path, label_path, load_split, manifest_path, read_manifest,
                       read_speakers, unlabelled_path)

SPLITS = ("train", "valid", "test")


@dataclass
class FoldDir:
    """A checked fold folder: its name (``fold1``), path, split sizes and classes."""

    name: str
    path: str
    sizes: dict          # split -> utterances
    class_names: List[str]


def fold_files(ext: str = DEFAULT_LABEL_EXT) -> List[str]:
    return [f"{s}.tsv" for s in SPLITS] + [f"{s}.{ext}" for s in SPLITS] + [f"dict.{ext}.txt"]


def natural_key(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _looks_like_fold(path: str, ext: str) -> bool:
    return (re.fullmatch(r"fold\d+", os.path.basename(path)) is not None
            or any(os.path.exists(os.path.join(path, name)) for name in fold_files(ext)))


def check_fold_dir(name: str, path: str, ext: str = DEFAULT_LABEL_EXT) -> FoldDir:
    """Every split's manifest, labels and audio files, and the dictionary; errors name the path."""
    for split in SPLITS:
        for needed in (manifest_path(path, split), label_path(path, split, ext)):
            if not os.path.isfile(needed):
                raise DataError(f"{needed}: missing from fold {name!r} (a fold folder needs "
                                f"{', '.join(fold_files(ext))}; see `fairseq-ser prepare`)")
    if not os.path.isfile(dict_path(path, ext)):
        raise DataError(f"{dict_path(path, ext)}: missing from fold {name!r} (the label dictionary)")
    sizes, class_names = {}, None
    for split in SPLITS:
        data = load_split(path, split, ext)
        class_names = data.class_names
        for i in range(len(data.manifest)):
            audio = data.manifest.audio_path(i)
            if not os.path.isfile(audio):
                raise DataError(f"{data.manifest.path}:{i + 2}: audio file {audio} not found")
        read_speakers(path, split, expected=len(data.manifest))   # checked when present
        sizes[split] = len(data.manifest)
    if os.path.isfile(unlabelled_path(path)):
        unlabelled = read_manifest(unlabelled_path(path))
        for i in range(len(unlabelled)):
            if not os.path.isfile(unlabelled.audio_path(i)):
                raise DataError(f"{unlabelled.path}:{i + 2}: audio file {unlabelled.audio_path(i)} not found")
    return FoldDir(name, path, sizes, class_names)


def find_fold_dirs(root: str, ext: str = DEFAULT_LABEL_EXT) -> List[FoldDir]:
    """The checked fold folders under ``root``, in natural order."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise DataError(f"{root}: folds folder not found")
    if os.path.isfile(manifest_path(root, "train")):
        return [check_fold_dir(os.path.basename(root), root, ext)]
    names = sorted((n for n in os.listdir(root)
                    if os.path.isdir(os.path.join(root, n)) and _looks_like_fold(os.path.join(root, n), ext)),
                   key=natural_key)
    if not names:
        raise DataError(f"{root}: no fold folders here (folders such as fold1 holding "
                        f"{', '.join(fold_files(ext))}, as `fairseq-ser prepare` writes)")
    return [check_fold_dir(n, os.path.join(root, n), ext) for n in names]
