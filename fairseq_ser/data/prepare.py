"""From a corpus listing to fold folders of manifests, labels and dictionaries.

The corpus modules (:mod:`fairseq_ser.data.corpora`) list utterances with
their labels and speakers; this module does the rest, the same way for every
corpus:

1. inspect every audio file once (:mod:`.audio_cache`), converting what is
   not 16 kHz mono 16-bit WAV and excluding what is unusable;
2. build the folds (a function the corpus module passes in, usually one of
   :func:`speaker_folds`, :func:`random_folds` or :func:`build_folds`);
3. write each fold into a temporary folder and rename it into place, so an
   interrupted run never leaves a fold that looks complete;
4. write ``excluded.tsv``, one ``path<TAB>reason`` line per excluded file.

Layout of ``OUT_DIR``::

    fold1/{train,valid,test}.tsv   manifests (root line, relpath<TAB>num_samples)
    fold1/{train,valid,test}.emo   line-aligned labels
    fold1/dict.emo.txt             classes in index order, with training counts
    fold1/{train,valid,test}.spk   line-aligned speakers (when every utterance has one)
    official/test2.{tsv,emo,spk}   a further scored split, when the corpus has one (MSP-Podcast's Test2)
    ...
    excluded.tsv                   files left out, with the reason
    audio_cache/                   converted audio (default place)
"""

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from ..errors import AudioError, DataError
from ..fileio import atomic_open
from .audio_cache import AudioCheck, inspect_audio
from .splits import SpeakerRule, carve_valid, speaker_groups, stratified_folds
from .manifest import (DEFAULT_LABEL_EXT, dict_path, speaker_path, write_label_dict, write_speakers,
                       write_split)

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
EXCLUDED_FILE = "excluded.tsv"
# --num-folds 1 keeps the first fold of this many, i.e. about a fifth held out for test
SINGLE_SPLIT_PARTS = 5
_FOLD_DIR = re.compile(r"^fold\d+$")
_FOLD_FILES = re.compile(r"^((train|valid|test)\.\w+|dict\.\w+\.txt)$")


@dataclass
class Utterance:
    """One labelled audio file; ``audio`` and ``num_samples`` are filled by inspection."""

    path: str                     # absolute path of the source file
    label: str                    # class name after the label map
    speaker: Optional[str] = None
    group: Optional[str] = None   # corpus unit folds are built on (IEMOCAP session)
    audio: str = ""               # file the manifest lists: the source or its converted copy
    num_samples: int = 0          # at 16 kHz

    @property
    def key(self) -> str:
        return self.path


@dataclass
class Exclusion:
    path: str
    reason: str


@dataclass
class Listing:
    """What a corpus module found: utterances to inspect and what it already left out."""

    root: str                                            # the manifests' root line
    utterances: List[Utterance]
    class_names: List[str]                               # class index order
    excluded: List[Exclusion] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)    # source labels outside the label map
    notes: List[str] = field(default_factory=list)       # lines for the summary (filters, partitions found)


@dataclass
class FoldAssignment:
    """Which utterances one fold folder will list in each split; :func:`write_fold` writes it."""

    name: str
    train: List[Utterance]
    valid: List[Utterance]
    test: List[Utterance]
    # further scored splits written beside test, e.g. MSP-Podcast's test2
    extra: Dict[str, List[Utterance]] = field(default_factory=dict)

    def split(self, name: str) -> List[Utterance]:
        return self.extra[name] if name in self.extra else getattr(self, name)

    def split_names(self) -> List[str]:
        return list(SPLITS) + list(self.extra)


@dataclass(frozen=True)
class ValidSpec:
    """How a fold's validation split is taken from its training utterances."""

    mode: str = "stratified"      # or "speaker"
    fraction: float = 0.1
    seed: int = 1
    speaker_rule: Optional[SpeakerRule] = None


@dataclass
class PrepareResult:
    out_dir: str
    class_names: List[str]
    counts: Dict[str, Dict[str, Counter]]    # fold -> split -> class -> count
    excluded: List[Exclusion]
    dropped: Counter
    converted: int
    cache_dir: str
    notes: List[str] = field(default_factory=list)


# --- labels -------------------------------------------------------------------

def check_label(name: str, where: str) -> str:
    if not name or any(c.isspace() for c in name):
        raise DataError(f"{where}: label {name!r} is empty or contains white space")
    return name


def parse_label_map(text: str) -> Dict[str, str]:
    """Parse ``src:dst,src:dst,...`` (a bare ``src`` keeps its name) into a dict.

    Source labels not in the map are dropped; several sources may share a
    target (a merge). The targets' order of first appearance is the class order.
    """
    mapping = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        src, _, dst = part.partition(":")
        src, dst = src.strip(), (dst.strip() or src.strip())
        if src in mapping:
            raise DataError(f"label map {text!r}: source label {src!r} mapped twice")
        mapping[check_label(src, "label map")] = check_label(dst, "label map")
    if not mapping:
        raise DataError(f"label map {text!r} maps no label")
    return mapping


