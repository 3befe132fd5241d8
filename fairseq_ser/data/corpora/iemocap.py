"""IEMOCAP: labels from ``EmoEvaluation`` files, five leave-one-session-out folds.

Layout read (the released corpus, ``IEMOCAP_full_release``)::

    SessionN/sentences/wav/<dialog>/<utterance>.wav
    SessionN/dialog/EmoEvaluation/<dialog>.txt

A label line of an EmoEvaluation file looks like
``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]``;
every other line (the ``% [START_TIME - END_TIME] ...`` header, blank lines,
the per-annotator ``C-E1:`` / ``A-E1:`` lines) is skipped.

Fold k tests on all of session k and trains on the other four; its
validation split comes from the training sessions only.
"""

import logging
import os
import re
from collections import Counter
from typing import Dict, List, Optional, Tuple

from ...errors import DataError
from ..audio_cache import AudioCheck
from ..prepare import (Exclusion, FoldAssignment, Listing, PrepareResult, Utterance, ValidSpec,
                       build_folds, map_classes, parse_label_map, prepare)
from .vocabulary import ANG, DIS, EXC, FEA, FRU, HAP, NEU, OTH, SAD, SUR

logger = logging.getLogger(__name__)

SESSIONS = 5
# xxx (no majority among the annotators) is a source label only, never a class
LABELS = (NEU, HAP, EXC, ANG, SAD, FRU, SUR, FEA, DIS, OTH, "xxx")
# Class presets: 4 is the paper's protocol (happy merged with excited); 5
# keeps frustration as a class; 6 is the other common IEMOCAP protocol.
PRESETS = {
    "4": "neu:neu,hap:hap,exc:hap,ang:ang,sad:sad",
    "5": "neu:neu,hap:hap,exc:hap,ang:ang,sad:sad,fru:fru",
    "6": "neu:neu,hap:hap,ang:ang,sad:sad,exc:exc,fru:fru",
}
DEFAULT_LABEL_MAP = PRESETS["4"]
SUBSETS = {"all": "", "improvised": "impro", "scripted": "script"}

_LABEL_LINE = re.compile(
    r"^\[\s*\d+(?:\.\d*)?\s*-\s*\d+(?:\.\d*)?\s*\]\s+(Ses\w+)\s+(\w+)(?:\s|$)")
_UTTERANCE = re.compile(r"^Ses(\d\d)[FM]_\w*_([FM])\d+$")


def speaker_of(utterance_id: str) -> str:
    """The speaker of an utterance, as ``Ses01F`` / ``Ses01M``.

    The letter in the dialog name (``Ses01F_impro01``) says which actor wore
    the motion-capture markers; the letter opening the last part
    (``_F000`` / ``_M000``) says who speaks, so that is the one used.
    """
    m = _UTTERANCE.match(utterance_id)
    if not m:
        raise DataError(f"{utterance_id!r} is not an IEMOCAP utterance id (like Ses01F_impro01_M000)")
    return f"Ses{m.group(1)}{m.group(2)}"


def valid_speaker(fold: int, test_speakers: List[str], train_speakers: List[str]) -> str:
    """Held-out validation speaker of fold ``fold`` (``--valid speaker``).

    The speaker of session ``fold % 5 + 1`` whose sex alternates with the
    fold: fold 1 Ses02F, 2 Ses03M, 3 Ses04F, 4 Ses05M, 5 Ses01F; so each
    session and both sexes serve as validation in turn.
    """
    return f"Ses{fold % SESSIONS + 1:02d}{'F' if fold % 2 else 'M'}"


