"""MSP-Podcast: natural emotional speech from podcasts, with its official partitions.

Source: Lotfian & Busso (2019), IEEE Transactions on Affective Computing
10(4); the MSP lab of UT Dallas,
https://ecs.utdallas.edu/research/researchlabs/msp-lab/MSP-Podcast.html.
Licence: an academic licence agreement signed with the lab (no
redistribution).

Layout read (a release folder, e.g. ``MSP-PODCAST-Publish-1.12``)::

    Audios/MSP-PODCAST_0001_0008.wav ...         16 kHz mono (Audio/ is accepted too)
    Labels/labels_consensus.csv                   FileName, EmoClass, EmoAct, EmoVal, EmoDom,
                                                  SpkrID, Gender, Split_Set
    Labels/labels_consensus.json                  v1.12: {"file.wav": {"EmoClass": ..., ...}}

The first of ``labels_consensus.csv``, ``labels_concensus.csv`` (some releases'
spelling), ``labels_consensus.json`` and ``labels_concensus.json`` found is read.

Protocol: the official partitions, in one fold folder named ``official``:
``Train`` -> train, ``Development`` (``Validation`` in some copies) -> valid,
``Test1`` -> test, and ``Test2``, when the release has it, -> an extra split
``test2`` (``test2.tsv`` / ``test2.emo``, scored with ``fairseq-ser evaluate
--gen-subset test2``). ``Test3``'s labels are hidden (it is scored by the lab's
challenge server), so it is no scored split and is left out. The summary
lists every ``Split_Set`` value found; values other than these are reported
and left out.

Classes: the 8-class challenge protocol, ``EmoClass`` A S H U F D C N ->
ang sad hap sur fea dis con neu; O (other) and X (no agreement) are not
classes (counted as dropped, as oth and xxx). 4 classes: neu hap ang sad.

Speakers are ``SpkrID`` as written (``Unknown`` for many segments); the
official partitions keep speakers apart, so no speaker grouping is done here.
"""

import csv
import json
import logging
import os
from collections import Counter
from typing import Dict, List, Optional, Tuple

from ...errors import DataError
from ..audio_cache import AudioCheck
from ..prepare import (Exclusion, FoldAssignment, Listing, PrepareResult, Utterance, map_classes,
                       prepare)
from .layout import corpus_dir, wav_names
from .vocabulary import ANG, CON, DIS, FEA, HAP, NEU, OTH, SAD, SUR, corpus_label_map

logger = logging.getLogger(__name__)

NO_AGREEMENT = "xxx"   # a source label only, as IEMOCAP's
EMOTIONS = {"A": ANG, "S": SAD, "H": HAP, "U": SUR, "F": FEA, "D": DIS, "C": CON, "N": NEU,
            "O": OTH, "X": NO_AGREEMENT}
PRESETS = {"8": [ANG, SAD, HAP, SUR, FEA, DIS, CON, NEU], "4": [NEU, HAP, ANG, SAD]}
# Split_Set value -> split written; Test3 has hidden labels
PARTITIONS = {"Train": "train", "Development": "valid", "Validation": "valid", "Test1": "test",
              "Test2": "test2"}
HIDDEN = ("Test3",)
FOLD = "official"
LABEL_FILES = ("labels_consensus.csv", "labels_concensus.csv", "labels_consensus.json",
               "labels_concensus.json")
COLUMNS = ("FileName", "EmoClass", "SpkrID", "Split_Set")


def msp_label_map(classes: str = "8", label_map: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The label map of a class preset (8: the challenge's, 4: neu hap ang sad), or ``label_map`` checked."""
    if label_map is None:
        if classes not in PRESETS:
            raise DataError(f"unknown MSP-Podcast class preset {classes!r} (expected one of {', '.join(PRESETS)})")
        label_map = {name: name for name in PRESETS[classes]}
    return corpus_label_map(label_map, EMOTIONS.values(), "MSP-Podcast")


def find_layout(msp_dir: str) -> Tuple[str, str, str]:
    """``(release folder, audio folder, label file)``; :class:`DataError` naming what is missing."""
    msp_dir = corpus_dir(msp_dir, "MSP-Podcast")
    audio = next((os.path.join(msp_dir, d) for d in ("Audios", "Audio")
                  if os.path.isdir(os.path.join(msp_dir, d))), None)
    labels = next((os.path.join(msp_dir, "Labels", f) for f in LABEL_FILES
                   if os.path.isfile(os.path.join(msp_dir, "Labels", f))), None)
    missing = ([] if audio else ["Audios/"]) + ([] if labels else [f"Labels/{' or '.join(LABEL_FILES)}"])
    if missing:
        raise DataError(f"{msp_dir}: not an MSP-Podcast release folder, missing {' and '.join(missing)}")
    return msp_dir, audio, labels


def read_labels(path: str) -> List[Dict[str, str]]:
    """The rows of a consensus label file (CSV or JSON) as dicts holding at least :data:`COLUMNS`."""
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, dict):
                raise DataError(f"{path}: expected an object {{file name: {{EmoClass, SpkrID, Split_Set, ...}}}}")
            rows = []
            for name, fields in data.items():
                if not isinstance(fields, dict):
                    raise DataError(f"{path}: entry {name!r} is not an object of label fields")
                rows.append({**{k: "" if v is None else str(v) for k, v in fields.items()}, "FileName": name})
        else:
            with open(path, encoding="utf-8-sig", newline="") as f:
                rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read the label file ({e})")
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} column (an MSP-Podcast consensus label file has "
                        f"FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set)")
    if not rows:
        raise DataError(f"{path}: no label rows")
    return rows


