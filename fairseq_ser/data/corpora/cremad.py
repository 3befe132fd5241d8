"""CREMA-D (Crowd-sourced Emotional Multimodal Actors Dataset).

Source: Cao et al. (2014), IEEE Transactions on Affective Computing 5(4);
https://github.com/CheyneyComputerScience/CREMA-D (the audio is stored with
Git LFS: clone with ``git lfs`` installed, or run ``git lfs pull``).
Licence: Open Database License (ODbL) v1.0, contents under the Database
Contents License.

Layout read (the repository's root, or its ``AudioWAV`` folder)::

    AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav   e.g. 1001_DFA_ANG_XX.wav
    processedResults/summaryTable.csv                    crowd votes (labels="voted" only)

Actors 1001-1091 (91), 12 sentences (IEO, TIE, IOM, IWW, TAI, MTI, IWL, ITH,
DFA, ITS, TSI, WSI), emotions ANG DIS FEA HAP NEU SAD, levels LO MD HI and
XX (unspecified); 16 kHz mono. The other folders (AudioMP3, VideoFlash,
VideoMP4), README and csv files are passed over. Names that do not follow
the convention are excluded with the reason; so are Git LFS pointer files (a
clone made without ``git lfs``), and the audio check excludes the one empty
file real copies have (1076_MTI_SAD_XX.wav).

Labels: ``acted`` (default), the emotion the actor was asked for (the file
name); or ``voted``, ``VoiceVote`` of ``summaryTable.csv``: the emotion most
raters heard from the audio alone (columns ``FileName``, ``VoiceVote``,
``VoiceLevel``, ``FaceVote``, ...). A tie (``A:N``) or a file without a row is
excluded with the reason.

Folds: speaker-independent, 5 groups of actors balanced by utterance count
by default (about 18 actors each). EmoBox's single CREMA-D fold is a
stratified random quarter of the utterances, not speaker-independent, so it
is not reproduced.
"""

import csv
import os
import re
from collections import Counter
from typing import Dict, Optional

from ...errors import DataError
from ..audio_cache import AudioCheck
from ..prepare import Exclusion, Listing, PrepareResult, Utterance, ValidSpec, map_classes, prepare, speaker_folds
from .layout import corpus_dir, wav_names
from .vocabulary import ANG, DIS, FEA, HAP, NEU, SAD, corpus_label_map

EMOTIONS = {"ANG": ANG, "DIS": DIS, "FEA": FEA, "HAP": HAP, "NEU": NEU, "SAD": SAD}
VOTES = {"A": ANG, "D": DIS, "F": FEA, "H": HAP, "N": NEU, "S": SAD}
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
ACTORS = (1001, 1091)
PRESETS = {"6": list(EMOTIONS.values()), "4": [NEU, HAP, ANG, SAD]}
LABEL_SOURCES = ("acted", "voted")
SUMMARY_TABLE = os.path.join("processedResults", "summaryTable.csv")
DEFAULT_FOLDS = 5

_FILE_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})\.wav$")
_LFS_POINTER = b"version https://git-lfs"


