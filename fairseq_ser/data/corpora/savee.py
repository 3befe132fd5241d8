"""SAVEE (Surrey Audio-Visual Expressed Emotion): 4 male British English speakers, 7 emotions.

Source: Haq & Jackson (2009), University of Surrey,
http://kahlan.eps.surrey.ac.uk/savee/ (free for research use; the download
needs a registration on that site).

Layouts read::

    AudioData/DC/a01.wav ... AudioData/KL/su15.wav    the release (DIR is its root or AudioData)
    DC_a01.wav ... KL_su15.wav                         one flat folder, as some copies repackage it

Speakers DC, JE, JK, KL; codes a (anger), d (disgust), f (fear), h
(happiness), n (neutral), sa (sadness), su (surprise), 15 sentences each and
30 neutral: 120 per speaker, 480 in all; 44.1 kHz mono, converted once into
the cache. Other files (``Info.txt``, video, hidden files) are passed over;
wav files that do not follow the naming are excluded with the reason.

Folds: leave one speaker out, 4 folds. Classes: 7 (ang dis fea hap neu sad
sur), or 4 (neu hap ang sad).
"""

import os
import re
from collections import Counter
from typing import Dict, List, Optional, Tuple

from ...errors import DataError
from ..audio_cache import AudioCheck
from ..prepare import Exclusion, Listing, PrepareResult, Utterance, ValidSpec, map_classes, prepare, speaker_folds
from .layout import corpus_dir, subfolders, wav_names
from .vocabulary import ANG, DIS, FEA, HAP, NEU, SAD, SUR, corpus_label_map

SPEAKERS = ("DC", "JE", "JK", "KL")
EMOTIONS = {"a": ANG, "d": DIS, "f": FEA, "h": HAP, "n": NEU, "sa": SAD, "su": SUR}
PRESETS = {"7": list(EMOTIONS.values()), "4": [NEU, HAP, ANG, SAD]}

_CODE = r"(sa|su|a|d|f|h|n)(\d\d)\.wav"
_NESTED = re.compile(rf"^{_CODE}$")
_FLAT = re.compile(rf"^({'|'.join(SPEAKERS)})_{_CODE}$")


def savee_label_map(classes: str = "7", label_map: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The label map of a class preset (7: all, 4: neu hap ang sad), or ``label_map`` checked."""
    if label_map is None:
        if classes not in PRESETS:
            raise DataError(f"unknown SAVEE class preset {classes!r} (expected one of {', '.join(PRESETS)})")
        label_map = {name: name for name in PRESETS[classes]}
    return corpus_label_map(label_map, EMOTIONS.values(), "SAVEE")


def find_files(savee_dir: str) -> Tuple[str, List[Tuple[str, Optional[str]]]]:
    """``(root, [(folder, speaker or None for a flat folder)])``; :class:`DataError` if no layout fits."""
    savee_dir = corpus_dir(savee_dir, "SAVEE")
    for base in (os.path.join(savee_dir, "AudioData"), savee_dir):
        if os.path.isdir(base):
            speaker_dirs = [s for s in SPEAKERS if s in subfolders(base)]
            if speaker_dirs:
                return savee_dir, [(os.path.join(base, s), s) for s in speaker_dirs]
    if any(_FLAT.match(n) for n in wav_names(savee_dir)):
        return savee_dir, [(savee_dir, None)]
    raise DataError(f"{savee_dir}: not a SAVEE folder, no AudioData/<{'|'.join(SPEAKERS)}>/ folders and no "
                    f"<speaker>_<code><nn>.wav files (expected e.g. AudioData/DC/a01.wav or DC_a01.wav)")


def list_savee(savee_dir: str, label_map: Optional[Dict[str, str]] = None) -> Listing:
    """List SAVEE's utterances. ``label_map``: as :func:`savee_label_map` returns it (default: 7 classes)."""
    label_map = label_map if label_map is not None else savee_label_map()
    root, places = find_files(savee_dir)
    utterances, excluded, dropped = [], [], Counter()
    for folder, speaker in places:
        for name in wav_names(folder):
            path = os.path.join(folder, name)
            if speaker is None:
                m = _FLAT.match(name)
                who, code = (m.group(1), m.group(2)) if m else (None, None)
            else:
                m = _NESTED.match(name)
                who, code = (speaker, m.group(1)) if m else (None, None)
            if code is None:
                excluded.append(Exclusion(path, "file name does not follow SAVEE's " + (
                    "<code><nn>.wav" if speaker else "<speaker>_<code><nn>.wav") + " convention"))
                continue
            label = EMOTIONS[code]
            if label not in label_map:
                dropped[label] += 1
                continue
            utterances.append(Utterance(path, label_map[label], speaker=who))
    notes = []
    missing = [s for s in SPEAKERS if s not in {u.speaker for u in utterances}]
    if missing and utterances:
        notes.append(f"speakers without utterances: {', '.join(missing)}")
    return Listing(root, utterances, map_classes(label_map), excluded, dropped, notes)


def prepare_savee(savee_dir: str, out_dir: str, *, classes: str = "7",
                  label_map: Optional[Dict[str, str]] = None, valid: ValidSpec = ValidSpec(),
                  cache_dir: Optional[str] = None, check: AudioCheck = AudioCheck(),
                  jobs: Optional[int] = None, progress: bool = True) -> PrepareResult:
    """Write SAVEE's 4 leave-one-speaker-out folds (``label_map`` replaces the ``classes`` preset)."""
    listing = list_savee(savee_dir, savee_label_map(classes, label_map))
    return prepare(listing, out_dir, lambda items: speaker_folds(items, None, valid),
                   cache_dir=cache_dir, check=check, jobs=jobs, progress=progress)