def map_classes(label_map: Dict[str, str]) -> List[str]:
    return list(dict.fromkeys(label_map.values()))


# --- folds --------------------------------------------------------------------

def build_folds(items: Sequence[Utterance], test_sets: Sequence[Sequence[int]],
                valid: ValidSpec) -> List[FoldAssignment]:
    """Fold k tests on ``test_sets[k]`` and trains on the rest, minus its validation split."""
    folds = []
    for k, test in enumerate(test_sets, start=1):
        held = set(test)
        train = [i for i in range(len(items)) if i not in held]
        test_speakers = sorted({items[i].speaker for i in test if items[i].speaker is not None})
        train, dev = carve_valid(items, train, k, mode=valid.mode, fraction=valid.fraction,
                                 seed=valid.seed, test_speakers=test_speakers,
                                 speaker_rule=valid.speaker_rule)
        folds.append(FoldAssignment(f"fold{k}", [items[i] for i in train], [items[i] for i in dev],
                          [items[i] for i in sorted(test)]))
    return folds


def speaker_folds(items: Sequence[Utterance], folds: Optional[int], valid: ValidSpec) -> List[FoldAssignment]:
    """Speaker-independent folds: ``folds`` speaker groups (None: one per speaker).

    ``folds=1`` writes a single fold: the first of a
    ``SINGLE_SPLIT_PARTS``-way speaker partition is the test set.
    """
    if any(u.speaker is None for u in items):
        raise DataError("speaker-independent folds need a speaker for every utterance")
    n_speakers = len({u.speaker for u in items})
    if n_speakers < 2:
        raise DataError(f"speaker-independent folds need at least 2 speakers, found {n_speakers}")
    parts = n_speakers if folds is None else folds
    if folds == 1:
        parts = min(SINGLE_SPLIT_PARTS, n_speakers)
    groups = speaker_groups(items, parts)
    group_of = {s: g for g, speakers in enumerate(groups) for s in speakers}
    test_sets = [[i for i, u in enumerate(items) if group_of[u.speaker] == g] for g in range(len(groups))]
    return build_folds(items, test_sets[:1] if folds == 1 else test_sets, valid)


def random_folds(items: Sequence[Utterance], folds: int, valid: ValidSpec) -> List[FoldAssignment]:
    """Class-stratified random folds (not speaker-independent); ``folds=1`` as in :func:`speaker_folds`."""
    parts = SINGLE_SPLIT_PARTS if folds == 1 else folds
    test_sets = stratified_folds(items, parts, f"{valid.seed}:folds")
    return build_folds(items, test_sets[:1] if folds == 1 else test_sets, valid)


# --- the pipeline ---------------------------------------------------------------

def inspect_all(utterances: Sequence[Utterance], cache_dir: str, check: AudioCheck,
                jobs: Optional[int] = None, progress: bool = True):
    """Inspect each distinct source file once; returns (usable utterances, exclusions)."""
    from tqdm import tqdm

    paths = sorted({u.path for u in utterances})
    jobs = jobs or min(8, os.cpu_count() or 1)

    def one(path):
        try:
            return inspect_audio(path, cache_dir, check)
        except AudioError as e:
            return e

    outcome = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for path, result in tqdm(zip(paths, pool.map(one, paths)), total=len(paths),
                                 desc="inspecting audio", unit="file", disable=not progress):
            outcome[path] = result
    kept, excluded = [], []
    for path in paths:
        if isinstance(outcome[path], AudioError):
            excluded.append(Exclusion(path, _reason(path, outcome[path])))
    for u in utterances:
        result = outcome[u.path]
        if not isinstance(result, AudioError):
            u.audio, u.num_samples = result.path, result.num_samples
            kept.append(u)
    return kept, excluded


