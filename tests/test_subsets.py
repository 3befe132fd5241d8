"""Labelled subsets (fairseq_ser.data.subsets, `fairseq-ser subset`) and speakers in fold folders.

Most tests build fold folders by hand (no model, no real audio decoding):
files of distinct bytes stand for the audio, so a fold can have hundreds of
utterances with uneven speakers and classes, and the counts can be checked
exactly.
"""

import filecmp
import math
import os
from collections import Counter

import pytest

from fairseq_ser.cli.main import main as cli_main
from fairseq_ser.data.fold_dirs import find_fold_dirs
from fairseq_ser.data.manifest import (load_split, read_label_dict, read_manifest, read_speakers,
                                       speaker_path, write_label_dict, write_manifest, write_speakers,
                                       write_split)
from fairseq_ser.data.subsets import subset_name, write_subsets
from fairseq_ser.errors import DataError

CLASSES = {"neu": 61, "hap": 40, "ang": 23, "sad": 9}
SPEAKERS = {"s1": 5, "s2": 3, "s3": 2, "s4": 1}   # relative share of each class's utterances


def _file(root, name, counter):
    path = os.path.join(root, name)
    with open(path, "wb") as f:
        f.write(f"audio {name}".encode())
    counter[0] += 1
    return name, 16000 + counter[0]


def make_folds(root, folds=2, classes=CLASSES, speakers=True):
    """``root/fold{k}``: train with ``classes`` counts over uneven speakers, small valid and test."""
    audio = os.path.join(root, "audio")
    os.makedirs(audio, exist_ok=True)
    counter = [0]
    weights = list(SPEAKERS.items())
    total = sum(w for _, w in weights)
    for k in range(1, folds + 1):
        fold = os.path.join(root, f"fold{k}")
        os.makedirs(fold)
        splits = {"train": [], "valid": [], "test": []}
        for c, n in classes.items():
            for i in range(n):
                # speaker s takes about its weight's share of the class
                position = (i + 0.5) / n * total
                speaker = next(s for j, (s, _) in enumerate(weights)
                               if position < sum(w for _, w in weights[:j + 1]))
                splits["train"].append((*_file(audio, f"f{k}_train_{c}_{i}.wav", counter), c, speaker))
            for split in ("valid", "test"):
                for i in range(2):
                    splits[split].append((*_file(audio, f"f{k}_{split}_{c}_{i}.wav", counter), c, f"t{k}"))
        for split, rows in splits.items():
            if speakers:
                write_speakers(speaker_path(fold, split), [r[3] for r in rows])
            write_split(fold, split, audio, [r[:3] for r in rows])
        write_label_dict(os.path.join(fold, "dict.emo.txt"), list(classes),
                         Counter(r[2] for r in splits["train"]))
    return root


@pytest.fixture
def folds(tmp_path):
    return make_folds(str(tmp_path / "src"))


def rows_of(fold_dir, split="train"):
    data = load_split(fold_dir, split)
    speakers = read_speakers(fold_dir, split, len(data.manifest))
    return [(data.manifest.entries[i][0], data.labels[i], speakers[i] if speakers else None)
            for i in range(len(data.manifest))]


def test_subset_names():
    assert [subset_name("fraction", f) for f in (0.1, 0.25, 1)] == ["frac0.1", "frac0.25", "frac1"]
    assert subset_name("per_class", 20) == "per_class20"


def test_nested_and_stratified_by_class_and_speaker(folds, tmp_path):
    fractions = (0.1, 0.25, 0.5, 1)
    result = write_subsets(folds, str(tmp_path / "out"), fractions=fractions, progress=False)
    assert result.names == ["frac0.1", "frac0.25", "frac0.5", "frac1"]
    for fold in ("fold1", "fold2"):
        source = rows_of(os.path.join(folds, fold))
        by_class = Counter(label for _, label, _ in source)
        previous = set()
        for f, name in zip(fractions, result.names):
            subset = rows_of(os.path.join(str(tmp_path / "out"), name, fold))
            assert set(subset) <= set(source)
            assert previous <= set(subset), f"{name} of {fold} does not hold the smaller subset"
            previous = set(subset)
            counts = Counter(label for _, label, _ in subset)
            for c, n in by_class.items():
                m = math.floor(f * n + 0.5)
                assert counts[c] == m == result.counts[name][fold][c]
                # within a class, each speaker's share is within one utterance of proportional
                n_s = Counter(s for _, label, s in source if label == c)
                m_s = Counter(s for _, label, s in subset if label == c)
                for s in n_s:
                    assert abs(m_s[s] - m * n_s[s] / n) < 1, (name, fold, c, s, m_s[s], m, n_s[s], n)
            assert read_label_dict(os.path.join(str(tmp_path / "out"), name, fold, "dict.emo.txt")) == list(CLASSES)
        assert previous == set(source)   # frac1 is the whole training split


