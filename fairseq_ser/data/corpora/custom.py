"""Users' own data: a folder tree of audio files, or JSON split files.

Folder: every audio file under ``AUDIO_DIR`` (recursively; hidden files and
folders skipped). The label is the name of the file's parent folder, or the
match of a regular expression on the file name; the speaker, when given, the
match of another one. With speakers the folds are speaker-independent; without
them they are class-stratified random folds, and a warning says so.

JSON: the reference implementation's split files,
``{"Train": {file: label}, "Val": {file: label}, "Test": {file: label}}``,
paths absolute or relative to the JSON file's folder. Each JSON file is one
fold; without a "Val" part, a stratified share of "Train" is carved out.
"""

import json
import logging
import os
import re
from collections import Counter
from typing import Dict, List, Optional, Sequence

from ...errors import DataError
from ..audio import AUDIO_EXTENSIONS
from ..audio_cache import AudioCheck
from ..prepare import (Exclusion, FoldAssignment, Listing, PrepareResult, Utterance, ValidSpec, check_label,
                       map_classes, prepare, random_folds, speaker_folds)
from ..splits import stratified_split

logger = logging.getLogger(__name__)

# the reference's split names, and the ones people also write
_SPLIT_NAMES = {"train": "train", "val": "valid", "valid": "valid", "validation": "valid",
                "dev": "valid", "test": "test"}