def cremad_label_map(classes: str = "6", label_map: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The label map of a class preset (6: all, 4: neu hap ang sad), or ``label_map`` checked."""
    if label_map is None:
        if classes not in PRESETS:
            raise DataError(f"unknown CREMA-D class preset {classes!r} (expected one of {', '.join(PRESETS)})")
        label_map = {name: name for name in PRESETS[classes]}
    return corpus_label_map(label_map, EMOTIONS.values(), "CREMA-D")


def find_audio_dir(cremad_dir: str):
    """``(corpus root, AudioWAV folder)``; :class:`DataError` when the tree is not CREMA-D's."""
    cremad_dir = corpus_dir(cremad_dir, "CREMA-D")
    audio = os.path.join(cremad_dir, "AudioWAV")
    if os.path.isdir(audio):
        return cremad_dir, audio
    if os.path.basename(cremad_dir) == "AudioWAV":
        return os.path.dirname(cremad_dir), cremad_dir
    raise DataError(f"{cremad_dir}: not a CREMA-D folder, no AudioWAV folder (expected "
                    f"AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav, e.g. AudioWAV/1001_DFA_ANG_XX.wav)")


def read_voice_votes(path: str) -> Dict[str, str]:
    """``file stem -> VoiceVote`` from CREMA-D's ``summaryTable.csv``."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            if "FileName" not in columns or "VoiceVote" not in columns:
                raise DataError(f"{path}: not CREMA-D's summary table, it has no FileName and VoiceVote "
                                f"columns (found {', '.join(c for c in columns if c) or 'none'})")
            votes = {}
            for row in reader:
                stem = (row["FileName"] or "").strip()
                if stem.lower().endswith(".wav"):
                    stem = stem[:-4]
                if stem:
                    votes[stem] = (row["VoiceVote"] or "").strip()
            return votes
    except FileNotFoundError:
        raise DataError(f"{path}: not found; voted labels come from CREMA-D's {SUMMARY_TABLE}")
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the summary table ({e})")


def list_cremad(cremad_dir: str, label_map: Optional[Dict[str, str]] = None, labels: str = "acted") -> Listing:
    """List CREMA-D's utterances with acted or voted labels.

    ``label_map``: as :func:`cremad_label_map` returns it (default: the 6 classes).
    """
    label_map = label_map if label_map is not None else cremad_label_map()
    if labels not in LABEL_SOURCES:
        raise DataError(f"unknown CREMA-D label source {labels!r} (expected one of {', '.join(LABEL_SOURCES)})")
    root, audio_dir = find_audio_dir(cremad_dir)
    names = wav_names(audio_dir)
    if not names:
        raise DataError(f"{audio_dir}: no wav files (expected <actor>_<sentence>_<emotion>_<level>.wav)")
    votes = read_voice_votes(os.path.join(root, SUMMARY_TABLE)) if labels == "voted" else None
    utterances, excluded, dropped = [], [], Counter()
    for name in names:
        path = os.path.join(audio_dir, name)
        reason = _unusable(name, path)
        if reason:
            excluded.append(Exclusion(path, reason))
            continue
        actor, _, emotion, _ = _FILE_NAME.match(name).groups()
        label = EMOTIONS[emotion]
        if votes is not None:
            label, reason = _voted(votes.get(name[:-4]))
            if reason:
                excluded.append(Exclusion(path, reason))
                continue
        if label not in label_map:
            dropped[label] += 1
            continue
        utterances.append(Utterance(path, label_map[label], speaker=actor))
    notes = [f"labels: {'VoiceVote of ' + SUMMARY_TABLE if votes is not None else 'acted (file names)'}"]
    return Listing(root, utterances, map_classes(label_map), excluded, dropped, notes)


def _unusable(name: str, path: str) -> Optional[str]:
    m = _FILE_NAME.match(name)
    if not m:
        return "file name does not follow CREMA-D's <actor>_<sentence>_<emotion>_<level>.wav convention"
    actor, sentence, emotion, level = m.groups()
    if not ACTORS[0] <= int(actor) <= ACTORS[1] or sentence not in SENTENCES or emotion not in EMOTIONS \
            or level not in ("LO", "MD", "HI", "XX"):
        return "file name codes outside CREMA-D's (actors 1001-1091, its 12 sentences, 6 emotions, LO/MD/HI/XX)"
    if os.path.getsize(path) < 200:
        with open(path, "rb") as f:
            if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
                return "a Git LFS pointer, not audio (run `git lfs pull` in the CREMA-D clone)"
    return None


def _voted(vote: Optional[str]):
    """``(label, None)`` for a single VoiceVote, ``(None, reason)`` otherwise."""
    if vote is None:
        return None, f"no row in {SUMMARY_TABLE}"
    if ":" in vote:
        return None, f"VoiceVote {vote!r} is a tie between emotions"
    if vote not in VOTES:
        return None, f"VoiceVote {vote!r} is not one of {', '.join(VOTES)}"
    return VOTES[vote], None


def prepare_cremad(cremad_dir: str, out_dir: str, *, classes: str = "6",
                   label_map: Optional[Dict[str, str]] = None, labels: str = "acted",
                   folds: int = DEFAULT_FOLDS, valid: ValidSpec = ValidSpec(),
                   cache_dir: Optional[str] = None, check: AudioCheck = AudioCheck(),
                   jobs: Optional[int] = None, progress: bool = True) -> PrepareResult:
    """Write ``folds`` speaker-independent folds of CREMA-D (``label_map`` replaces the ``classes`` preset)."""
    listing = list_cremad(cremad_dir, cremad_label_map(classes, label_map), labels)
    return prepare(listing, out_dir, lambda items: speaker_folds(items, folds, valid),
                   cache_dir=cache_dir, check=check, jobs=jobs, progress=progress)
