"""Extra unlabelled audio and the manifests of the label-free stages (fairseq_ser.data.unlabelled).

The rule tested hardest: no valid or test utterance of a fold ever reaches an
adaptation manifest, whether the extra audio names the file itself, a link
to it, or a copy of it under another name.
"""

import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from fairseq_ser.data.manifest import read_manifest, write_label_dict, write_manifest, write_split
from fairseq_ser.data.subsets import write_subsets
from fairseq_ser.data.unlabelled import adaptation_rows, file_sha1, prepare_unlabelled, write_adaptation_dir
from fairseq_ser.errors import DataError


def tone(path, seconds=0.3, rate=16000, channels=1, freq=220.0, subtype="PCM_16"):
    t = np.arange(int(seconds * rate)) / rate
    wav = 0.3 * np.sin(2 * np.pi * freq * t)
    if channels > 1:
        wav = np.stack([wav * (c + 1) / channels for c in range(channels)], axis=1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, wav, rate, subtype=subtype)
    return path


def make_fold(root):
    """``root/folds/fold1`` of real 16 kHz wavs: 4 train, 2 valid, 2 test, every file a different tone."""
    audio = os.path.join(root, "corpus")
    fold = os.path.join(root, "folds", "fold1")
    os.makedirs(fold)
    freq = iter(range(200, 2000, 37))
    splits = {}
    for split, n in (("train", 4), ("valid", 2), ("test", 2)):
        rows = []
        for i in range(n):
            label = ("neu", "ang")[i % 2]
            name = f"{split}_{i}.wav"
            tone(os.path.join(audio, name), seconds=0.25 + 0.01 * i, freq=next(freq))
            rows.append((name, sf.info(os.path.join(audio, name)).frames, label))
        write_split(fold, split, audio, rows)
        splits[split] = rows
    write_label_dict(os.path.join(fold, "dict.emo.txt"), ["neu", "ang"], {"neu": 2, "ang": 2})
    return audio, fold


def real_paths(manifest_path):
    m = read_manifest(manifest_path)
    return [os.path.realpath(m.audio_path(i)) for i in range(len(m))]


