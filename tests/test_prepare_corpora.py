"""`fairseq-ser prepare ravdess|cremad|msp-podcast|esd|savee` on faithful miniature trees, and the label vocabulary.

The trees (:mod:`corpus_miniatures`) have the real layouts, file-name codes
and label files, plus what real copies hold besides labelled speech; the
counts asserted here follow from the builders' docstrings.
"""

import logging
import os
import re
from collections import Counter

import pytest

import corpus_miniatures as mini
from fairseq_ser.cli import main as cli_main
from fairseq_ser.data import synthetic
from fairseq_ser.data.corpora import cremad, emodb, esd, iemocap, msp_podcast, ravdess, savee
from fairseq_ser.data.corpora.vocabulary import NAMES, VOCABULARY, check_classes, full_name
from fairseq_ser.data.manifest import load_split, read_label_dict, read_speakers
from fairseq_ser.data.prepare import ValidSpec, parse_label_map
from fairseq_ser.errors import DataError

NEW = ("ravdess", "cremad", "msp-podcast", "esd", "savee")


@pytest.fixture
def prepare_only(monkeypatch):
    # the other subcommands' modules are not needed (nor imported) for these tests
    monkeypatch.setattr(cli_main, "SUBCOMMANDS", {"prepare": cli_main.SUBCOMMANDS["prepare"]})


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("corpora"))
    return {"ravdess": mini.ravdess(root), "cremad": mini.cremad(root), "msp": mini.msp_podcast(root),
            "esd": mini.esd(os.path.join(root, "official")), "esd_flat": mini.esd(os.path.join(root, "flat"), False),
            "savee": mini.savee(root), "savee_flat": mini.savee(os.path.join(root, "flat"), flat=True)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    # one conversion cache for the module: RAVDESS's and SAVEE's files are converted once
    return str(tmp_path_factory.mktemp("cache"))


def speakers(out, fold, split):
    return Counter(read_speakers(os.path.join(out, fold), split))


def assert_speaker_independent(out, folds, valid_speaker=False):
    """No test speaker in train or valid; with a held-out validation speaker, none shared at all."""
    for fold in folds:
        train, valid, test = (set(speakers(out, fold, s)) for s in ("train", "valid", "test"))
        assert not test & (train | valid), fold
        assert not (valid_speaker and valid & train), fold


def reasons(result):
    return Counter(e.reason.split(" (")[0].split(":")[0] for e in result.excluded)


# --- the vocabulary -------------------------------------------------------------

def test_vocabulary_and_every_reader_uses_it():
    assert NAMES == ("neu", "hap", "ang", "sad", "fea", "dis", "sur", "cal", "bor", "con", "fru", "exc", "oth")
    assert full_name("cal") == "calm" and full_name("pos") == "pos"
    with pytest.raises(DataError, match=r"my corpus: classes \['pos', 'happy'\] are not in the label vocabulary"):
        check_classes(["neu", "pos", "happy", "pos"], "my corpus")
    check_classes(emodb.EMOTIONS.values(), "EmoDB")
    check_classes(synthetic.DEFAULT_CLASSES + synthetic.ALL_CLASSES, "synthetic")
    for preset in iemocap.PRESETS.values():
        check_classes(parse_label_map(preset).values(), "IEMOCAP")
    check_classes([n for n in iemocap.LABELS if n != "xxx"], "IEMOCAP labels")
    for module in (ravdess, cremad, esd, savee):
        check_classes(module.EMOTIONS.values(), module.__name__)
        for preset in module.PRESETS.values():
            check_classes(preset, module.__name__)
    check_classes([n for n in msp_podcast.EMOTIONS.values() if n != msp_podcast.NO_AGREEMENT], "MSP-Podcast")
    assert len(VOCABULARY) == 13


def test_prepare_help_lists_the_corpora(prepare_only, capsys):
    with pytest.raises(SystemExit):
        cli_main.main(["prepare", "--help"])
    text = capsys.readouterr().out
    for corpus in NEW:
        assert corpus in text
    for corpus in NEW:
        with pytest.raises(SystemExit):
            cli_main.main(["prepare", corpus, "--help"])
        assert "--classes" in capsys.readouterr().out


# --- RAVDESS --------------------------------------------------------------------

def test_ravdess_emobox_folds(trees, cache, tmp_path):
    out = str(tmp_path / "out")
    result = ravdess.prepare_ravdess(trees["ravdess"], out, cache_dir=cache, progress=False)
    assert result.class_names == ["neu", "cal", "hap", "sad", "ang", "fea", "dis", "sur"]
    assert result.converted == 264
    assert reasons(result) == Counter({"modality 01": 1, "song": 2, "file name codes outside RAVDESS's": 1,
                                       "actor 07 in the file name, but the file is in Actor_08": 1})
    assert len(result.counts) == 6
    tested = Counter()
    for k, actors in enumerate(ravdess.EMOBOX_FOLDS, start=1):
        fold = f"fold{k}"
        counts = result.counts[fold]
        assert counts["test"] == Counter(neu=4, cal=4, hap=8, sad=8, ang=8, fea=4, dis=4, sur=4)
        assert sum(counts["train"].values()) == 198 and sum(counts["valid"].values()) == 22
        assert speakers(out, fold, "test") == Counter({f"Actor_{a:02d}": 11 for a in actors})
        tested += speakers(out, fold, "test")
        assert read_label_dict(os.path.join(out, fold, "dict.emo.txt")) == result.class_names
    assert_speaker_independent(out, result.counts)
    assert tested == Counter({f"Actor_{a:02d}": 11 for a in range(1, 25)})


def test_ravdess_classes_calm_and_intensity(trees, caplog):
    tree = trees["ravdess"]
    four = ravdess.list_ravdess(tree, ravdess.ravdess_label_map("4"))
    assert four.class_names == ["neu", "hap", "ang", "sad"] and len(four.utterances) == 168
    assert four.dropped == Counter(cal=24, fea=24, dis=24, sur=24)
    merged = ravdess.list_ravdess(tree, ravdess.ravdess_label_map("8", calm="merge"))
    assert merged.class_names == ["neu", "hap", "sad", "ang", "fea", "dis", "sur"]
    assert Counter(u.label for u in merged.utterances)["neu"] == 48 and len(merged.utterances) == 264
    assert ravdess.ravdess_label_map("4", calm="merge") == {"neu": "neu", "hap": "hap", "ang": "ang",
                                                            "sad": "sad", "cal": "neu"}
    with pytest.raises(DataError, match="calm is not among these classes"):
        ravdess.ravdess_label_map("4", calm="keep")
    strong = ravdess.list_ravdess(tree, intensity="strong")
    assert len(strong.utterances) == 72 and strong.class_names == ["hap", "sad", "ang"]
    assert any("no utterance left for neu, cal, fea, dis, sur" in n for n in strong.notes)
    assert len(ravdess.list_ravdess(tree, intensity="normal").utterances) == 192
    with caplog.at_level(logging.WARNING):
        invented = ravdess.ravdess_label_map(label_map=parse_label_map("ang:neg,sad:neg,hap:pos"))
    assert "['neg', 'pos'] are not in the label vocabulary" in caplog.text
    assert ravdess.list_ravdess(tree, invented).class_names == ["neg", "pos"]
    with pytest.raises(DataError, match=r"label map: \['angry'\] are not RAVDESS classes"):
        ravdess.ravdess_label_map(label_map={"angry": "ang"})


def test_ravdess_loso_and_actor_groups(trees, cache, tmp_path):
    out = str(tmp_path / "loso")
    result = ravdess.prepare_ravdess(trees["ravdess"], out, protocol="loso", cache_dir=cache,
                                     valid=ValidSpec(mode="speaker"), progress=False)
    assert len(result.counts) == 24
    for k in range(1, 25):
        assert speakers(out, f"fold{k}", "test") == Counter({f"Actor_{k:02d}": 11})
        assert len(speakers(out, f"fold{k}", "valid")) == 1
    assert_speaker_independent(out, result.counts, valid_speaker=True)
    out = str(tmp_path / "groups")
    result = ravdess.prepare_ravdess(trees["ravdess"], out, folds=3, classes="4", cache_dir=cache, progress=False)
    assert len(result.counts) == 3
    assert all(len(speakers(out, f, "test")) == 8 for f in result.counts)
    assert_speaker_independent(out, result.counts)


def test_ravdess_cli_and_wrong_trees(trees, cache, tmp_path, prepare_only, capsys):
    out = str(tmp_path / "out")
    assert cli_main.main(["prepare", "ravdess", trees["ravdess"], out, "--cache-dir", cache, "--classes", "4",
                          "--intensity", "normal", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 6 fold(s)" in printed and "intensity normal: left out 72 utterance(s)" in printed
    assert "dropped by the label map: 96 (cal 24, dis 24, fea 24, sur 24)" in printed
    parent = os.path.dirname(trees["ravdess"])
    with pytest.raises(DataError, match=rf"{parent}: not a RAVDESS folder, no Actor_01 .. Actor_24 folders"
                       rf".*did you mean {trees['ravdess']}\?"):
        ravdess.list_ravdess(parent)
    with pytest.raises(DataError, match=f"{trees['savee']}: not a RAVDESS folder"):
        ravdess.list_ravdess(trees["savee"])


# --- CREMA-D --------------------------------------------------------------------

def test_cremad_acted_speaker_folds(trees, tmp_path, prepare_only, capsys):
    out = str(tmp_path / "out")
    assert cli_main.main(["prepare", "cremad", trees["cremad"], out, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 5 fold(s)" in printed and "labels: acted (file names)" in printed
    assert "excluded: 2 file(s)" in printed
    for k in range(1, 6):
        test = speakers(out, f"fold{k}", "test")
        assert len(test) == 2 and set(test.values()) == {12}
    assert_speaker_independent(out, [f"fold{k}" for k in range(1, 6)])
    with open(os.path.join(out, "excluded.tsv")) as f:
        excluded = dict(line.rstrip("\n").split("\t") for line in f.readlines()[1:])
    names = {os.path.basename(p): r for p, r in excluded.items()}
    assert set(names) == {"1076_MTI_SAD_XX.wav", "1001_DFA_ANG_XX (copy).wav"}
    assert names["1076_MTI_SAD_XX.wav"].startswith("unreadable")
    assert read_label_dict(os.path.join(out, "fold1", "dict.emo.txt")) == ["ang", "dis", "fea", "hap", "neu", "sad"]


def test_cremad_voted_labels(trees, tmp_path):
    result = cremad.prepare_cremad(trees["cremad"], str(tmp_path / "out"), labels="voted", classes="6",
                                   progress=False)
    tested = sum((result.counts[f"fold{k}"]["test"] for k in range(1, 6)), Counter())
    assert tested == Counter(ang=18, dis=19, fea=18, hap=19, neu=25, sad=18)
    assert reasons(result) == Counter({"VoiceVote 'A": 1, "VoiceVote 'F": 1,
                                       "no row in processedResults/summaryTable.csv": 1, "unreadable audio": 1,
                                       "file name does not follow CREMA-D's <actor>_<sentence>_<emotion>_<level>.wav "
                                       "convention": 1})
    assert any("is a tie between emotions" in e.reason for e in result.excluded)
    four = cremad.list_cremad(trees["cremad"], cremad.cremad_label_map("4"), labels="voted")
    assert four.class_names == ["neu", "hap", "ang", "sad"] and four.dropped == Counter(dis=19, fea=18)


def test_cremad_wrong_trees_and_lfs_pointers(trees, tmp_path):
    with pytest.raises(DataError, match=f"{trees['esd']}: not a CREMA-D folder, no AudioWAV folder"):
        cremad.list_cremad(trees["esd"])
    copy = tmp_path / "clone" / "AudioWAV"
    mini.tone(str(copy / "1001_DFA_ANG_XX.wav"))
    mini.text(str(copy / "1001_DFA_DIS_XX.wav"), "version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    listing = cremad.list_cremad(str(copy))   # AudioWAV itself is accepted
    assert listing.root == str(tmp_path / "clone") and len(listing.utterances) == 1
    assert "Git LFS pointer" in listing.excluded[0].reason
    with pytest.raises(DataError, match=r"summaryTable.csv: not found"):
        cremad.list_cremad(str(copy), labels="voted")
    table = tmp_path / "clone" / "processedResults" / "summaryTable.csv"
    mini.text(str(table), "name,vote\n1001_DFA_ANG_XX,A\n")
    with pytest.raises(DataError, match=f"{table}: not CREMA-D's summary table"):
        cremad.list_cremad(str(copy), labels="voted")


# --- MSP-Podcast --------------------------------------------------------------------

MSP_SPLITS = {"train": Counter(ang=2, sad=2, hap=2, sur=1, fea=1, dis=1, con=1, neu=4),
              "valid": Counter(ang=1, sad=1, hap=1, sur=1, fea=1, dis=1, con=1, neu=1),
              "test": Counter(ang=1, sad=1, hap=1, sur=1, fea=1, dis=1, con=1, neu=2),
              "test2": Counter(ang=1, hap=1, neu=1, sad=1)}


def test_msp_podcast_official_partitions(trees, tmp_path, prepare_only, capsys):
    out = str(tmp_path / "out")
    assert cli_main.main(["prepare", "msp-podcast", trees["msp"], out, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert ("Split_Set found: Development 9 (-> valid), Test1 10 (-> test), Test2 4 (-> test2), "
            "Test3 2 (labels hidden: not scored, left out), Train 17 (-> train)") in printed
    assert "dropped by the label map: 4 (oth 2, xxx 2)" in printed
    assert "1 wav file(s) in Audios/ have no label row: left out" in printed
    assert "wrote 1 fold(s)" in printed and re.search(r"^ +test2 +4 ", printed, re.M)
    fold = os.path.join(out, "official")
    assert read_label_dict(os.path.join(fold, "dict.emo.txt")) == ["ang", "sad", "hap", "sur", "fea", "dis",
                                                                   "con", "neu"]
    for split, counts in MSP_SPLITS.items():
        assert Counter(load_split(fold, split).labels) == counts
    assert "Unknown" in speakers(out, "official", "train")
    with open(os.path.join(out, "excluded.tsv")) as f:
        assert mini.MSP_MISSING_AUDIO in f.read()


@pytest.mark.parametrize("label_file", ["labels_concensus.csv", "labels_consensus.json"])
def test_msp_podcast_label_file_variants(tmp_path, label_file):
    tree = mini.msp_podcast(str(tmp_path), label_file)
    result = msp_podcast.prepare_msp_podcast(tree, str(tmp_path / "out"), progress=False)
    assert result.counts["official"] == MSP_SPLITS
    assert any(n.endswith(label_file) for n in result.notes)


def test_msp_podcast_four_classes_and_unknown_partitions(tmp_path, caplog):
    rows = mini.msp_rows()
    dev = [r for r in rows if r["Split_Set"] == "Development"]
    dev[0]["Split_Set"] = "Validation"                          # another release's name: still valid
    next(r for r in rows if r["Split_Set"] == "Train" and r["EmoClass"] == "N")["Split_Set"] = "Holdout"
    for r in rows:
        if r["Split_Set"] == "Test2":
            r["Split_Set"] = "Test1"                            # a release without Test2
    tree = mini.msp_podcast(str(tmp_path), rows=rows)
    with caplog.at_level(logging.WARNING):
        result = msp_podcast.prepare_msp_podcast(tree, str(tmp_path / "out"), classes="4", progress=False)
    assert "['Holdout'] are none of" in caplog.text
    assert any("Holdout 1 (unknown partition: left out)" in n and "Validation 1 (-> valid)" in n
               for n in result.notes)
    counts = result.counts["official"]
    assert set(counts) == {"train", "valid", "test"}
    assert counts["train"] == Counter(neu=3, hap=2, ang=2, sad=2)
    assert counts["test"] == Counter(neu=3, hap=2, ang=2, sad=2)
    assert not os.path.exists(os.path.join(tmp_path, "out", "official", "test2.tsv"))


def test_msp_podcast_wrong_trees(trees, tmp_path):
    with pytest.raises(DataError, match=f"{trees['cremad']}: not an MSP-Podcast release folder, missing "
                       "Audios/ and Labels/labels_consensus.csv"):
        msp_podcast.list_msp_podcast(trees["cremad"])
    tree = tmp_path / "msp"
    mini.tone(str(tree / "Audios" / "a.wav"))
    mini.text(str(tree / "Labels" / "labels_consensus.csv"), "FileName,EmoClass,SpkrID\na.wav,N,1\n")
    with pytest.raises(DataError, match="labels_consensus.csv: no Split_Set column"):
        msp_podcast.list_msp_podcast(str(tree))
    mini.text(str(tree / "Labels" / "labels_consensus.csv"), "FileName,EmoClass,SpkrID,Split_Set\na.wav,N,1,Train\n")
    with pytest.raises(DataError, match="no usable segment of the Development / Validation partition"):
        msp_podcast.prepare_msp_podcast(str(tree), str(tmp_path / "out"), progress=False)


# --- ESD ----------------------------------------------------------------------------

def test_esd_official_split(trees, tmp_path, prepare_only, capsys):
    out = str(tmp_path / "out")
    assert cli_main.main(["prepare", "esd", trees["esd"], out, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "protocol: the official train/evaluation/test split (not speaker-independent)" in printed
    fold = os.path.join(out, "official")
    assert {s: Counter(load_split(fold, s).labels) for s in ("train", "valid", "test")} == {"train": Counter(neu=12, ang=12, hap=12, sad=12, sur=12),
                             "valid": Counter(neu=6, ang=6, hap=6, sad=6, sur=6),
                             "test": Counter(neu=6, ang=6, hap=6, sad=6, sur=6)}
    assert speakers(out, "official", "test") == Counter({s: 5 for s in mini.ESD_SPEAKERS})
    with open(os.path.join(out, "excluded.tsv")) as f:
        lines = f.read().splitlines()
    assert len(lines) == 2 and "0012_000703.wav\tfile name is not 0011_<number>.wav" in lines[1]


def test_esd_language_and_speaker_filters(trees):
    english = esd.list_esd(trees["esd"], language="english")
    assert {u.speaker for u in english.utterances} == {"0011", "0012", "0013"}
    assert Counter(u.group for u in english.utterances) == Counter(train=30, valid=15, test=15)
    assert "speakers: 3 of 6 kept (0011, 0012, 0013)" in english.notes
    two = esd.list_esd(trees["esd"], esd.esd_label_map("4"), speakers=["0001", "0011"])
    assert len(two.utterances) == 32 and two.dropped == Counter(sur=8)
    assert two.class_names == ["neu", "hap", "ang", "sad"]
    with pytest.raises(DataError, match="no ESD speaker left"):
        esd.list_esd(trees["esd"], language="mandarin", speakers=["0011"])
    with pytest.raises(DataError, match=r"speakers \['0020'\] are not in this ESD copy"):
        esd.list_esd(trees["esd"], speakers=["0020"])


def test_esd_flat_tree_speaker_folds(trees, tmp_path):
    out = str(tmp_path / "out")
    result = esd.prepare_esd(trees["esd_flat"], out, folds=3, valid=ValidSpec(mode="speaker"), progress=False)
    assert len(result.counts) == 3 and "protocol: 3 speaker-independent fold(s)" in result.notes
    for fold in result.counts:
        assert len(speakers(out, fold, "test")) == 2 and len(speakers(out, fold, "valid")) == 1
    assert_speaker_independent(out, result.counts, valid_speaker=True)
    with pytest.raises(DataError, match="the official protocol needs the train/evaluation/test folders"):
        esd.prepare_esd(trees["esd_flat"], out, protocol="official", progress=False)


def test_esd_wrong_and_mixed_trees(trees, tmp_path):
    parent = os.path.dirname(trees["esd"])
    with pytest.raises(DataError, match=rf"{parent}: not an ESD folder, no speaker folders 0001 .. 0020"
                       rf".*did you mean {trees['esd']}\?"):
        esd.list_esd(parent)
    mixed = tmp_path / "ESD"
    mini.tone(str(mixed / "0001" / "Angry" / "train" / "0001_000351.wav"))
    mini.tone(str(mixed / "0001" / "Happy" / "0001_000701.wav"))
    with pytest.raises(DataError, match=f"{mixed / '0001' / 'Happy'}: no train/evaluation/test folders"):
        esd.list_esd(str(mixed))


# --- SAVEE --------------------------------------------------------------------------

def test_savee_leave_one_speaker_out(trees, cache, tmp_path, prepare_only, capsys):
    out = str(tmp_path / "out")
    assert cli_main.main(["prepare", "savee", trees["savee"], out, "--cache-dir", cache, "--valid", "speaker",
                          "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 4 fold(s)" in printed and "excluded: 1 file(s)" in printed
    for k, speaker in enumerate(mini.SAVEE_SPEAKERS, start=1):
        fold = f"fold{k}"
        assert speakers(out, fold, "test") == Counter({speaker: 16})
        assert speakers(out, fold, "valid") == Counter({mini.SAVEE_SPEAKERS[k % 4]: 16})
        assert Counter(load_split(os.path.join(out, fold), "test").labels) == Counter(
            ang=2, dis=2, fea=2, hap=2, neu=4, sad=2, sur=2)
    assert_speaker_independent(out, [f"fold{k}" for k in range(1, 5)], valid_speaker=True)


def test_savee_flat_layout_and_wrong_tree(trees, tmp_path):
    flat = savee.list_savee(trees["savee_flat"], savee.savee_label_map("4"))
    assert len(flat.utterances) == 40 and Counter(u.speaker for u in flat.utterances) == Counter(
        DC=10, JE=10, JK=10, KL=10)
    assert flat.dropped == Counter(dis=8, fea=8, sur=8)
    nested = savee.list_savee(os.path.join(trees["savee"], "AudioData"))   # AudioData itself
    assert len(nested.utterances) == 64 and len(nested.excluded) == 1
    with pytest.raises(DataError, match=f"{trees['msp']}: not a SAVEE folder"):
        savee.list_savee(trees["msp"])
