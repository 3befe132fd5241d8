"""ESD (Emotional Speech Dataset): 10 Mandarin and 10 English speakers, 5 emotions.

Source: Zhou et al. (2021), "Seen and unseen emotional style transfer for
voice conversion with a new emotional speech dataset", ICASSP;
https://hltsingapore.github.io/ESD/ (the download is granted on request, for
research use under the licence on that page).

Layout read (the ``Emotion Speech Dataset`` folder)::

    0001/0001.txt                            transcript: <id><TAB><text><TAB><emotion> per line
    0001/Angry/0001_000351.wav ...           Neutral, Angry, Happy, Sad, Surprise; 16 kHz mono
    0001/Angry/{train,evaluation,test}/...   the official split, in copies that carry it

Speakers 0001-0010 speak Mandarin, 0011-0020 English; each has 350
utterances per emotion. Transcripts, readme files and hidden files are
passed over; wav files whose name is not ``<speaker>_<number>.wav`` of their
own speaker folder are excluded with the reason.

Protocols:

- ``official`` (the default when the emotion folders hold ``train/``,
  ``evaluation/`` and ``test/``): one fold folder ``official``, train /
  valid (= evaluation) / test as the corpus splits them (300 / 20 / 30
  sentences per speaker and emotion). The split divides sentences, so the
  same speakers are in every split: it is not speaker-independent;
- ``speakers`` (the default otherwise): K speaker-independent folds of
  speaker groups (5 by default, 4 speakers each for the whole corpus).
"""

import os
import re
from collections import Counter
from typing import Dict, List, Optional, Sequence

from ...errors import DataError
from ..audio_cache import AudioCheck
from ..prepare import (Exclusion, FoldAssignment, Listing, PrepareResult, Utterance, ValidSpec,
                       map_classes, prepare, speaker_folds)
from .layout import corpus_dir, subfolders, wav_names
from .vocabulary import ANG, HAP, NEU, SAD, SUR, corpus_label_map

EMOTIONS = {"Neutral": NEU, "Angry": ANG, "Happy": HAP, "Sad": SAD, "Surprise": SUR}
PRESETS = {"5": list(EMOTIONS.values()), "4": [NEU, HAP, ANG, SAD]}
LANGUAGES = {"all": range(1, 21), "mandarin": range(1, 11), "english": range(11, 21)}
# official subfolder -> split written
SPLIT_DIRS = {"train": "train", "evaluation": "valid", "test": "test"}
PROTOCOLS = ("auto", "official", "speakers")
FOLD = "official"
DEFAULT_FOLDS = 5

_SPEAKER = re.compile(r"^\d{4}$")
_FILE_NAME = re.compile(r"^(\d{4})_(\d{6})\.wav$", re.IGNORECASE)


