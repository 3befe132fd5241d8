"""`fairseq-ser prepare emodb` on the real corpus in /work/shared/corpora/emodb."""

import os
from collections import Counter

import pytest

from fairseq_ser.data.corpora.emodb import EMOTIONS, list_emodb, prepare_emodb
from fairseq_ser.data.manifest import load_split, read_label_dict
from fairseq_ser.data.prepare import ValidSpec, parse_label_map

EMODB = os.environ.get("EMODB_DIR", "/work/shared/corpora/emodb")
# the corpus README's tables
PER_SPEAKER = {"03": 49, "08": 58, "09": 43, "10": 38, "11": 55, "12": 35, "13": 61, "14": 69,
               "15": 56, "16": 71}
PER_EMOTION = {"W": 127, "L": 81, "N": 79, "F": 71, "A": 69, "T": 62, "E": 46}


@pytest.fixture(scope="module")
def emodb():
    if not os.path.isdir(os.path.join(EMODB, "wav")):
        pytest.skip(f"EmoDB not found at {EMODB}")
    return EMODB


@pytest.fixture(scope="module")
def loso(emodb, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("emodb"))
    return out, prepare_emodb(emodb, out, progress=False)


def speakers(out, fold, split):
    m = load_split(os.path.join(out, fold), split).manifest
    return Counter(os.path.basename(path)[:2] for path, _ in m.entries)


def test_counts_match_the_readme(emodb, loso):
    out, result = loso
    assert not result.excluded and result.converted == 0
    names = [EMOTIONS[letter] for letter in PER_EMOTION]
    assert result.class_names == names
    # over the leave-one-speaker-out folds, every utterance is tested exactly once
    per_speaker, per_class = Counter(), Counter()
    for k in range(1, 11):
        per_speaker += speakers(out, f"fold{k}", "test")
        per_class += result.counts[f"fold{k}"]["test"]
    assert dict(per_speaker) == PER_SPEAKER
    assert dict(per_class) == {EMOTIONS[letter]: n for letter, n in PER_EMOTION.items()}
    listing = list_emodb(emodb)
    assert len(listing.utterances) == 535


def test_loso_folds(loso):
    out, result = loso
    assert len(result.counts) == 10
    for k, speaker in enumerate(sorted(PER_SPEAKER), start=1):
        fold = f"fold{k}"
        assert speakers(out, fold, "test") == Counter({speaker: PER_SPEAKER[speaker]})
        train, valid = speakers(out, fold, "train"), speakers(out, fold, "valid")
        assert speaker not in train and speaker not in valid
        assert sum(train.values()) + sum(valid.values()) == 535 - PER_SPEAKER[speaker]
        assert read_label_dict(os.path.join(out, fold, "dict.emo.txt")) == result.class_names
    # speaker 08 has no disgust: its test split lacks the class, the dict still lists it
    assert result.counts["fold2"]["test"]["dis"] == 0


def test_speaker_groups_and_speaker_valid(emodb, tmp_path):
    out = str(tmp_path / "out")
    result = prepare_emodb(emodb, out, folds=5, valid=ValidSpec(mode="speaker"), progress=False,
                           label_map=parse_label_map("ang,sad,neu,hap:hap"))
    assert result.class_names == ["ang", "sad", "neu", "hap"]
    tested = Counter()
    for k in range(1, 6):
        test = speakers(out, f"fold{k}", "test")
        valid = speakers(out, f"fold{k}", "valid")
        assert len(test) == 2 and len(valid) == 1
        assert not set(valid) & set(test) and not set(valid) & set(speakers(out, f"fold{k}", "train"))
        tested.update(test.keys())
    assert sorted(tested) == sorted(PER_SPEAKER) and set(tested.values()) == {1}
    sizes = [sum(result.counts[f"fold{k}"]["test"].values()) for k in range(1, 6)]
    assert max(sizes) - min(sizes) <= 30
    assert result.dropped == Counter({"bor": 81, "fea": 69, "dis": 46})
