"""Prediction on new audio: the ``EmotionClassifier`` API on arrays and ``fairseq-ser predict`` on files."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from fairseq_ser.cli.main import main
from fairseq_ser.data.audio import SAMPLE_RATE, to_mono_16k
from fairseq_ser.data.manifest import read_label_dict
from fairseq_ser.errors import AudioError
from fairseq_ser.windowing import WindowedClassifier

import inprocess


def voice(seconds, rate=SAMPLE_RATE, seed=0, channels=1):
    """A voiced-sounding test signal: a gliding harmonic tone with syllable-like loudness and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    f0 = 140 + 40 * rng.random() + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * (3 + rng.random()) * t) ** 2
    out = [0.1 * envelope * tone + 0.01 * rng.standard_normal(len(t)) for _ in range(channels)]
    wav = np.stack(out, axis=1) if channels > 1 else out[0]
    return wav.astype(np.float32)


@pytest.fixture(scope="module")
def clf(classifier_ckpt):
    from fairseq_ser import EmotionClassifier

    return EmotionClassifier.from_checkpoint(str(classifier_ckpt), device="cpu")


def assert_valid(prediction, class_names):
    assert list(prediction.probabilities) == class_names
    assert abs(sum(prediction.probabilities.values()) - 1.0) < 1e-5
    assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)


def probs(prediction):
    return np.array(list(prediction.probabilities.values()))


def test_api_downmixes_and_resamples(clf, synth_folds):
    from fairseq_ser import Windowing

    # the labels come from the checkpoint: fold1's dictionary, in its order
    assert clf.class_names == read_label_dict(str(synth_folds / "fold1" / "dict.emo.txt"))
    cases = [(8000, 1), (44100, 2), (22050, 1)]
    wavs = [voice(1.3, rate, seed=rate, channels=channels) for rate, channels in cases]
    rates = [rate for rate, _ in cases]
    results = clf.predict_batch(wavs, rates)
    references = clf.predict_batch([to_mono_16k(w, r) for w, r in zip(wavs, rates)], SAMPLE_RATE)
    for wav, rate, got, reference in zip(wavs, rates, results, references):
        assert_valid(got, clf.class_names)
        assert got.duration == pytest.approx(len(wav) / rate, abs=1e-3)
        assert got.windows == []
        np.testing.assert_allclose(probs(got), probs(reference), atol=1e-6)
        assert got.label == reference.label
    single = clf.predict(wavs[1], 44100)
    np.testing.assert_allclose(probs(single), probs(references[1]), atol=1e-5)

    # soundfile's int16 reading: the same as the float samples it stands for
    pcm = (voice(1.0, seed=3) * 32767).astype(np.int16)
    np.testing.assert_allclose(probs(clf.predict(pcm, SAMPLE_RATE)),
                               probs(clf.predict(pcm / 32768.0, SAMPLE_RATE)), atol=1e-5)

    # a different input gives different probabilities (the comparison above can fail)
    other = clf.predict(voice(1.3, seed=99) * 3, SAMPLE_RATE, Windowing(None))
    assert not np.allclose(probs(other), probs(references[0]), atol=1e-6)