def test_prepare_unlabelled_converts_and_excludes(tmp_path):
    src = tmp_path / "extra"
    ok = tone(str(src / "a" / "mono16k.wav"))
    stereo = tone(str(src / "b" / "stereo22k.wav"), seconds=0.5, rate=22050, channels=2)
    tone(str(src / "b" / "short.wav"), seconds=0.02)
    (src / "notes.txt").write_text("not audio")
    listed = tmp_path / "listed.tsv"
    other = tone(str(tmp_path / "elsewhere" / "other.flac"), subtype="PCM_16")
    write_manifest(str(listed), str(tmp_path / "elsewhere"), [("other.flac", 4800), (ok, 4800)])
    out = str(tmp_path / "out")
    manifest = prepare_unlabelled([str(src), str(listed)], out, progress=False)
    m = read_manifest(manifest)
    assert m.root == "/" and len(m) == 3   # mono16k once (named twice), stereo22k, other.flac; short excluded
    by_source = dict(m.entries)
    assert by_source[ok] == 4800                      # canonical: used in place
    converted = [p for p in by_source if p not in (ok,)]
    assert all(p.startswith(os.path.join(out, "audio_cache")) for p in converted)
    for p in converted:
        info = sf.info(p)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert 8000 in by_source.values()                 # 0.5 s at 22.05 kHz -> 8000 samples at 16 kHz
    assert os.path.realpath(other) not in by_source   # a FLAC is converted too
    excluded = open(os.path.join(out, "excluded.tsv")).read()
    assert "short.wav\ttoo short" in excluded
    assert "mono16k" not in excluded and "notes.txt" not in excluded
    with pytest.raises(DataError, match=r"/no/such/folder: unlabelled audio not found"):
        prepare_unlabelled(["/no/such/folder"], out, progress=False)
    with pytest.raises(DataError, match="every one of the 1 audio files was excluded"):
        prepare_unlabelled([str(src / "b" / "short.wav")], str(tmp_path / "out2"), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        prepare_unlabelled([str(tmp_path / "empty")], str(tmp_path / "out3"), progress=False)


def test_no_valid_or_test_utterance_reaches_an_adaptation_manifest(tmp_path):
    audio, fold = make_fold(str(tmp_path))
    extra_dir = tmp_path / "extra"
    extra_dir.mkdir()
    shutil.copyfile(os.path.join(audio, "test_0.wav"), extra_dir / "renamed_test.wav")     # copy of a test file
    shutil.copyfile(os.path.join(audio, "valid_1.wav"), extra_dir / "renamed_valid.wav")   # copy of a valid file
    os.symlink(os.path.join(audio, "test_1.wav"), extra_dir / "link_test.wav")              # link to a test file
    new = tone(str(extra_dir / "new.wav"), seconds=0.26, freq=3000)   # test_1's length, other content
    n_test1 = sf.info(os.path.join(audio, "test_1.wav")).frames
    assert sf.info(new).frames == n_test1
    rows = [(os.path.join(audio, "test_0.wav"), sf.info(os.path.join(audio, "test_0.wav")).frames),   # a test file
            (os.path.join(audio, "train_2.wav"),   # a train file again
             sf.info(os.path.join(audio, "train_2.wav")).frames)]
    for name in ("renamed_test.wav", "renamed_valid.wav", "link_test.wav", "new.wav"):
        rows.append((str(extra_dir / name), sf.info(str(extra_dir / name)).frames))
    extra = str(tmp_path / "extra.tsv")
    write_manifest(extra, "/", rows)

    got = adaptation_rows(fold, [extra])
    assert (got.labelled, got.unlabelled, got.extra) == (4, 0, 1)
    assert (got.dropped_path, got.dropped_content, got.duplicates) == (2, 2, 1)
    assert [os.path.basename(p) for p, _ in got.rows] == ["train_0.wav", "train_1.wav", "train_2.wav",
                                                          "train_3.wav", "new.wav"]
    out = str(tmp_path / "adapt")
    described = write_adaptation_dir(fold, out, [extra])
    assert "5 files: 4 labelled training, 0 unlabelled training, 1 extra" in described.describe()
    held = {os.path.realpath(os.path.join(audio, f"{s}_{i}.wav")) for s in ("valid", "test") for i in range(2)}
    held_content = {file_sha1(p) for p in held}
    listed = real_paths(os.path.join(out, "train.tsv"))
    assert not set(listed) & held
    assert not {file_sha1(p) for p in listed} & held_content
    assert sorted(os.listdir(out)) == ["dict.emo.txt", "train.tsv", "valid.emo", "valid.tsv"]
    assert open(os.path.join(out, "valid.tsv")).read() == open(os.path.join(fold, "valid.tsv")).read()

    # a subset's unlabelled.tsv obeys the same rule, and so does the adaptation folder built on the subset
    subsets = str(tmp_path / "subsets")
    write_subsets(os.path.dirname(fold), subsets, fractions=[0.5], unlabelled=[extra], progress=False)
    sub = os.path.join(subsets, "frac0.5", "fold1")
    assert not set(real_paths(os.path.join(sub, "unlabelled.tsv"))) & held
    on_subset = adaptation_rows(sub, [extra])
    assert (on_subset.labelled, on_subset.unlabelled, on_subset.extra) == (2, 3, 0)   # the rest of train, new.wav
    assert not {os.path.realpath(p) for p, _ in on_subset.rows} & held
    assert not {file_sha1(p) for p, _ in on_subset.rows} & held_content


def test_adaptation_dir_is_rewritten_only_when_it_changes(tmp_path):
    audio, fold = make_fold(str(tmp_path))
    out = str(tmp_path / "adapt")
    write_adaptation_dir(fold, out)
    stamp = os.stat(os.path.join(out, "train.tsv")).st_mtime_ns
    write_adaptation_dir(fold, out)
    assert os.stat(os.path.join(out, "train.tsv")).st_mtime_ns == stamp
    extra = str(tmp_path / "extra.tsv")
    write_manifest(extra, "/", [(tone(str(tmp_path / "x" / "more.wav"), freq=2500), 4800)])
    assert write_adaptation_dir(fold, out, [extra]).extra == 1
    assert len(read_manifest(os.path.join(out, "train.tsv"))) == 5
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".adapt")]   # no temporary folder left
