"""RAVDESS (Ryerson Audio-Visual Database of Emotional Speech and Song), its speech part.

Source: Livingstone & Russo (2018), PLoS ONE 13(5): e0196391;
https://zenodo.org/record/1188976, file ``Audio_Speech_Actors_01-24.zip``
(1440 files: 24 actors x 60). Licence: CC BY-NC-SA 4.0 (non-commercial).

Layout read (the zip's contents, or the folder holding them)::

    Actor_01/03-01-01-01-01-01-01.wav ... Actor_24/...

A file name is seven two-digit codes ``MM-VV-EE-II-SS-RR-AA``: modality (01
audio-video, 02 video only, 03 audio only), vocal channel (01 speech, 02
song), emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful,
07 disgust, 08 surprised), intensity (01 normal, 02 strong; neutral has
normal only), statement (01 "Kids are talking by the door", 02 "Dogs are
sitting by the door"), repetition (01, 02) and actor (01-24; odd numbers are
male, even female). Audio is 48 kHz 16-bit, a few files stereo; the cache
holds their 16 kHz mono copies.

Only audio-only speech is used. Song files (``03-02-...``, from the song zip
unpacked into the same folders), wav files of another modality, names that do
not follow the convention and files whose actor code differs from their
folder's are listed in ``excluded.tsv`` with the reason; video, text and
hidden files are passed over.

Classes: 8 (neu cal hap sad ang fea dis sur), or 4 (neu hap ang sad, the
common subset, calm dropped); ``calm="merge"`` folds calm into neutral.

Folds (the speaker is the actor, ``Actor_NN``; folds never split an actor):

- ``emobox`` (default): EmoBox's 6 folds of 4 actors (Ma et al., Interspeech
  2024, ``data/ravdess/fold_k`` of github.com/emo-box/EmoBox; the groups are
  random there, so they are copied below rather than recomputed), so scores
  compare with its benchmark;
- ``loso``: leave one actor out, 24 folds;
- ``folds=K``: K actor groups balanced by utterance count.
"""

import os
import re
from collections import Counter
from typing import Dict, List, Optional

from ...errors import DataError
from ..audio_cache import AudioCheck
from ..prepare import (Exclusion, FoldAssignment, Listing, PrepareResult, Utterance, ValidSpec,
                       build_folds, map_classes, prepare, speaker_folds)
from .layout import corpus_dir, subfolders, wav_names
from .vocabulary import ANG, CAL, DIS, FEA, HAP, NEU, SAD, SUR, corpus_label_map

ACTORS = 24
EMOTIONS = {"01": NEU, "02": CAL, "03": HAP, "04": SAD, "05": ANG, "06": FEA, "07": DIS, "08": SUR}
INTENSITIES = {"all": ("01", "02"), "normal": ("01",), "strong": ("02",)}
CALM = ("keep", "merge", "drop")
PRESETS = {"8": [NEU, CAL, HAP, SAD, ANG, FEA, DIS, SUR], "4": [NEU, HAP, ANG, SAD]}
PROTOCOLS = ("emobox", "loso")
# test actors of EmoBox's folds 1..6 (its data/ravdess/fold_k/ravdess_test_fold_k.jsonl)
EMOBOX_FOLDS = ((1, 11, 20, 21), (4, 10, 12, 14), (8, 9, 19, 23), (3, 5, 7, 24), (2, 15, 16, 18),
                (6, 13, 17, 22))

_ACTOR_DIR = re.compile(r"^Actor_(\d\d)$")
_FILE_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.wav$", re.IGNORECASE)
_MODALITIES = {"01": "audio-video", "02": "video only"}