def test_long_recordings_are_cut_into_windows(clf):
    from fairseq_ser import Windowing

    windowing = Windowing(window=2.0, min_window=1.0)
    long_kept = voice(7.3, seed=1)   # windows 0-2, 2-4, 4-6, 6-7.3 (1.3 s >= 1 s: kept)
    long_merged = voice(6.5, seed=2)  # 0-2, 2-4, 4-6.5 (a 0.5 s remainder joins the previous window)
    short = voice(1.8, seed=3)
    kept, merged, alone = clf.predict_batch([long_kept, long_merged, short], SAMPLE_RATE, windowing)

    assert [(w.start, w.end) for w in kept.windows] == [(0, 2), (2, 4), (4, 6), (6, 7.3)]
    assert [(w.start, w.end) for w in merged.windows] == [(0, 2), (2, 4), (4, 6.5)]
    assert alone.windows == [] and alone.duration == pytest.approx(1.8)
    for wav, result in [(long_kept, kept), (long_merged, merged)]:
        assert_valid(result, clf.class_names)
        assert result.duration == pytest.approx(len(wav) / SAMPLE_RATE)
        for w in result.windows:
            assert list(w.probabilities) == clf.class_names and w.label in clf.class_names
        # each window scores as that stretch of audio on its own
        pieces = [wav[int(round(w.start * SAMPLE_RATE)):int(round(w.end * SAMPLE_RATE))] for w in result.windows]
        separately = clf.predict_batch(pieces, SAMPLE_RATE, Windowing(None))
        rows = np.array([list(w.probabilities.values()) for w in result.windows])
        np.testing.assert_allclose(rows, np.array([probs(p) for p in separately]), atol=1e-5)
        weights = [w.end - w.start for w in result.windows]
        np.testing.assert_allclose(probs(result), np.average(rows, axis=0, weights=weights), atol=1e-6)

    overlapping = Windowing(window=2.0, hop=1.0).spans(int(5.5 * SAMPLE_RATE))
    assert [(s / SAMPLE_RATE, e / SAMPLE_RATE) for s, e in overlapping] == [(0, 2), (1, 3), (2, 4), (3, 5), (4, 5.5)]
    whole = clf.predict(long_kept, SAMPLE_RATE, Windowing(None))
    assert whole.windows == []


def test_prediction_does_not_depend_on_the_batch(clf):
    from fairseq_ser.windowing import pad_batch

    wavs = [voice(s, seed=i) for i, s in enumerate([0.6, 1.7, 1.1, 2.4])]
    # a padded batch, as on a GPU (predict batches no padding on the CPU)
    together = clf.batch_probabilities(*pad_batch(wavs))
    for wav, row in zip(wavs, together):
        np.testing.assert_allclose(probs(clf.predict(wav, SAMPLE_RATE)), row, atol=1e-5)


class Recorder(WindowedClassifier):
    """A classifier stand-in on ``device`` that records the batch shapes it is given."""

    class_names = ["a", "b"]

    def __init__(self, device):
        self.device, self.shapes = device, []

    def batch_probabilities(self, source, padding_mask):
        self.shapes.append(source.shape)
        return np.full((len(source), 2), 0.5, dtype=np.float32)


def test_batches_hold_no_padding_on_the_cpu_and_some_on_a_gpu():
    lengths = [16000, 16000, 17000, 16500, 40000, 16000]
    wavs = [np.zeros(n, dtype=np.float32) for n in lengths]
    cpu = Recorder("cpu")
    cpu.predict_proba(wavs)
    # equal lengths still share a batch; no utterance is padded
    assert sorted(cpu.shapes) == [(1, 16500), (1, 17000), (1, 40000), (3, 16000)]
    for device in ("cuda", "cuda:1"):
        gpu = Recorder(device)
        gpu.predict_proba(wavs)
        assert gpu.max_padding == 0.2 and sorted(gpu.shapes) == [(1, 40000), (5, 17000)]
    import torch

    assert Recorder(torch.device("cpu")).max_padding == 0.0


def test_unusable_arrays_are_errors_naming_them(clf):
    with pytest.raises(AudioError, match=r"input 1: .*shorter than the model's minimum of 400 samples"):
        clf.predict_batch([voice(1.0), voice(0.02)], SAMPLE_RATE)
    with pytest.raises(AudioError, match="no samples"):
        clf.predict(np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    bad = voice(1.0)
    bad[100] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        clf.predict(bad, SAMPLE_RATE)
    with pytest.raises(AudioError, match="sample rate"):
        clf.predict(voice(1.0), 0)
    # 400 samples at 16 kHz is enough; 399 is not
    clf.predict(voice(400 / SAMPLE_RATE), SAMPLE_RATE)


@pytest.fixture
def audio_folder(tmp_path):
    """wav, flac (44.1 kHz stereo), a long wav, a broken, an empty and a too-short file, and a text file."""
    root = tmp_path / "audio"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "a.wav", voice(1.2, seed=1), SAMPLE_RATE)
    sf.write(root / "sub" / "b.flac", voice(2.0, 44100, seed=2, channels=2), 44100)
    sf.write(root / "long.wav", voice(3.3, seed=3), SAMPLE_RATE, subtype="PCM_24")
    (root / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt junk that is not audio")
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "short.wav", voice(0.01, seed=4), SAMPLE_RATE)
    (root / "notes.txt").write_text("not audio\n")
    return root


