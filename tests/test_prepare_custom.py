"""`fairseq-ser prepare folder` and `prepare json`, audio conversion and exclusion of bad files."""

import json
import logging
import os
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from fairseq_ser.cli import main as cli_main
from fairseq_ser.data import prepare as prepare_module
from fairseq_ser.data.corpora.custom import prepare_folder, prepare_json
from fairseq_ser.data.manifest import load_split, read_label_dict
from fairseq_ser.data.prepare import ValidSpec
from fairseq_ser.errors import DataError

LABELS = ("angry", "happy", "neutral")
SPEAKERS = [f"spk{i:02d}" for i in range(1, 7)]


def tone(path, seconds=0.4, rate=16000, channels=1, subtype="PCM_16", fmt=None, amplitude=0.3):
    t = np.arange(int(round(seconds * rate))) / rate
    wav = amplitude * np.sin(2 * np.pi * 220 * t)
    if channels > 1:
        wav = np.stack([wav] * channels, axis=1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, wav.astype(np.float32), rate, subtype=subtype, format=fmt)
    return path


def make_synthetic(root, per_speaker=2):
    """The project's synthetic layout: DIR/<label>/<speaker>_<label>_<NNN>.wav."""
    for label in LABELS:
        for s in SPEAKERS:
            for n in range(per_speaker):
                tone(os.path.join(root, label, f"{s}_{label}_{n:03d}.wav"))
    return root


def entries(out, fold, split):
    s = load_split(os.path.join(out, fold), split)
    return [(s.manifest.audio_path(i), n) for i, (_, n) in enumerate(s.manifest.entries)], s.labels


def speakers_of(out, fold, split):
    return {os.path.basename(p)[:5] for p, _ in entries(out, fold, split)[0]}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic(str(tmp_path_factory.mktemp("synth")))


@pytest.fixture
def prepare_only(monkeypatch):
    # the other subcommands' modules are not needed (nor imported) for these tests
    monkeypatch.setattr(cli_main, "SUBCOMMANDS", {"prepare": cli_main.SUBCOMMANDS["prepare"]})


def test_folder_cli_speaker_folds(synthetic, tmp_path, capsys, prepare_only):
    out = str(tmp_path / "out")
    assert cli_main.main(["prepare", "folder", synthetic, out, "--speaker-regex", r"^(spk\d+)_",
                          "--no-progress"]) == 0
    assert "fold5" in capsys.readouterr().out
    tested = []
    for k in range(1, 6):
        test, train, valid = (speakers_of(out, f"fold{k}", s) for s in ("test", "train", "valid"))
        assert not test & (train | valid)
        tested += sorted(test)
        assert read_label_dict(os.path.join(out, f"fold{k}", "dict.emo.txt")) == list(LABELS)
    assert sorted(tested) == SPEAKERS


def test_folder_single_split_and_stale_folds(synthetic, tmp_path):
    out = str(tmp_path / "out")
    prepare_folder(synthetic, out, speaker_regex=r"^(?P<speaker>spk\d+)_", folds=3, progress=False)
    result = prepare_folder(synthetic, out, speaker_regex=r"^(?P<speaker>spk\d+)_", folds=1,
                            valid=ValidSpec(mode="speaker"), progress=False)
    # fold2 and fold3 of the earlier run are gone
    assert sorted(d for d in os.listdir(out) if d.startswith("fold")) == ["fold1"]
    test, valid = speakers_of(out, "fold1", "test"), speakers_of(out, "fold1", "valid")
    assert len(test) == 2 and len(valid) == 1 and not test & valid
    assert sum(sum(c.values()) for c in result.counts["fold1"].values()) == 36


def test_label_regex_and_random_folds(synthetic, tmp_path, caplog):
    out = str(tmp_path / "out")
    with caplog.at_level(logging.WARNING):
        result = prepare_folder(synthetic, out, label_regex=r"_(?P<label>[a-z]+)_\d+\.wav$",
                                label_map={"angry": "ang", "happy": "hap"}, progress=False)
    assert "NOT speaker-independent" in caplog.text
    assert result.class_names == ["ang", "hap"] and result.dropped == Counter(neutral=12)
    test_files = []
    for k in range(1, 6):
        counts = result.counts[f"fold{k}"]
        assert sum(counts["test"].values()) in (4, 5)
        test_files += [p for p, _ in entries(out, f"fold{k}", "test")[0]]
    assert len(test_files) == len(set(test_files)) == 24


