"""EmoDB (Berlin Database of Emotional Speech): labels and speakers from file names.

File names are ``SSTTTEV.wav``: speaker ``SS``, sentence ``TTT``, emotion
letter ``E`` (German initial), take ``V``; e.g. ``03a01Fa.wav`` is speaker 03
saying sentence a01 happily (Freude), take a. Folds are speaker-independent:
leave-one-speaker-out by default (10 folds), or K speaker groups.
"""

import os
import re
from collections import Counter
from typing import Dict, Optional

from ...errors import DataError
from ..audio_cache import AudioCheck
from ..prepare import (Exclusion, Listing, PrepareResult, Utterance, ValidSpec, map_classes,
                       prepare, speaker_folds)
from .vocabulary import ANG, BOR, DIS, FEA, HAP, NEU, SAD

# emotion letter -> class name, in the order of the corpus documentation
EMOTIONS = {"W": ANG, "L": BOR, "N": NEU, "F": HAP, "A": FEA, "T": SAD, "E": DIS}
DEFAULT_LABEL_MAP = {name: name for name in EMOTIONS.values()}
_FILE_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([WLNFATE])([a-z])\.wav$")


def list_emodb(emodb_dir: str, label_map: Optional[Dict[str, str]] = None) -> Listing:
    """List EmoDB's utterances; ``emodb_dir`` is the corpus folder (holding ``wav/``) or ``wav/`` itself.

    ``label_map`` maps class names (ang, bor, neu, hap, fea, sad, dis) and
    selects or merges them; default: all seven. Wav files whose names do not
    follow the convention are excluded and reported.
    """
    label_map = label_map or DEFAULT_LABEL_MAP
    unknown = sorted(set(label_map) - set(EMOTIONS.values()))
    if unknown:
        raise DataError(f"label map: {unknown} are not EmoDB classes ({', '.join(EMOTIONS.values())})")
    emodb_dir = os.path.abspath(emodb_dir)
    if not os.path.isdir(emodb_dir):
        raise DataError(f"{emodb_dir}: EmoDB folder not found")
    wav_dir = os.path.join(emodb_dir, "wav")
    if not os.path.isdir(wav_dir):
        wav_dir = emodb_dir
    names = sorted(f for f in os.listdir(wav_dir) if f.lower().endswith(".wav") and not f.startswith("."))
    utterances, excluded, dropped = [], [], Counter()
    for name in names:
        path = os.path.join(wav_dir, name)
        m = _FILE_NAME.match(name)
        if not m:
            excluded.append(Exclusion(path, "file name does not follow EmoDB's SSTTTEV.wav convention"))
            continue
        label = EMOTIONS[m.group(3)]
        if label not in label_map:
            dropped[label] += 1
            continue
        utterances.append(Utterance(path, label_map[label], speaker=m.group(1)))
    if not utterances and not excluded:
        raise DataError(f"{emodb_dir}: no EmoDB wav files (SSTTTEV.wav) here or in its wav/ folder")
    return Listing(emodb_dir, utterances, map_classes(label_map), excluded, dropped)


def prepare_emodb(emodb_dir: str, out_dir: str, *, label_map: Optional[Dict[str, str]] = None,
                  folds: Optional[int] = None, valid: ValidSpec = ValidSpec(),
                  cache_dir: Optional[str] = None, check: AudioCheck = AudioCheck(),
                  jobs: Optional[int] = None, progress: bool = True) -> PrepareResult:
    """Write speaker-independent folds of EmoDB; ``folds=None`` is leave-one-speaker-out."""
    listing = list_emodb(emodb_dir, label_map)
    return prepare(listing, out_dir, lambda items: speaker_folds(items, folds, valid),
                   cache_dir=cache_dir, check=check, jobs=jobs, progress=progress)