def test_predict_command_writes_jsonl_with_error_entries(classifier_ckpt, audio_folder, tmp_path, clf):
    out = tmp_path / "out" / "predictions.jsonl"
    proc = inprocess.run_command(["fairseq-ser", "predict", "--checkpoint", classifier_ckpt, audio_folder,
                                  "--output", out, "--window-seconds", "1", "--no-progress", "--device", "cpu"])
    assert "predicted 3 of 6 files (3 failed)" in proc.stderr
    rows = {json.loads(line)["path"]: json.loads(line) for line in out.read_text().splitlines()}
    names = {p.split("/audio/")[1] for p in rows}
    assert names == {"a.wav", "sub/b.flac", "long.wav", "broken.wav", "empty.wav", "short.wav"}
    by_name = {p.split("/audio/")[1]: r for p, r in rows.items()}
    assert "cannot read audio" in by_name["broken.wav"]["error"]
    assert "cannot read audio" in by_name["empty.wav"]["error"]
    assert "shorter than the model's minimum" in by_name["short.wav"]["error"]
    for name in ("a.wav", "sub/b.flac", "long.wav"):
        row = by_name[name]
        assert set(row) == {"path", "duration", "label", "probabilities", "windows"}
        assert list(row["probabilities"]) == clf.class_names
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-4
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
    assert by_name["sub/b.flac"]["duration"] == pytest.approx(2.0, abs=1e-3)
    windows = by_name["long.wav"]["windows"]
    assert [(w["start"], w["end"]) for w in windows] == [(0, 1), (1, 2), (2, 3.3)]
    # the same numbers as the API on the decoded file
    from fairseq_ser import Windowing

    wav, rate = sf.read(audio_folder / "sub" / "b.flac")
    expected = clf.predict(wav, rate, Windowing(window=1.0))
    np.testing.assert_allclose(list(by_name["sub/b.flac"]["probabilities"].values()), probs(expected), atol=1e-5)