def test_per_class_and_too_small_or_too_large(folds, tmp_path):
    result = write_subsets(folds, str(tmp_path / "out"), per_class=[3, 9], progress=False)
    assert result.names == ["per_class3", "per_class9"]
    for fold in ("fold1", "fold2"):
        for name, n in zip(result.names, (3, 9)):
            counts = Counter(label for _, label, _ in rows_of(os.path.join(str(tmp_path / "out"), name, fold)))
            assert counts == {c: n for c in CLASSES}
    with pytest.raises(DataError, match=r"per class 10 needs 10 training utterances of class 'sad' in fold1, it has 9"):
        write_subsets(folds, str(tmp_path / "bad"), per_class=[10], progress=False)
    with pytest.raises(DataError, match=r"fraction 0.05 leaves class 'sad' of fold1 with no training utterance "
                                        r"\(it has 9\)"):
        write_subsets(folds, str(tmp_path / "bad"), fractions=[0.05, 0.5], progress=False)
    assert not os.path.exists(tmp_path / "bad" / "frac0.5")   # nothing written before the error
    with pytest.raises(DataError, match="fractions must lie in"):
        write_subsets(folds, str(tmp_path / "bad"), fractions=[0], progress=False)
    with pytest.raises(DataError, match="either fractions or per-class"):
        write_subsets(folds, str(tmp_path / "bad"), fractions=[0.5], per_class=[2], progress=False)


def tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


