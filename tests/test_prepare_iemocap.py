"""`fairseq-ser prepare iemocap` on a miniature IEMOCAP tree with the real layout and line format."""

import os
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from fairseq_ser.cli import main as cli_main
from fairseq_ser.data.corpora.iemocap import (PRESETS, list_iemocap, prepare_iemocap,
                                              read_emo_evaluation, speaker_of)
from fairseq_ser.data.manifest import load_split, read_label_dict
from fairseq_ser.data.prepare import ValidSpec, parse_label_map
from fairseq_ser.errors import DataError

# labels of the utterances of every dialog, in order; 9 of 12 are in the 4 classes
DIALOG_LABELS = ["neu", "neu", "hap", "exc", "ang", "sad", "fru", "xxx", "sur", "neu", "ang", "sad"]
HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def tone(path, seconds=0.3, rate=16000, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    wav = 0.3 * np.sin(2 * np.pi * (200 + 10 * seed) * t)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, wav.astype(np.float32), rate, subtype="PCM_16")


def make_iemocap(root, missing_wav=("Ses05F_impro01_M005",)):
    """Sessions 1-5, dialogs Ses0nF_impro01 and Ses0nM_script01_1, 12 utterances each."""
    for n in range(1, 6):
        emo_dir = os.path.join(root, f"Session{n}", "dialog", "EmoEvaluation")
        os.makedirs(os.path.join(emo_dir, "Categorical"))
        # files the reader must ignore: per-annotator files below, macOS litter beside
        with open(os.path.join(emo_dir, "Categorical", f"Ses0{n}F_impro01_e1_cat.txt"), "w") as f:
            f.write("Ses01F_impro01_F000 :Neutral state; ()\n")
        with open(os.path.join(emo_dir, f"._Ses0{n}F_impro01.txt"), "wb") as f:
            f.write(b"\x00\x05\x16\x07garbage")
        for dialog in (f"Ses0{n}F_impro01", f"Ses0{n}M_script01_1"):
            lines = [HEADER]
            for i, label in enumerate(DIALOG_LABELS):
                utt = f"{dialog}_{'FM'[i % 2]}{i:03d}"
                start = 1.5 * i
                lines.append(f"[{start:.4f} - {start + 1.2:.4f}]\t{utt}\t{label}\t[2.5000, 3.0000, 2.5000]\n")
                lines.append("C-E1:\tNeutral;\t()\nC-E3:\tFrustration;\t()\nA-E1:\tval 3; act 2; dom  2;\t()\n\n")
                if utt not in missing_wav:
                    tone(os.path.join(root, f"Session{n}", "sentences", "wav", dialog, utt + ".wav"), seed=i)
            with open(os.path.join(emo_dir, dialog + ".txt"), "w") as f:
                f.writelines(lines)
    return root


@pytest.fixture(scope="module")
def iemocap(tmp_path_factory):
    return make_iemocap(str(tmp_path_factory.mktemp("iemocap")))


def session_of(path):
    return int(os.path.basename(path)[3:5])


def fold_paths(out, fold, split):
    s = load_split(os.path.join(out, fold), split)
    return [s.manifest.audio_path(i) for i in range(len(s.manifest))], s.labels


def test_label_lines_and_speakers(iemocap):
    pairs = read_emo_evaluation(os.path.join(iemocap, "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"))
    assert [label for _, label in pairs] == DIALOG_LABELS
    assert pairs[1][0] == "Ses01F_impro01_M001"
    # the speaker is the letter opening the last part, not the dialog's
    assert speaker_of("Ses01F_impro01_M001") == "Ses01M"
    assert speaker_of("Ses03M_script01_1_F004") == "Ses03F"


def test_four_class_folds(iemocap, tmp_path):
    out = str(tmp_path / "out")
    result = prepare_iemocap(iemocap, out, progress=False)
    assert result.class_names == ["neu", "hap", "ang", "sad"]
    assert sorted(os.listdir(out)) == ["excluded.tsv", "fold1", "fold2", "fold3", "fold4", "fold5"]
    # per dialog: neu 3, hap+exc 2, ang 2, sad 2; one sad wav of session 5 is missing
    assert result.dropped == Counter({"fru": 10, "xxx": 10, "sur": 10})
    assert [(os.path.basename(e.path), "wav file is missing" in e.reason) for e in result.excluded] \
        == [("Ses05F_impro01_M005.wav", True)]
    per_session = {n: Counter(neu=6, hap=4, ang=4, sad=4) for n in range(1, 6)}
    per_session[5]["sad"] = 3
    for k in range(1, 6):
        fold = f"fold{k}"
        counts = result.counts[fold]
        assert counts["test"] == per_session[k]
        training = sum((per_session[n] for n in range(1, 6) if n != k), Counter())
        assert counts["train"] + counts["valid"] == training
        # 10 % of each class, at least one
        assert counts["valid"] == Counter({c: max(1, round(0.1 * n)) for c, n in training.items()})
        test, _ = fold_paths(out, fold, "test")
        assert {session_of(p) for p in test} == {k}
        train, train_labels = fold_paths(out, fold, "train")
        valid, _ = fold_paths(out, fold, "valid")
        assert k not in {session_of(p) for p in train + valid}
        assert not set(train) & set(valid)
        assert all(os.path.isfile(p) for p in train + valid + test)
        names = read_label_dict(os.path.join(out, fold, "dict.emo.txt"))
        assert names == ["neu", "hap", "ang", "sad"]
        with open(os.path.join(out, fold, "dict.emo.txt")) as f:
            assert {line.split()[0]: int(line.split()[1]) for line in f} == dict(Counter(train_labels))
    # exc is merged into hap: the exc utterance (index 3) is labelled hap
    test, labels = fold_paths(out, "fold1", "test")
    assert labels[test.index(os.path.join(
        iemocap, "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M003.wav"))] == "hap"
    with open(os.path.join(out, "fold1", "test.tsv")) as f:
        assert f.readline().strip() == os.path.abspath(iemocap)
        assert f.readline().startswith("Session1/sentences/wav/")