def read_emo_evaluation(path: str) -> List[Tuple[str, str]]:
    """The ``(utterance id, label)`` pairs of one EmoEvaluation file, in file order."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read the label file ({e.strerror or e})")
    pairs = []
    for line in lines:
        m = _LABEL_LINE.match(line)
        if m:
            pairs.append((m.group(1), m.group(2)))
    return pairs


def check_layout(iemocap_dir: str) -> List[Tuple[int, str, str]]:
    """``(session, label folder, wav folder)`` per session; :class:`DataError` naming what is missing."""
    if not os.path.isdir(iemocap_dir):
        raise DataError(f"{iemocap_dir}: IEMOCAP folder not found")
    sessions, missing = [], []
    for n in range(1, SESSIONS + 1):
        emo = os.path.join(iemocap_dir, f"Session{n}", "dialog", "EmoEvaluation")
        wav = os.path.join(iemocap_dir, f"Session{n}", "sentences", "wav")
        if not os.path.isdir(os.path.join(iemocap_dir, f"Session{n}")):
            missing.append(f"Session{n}")
            continue
        missing += [os.path.relpath(p, iemocap_dir) for p in (emo, wav) if not os.path.isdir(p)]
        sessions.append((n, emo, wav))
    if missing:
        hint = ""
        nested = os.path.join(iemocap_dir, "IEMOCAP_full_release")
        if os.path.isdir(nested):
            hint = f"; did you mean {nested}?"
        raise DataError(
            f"{iemocap_dir}: not an IEMOCAP folder, missing {', '.join(missing)} (expected "
            f"SessionN/sentences/wav and SessionN/dialog/EmoEvaluation for N = 1..{SESSIONS}){hint}")
    return sessions


def list_iemocap(iemocap_dir: str, label_map: Optional[Dict[str, str]] = None,
                 subset: str = "all") -> Listing:
    """List the labelled utterances of IEMOCAP under ``label_map`` (default: 4 classes).

    A label line whose wav file is missing is excluded (listed in the
    report) rather than fatal; labels outside the map are counted as dropped.
    """
    label_map = label_map or parse_label_map(DEFAULT_LABEL_MAP)
    unknown = sorted(set(label_map) - set(LABELS))
    if unknown:
        raise DataError(f"label map: {unknown} are not IEMOCAP labels ({', '.join(LABELS)})")
    if subset not in SUBSETS:
        raise DataError(f"unknown IEMOCAP subset {subset!r} (expected one of {', '.join(SUBSETS)})")
    iemocap_dir = os.path.abspath(iemocap_dir)
    utterances, excluded, dropped, seen = [], [], Counter(), set()
    for n, emo_dir, wav_dir in check_layout(iemocap_dir):
        label_files = [f for f in sorted(os.listdir(emo_dir))
                       if f.endswith(".txt") and not f.startswith(".")
                       and os.path.isfile(os.path.join(emo_dir, f))]
        if not label_files:
            raise DataError(f"{emo_dir}: no EmoEvaluation .txt label files")
        for name in label_files:
            dialog = name[:-4]
            if SUBSETS[subset] not in dialog:
                continue
            path = os.path.join(emo_dir, name)
            for utt, label in read_emo_evaluation(path):
                if utt in seen:
                    logger.warning("%s: utterance %s labelled twice; the first label is kept", path, utt)
                    continue
                seen.add(utt)
                if label not in label_map:
                    dropped[label] += 1
                    continue
                wav = os.path.join(wav_dir, dialog, utt + ".wav")
                if not os.path.isfile(wav):
                    excluded.append(Exclusion(wav, f"labelled in {path} but the wav file is missing"))
                    continue
                utterances.append(Utterance(wav, label_map[label], speaker_of(utt), f"Session{n}"))
    return Listing(iemocap_dir, utterances, map_classes(label_map), excluded, dropped)


def session_folds(items: List[Utterance], valid: ValidSpec) -> List[FoldAssignment]:
    """Fold k: test = session k, train = the others minus the validation split."""
    if valid.mode == "speaker" and valid.speaker_rule is None:
        valid = ValidSpec(valid.mode, valid.fraction, valid.seed, valid_speaker)
    test_sets = [[i for i, u in enumerate(items) if u.group == f"Session{n}"]
                 for n in range(1, SESSIONS + 1)]
    return build_folds(items, test_sets, valid)


def prepare_iemocap(iemocap_dir: str, out_dir: str, *, label_map: Optional[Dict[str, str]] = None,
                    subset: str = "all", valid: ValidSpec = ValidSpec(),
                    cache_dir: Optional[str] = None, check: AudioCheck = AudioCheck(),
                    jobs: Optional[int] = None, progress: bool = True) -> PrepareResult:
    """Write ``out_dir/fold1..5`` for IEMOCAP; see :func:`list_iemocap` and :func:`session_folds`."""
    listing = list_iemocap(iemocap_dir, label_map, subset)
    return prepare(listing, out_dir, lambda items: session_folds(items, valid),
                   cache_dir=cache_dir, check=check, jobs=jobs, progress=progress)
