"""Splitting a corpus listing into folds and validation sets, deterministic for a given seed.

Speaker groups of similar size (speaker-independent folds), class-stratified
folds and splits, and the held-out validation speaker of a fold: the
arithmetic of :mod:`.prepare`, which turns the index lists into fold folders.

Every function here works on lists of items with a ``key`` (a stable,
unique string such as the source path), a ``label`` and optionally a
``speaker``, and returns index lists into its input. Items are sorted by key
before anything random happens, so the result depends only on the items and
the seed, never on the order in which a corpus was listed.
"""

import random
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import DataError


def _by_label(items, indices) -> Dict[str, List[int]]:
    groups = defaultdict(list)
    for i in sorted(indices, key=lambda i: items[i].key):
        groups[items[i].label].append(i)
    return {label: groups[label] for label in sorted(groups)}


def stratified_split(items: Sequence, indices: Sequence[int], fraction: float,
                     seed: str) -> Tuple[List[int], List[int]]:
    """Split ``indices`` into (kept, carved) with ``fraction`` of every class carved.

    Each class with at least two items gives at least one, so a small
    validation set still sees every class it can.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation fraction must lie strictly between 0 and 1, got {fraction}")
    rng = random.Random(seed)
    kept, carved = [], []
    for group in _by_label(items, indices).values():
        rng.shuffle(group)
        n = int(round(fraction * len(group)))
        if n == 0 and len(group) >= 2:
            n = 1
        carved += group[:n]
        kept += group[n:]
    return sorted(kept), sorted(carved)


def stratified_folds(items: Sequence, k: int, seed: str) -> List[List[int]]:
    """Partition all items into ``k`` folds with the class proportions of the whole."""
    if k < 2:
        raise DataError(f"need at least 2 folds to partition, got {k}")
    rng = random.Random(seed)
    folds = [[] for _ in range(k)]
    offset = 0
    for group in _by_label(items, range(len(items))).values():
        rng.shuffle(group)
        for j, i in enumerate(group):
            folds[(offset + j) % k].append(i)
        # continue dealing where the last class stopped, so fold sizes stay even
        offset = (offset + len(group)) % k
    return [sorted(f) for f in folds]


def speaker_groups(items: Sequence, k: int) -> List[List[str]]:
    """Split the speakers of ``items`` into ``k`` groups of similar utterance counts.

    Greedy: speakers from the most to the fewest utterances, each to the group
    with the fewest utterances so far (ties by group number). With as many
    groups as speakers this is leave-one-speaker-out. Groups are returned
    ordered by their first speaker name, each group sorted.
    """
    counts = defaultdict(int)
    for item in items:
        counts[item.speaker] += 1
    speakers = sorted(counts)
    if k > len(speakers):
        raise DataError(
            f"cannot make {k} speaker-independent folds from {len(speakers)} speakers "
            f"({', '.join(speakers)}); use at most {len(speakers)} folds")
    if k == len(speakers):
        return [[s] for s in speakers]
    groups = [[] for _ in range(k)]
    sizes = [0] * k
    for s in sorted(speakers, key=lambda s: (-counts[s], s)):
        g = min(range(k), key=lambda g: (sizes[g], g))
        groups[g].append(s)
        sizes[g] += counts[s]
    return sorted((sorted(g) for g in groups), key=lambda g: g[0])


def next_speaker(all_speakers: Sequence[str], test_speakers: Sequence[str],
                 candidates: Sequence[str]) -> str:
    """The default held-out validation speaker of a fold.

    In sorted speaker order, the first candidate that follows the last test
    speaker (wrapping around). For leave-one-speaker-out with speakers
    s1..sn, fold k validates on s(k+1) and fold n on s1, so every speaker
    validates exactly once.
    """
    order = sorted(all_speakers)
    start = order.index(max(test_speakers)) + 1
    allowed = set(candidates)
    for s in order[start:] + order[:start]:
        if s in allowed:
            return s
    raise DataError("no training speaker is left to hold out for validation")


# A rule choosing the validation speaker of a fold: (fold number from 1,
# test speakers, training speakers) -> speaker.
SpeakerRule = Callable[[int, List[str], List[str]], str]


def carve_valid(items: Sequence, train: Sequence[int], fold: int, *, mode: str = "stratified",
                fraction: float = 0.1, seed: int = 1, test_speakers: Sequence[str] = (),
                speaker_rule: Optional[SpeakerRule] = None) -> Tuple[List[int], List[int]]:
    """Take the validation split of fold ``fold`` out of its training indices.

    ``mode="stratified"``: a seeded, class-stratified ``fraction`` of the
    training utterances. ``mode="speaker"``: every utterance of one training
    speaker, chosen by ``speaker_rule`` (default :func:`next_speaker`).
    Returns (train, valid).
    """
    if mode == "stratified":
        return stratified_split(items, train, fraction, f"{seed}:valid:{fold}")
    if mode != "speaker":
        raise DataError(f"unknown validation mode {mode!r} (expected 'stratified' or 'speaker')")
    speakers = sorted({items[i].speaker for i in train})
    if None in speakers:
        raise DataError("a held-out validation speaker needs speaker ids for every utterance")
    if len(speakers) < 2:
        raise DataError(
            f"fold {fold}: a held-out validation speaker needs at least 2 training speakers, "
            f"found {len(speakers)}")
    if speaker_rule is not None:
        chosen = speaker_rule(fold, list(test_speakers), speakers)
    else:
        everyone = sorted(set(speakers) | set(test_speakers))
        chosen = next_speaker(everyone, list(test_speakers) or [everyone[-1]], speakers)
    if chosen not in speakers:
        raise DataError(f"fold {fold}: validation speaker {chosen!r} has no training utterances")
    return ([i for i in train if items[i].speaker != chosen],
            [i for i in train if items[i].speaker == chosen])