def compile_regex(pattern: str, group: str, option: str):
    """Compile ``pattern``; it must have a group named ``group`` or at least one group."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise DataError(f"{option} {pattern!r}: not a valid regular expression ({e})")
    if group not in regex.groupindex and regex.groups < 1:
        raise DataError(f"{option} {pattern!r}: needs a group, named '{group}' or the first one")
    return regex


def _match(regex, group, text):
    m = regex.search(text)
    if not m:
        return None
    return m.group(group) if group in regex.groupindex else m.group(1)


def list_folder(audio_dir: str, *, label_regex: Optional[str] = None,
                speaker_regex: Optional[str] = None, label_map: Optional[Dict[str, str]] = None,
                extensions: Sequence[str] = AUDIO_EXTENSIONS, skip: Sequence[str] = ()) -> Listing:
    """List the audio files under ``audio_dir`` with their labels (and speakers).

    Regular expressions are searched in the file name (not the folder path).
    ``skip`` lists folders not to descend into (the output and cache folders
    when they lie inside ``audio_dir``).
    """
    audio_dir = os.path.abspath(audio_dir)
    if not os.path.isdir(audio_dir):
        raise DataError(f"{audio_dir}: audio folder not found")
    label_re = compile_regex(label_regex, "label", "--label-regex") if label_regex else None
    speaker_re = compile_regex(speaker_regex, "speaker", "--speaker-regex") if speaker_regex else None
    suffixes = tuple("." + e.lower().lstrip(".") for e in extensions)
    skip = {os.path.abspath(s) for s in skip}
    utterances, excluded, dropped = [], [], Counter()
    for folder, dirs, files in os.walk(audio_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.join(folder, d) not in skip)
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(suffixes):
                continue
            path = os.path.join(folder, name)
            if label_re is not None:
                label = _match(label_re, "label", name)
                if not label:
                    excluded.append(Exclusion(path, f"file name does not match --label-regex {label_regex!r}"))
                    continue
            elif folder == audio_dir:
                excluded.append(Exclusion(path, "not inside a label folder"))
                continue
            else:
                label = os.path.basename(folder)
            check_label(label, path)
            if label_map is not None and label not in label_map:
                dropped[label] += 1
                continue
            speaker = None
            if speaker_re is not None:
                speaker = _match(speaker_re, "speaker", name)
                if not speaker:
                    excluded.append(Exclusion(path, f"file name does not match --speaker-regex {speaker_regex!r}"))
                    continue
            utterances.append(Utterance(path, label_map[label] if label_map else label, speaker))
    if not utterances and not excluded:
        raise DataError(f"{audio_dir}: no audio files ({', '.join(extensions)}) found")
    classes = map_classes(label_map) if label_map else sorted({u.label for u in utterances})
    return Listing(audio_dir, utterances, classes, excluded, dropped)


def prepare_folder(audio_dir: str, out_dir: str, *, label_regex: Optional[str] = None,
                   speaker_regex: Optional[str] = None, label_map: Optional[Dict[str, str]] = None,
                   folds: int = 5, valid: ValidSpec = ValidSpec(), cache_dir: Optional[str] = None,
                   check: AudioCheck = AudioCheck(), jobs: Optional[int] = None,
                   progress: bool = True) -> PrepareResult:
    """Write folds for a folder of audio files; speaker-independent when ``speaker_regex`` is given."""
    out_dir = os.path.abspath(out_dir)
    listing = list_folder(audio_dir, label_regex=label_regex, speaker_regex=speaker_regex,
                          label_map=label_map, skip=[out_dir] + ([cache_dir] if cache_dir else []))
    if folds < 1:
        raise DataError(f"--num-folds must be at least 1, got {folds}")
    if speaker_regex:
        make = lambda items: speaker_folds(items, folds, valid)  # noqa: E731
    else:
        logger.warning("no --speaker-regex: folds are random, NOT speaker-independent; "
                       "test results will be optimistic")
        make = lambda items: random_folds(items, folds, valid)  # noqa: E731
    return prepare(listing, out_dir, make, cache_dir=cache_dir, check=check, jobs=jobs,
                   progress=progress)


def read_split_json(path: str) -> Dict[str, Dict[str, str]]:
    """Read one split file: ``{"train"|"valid"|"test": {absolute audio path: label}}``."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise DataError(f"{path}: cannot read the split file ({e.strerror or e})")
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object like {{\"Train\": {{file: label}}, ...}}")
    base = os.path.dirname(os.path.abspath(path))
    splits = {}
    for key, entries in data.items():
        split = _SPLIT_NAMES.get(key.lower())
        if split is None:
            raise DataError(f"{path}: unknown split {key!r} (expected Train, Val, Test)")
        if split in splits:
            raise DataError(f"{path}: split {split!r} given twice")
        if not isinstance(entries, dict):
            raise DataError(f"{path}: {key!r} must map audio files to labels")
        splits[split] = {os.path.normpath(os.path.join(base, f)): str(label) for f, label in entries.items()}
    for required in ("train", "test"):
        if not splits.get(required):
            raise DataError(f"{path}: no {required!r} files (keys Train and Test are required)")
    return splits


def list_json(json_paths: Sequence[str], label_map: Optional[Dict[str, str]] = None):
    """Read the split files; returns the listing and, per file, its ``{split: [paths]}``."""
    labels, fold_specs, dropped = {}, [], Counter()
    for path in json_paths:
        spec = {}
        for split, entries in read_split_json(path).items():
            spec[split] = []
            for audio, label in sorted(entries.items()):
                check_label(label, f"{path}: {audio}")
                if label_map is not None and label not in label_map:
                    dropped[label] += 1
                    continue
                label = label_map[label] if label_map else label
                if labels.setdefault(audio, label) != label:
                    raise DataError(f"{path}: {audio} is labelled {label!r} here and {labels[audio]!r} elsewhere")
                spec[split].append(audio)
        leaked = set(spec["train"]) & set(spec["test"])
        if leaked:
            logger.warning("%s: %d files are in both Train and Test, e.g. %s", path, len(leaked), min(leaked))
        fold_specs.append(spec)
    if not labels:
        raise DataError(f"{', '.join(json_paths)}: no labelled files")
    root = os.path.commonpath([os.path.dirname(a) for a in labels])
    utterances = [Utterance(audio, label) for audio, label in sorted(labels.items())]
    classes = map_classes(label_map) if label_map else sorted(set(labels.values()))
    return Listing(root, utterances, classes, [], dropped), fold_specs


def json_folds(items: List[Utterance], fold_specs: List[Dict[str, List[str]]],
               valid: ValidSpec) -> List[FoldAssignment]:
    """One fold per split file; files excluded by inspection are left out of every fold."""
    usable = {u.path: u for u in items}
    folds = []
    for k, spec in enumerate(fold_specs, start=1):
        parts = {s: [usable[p] for p in spec.get(s, []) if p in usable] for s in ("train", "valid", "test")}
        if not spec.get("valid"):
            train, dev = stratified_split(parts["train"], range(len(parts["train"])),
                                          valid.fraction, f"{valid.seed}:valid:{k}")
            parts["valid"] = [parts["train"][i] for i in dev]
            parts["train"] = [parts["train"][i] for i in train]
        folds.append(FoldAssignment(f"fold{k}", parts["train"], parts["valid"], parts["test"]))
    return folds


def prepare_json(json_paths: Sequence[str], out_dir: str, *, label_map: Optional[Dict[str, str]] = None,
                 valid: ValidSpec = ValidSpec(), cache_dir: Optional[str] = None,
                 check: AudioCheck = AudioCheck(), jobs: Optional[int] = None,
                 progress: bool = True) -> PrepareResult:
    """Write ``out_dir/fold1..N``, one fold per JSON split file."""
    listing, fold_specs = list_json(json_paths, label_map)
    return prepare(listing, out_dir, lambda items: json_folds(items, fold_specs, valid),
                   cache_dir=cache_dir, check=check, jobs=jobs, progress=progress)