def ravdess_label_map(classes: str = "8", calm: Optional[str] = None,
                      label_map: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The label map for a class preset (or ``label_map``) and a calm option.

    ``calm``: None leaves the map as it is (the 8 classes keep calm, the 4
    drop it); ``"keep"`` requires calm to be a class; ``"merge"`` maps calm
    onto neutral's class; ``"drop"`` leaves calm out.
    """
    if label_map is None:
        if classes not in PRESETS:
            raise DataError(f"unknown RAVDESS class preset {classes!r} (expected one of {', '.join(PRESETS)})")
        label_map = {name: name for name in PRESETS[classes]}
    label_map = corpus_label_map(label_map, EMOTIONS.values(), "RAVDESS")
    if calm is None:
        return label_map
    if calm not in CALM:
        raise DataError(f"unknown calm option {calm!r} (expected one of {', '.join(CALM)})")
    if calm == "keep":
        if CAL not in label_map:
            raise DataError("calm is not among these classes; use calm 'merge' or 'drop'")
    elif calm == "merge":
        if NEU not in label_map:
            raise DataError("merging calm into neutral needs neutral among the classes")
        label_map.pop(CAL, None)
        label_map[CAL] = label_map[NEU]
    else:
        label_map.pop(CAL, None)
    return label_map


def actor_dirs(ravdess_dir: str) -> Dict[int, str]:
    """``actor number -> Actor_NN folder``; :class:`DataError` naming what is missing."""
    found = {int(m.group(1)): os.path.join(ravdess_dir, name)
             for name in subfolders(ravdess_dir) for m in [_ACTOR_DIR.match(name)]
             if m and 1 <= int(m.group(1)) <= ACTORS}
    if not found:
        nested = [os.path.join(ravdess_dir, d) for d in subfolders(ravdess_dir)
                  if any(_ACTOR_DIR.match(a) for a in subfolders(os.path.join(ravdess_dir, d)))]
        hint = f"; did you mean {nested[0]}?" if nested else ""
        raise DataError(f"{ravdess_dir}: not a RAVDESS folder, no Actor_01 .. Actor_{ACTORS} folders "
                        f"(expected Actor_NN/MM-VV-EE-II-SS-RR-AA.wav){hint}")
    return found


def list_ravdess(ravdess_dir: str, label_map: Optional[Dict[str, str]] = None,
                 intensity: str = "all") -> Listing:
    """List RAVDESS's audio-only speech under an intensity filter.

    ``label_map``: as :func:`ravdess_label_map` returns it (default: the 8 classes).
    """
    label_map = label_map if label_map is not None else ravdess_label_map()
    if intensity not in INTENSITIES:
        raise DataError(f"unknown intensity {intensity!r} (expected one of {', '.join(INTENSITIES)})")
    ravdess_dir = corpus_dir(ravdess_dir, "RAVDESS")
    actors = actor_dirs(ravdess_dir)
    utterances, excluded, dropped, other_intensity = [], [], Counter(), 0
    for actor, folder in sorted(actors.items()):
        for name in wav_names(folder):
            path = os.path.join(folder, name)
            reason = _unusable(name, actor)
            if reason:
                excluded.append(Exclusion(path, reason))
                continue
            codes = _FILE_NAME.match(name).groups()
            label = EMOTIONS[codes[2]]
            if codes[3] not in INTENSITIES[intensity]:
                other_intensity += 1
                continue
            if label not in label_map:
                dropped[label] += 1
                continue
            utterances.append(Utterance(path, label_map[label], speaker=f"Actor_{actor:02d}"))
    if not utterances and not excluded:
        raise DataError(f"{ravdess_dir}: no RAVDESS wav files in its Actor_NN folders")
    notes = []
    missing = [f"Actor_{a:02d}" for a in range(1, ACTORS + 1) if a not in actors]
    if missing:
        notes.append(f"actor folders missing: {', '.join(missing)}")
    if other_intensity:
        notes.append(f"intensity {intensity}: left out {other_intensity} utterance(s) of the other intensity")
    classes = map_classes(label_map)
    present = {u.label for u in utterances}
    absent = [c for c in classes if c not in present]
    if absent and utterances:
        # a class no utterance carries (neutral has no strong intensity) cannot be learnt or weighted
        notes.append(f"no utterance left for {', '.join(absent)}: not a class")
        classes = [c for c in classes if c in present]
    return Listing(ravdess_dir, utterances, classes, excluded, dropped, notes)


def _unusable(name: str, actor: int) -> Optional[str]:
    m = _FILE_NAME.match(name)
    if not m:
        return "file name does not follow RAVDESS's MM-VV-EE-II-SS-RR-AA.wav convention"
    modality, channel, emotion, intensity, statement, repetition, file_actor = m.groups()
    if modality in _MODALITIES:
        return f"modality {modality} ({_MODALITIES[modality]}): only audio-only files (03) are used"
    if channel == "02":
        return "song (vocal channel 02): only the speech part is used"
    if (modality, channel) != ("03", "01") or emotion not in EMOTIONS or intensity not in ("01", "02") \
            or statement not in ("01", "02") or repetition not in ("01", "02"):
        return "file name codes outside RAVDESS's (MM-VV-EE-II-SS-RR-AA)"
    if int(file_actor) != actor:
        return f"actor {file_actor} in the file name, but the file is in Actor_{actor:02d}"
    return None


def emobox_folds(items: List[Utterance], valid: ValidSpec) -> List[FoldAssignment]:
    """EmoBox's 6 folds: fold k tests on the 4 actors of ``EMOBOX_FOLDS[k - 1]``."""
    test_sets = [[i for i, u in enumerate(items) if int(u.speaker[-2:]) in actors] for actors in EMOBOX_FOLDS]
    return build_folds(items, test_sets, valid)


def prepare_ravdess(ravdess_dir: str, out_dir: str, *, classes: str = "8", calm: Optional[str] = None,
                    label_map: Optional[Dict[str, str]] = None,
                    intensity: str = "all", protocol: str = "emobox", folds: Optional[int] = None,
                    valid: ValidSpec = ValidSpec(), cache_dir: Optional[str] = None,
                    check: AudioCheck = AudioCheck(), jobs: Optional[int] = None,
                    progress: bool = True) -> PrepareResult:
    """Write RAVDESS's folds: ``protocol`` emobox or loso, or ``folds`` actor groups when given.

    Classes: see :func:`ravdess_label_map` (``label_map`` replaces the ``classes`` preset).
    """
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown RAVDESS protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")
    listing = list_ravdess(ravdess_dir, ravdess_label_map(classes, calm, label_map), intensity)
    if folds is not None:
        make = lambda items: speaker_folds(items, folds, valid)  # noqa: E731
    elif protocol == "loso":
        make = lambda items: speaker_folds(items, None, valid)  # noqa: E731
    else:
        make = lambda items: emobox_folds(items, valid)  # noqa: E731
    return prepare(listing, out_dir, make, cache_dir=cache_dir, check=check, jobs=jobs, progress=progress)