def test_conversion_and_cache(tmp_path):
    src = tmp_path / "data"
    native = tone(str(src / "a" / "native.wav"))
    to_convert = [
        tone(str(src / "a" / "stereo24.wav"), rate=44100, channels=2, subtype="PCM_24"),
        tone(str(src / "b" / "float.wav"), subtype="FLOAT"),
        tone(str(src / "b" / "clip.flac"), fmt="FLAC"),
        tone(str(src / "a" / "narrow.wav"), rate=8000),
        tone(str(src / "b" / "loud.wav"), subtype="FLOAT", amplitude=3.0),
    ]
    out, cache = str(tmp_path / "out"), str(tmp_path / "cache")
    first = prepare_folder(str(src), out, folds=2, cache_dir=cache, progress=False)
    assert first.converted == len(to_convert) and not first.excluded
    listed = {}
    for split in ("train", "valid", "test"):
        for path, n in entries(out, "fold1", split)[0] + entries(out, "fold2", split)[0]:
            listed[path] = n
    assert listed[native] == 6400
    cached = sorted(p for p in listed if p != native)
    assert len(cached) == 5 and all(os.path.dirname(p) == cache for p in cached)
    for path in cached:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        assert info.frames == listed[path] == 6400
    loud = next(p for p in cached if os.path.basename(p).startswith("loud-"))
    assert 0.9 < np.abs(sf.read(loud)[0]).max() <= 1.0    # scaled down, not wrapped round
    with open(os.path.join(out, "fold1", "train.tsv")) as f:
        assert f.readline().strip() == str(src)

    stamps = {p: os.stat(p).st_mtime_ns for p in cached}
    prepare_folder(str(src), out, folds=2, cache_dir=cache, progress=False)
    assert {p: os.stat(p).st_mtime_ns for p in cached} == stamps    # reused, not rewritten
    # a changed source is converted again
    tone(str(src / "a" / "narrow.wav"), rate=8000, seconds=0.5)
    prepare_folder(str(src), out, folds=2, cache_dir=cache, progress=False)
    narrow = next(p for p in cached if os.path.basename(p).startswith("narrow-"))
    assert sf.info(narrow).frames == 8000


def test_bad_files_are_excluded(tmp_path):
    src = tmp_path / "data"
    for label in ("x", "y"):
        for n in range(5):
            tone(str(src / label / f"ok{n}.wav"))
    (src / "x" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 3)
    sf.write(str(src / "x" / "empty.wav"), np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    sf.write(str(src / "y" / "zeros.wav"), np.zeros(8000, dtype=np.float32), 16000, subtype="PCM_16")
    tone(str(src / "y" / "short.wav"), seconds=0.05)
    tone(str(src / "y" / "short44k.wav"), seconds=0.05, rate=44100, channels=2)
    tone(str(src / "toplevel.wav"))
    (src / "x" / "notes.txt").write_text("not audio")
    out = str(tmp_path / "out")
    result = prepare_folder(str(src), out, folds=2, progress=False)
    reasons = {os.path.basename(e.path): e.reason for e in result.excluded}
    assert set(reasons) == {"corrupt.wav", "empty.wav", "zeros.wav", "short.wav", "short44k.wav",
                            "toplevel.wav"}
    assert reasons["corrupt.wav"].startswith("unreadable")
    assert reasons["empty.wav"].startswith("empty")
    assert reasons["zeros.wav"].startswith("silent")
    assert reasons["short.wav"].startswith("too short")
    assert reasons["short44k.wav"].startswith("too short")
    assert reasons["toplevel.wav"] == "not inside a label folder"
    total = sum(sum(result.counts[f"fold{k}"]["test"].values()) for k in (1, 2))
    assert total == 10
    with open(os.path.join(out, "excluded.tsv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "path\treason" and len(lines) == 7
    assert all(len(line.split("\t")) == 2 for line in lines)


def test_interrupted_fold_is_not_left_behind(synthetic, tmp_path, monkeypatch):
    out = str(tmp_path / "out")

    def failing(out_dir, split, *args, **kwargs):
        if split == "test":
            raise KeyboardInterrupt
        return real(out_dir, split, *args, **kwargs)

    real = prepare_module.write_split
    monkeypatch.setattr(prepare_module, "write_split", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare_folder(synthetic, out, speaker_regex=r"^(spk\d+)_", progress=False)
    assert [d for d in os.listdir(out) if d != "excluded.tsv"] == []


def test_json_splits(synthetic, tmp_path, prepare_only):
    files = sorted(os.path.join(label, f) for label in LABELS for f in os.listdir(os.path.join(synthetic, label)))
    label = lambda f: f.split(os.sep)[0]  # noqa: E731
    by_speaker = lambda *s: {f: label(f) for f in files if os.path.basename(f)[:5] in s}  # noqa: E731
    one = os.path.join(synthetic, "one.json")
    with open(one, "w") as f:
        json.dump({"Train": by_speaker("spk01", "spk02", "spk03", "spk04"),
                   "Val": by_speaker("spk05"), "Test": by_speaker("spk06")}, f)
    two = str(tmp_path / "two.json")    # elsewhere, with absolute paths and no Val
    with open(two, "w") as f:
        json.dump({"Train": {os.path.join(synthetic, k): v for k, v in by_speaker(*SPEAKERS[1:]).items()},
                   "Test": {os.path.join(synthetic, k): v for k, v in by_speaker("spk01").items()}}, f)
    out = str(tmp_path / "out")
    assert cli_main.main(["prepare", "json", one, two, out, "--no-progress"]) == 0
    assert speakers_of(out, "fold1", "valid") == {"spk05"}
    assert speakers_of(out, "fold1", "test") == {"spk06"}
    assert speakers_of(out, "fold2", "test") == {"spk01"}
    valid, labels = entries(out, "fold2", "valid")
    assert Counter(labels) == Counter({lab: 1 for lab in LABELS})    # 10 % of 10 per class
    train = entries(out, "fold2", "train")[0]
    assert not {p for p, _ in valid} & {p for p, _ in train}

    single = prepare_json([one], str(tmp_path / "single"), progress=False)
    assert list(single.counts) == ["fold1"]
    with pytest.raises(DataError, match="Train and Test are required"):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"Train": {"a.wav": "x"}}))
        prepare_json([str(bad)], str(tmp_path / "x"), progress=False)