def test_predict_csv_stdout_and_exit_status(classifier_ckpt, audio_folder, tmp_path, capsys, clf):
    out = tmp_path / "predictions.csv"
    ckpt = str(classifier_ckpt)
    assert main(["predict", "--checkpoint", ckpt, str(audio_folder), str(audio_folder / "a.wav"), "-o", str(out),
                 "--window-seconds", "1", "--no-progress", "--device", "cpu"]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "type", "start", "end", "duration", "label"] + [
        f"p_{c}" for c in clf.class_names] + ["error"]
    files = [r for r in rows if r["type"] == "file"]
    assert len(files) == 6  # a.wav named twice is predicted once
    errors = {r["path"].rsplit("/", 1)[1]: r["error"] for r in files if r["error"]}
    assert set(errors) == {"broken.wav", "empty.wav", "short.wav"}
    windows = [(r["path"].rsplit("/", 1)[1], r["start"], r["end"]) for r in rows if r["type"] == "window"]
    assert windows == [("long.wav", "0.000", "1.000"), ("long.wav", "1.000", "2.000"), ("long.wav", "2.000", "3.300"),
                       ("b.flac", "0.000", "1.000"), ("b.flac", "1.000", "2.000")]
    # window rows follow their file's row
    kinds = [(r["path"].rsplit("/", 1)[1], r["type"]) for r in rows]
    assert kinds.index(("long.wav", "window")) == kinds.index(("long.wav", "file")) + 1
    for r in files:
        if not r["error"]:
            assert abs(sum(float(r[f"p_{c}"]) for c in clf.class_names) - 1) < 1e-4
            assert r["label"] in clf.class_names
    capsys.readouterr()

    # without --output: a readable line per file on stdout
    assert main(["predict", "--checkpoint", ckpt, str(audio_folder / "a.wav"), str(audio_folder / "broken.wav"),
                 "--no-progress", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{audio_folder / 'a.wav'}\t") and " s\t" in lines[0]
    assert lines[1].startswith(f"{audio_folder / 'broken.wav'}\terror: cannot read audio")

    # every file failed: exit status 1; nothing to predict or a bad output name: 2
    assert main(["predict", "--checkpoint", ckpt, str(audio_folder / "empty.wav"), "--no-progress"]) == 1
    assert main(["predict", "--checkpoint", ckpt, str(tmp_path / "no_audio_here"), "--no-progress"]) == 1
    (tmp_path / "nothing").mkdir()
    assert main(["predict", "--checkpoint", ckpt, str(tmp_path / "nothing"), "--no-progress"]) == 2
    assert main(["predict", "--checkpoint", ckpt, str(audio_folder), "-o", str(tmp_path / "x.txt")]) == 2
    assert "use a .jsonl or .csv" in capsys.readouterr().err


def test_predict_rejects_a_checkpoint_that_is_not_a_classifier(pretrained_ckpt, audio_folder):
    proc = inprocess.run_command(["fairseq-ser", "predict", "--checkpoint", pretrained_ckpt, audio_folder / "a.wav",
                                  "--no-progress"], expect_ok=False)
    assert proc.returncode == 2
    assert "not an emotion classifier" in proc.stderr and str(pretrained_ckpt) in proc.stderr


def test_length_batches_keep_padding_small():
    from fairseq_ser.inference import length_batches

    lengths = [int(s * SAMPLE_RATE) for s in [10, 2.6, 1.9, 6.7, 2.3, 10, 2.85, 2.6]]
    batches = length_batches(lengths, 160 * SAMPLE_RATE)
    # sorted by length; the jump from 2.85 s to 6.7 s starts a new batch instead of padding 5 utterances to 10 s
    assert batches.indices == [[2, 4, 1, 7, 6], [3, 0, 5]]
    valid, padded = batches.valid_samples, batches.padded_samples
    assert padded == sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert valid == sum(lengths) and 1 - valid / padded < 0.15
    # the padded-samples budget still splits batches of equal lengths
    assert length_batches([SAMPLE_RATE] * 5, 2 * SAMPLE_RATE).indices == [[0, 1], [2, 3], [4]]


def test_cpu_runs_utterances_side_by_side_with_the_same_results(clf):
    import torch

    from fairseq_ser.inference import _threads_shared_out

    wavs = [voice(s, seed=i) for i, s in enumerate([0.6, 1.7, 1.1, 2.4, 1.1, 0.9])]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert clf.parallel_batches() == 2
        done = []
        side_by_side = clf.predict_proba(wavs, progress=done.append)
        assert torch.get_num_threads() == 2 and done == [1] * len(wavs)
        torch.set_num_threads(1)
        assert clf.parallel_batches() == 1
        one_by_one = clf.predict_proba(wavs)
        np.testing.assert_allclose(side_by_side, one_by_one, atol=1e-6)
        # overlapping callers (cv scores its chains in threads) share one setting; the last restores it
        torch.set_num_threads(2)
        with _threads_shared_out():
            assert torch.get_num_threads() == 1 and clf.parallel_batches() == 2
            with _threads_shared_out():
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        # a many-core machine: at most 4 at once, its threads shared out between them
        torch.set_num_threads(8)
        assert clf.parallel_batches() == 4
        with _threads_shared_out():
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 8
    finally:
        torch.set_num_threads(before)