def test_rerun_is_deterministic(iemocap, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    prepare_iemocap(iemocap, a, progress=False, valid=ValidSpec(seed=3))
    prepare_iemocap(iemocap, b, progress=False, valid=ValidSpec(seed=3))
    for split in ("train", "valid", "test"):
        assert fold_paths(a, "fold2", split) == fold_paths(b, "fold2", split)


def test_speaker_valid(iemocap, tmp_path):
    out = str(tmp_path / "out")
    prepare_iemocap(iemocap, out, progress=False, valid=ValidSpec(mode="speaker"))
    expected = {1: "Ses02F", 2: "Ses03M", 3: "Ses04F", 4: "Ses05M", 5: "Ses01F"}
    for k, speaker in expected.items():
        valid, _ = fold_paths(out, f"fold{k}", "valid")
        train, _ = fold_paths(out, f"fold{k}", "train")
        utt = lambda p: os.path.splitext(os.path.basename(p))[0]  # noqa: E731
        assert {speaker_of(utt(p)) for p in valid} == {speaker}
        assert speaker not in {speaker_of(utt(p)) for p in train}
        assert k not in {session_of(p) for p in valid + train}


def test_subset_and_presets(iemocap, tmp_path):
    improvised = list_iemocap(iemocap, subset="improvised")
    assert len(improvised.utterances) == 44 and all("impro" in u.path for u in improvised.utterances)
    scripted = list_iemocap(iemocap, subset="scripted")
    assert len(scripted.utterances) == 45 and all("script" in u.path for u in scripted.utterances)

    out = str(tmp_path / "six")
    result = prepare_iemocap(iemocap, out, label_map=parse_label_map(PRESETS["6"]), progress=False)
    assert result.class_names == ["neu", "hap", "ang", "sad", "exc", "fru"]
    assert result.counts["fold3"]["test"] == Counter(neu=6, hap=2, exc=2, ang=4, sad=4, fru=2)
    assert read_label_dict(os.path.join(out, "fold5", "dict.emo.txt")) == result.class_names

    with pytest.raises(DataError, match="not IEMOCAP labels"):
        list_iemocap(iemocap, label_map=parse_label_map("neu,happy"))


def test_bad_layout_names_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list_iemocap(str(tmp_path / "nowhere"))
    root = tmp_path / "partial"
    for n in (1, 2, 3):
        (root / f"Session{n}" / "sentences" / "wav").mkdir(parents=True)
        (root / f"Session{n}" / "dialog" / "EmoEvaluation").mkdir(parents=True)
    (root / "Session3" / "dialog" / "EmoEvaluation").rmdir()
    with pytest.raises(DataError) as e:
        list_iemocap(str(root))
    message = str(e.value)
    assert "Session4" in message and "Session5" in message
    assert os.path.join("Session3", "dialog", "EmoEvaluation") in message
    assert "Session1" not in message.split("missing")[1].split("(")[0]


@pytest.fixture
def prepare_only(monkeypatch):
    # the other subcommands' modules are not needed (nor imported) for these tests
    monkeypatch.setattr(cli_main, "SUBCOMMANDS", {"prepare": cli_main.SUBCOMMANDS["prepare"]})


def test_cli(iemocap, tmp_path, capsys, prepare_only):
    assert cli_main.main(["prepare", "iemocap", str(tmp_path / "missing"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "fairseq-ser prepare: error:" in err and "IEMOCAP folder not found" in err

    out = str(tmp_path / "out")
    assert cli_main.main(["prepare", "iemocap", iemocap, out, "--no-progress",
                          "--classes", "5", "--valid", "speaker"]) == 0
    printed = capsys.readouterr().out
    assert "fold5" in printed and "fru" in printed and "excluded: 1 file" in printed
    assert read_label_dict(os.path.join(out, "fold1", "dict.emo.txt")) == ["neu", "hap", "ang", "sad", "fru"]
