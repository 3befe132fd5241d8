"""The one label vocabulary: every corpus reader writes the same short name for the same emotion.

A model trained on one corpus is scored on another by class name, so a name
must mean the same emotion in every corpus. The names are IEMOCAP's
three-letter codes, with ``cal`` (RAVDESS's calm), ``bor`` (EmoDB's boredom)
and ``con`` (MSP-Podcast's contempt) added.

Each corpus module maps its own codes onto these names (EmoDB's letter ``W``
to ``ang``, RAVDESS's ``05`` to ``ang``, ...); ``--label-map`` then selects,
renames or merges them. A label map may name classes outside the vocabulary
(``pos``, ``neg``); that is allowed, with a warning, since such classes only
match corpora that use the same invented names.
"""

import logging
from typing import Dict, Iterable, List, Mapping

from ...errors import DataError

logger = logging.getLogger(__name__)

NEU = "neu"
HAP = "hap"
ANG = "ang"
SAD = "sad"
FEA = "fea"
DIS = "dis"
SUR = "sur"
CAL = "cal"
BOR = "bor"
CON = "con"
FRU = "fru"
EXC = "exc"
OTH = "oth"

# short name -> full English name, in the order the README lists them
VOCABULARY: Dict[str, str] = {
    NEU: "neutral", HAP: "happiness", ANG: "anger", SAD: "sadness", FEA: "fear",
    DIS: "disgust", SUR: "surprise", CAL: "calm", BOR: "boredom", CON: "contempt",
    FRU: "frustration", EXC: "excitement", OTH: "other",
}
NAMES = tuple(VOCABULARY)


def full_name(name: str) -> str:
    """The English name of a vocabulary class (``"ang"`` -> ``"anger"``); the name itself otherwise."""
    return VOCABULARY.get(name, name)


def outside_vocabulary(names: Iterable[str]) -> List[str]:
    """The names, in order and without repeats, that are not vocabulary names."""
    return [n for n in dict.fromkeys(names) if n not in VOCABULARY]


def check_classes(names: Iterable[str], where: str) -> None:
    """:class:`DataError` naming ``where`` and the offending names if any is not a vocabulary name."""
    unknown = outside_vocabulary(names)
    if unknown:
        raise DataError(f"{where}: classes {unknown} are not in the label vocabulary "
                        f"({', '.join(NAMES)})")


def corpus_label_map(label_map: Mapping[str, str], known: Iterable[str], corpus: str) -> Dict[str, str]:
    """Check a ``--label-map`` against a corpus's class names; returns it as a dict.

    Its sources must be names the corpus reader produces (``known``), else a
    :class:`DataError` lists them; targets outside the vocabulary only warn.
    """
    known = list(dict.fromkeys(known))
    unknown = [s for s in label_map if s not in known]
    if unknown:
        raise DataError(f"label map: {unknown} are not {corpus} classes ({', '.join(known)})")
    invented = outside_vocabulary(label_map.values())
    if invented:
        logger.warning("label map: classes %s are not in the label vocabulary (%s); scoring on another "
                       "corpus matches classes by name, so they only match corpora that use them too",
                       invented, ", ".join(NAMES))
    return dict(label_map)