def list_msp_podcast(msp_dir: str, label_map: Optional[Dict[str, str]] = None) -> Listing:
    """List the labelled segments of the scored partitions; each utterance's ``group`` is its split.

    ``label_map``: as :func:`msp_label_map` returns it (default: the 8 classes).
    """
    label_map = label_map if label_map is not None else msp_label_map()
    root, audio_dir, label_file = find_layout(msp_dir)
    audio = set(wav_names(audio_dir))
    utterances, excluded, dropped, seen = [], [], Counter(), set()
    found, duplicates = Counter(), 0
    for row in read_labels(label_file):
        name = (row["FileName"] or "").strip()
        partition = (row["Split_Set"] or "").strip()
        found[partition] += 1
        if name in seen:
            duplicates += 1
            continue
        seen.add(name)
        if partition not in PARTITIONS:
            continue
        path = os.path.join(audio_dir, name)
        code = (row["EmoClass"] or "").strip()
        if code not in EMOTIONS:
            excluded.append(Exclusion(path, f"EmoClass {code!r} is not one of {' '.join(EMOTIONS)}"))
            continue
        label = EMOTIONS[code]
        if label not in label_map:
            dropped[label] += 1
            continue
        if name not in audio:
            excluded.append(Exclusion(path, f"labelled in {os.path.basename(label_file)} but the wav "
                                            f"file is missing"))
            continue
        speaker = (row["SpkrID"] or "").strip() or None
        utterances.append(Utterance(path, label_map[label], speaker=speaker, group=PARTITIONS[partition]))
    notes = [f"labels: {label_file}", "Split_Set found: " + ", ".join(
        f"{p or repr(p)} {n} ({_fate(p)})" for p, n in sorted(found.items()))]
    unknown = sorted(p for p in found if p not in PARTITIONS and p not in HIDDEN)
    if unknown:
        logger.warning("%s: Split_Set values %s are none of %s; their rows are left out",
                       label_file, unknown, ", ".join(list(PARTITIONS) + list(HIDDEN)))
    if duplicates:
        notes.append(f"{duplicates} repeated FileName row(s): the first one is kept")
    unlabelled = len(audio - seen)
    if unlabelled:
        notes.append(f"{unlabelled} wav file(s) in {os.path.basename(audio_dir)}/ have no label row: left out")
    return Listing(root, utterances, map_classes(label_map), excluded, dropped, notes)


def _fate(partition: str) -> str:
    if partition in PARTITIONS:
        return f"-> {PARTITIONS[partition]}"
    if partition in HIDDEN:
        return "labels hidden: not scored, left out"
    return "unknown partition: left out"


def official_fold(items: List[Utterance]) -> List[FoldAssignment]:
    """The one fold ``official``: each utterance in the split its partition names."""
    splits = {s: [u for u in items if u.group == s] for s in dict.fromkeys(PARTITIONS.values())}
    for split in ("train", "valid", "test"):
        if not splits[split]:
            names = [p for p, s in PARTITIONS.items() if s == split]
            raise DataError(f"MSP-Podcast: no usable segment of the {' / '.join(names)} partition, "
                            f"so the official {split} split would be empty")
    extra = {"test2": splits["test2"]} if splits["test2"] else {}
    return [FoldAssignment(FOLD, splits["train"], splits["valid"], splits["test"], extra)]


def prepare_msp_podcast(msp_dir: str, out_dir: str, *, classes: str = "8",
                        label_map: Optional[Dict[str, str]] = None, cache_dir: Optional[str] = None,
                        check: AudioCheck = AudioCheck(), jobs: Optional[int] = None,
                        progress: bool = True) -> PrepareResult:
    """Write ``out_dir/official`` (``label_map`` replaces the ``classes`` preset)."""
    listing = list_msp_podcast(msp_dir, msp_label_map(classes, label_map))
    return prepare(listing, out_dir, official_fold, cache_dir=cache_dir, check=check, jobs=jobs,
                   progress=progress)