def prepare(listing: Listing, out_dir: str, make_folds: Callable[[List[Utterance]], List[FoldAssignment]], *,
            cache_dir: Optional[str] = None, check: AudioCheck = AudioCheck(),
            jobs: Optional[int] = None, progress: bool = True,
            ext: str = DEFAULT_LABEL_EXT) -> PrepareResult:
    """Inspect the audio of ``listing``, build its folds and write them under ``out_dir``."""
    out_dir = os.path.abspath(out_dir)
    cache_dir = os.path.abspath(cache_dir or os.path.join(out_dir, "audio_cache"))
    if not listing.utterances:
        raise DataError(f"{listing.root}: no labelled utterance found")
    kept, bad = inspect_all(listing.utterances, cache_dir, check, jobs, progress)
    excluded = listing.excluded + bad
    os.makedirs(out_dir, exist_ok=True)
    write_excluded(os.path.join(out_dir, EXCLUDED_FILE), excluded)
    if not kept:
        raise DataError(f"{listing.root}: every one of the {len(listing.utterances)} labelled "
                        f"files was excluded (reasons in {os.path.join(out_dir, EXCLUDED_FILE)})")
    folds = make_folds(kept)
    for fold in folds:
        check_assignment(fold, listing.class_names)  # all before writing any, so no mix of runs is left
    for fold in folds:
        write_fold(out_dir, listing.root, fold, listing.class_names, ext)
    _remove_stale_folds(out_dir, {f.name for f in folds})
    counts = {f.name: {s: Counter(u.label for u in f.split(s)) for s in f.split_names()} for f in folds}
    converted = len({u.path for u in kept if u.audio != u.path})
    return PrepareResult(out_dir, list(listing.class_names), counts, excluded,
                         listing.dropped, converted, cache_dir, list(listing.notes))


def check_assignment(fold: FoldAssignment, class_names: Sequence[str]) -> None:
    """:class:`DataError` if a split of ``fold`` is empty or holds a label outside ``class_names``."""
    for split in SPLITS:
        if not fold.split(split):
            raise DataError(f"{fold.name}: the {split} split would be empty "
                            f"(too few utterances or speakers for this protocol)")
    unknown = {u.label for s in fold.split_names() for u in fold.split(s)} - set(class_names)
    if unknown:
        raise DataError(f"{fold.name}: labels {sorted(unknown)} are not among the classes {list(class_names)}")


def write_fold(out_dir: str, root: str, fold: FoldAssignment, class_names: Sequence[str],
               ext: str = DEFAULT_LABEL_EXT) -> None:
    """Write one fold into a temporary folder, then rename it to ``out_dir/<fold.name>``."""
    check_assignment(fold, class_names)
    with folder_in_place(os.path.join(out_dir, fold.name)) as tmp:
        write_label_dict(dict_path(tmp, ext), class_names, Counter(u.label for u in fold.train))
        # speakers only when all are known: a partial .spk would read as a wrong speaker grouping
        known = all(u.speaker is not None for s in fold.split_names() for u in fold.split(s))
        for split in fold.split_names():
            utterances = sorted(fold.split(split), key=lambda u: u.path)
            if known:
                write_speakers(speaker_path(tmp, split), [u.speaker for u in utterances])
            write_split(tmp, split, root, [(_manifest_path(u.audio, root), u.num_samples, u.label)
                                           for u in utterances], ext)


@contextlib.contextmanager
def folder_in_place(final: str):
    """Yield a temporary folder beside ``final``; on success it replaces ``final`` (and what was there).

    Fold folders (and the subset and adaptation folders built from them) are
    written this way, so an interrupted writer never leaves one that looks complete.
    """
    parent, name = os.path.split(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a fold folder is not
        yield tmp
        if os.path.exists(final):
            # move the old folder aside first: a rename cannot replace a non-empty folder
            old = tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".old")
            os.replace(final, os.path.join(old, name))
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_excluded(path: str, excluded: Sequence[Exclusion]) -> None:
    """``path<TAB>reason`` per excluded file, under a header line; written even when empty."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("path\treason\n")
        for e in sorted(excluded, key=lambda e: e.path):
            f.write(f"{_one_line(e.path)}\t{_one_line(e.reason)}\n")


def _manifest_path(audio: str, root: str) -> str:
    # fairseq joins root and relpath with os.path.join, so an absolute path
    # (a converted copy, or a file outside the corpus folder) stands as is
    rel = os.path.relpath(audio, root)
    return audio if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _reason(path: str, error: Exception) -> str:
    message = str(error)
    return message[len(path) + 2:] if message.startswith(path + ": ") else message


def _one_line(text: str) -> str:
    return " ".join(str(text).split("\t")).replace("\n", " ")


def _remove_stale_folds(out_dir: str, current: set) -> None:
    # a previous run with more folds must not leave fold directories that a
    # cross-validation over fold* would pick up
    for name in sorted(os.listdir(out_dir)):
        path = os.path.join(out_dir, name)
        if name in current or not _FOLD_DIR.match(name) or not os.path.isdir(path):
            continue
        if all(_FOLD_FILES.match(f) for f in os.listdir(path)):
            shutil.rmtree(path)
            logger.info("removed %s, left by an earlier run with more folds", path)
        else:
            logger.warning("%s is left from an earlier run but holds other files; not removed", path)
