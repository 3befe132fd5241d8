"""Bad training inputs give clear errors naming the file and the problem."""

import shutil

import numpy as np
import pytest
import soundfile as sf

from fairseq_ser.errors import AudioError, DataError
from builders import make_task


@pytest.fixture
def fold(synth_folds, tmp_path):
    """A private copy of fold1 that a test may break."""
    dst = tmp_path / "fold"
    shutil.copytree(synth_folds / "fold1", dst)
    return dst


def test_good_fold_loads_with_class_weights(fold):
    task = make_task(fold)
    task.load_dataset("train")
    dataset = task.datasets["train"]
    batch = dataset.collater([dataset[i] for i in range(3)])
    assert batch["target"].shape == (3,)
    assert batch["net_input"]["source"].shape[0] == 3
    weights = task.class_weights
    assert weights.sum().item() == pytest.approx(1.0)
    assert len(weights) == len(task.class_names)


def test_missing_audio_file_named(fold):
    lines = (fold / "valid.tsv").read_text().splitlines()
    victim = lines[1].split("\t")[0]
    lines[1] = "does/not/exist.wav\t16000"
    (fold / "valid.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"valid\.tsv: 1 audio file\(s\) not found.*does/not/exist\.wav"):
        make_task(fold).load_dataset("valid")
    assert victim  # the manifest really had a first row


def test_label_count_mismatch(fold):
    labels = (fold / "valid.emo").read_text().splitlines()
    (fold / "valid.emo").write_text("\n".join(labels[:-1]) + "\n")
    with pytest.raises(DataError, match=r"valid\.emo: has \d+ labels but .*valid\.tsv lists \d+ utterances"):
        make_task(fold).load_dataset("valid")


def test_label_not_in_dictionary(fold):
    labels = (fold / "valid.emo").read_text().splitlines()
    labels[1] = "bored"
    (fold / "valid.emo").write_text("\n".join(labels) + "\n")
    with pytest.raises(DataError, match=r"valid\.emo:2: label 'bored' is not in the dictionary"):
        make_task(fold).load_dataset("valid")


def test_empty_split(fold):
    root = (fold / "valid.tsv").read_text().splitlines()[0]
    (fold / "valid.tsv").write_text(root + "\n")
    (fold / "valid.emo").write_text("")
    with pytest.raises(DataError, match=r"valid\.tsv: the split is empty"):
        make_task(fold).load_dataset("valid")


def test_missing_dictionary(fold):
    (fold / "dict.emo.txt").unlink()
    with pytest.raises(DataError, match=r"dict\.emo\.txt: label dictionary not found"):
        make_task(fold)


def test_malformed_manifest_line(fold):
    lines = (fold / "train.tsv").read_text().splitlines()
    lines[2] = lines[2].replace("\t", " ")
    (fold / "train.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train\.tsv:3: expected 'relpath<TAB>num_samples'"):
        make_task(fold).load_dataset("train")


def test_corrupt_wav_named_when_read(fold, tmp_path):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    lines = (fold / "valid.tsv").read_text().splitlines()
    lines[1] = f"{bad}\t16000"
    (fold / "valid.tsv").write_text("\n".join(lines) + "\n")
    task = make_task(fold)
    task.load_dataset("valid")
    with pytest.raises(AudioError, match=r"corrupt\.wav: cannot read audio"):
        task.datasets["valid"][0]


def test_short_utterances_skipped_with_their_labels(fold, tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, np.full(200, 0.1, dtype=np.float32), 16000)
    lines = (fold / "train.tsv").read_text().splitlines()
    labels = (fold / "train.emo").read_text().splitlines()
    lines.insert(1, f"{short}\t200")
    labels.insert(0, "sad")
    (fold / "train.tsv").write_text("\n".join(lines) + "\n")
    (fold / "train.emo").write_text("\n".join(labels) + "\n")
    task = make_task(fold)
    task.load_dataset("train")
    dataset = task.datasets["train"]
    assert len(dataset) == len(labels) - 1
    # the short clip's label went with it: the rest stay aligned with their audio
    assert dataset.targets.tolist() == [task.class_names.index(x) for x in labels[1:]]
    assert dataset.sizes.min() >= 400


def test_non_16k_audio_in_a_manifest_is_resampled(fold, tmp_path):
    wav = tmp_path / "stereo44k.wav"
    t = np.arange(44100) / 44100
    sf.write(wav, np.stack([np.sin(2 * np.pi * 220 * t)] * 2, axis=1).astype(np.float32) * 0.3, 44100)
    lines = (fold / "valid.tsv").read_text().splitlines()
    lines[1] = f"{wav}\t16000"
    (fold / "valid.tsv").write_text("\n".join(lines) + "\n")
    task = make_task(fold)
    task.load_dataset("valid")
    assert task.datasets["valid"][0]["source"].shape == (16000,)