def test_deterministic_idempotent_and_rewritten(folds, tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    write_subsets(folds, a, fractions=[0.1, 0.5], seed=3, progress=False)
    write_subsets(folds, b, fractions=[0.1, 0.5], seed=3, progress=False)
    write_subsets(folds, c, fractions=[0.1, 0.5], seed=4, progress=False)
    assert tree(a) == tree(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, tree(a), shallow=False)
    assert not mismatch and not errors
    assert any(not filecmp.cmp(os.path.join(a, "frac0.1", f, "train.tsv"), os.path.join(c, "frac0.1", f, "train.tsv"),
                               shallow=False) for f in ("fold1", "fold2"))
    # same arguments again: nothing rewritten
    stamp = os.stat(os.path.join(a, "frac0.1", "fold1", "train.tsv")).st_mtime_ns
    again = write_subsets(folds, a, fractions=[0.1, 0.5], seed=3, progress=False)
    assert again.reused and os.stat(os.path.join(a, "frac0.1", "fold1", "train.tsv")).st_mtime_ns == stamp
    assert "up to date" in again.format_summary()
    # other arguments: rewritten, and the subsets no longer asked for are gone
    other = write_subsets(folds, a, fractions=[0.25], seed=3, progress=False)
    assert not other.reused and sorted(os.listdir(a)) == ["frac0.25", "subsets.json"]


def test_valid_test_unchanged_and_unlabelled_is_the_full_training_audio(folds, tmp_path):
    out = str(tmp_path / "out")
    write_subsets(folds, out, fractions=[0.1], progress=False)
    for fold in ("fold1", "fold2"):
        src, dst = os.path.join(folds, fold), os.path.join(out, "frac0.1", fold)
        for name in ("valid.tsv", "valid.emo", "valid.spk", "test.tsv", "test.emo", "test.spk"):
            assert filecmp.cmp(os.path.join(src, name), os.path.join(dst, name), shallow=False), name
        train = read_manifest(os.path.join(src, "train.tsv"))
        unlabelled = read_manifest(os.path.join(dst, "unlabelled.tsv"))
        assert sorted(unlabelled.audio_path(i) for i in range(len(unlabelled))) == \
            sorted(train.audio_path(i) for i in range(len(train)))
        assert len(read_manifest(os.path.join(dst, "train.tsv"))) < len(train)
    # the subset folders are fold folders cross-validation accepts
    found = find_fold_dirs(os.path.join(out, "frac0.1"))
    assert [f.name for f in found] == ["fold1", "fold2"]


def test_without_speakers_stratified_by_class(tmp_path):
    src = make_folds(str(tmp_path / "src"), folds=1, speakers=False)
    result = write_subsets(src, str(tmp_path / "out"), fractions=[0.3], progress=False)
    assert result.counts["frac0.3"]["fold1"] == {c: math.floor(0.3 * n + 0.5) for c, n in CLASSES.items()}
    assert not os.path.exists(tmp_path / "out" / "frac0.3" / "fold1" / "train.spk")


def test_fold_check_sees_bad_speakers_and_missing_unlabelled_audio(folds, tmp_path):
    out = str(tmp_path / "out")
    write_subsets(folds, out, fractions=[0.5], progress=False)
    fold = os.path.join(out, "frac0.5", "fold1")
    write_manifest(os.path.join(fold, "unlabelled.tsv"), "/", [("/nowhere/gone.wav", 16000)])
    with pytest.raises(DataError, match=r"unlabelled.tsv:2: audio file /nowhere/gone.wav not found"):
        find_fold_dirs(os.path.join(out, "frac0.5"))
    os.remove(os.path.join(fold, "unlabelled.tsv"))
    with open(os.path.join(fold, "valid.spk"), "a") as f:
        f.write("extra\n")
    with pytest.raises(DataError, match=r"valid.spk: has \d+ labels but .*valid.tsv lists"):
        find_fold_dirs(os.path.join(out, "frac0.5"))


def test_prepare_writes_speakers_only_when_known(synth_corpus, synth_folds, tmp_path):
    from fairseq_ser.data.corpora.custom import prepare_folder

    for split in ("train", "valid", "test"):
        data = load_split(str(synth_folds / "fold1"), split)
        speakers = read_speakers(str(synth_folds / "fold1"), split, len(data.manifest))
        assert speakers == [os.path.basename(p).split("_")[0] for p, _ in data.manifest.entries]
    out = str(tmp_path / "nospk")
    prepare_folder(str(synth_corpus), out, folds=2, progress=False)
    assert not [f for f in os.listdir(os.path.join(out, "fold1")) if f.endswith(".spk")]
    assert read_speakers(os.path.join(out, "fold1"), "train") is None


def test_cli_end_to_end(synth_corpus, synth_folds, tmp_path, capsys):
    out = str(tmp_path / "subsets")
    extra = str(tmp_path / "extra")
    os.makedirs(extra)
    for name in sorted(os.listdir(synth_corpus / "hap"))[:3]:   # copies: train, valid or test files of a fold
        with open(synth_corpus / "hap" / name, "rb") as f, open(os.path.join(extra, "x" + name), "wb") as g:
            g.write(f.read())
    rc = cli_main(["subset", str(synth_folds), out, "--fractions", "0.5", "1", "--seed", "2",
                   "--unlabelled", extra, "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "wrote: 2 labelled subset(s) of 2 fold(s)" in printed and "frac0.5" in printed
    assert len(read_manifest(os.path.join(out, "unlabelled", "unlabelled.tsv"))) == 3
    for fold in ("fold1", "fold2"):
        held = set()
        for split in ("valid", "test"):
            m = read_manifest(str(synth_folds / fold / f"{split}.tsv"))
            held |= {os.path.basename(p) for p, _ in m.entries}
        unlabelled = read_manifest(os.path.join(out, "frac0.5", fold, "unlabelled.tsv"))
        names = {os.path.basename(p) for p, _ in unlabelled.entries}
        train = {os.path.basename(p) for p, _ in read_manifest(str(synth_folds / fold / "train.tsv")).entries}
        assert train <= names
        # each copy is in unless it copies one of the fold's valid or test files
        copies = {n for n in names if n.startswith("x")}
        assert copies == {"x" + n for n in sorted(os.listdir(synth_corpus / "hap"))[:3] if n not in held}
    assert cli_main(["subset", str(synth_folds), str(tmp_path / "bad"), "--fractions", "0.01",
                     "--no-progress"]) == 2
    assert "leaves class" in capsys.readouterr().err