def esd_label_map(classes: str = "5", label_map: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The label map of a class preset (5: all, 4: neu hap ang sad), or ``label_map`` checked."""
    if label_map is None:
        if classes not in PRESETS:
            raise DataError(f"unknown ESD class preset {classes!r} (expected one of {', '.join(PRESETS)})")
        label_map = {name: name for name in PRESETS[classes]}
    return corpus_label_map(label_map, EMOTIONS.values(), "ESD")


def select_speakers(found: Sequence[str], language: str = "all",
                    speakers: Optional[Sequence[str]] = None) -> List[str]:
    """The speaker folders to read: ``found`` filtered by language and by an explicit list."""
    if language not in LANGUAGES:
        raise DataError(f"unknown ESD language {language!r} (expected one of {', '.join(LANGUAGES)})")
    chosen = [s for s in found if int(s) in LANGUAGES[language]]
    if speakers:
        wanted = [s.strip() for s in speakers if s.strip()]
        absent = [s for s in wanted if s not in found]
        if absent:
            raise DataError(f"speakers {absent} are not in this ESD copy (found {', '.join(found)})")
        chosen = [s for s in chosen if s in wanted]
    if not chosen:
        raise DataError(f"no ESD speaker left after the filters (language {language}, "
                        f"speakers {', '.join(speakers or ['all'])})")
    return chosen


def list_esd(esd_dir: str, label_map: Optional[Dict[str, str]] = None, language: str = "all",
             speakers: Optional[Sequence[str]] = None) -> Listing:
    """List ESD's utterances; an utterance's ``group`` is its official split, or None in a flat tree.

    ``label_map``: as :func:`esd_label_map` returns it (default: the 5 classes).
    """
    label_map = label_map if label_map is not None else esd_label_map()
    esd_dir = corpus_dir(esd_dir, "ESD")
    found = [d for d in subfolders(esd_dir) if _SPEAKER.match(d) and 1 <= int(d) <= 20]
    if not found:
        nested = [os.path.join(esd_dir, d) for d in subfolders(esd_dir)
                  if any(_SPEAKER.match(s) for s in subfolders(os.path.join(esd_dir, d)))]
        hint = f"; did you mean {nested[0]}?" if nested else ""
        raise DataError(f"{esd_dir}: not an ESD folder, no speaker folders 0001 .. 0020 (expected "
                        f"<speaker>/<{'|'.join(EMOTIONS)}>/<speaker>_<number>.wav){hint}")
    chosen = select_speakers(found, language, speakers)
    utterances, excluded, dropped, notes, split_trees = [], [], Counter(), [], {}
    for speaker in chosen:
        speaker_dir = os.path.join(esd_dir, speaker)
        others = [d for d in subfolders(speaker_dir) if d not in EMOTIONS]
        if others:
            notes.append(f"{speaker}: folders {', '.join(others)} are no ESD emotion folder, passed over")
        for folder_name, source in EMOTIONS.items():
            emotion_dir = os.path.join(speaker_dir, folder_name)
            if not os.path.isdir(emotion_dir):
                notes.append(f"{speaker}: no {folder_name} folder")
                continue
            split_trees[emotion_dir] = split = any(os.path.isdir(os.path.join(emotion_dir, d)) for d in SPLIT_DIRS)
            places = [(os.path.join(emotion_dir, d), s) for d, s in SPLIT_DIRS.items()] if split \
                else [(emotion_dir, None)]
            if split:
                excluded += [Exclusion(os.path.join(emotion_dir, n), "outside the train/evaluation/test "
                                       "folders of a split tree") for n in wav_names(emotion_dir)]
            for folder, group in places:
                if not os.path.isdir(folder):
                    continue
                for name in wav_names(folder):
                    path = os.path.join(folder, name)
                    m = _FILE_NAME.match(name)
                    if not m or m.group(1) != speaker:
                        excluded.append(Exclusion(path, f"file name is not {speaker}_<number>.wav of "
                                                        f"its speaker folder {speaker}"))
                        continue
                    if source not in label_map:
                        dropped[source] += 1
                        continue
                    utterances.append(Utterance(path, label_map[source], speaker=speaker, group=group))
    kinds = set(split_trees.values())
    if len(kinds) > 1:
        flat = next(d for d, split in split_trees.items() if not split)
        raise DataError(f"{flat}: no train/evaluation/test folders, while other emotion folders of "
                        f"{esd_dir} have them; the tree mixes two layouts")
    if len(chosen) < len(found):
        notes.append(f"speakers: {len(chosen)} of {len(found)} kept ({', '.join(chosen)})")
    return Listing(esd_dir, utterances, map_classes(label_map), excluded, dropped, notes)


def official_fold(items: List[Utterance]) -> List[FoldAssignment]:
    """The one fold ``official``: train, valid (the corpus's evaluation) and test as the tree holds them."""
    split = {s: [u for u in items if u.group == s] for s in SPLIT_DIRS.values()}
    return [FoldAssignment(FOLD, split["train"], split["valid"], split["test"])]


def prepare_esd(esd_dir: str, out_dir: str, *, classes: str = "5", label_map: Optional[Dict[str, str]] = None,
                language: str = "all", speakers: Optional[Sequence[str]] = None, protocol: str = "auto",
                folds: int = DEFAULT_FOLDS, valid: ValidSpec = ValidSpec(),
                cache_dir: Optional[str] = None, check: AudioCheck = AudioCheck(),
                jobs: Optional[int] = None, progress: bool = True) -> PrepareResult:
    """Write ESD's folds: the official split (``protocol`` official, or auto on a split tree) or speaker groups."""
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown ESD protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")
    listing = list_esd(esd_dir, esd_label_map(classes, label_map), language, speakers)
    has_split = any(u.group is not None for u in listing.utterances)
    if protocol == "official" and not has_split:
        raise DataError(f"{listing.root}: the official protocol needs the train/evaluation/test folders "
                        f"inside each emotion folder, and this copy has none")
    if protocol == "official" or (protocol == "auto" and has_split):
        listing.notes.append("protocol: the official train/evaluation/test split (not speaker-independent)")
        make = official_fold
    else:
        listing.notes.append(f"protocol: {folds} speaker-independent fold(s)")
        make = lambda items: speaker_folds(items, folds, valid)  # noqa: E731
    return prepare(listing, out_dir, make, cache_dir=cache_dir, check=check, jobs=jobs, progress=progress)
