"""ONNX export, the predictor without torch or fairseq, and int8 quantization."""

import json
import shutil

import numpy as np
import onnx
import pytest
import soundfile as sf

from fairseq_ser.data.audio import SAMPLE_RATE
from fairseq_ser.data.synthetic import EMOTIONS, make_speaker, synthesize
from fairseq_ser.errors import CheckpointError, SerError
from fairseq_ser.onnx_predictor import METADATA_KEYS, QUANTIZATION_KEY, OnnxEmotionClassifier
from fairseq_ser.windowing import Windowing, pad_batch

import commands
import inprocess

STORED_WINDOWING = Windowing(window=1.5, min_window=0.5)


def speech(seconds, seed):
    """A generated utterance of ``seconds`` (a different speaker and emotion for each seed)."""
    rng = np.random.default_rng(seed)
    label = sorted(EMOTIONS)[seed % len(EMOTIONS)]
    wav = synthesize(rng, make_speaker(1, seed), label, max(seconds, 0.5))[0].astype(np.float32)
    return wav[:int(round(seconds * SAMPLE_RATE))]


@pytest.fixture(scope="module")
def clf(classifier_ckpt):
    from fairseq_ser import EmotionClassifier

    return EmotionClassifier.from_checkpoint(str(classifier_ckpt), device="cpu")


@pytest.fixture(scope="module")
def exported(classifier_ckpt, tmp_path_factory):
    from fairseq_ser.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    report = export_onnx(str(classifier_ckpt), str(out), windowing=STORED_WINDOWING)
    return out, report


@pytest.fixture(scope="module")
def onnx_clf(exported):
    return OnnxEmotionClassifier.from_file(str(exported[0]))


def test_export_matches_pytorch_alone_and_in_padded_batches(exported, clf, onnx_clf):
    path, report = exported
    assert report.path == str(path) and path.is_file() and report.size_bytes == path.stat().st_size
    assert report.max_diff_single <= 1e-4 and report.max_diff_padded <= 1e-4
    assert "EmoDB" in report.verified_on or "generated" in report.verified_on

    # our own check, on other audio: lengths of odd and even frame counts, from 25 ms to 4 s
    audio = [speech(s, seed) for seed, s in enumerate([0.025, 0.6, 1.37, 2.2, 4.0])]
    alone = np.stack([clf.batch_probabilities(*pad_batch([a]))[0] for a in audio])
    single = np.stack([onnx_clf.batch_probabilities(*pad_batch([a]))[0] for a in audio])
    together = onnx_clf.batch_probabilities(*pad_batch(audio))
    np.testing.assert_allclose(single, alone, atol=1e-4, rtol=0)
    np.testing.assert_allclose(together, alone, atol=1e-4, rtol=0)
    # a window's prediction does not depend on its batch (the padded group-norm CNN is in the graph)
    np.testing.assert_allclose(together, single, atol=1e-5, rtol=0)
    # and the inputs are told apart (the comparisons above can fail)
    assert np.abs(single - single[0]).max() > 1e-3


def test_metadata_and_the_python_api(exported, clf, onnx_clf, classifier_ckpt):
    meta = {p.key: p.value for p in onnx.load(str(exported[0])).metadata_props}
    assert set(METADATA_KEYS) <= set(meta)
    assert meta["fairseq_ser.format"] == "1"
    assert json.loads(meta["fairseq_ser.class_names"]) == clf.class_names == onnx_clf.class_names
    assert json.loads(meta["fairseq_ser.windowing"]) == {"window": 1.5, "hop": None, "min_window": 0.5}
    assert meta["fairseq_ser.checkpoint"] == classifier_ckpt.name
    assert meta["fairseq_ser.sample_rate"] == "16000"
    assert onnx_clf.windowing == STORED_WINDOWING and onnx_clf.device == "cpu"
    graph = onnx.load(str(exported[0])).graph
    assert [i.name for i in graph.input] == ["waveforms", "padding_mask"]
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim] == ["batch", "samples"]

    # predict_batch: resampling, downmixing and the stored windowing, as the torch classifier does them
    wavs = [speech(4.1, 7), np.stack([speech(1.2, 8)] * 2, axis=1), speech(2.0, 9)[::2].copy()]
    rates = [SAMPLE_RATE, SAMPLE_RATE, 8000]
    got = onnx_clf.predict_batch(wavs, rates)
    expected = clf.predict_batch(wavs, rates, STORED_WINDOWING)
    assert [(w.start, w.end) for w in got[0].windows] == [(0, 1.5), (1.5, 3.0), (3.0, 4.1)]
    for g, e in zip(got, expected):
        assert g.label == e.label and g.duration == pytest.approx(e.duration)
        np.testing.assert_allclose(list(g.probabilities.values()), list(e.probabilities.values()), atol=1e-4)
        assert [(w.start, w.end, w.label) for w in g.windows] == [(w.start, w.end, w.label) for w in e.windows]
    one = onnx_clf.predict(wavs[2], 8000, Windowing(None))
    assert one.windows == [] and one.label in clf.class_names


def test_export_with_input_normalisation_attentive_pooling_and_layer_sum(pretrained_ckpt, synth_folds, tmp_path):
    from checkpoints import make_classifier

    from fairseq_ser import EmotionClassifier
    from fairseq_ser.onnx_export import export_classifier

    ckpt = make_classifier(str(pretrained_ckpt), str(synth_folds / "fold1"), str(tmp_path / "clf.pt"),
                           ["model.pooling=attentive_stats", "model.weighted_layer_sum=true"])
    torch_clf = EmotionClassifier.from_checkpoint(ckpt, device="cpu")
    torch_clf.model.normalize_input = True  # as for a backbone pretrained with task.normalize=true
    report = export_classifier(torch_clf, str(tmp_path / "variant.onnx"))
    assert max(report.max_diff_single, report.max_diff_padded) <= 1e-4
    audio = [speech(0.9, 1) * 5, speech(2.3, 2) * 0.01]  # normalisation makes the scale irrelevant
    got = OnnxEmotionClassifier.from_file(report.path).batch_probabilities(*pad_batch(audio))
    alone = np.stack([torch_clf.batch_probabilities(*pad_batch([a]))[0] for a in audio])
    np.testing.assert_allclose(got, alone, atol=1e-4, rtol=0)


def test_refusals_name_the_file(pretrained_ckpt, exported, tmp_path, clf):
    from fairseq_ser.onnx_export import export_classifier, export_onnx

    # a checkpoint that is not a classifier
    with pytest.raises(CheckpointError, match=rf"{pretrained_ckpt}: .*not an emotion classifier"):
        export_onnx(str(pretrained_ckpt), str(tmp_path / "x.onnx"))
    assert not (tmp_path / "x.onnx").exists()

    # a failed check removes the file
    with pytest.raises(SerError, match=r"differ from PyTorch's by up to .*the file was removed"):
        export_classifier(clf, str(tmp_path / "strict.onnx"), tolerance=-1.0)
    assert not (tmp_path / "strict.onnx").exists()

    model = onnx.load(str(exported[0]))
    # an ONNX model without our metadata
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "plain.onnx"))
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'plain.onnx'}: an ONNX model without fairseq-ser's"):
        OnnxEmotionClassifier.from_file(str(tmp_path / "plain.onnx"))

    # an opset this onnxruntime does not run
    model = onnx.load(str(exported[0]))
    model.opset_import[0].version = 99
    onnx.save(model, str(tmp_path / "future.onnx"))
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'future.onnx'}: onnxruntime [\d.]+ cannot run this "
                       r"model: .*[Oo]pset 99.*lower --opset"):
        OnnxEmotionClassifier.from_file(str(tmp_path / "future.onnx"))

    # not an ONNX file at all, and no file
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a protobuf\xff" * 10)
    with pytest.raises(CheckpointError, match=r"junk.onnx: not an ONNX model"):
        OnnxEmotionClassifier.from_file(str(tmp_path / "junk.onnx"))
    with pytest.raises(CheckpointError, match="missing.onnx: ONNX model not found"):
        OnnxEmotionClassifier.from_file(str(tmp_path / "missing.onnx"))
    with pytest.raises(SerError, match="opset 12"):
        export_classifier(clf, str(tmp_path / "old.onnx"), opset=12)


def test_export_command_with_int8_report(classifier_ckpt, synth_folds, tmp_path):
    out = tmp_path / "cli" / "model.onnx"
    proc = inprocess.run_command(["fairseq-ser", "export", classifier_ckpt, out, "--quantize", "int8",
                                  "--manifest", synth_folds / "fold1", "--gen-subset", "test", "--no-progress"])
    assert f"wrote {out}" in proc.stdout and "max |p_onnx - p_torch| = " in proc.stdout
    int8 = tmp_path / "cli" / "model.int8.onnx"
    assert f"wrote {int8}" in proc.stdout and "max |p_int8 - p_fp32| = " in proc.stdout
    line = [l for l in proc.stdout.splitlines() if " test: " in l][0]
    assert "predictions changed; UA fp32" in line and "int8 - fp32:" in line

    # the int8 model: quantized MatMuls, our metadata, close to fp32, and the numbers the command printed
    graph = onnx.load(str(int8))
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in graph.graph.node)
    assert {p.key for p in graph.metadata_props} >= set(METADATA_KEYS) | {QUANTIZATION_KEY}
    from fairseq_ser.onnx_export import compare_on_split

    c = compare_on_split(str(out), str(int8), str(synth_folds / "fold1"), "test", progress=False)
    n_test = len((synth_folds / "fold1" / "test.emo").read_text().split())
    assert c["utterances"] == n_test and 0 <= c["changed"] <= n_test
    assert f"{c['changed']} of {n_test} predictions changed; UA fp32 {100 * c['ua_fp32']:.2f} %" in line
    audio = [speech(s, seed) for seed, s in enumerate([0.7, 1.9])]
    p8 = OnnxEmotionClassifier.from_file(str(int8)).predict_proba(audio)
    p32 = OnnxEmotionClassifier.from_file(str(out)).predict_proba(audio)
    assert 0 < np.abs(p8 - p32).max() < 0.05

    # --manifest without --quantize is refused before any work
    proc = inprocess.run_command(["fairseq-ser", "export", classifier_ckpt, tmp_path / "y.onnx", "--manifest",
                                  synth_folds / "fold1"], expect_ok=False)
    assert proc.returncode == 2 and "give --quantize int8" in proc.stderr


@pytest.fixture
def audio_folder(tmp_path, synth_corpus):
    """Generated speech: a long file (windows), a 44.1 kHz stereo one, a few corpus files, a broken one."""
    root = tmp_path / "audio"
    root.mkdir()
    sf.write(root / "long.wav", speech(3.4, 1), SAMPLE_RATE)
    sf.write(root / "stereo.flac", np.stack([speech(1.1, 2)] * 2, axis=1), 44100)
    for wav in sorted(synth_corpus.rglob("*.wav"))[:4]:
        shutil.copy(wav, root / wav.name)
    (root / "broken.wav").write_bytes(b"RIFF not audio")
    return root


def _rows(path):
    return {json.loads(line)["path"]: json.loads(line) for line in path.read_text().splitlines()}


def test_predict_backend_onnx_writes_what_the_torch_backend_writes(classifier_ckpt, exported, audio_folder, tmp_path):
    outputs = {}
    for backend, model in (("torch", classifier_ckpt), ("onnx", exported[0])):
        for ext in ("jsonl", "csv"):
            out = tmp_path / f"{backend}.{ext}"
            proc = inprocess.run_command(["fairseq-ser", "predict", "--backend", backend, "--checkpoint", model,
                                          audio_folder, "-o", out, "--window-seconds", "1.5",
                                          "--min-window-seconds", "0.5", "--no-progress", "--device", "cpu"])
            assert "predicted 6 of 7 files (1 failed)" in proc.stderr
            outputs[backend, ext] = out
    torch_rows, onnx_rows = _rows(outputs["torch", "jsonl"]), _rows(outputs["onnx", "jsonl"])
    assert list(torch_rows) == list(onnx_rows)
    for path, t in torch_rows.items():
        o = onnx_rows[path]
        assert set(o) == set(t)
        if "error" in t:
            assert o["error"] == t["error"]
            continue
        assert o["label"] == t["label"] and o["duration"] == t["duration"]
        np.testing.assert_allclose(list(o["probabilities"].values()), list(t["probabilities"].values()), atol=1e-4)
        assert [(w["start"], w["end"], w["label"]) for w in o["windows"]] == [
            (w["start"], w["end"], w["label"]) for w in t["windows"]]
    assert len(onnx_rows[str(audio_folder / "long.wav")]["windows"]) == 2
    # the csv files hold the same rows, labels and windows (probabilities to 1e-4)
    t_lines = outputs["torch", "csv"].read_text().splitlines()
    o_lines = outputs["onnx", "csv"].read_text().splitlines()
    assert t_lines[0] == o_lines[0] and len(t_lines) == len(o_lines)
    for t, o in zip(t_lines[1:], o_lines[1:]):
        assert t.split(",")[:6] == o.split(",")[:6]

    # the model's stored windowing is the default of --backend onnx
    out = tmp_path / "stored.jsonl"
    inprocess.run_command(["fairseq-ser", "predict", "--backend", "onnx", "--checkpoint", exported[0],
                           audio_folder / "long.wav", "-o", out, "--no-progress"])
    assert [(w["start"], w["end"]) for w in _rows(out)[str(audio_folder / "long.wav")]["windows"]] == [
        (0, 1.5), (1.5, 3.4)]


def test_predict_refuses_mismatched_backend_options(exported, audio_folder):
    wav = audio_folder / "long.wav"
    proc = inprocess.run_command(["fairseq-ser", "predict", "--checkpoint", exported[0], wav, "--no-progress"],
                                 expect_ok=False)
    assert proc.returncode == 2 and "an ONNX model; run it with --backend onnx" in proc.stderr
    proc = inprocess.run_command(["fairseq-ser", "predict", "--backend", "onnx", "--precision", "bf16",
                                  "--checkpoint", exported[0], wav, "--no-progress"], expect_ok=False)
    assert proc.returncode == 2 and "--precision is for --backend torch" in proc.stderr


def test_execution_providers_and_threads(monkeypatch, exported):
    import onnxruntime as ort

    from fairseq_ser.onnx_predictor import default_providers, default_threads

    assert default_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert default_providers(None) == default_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert default_providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert default_providers(None) == ["CPUExecutionProvider"]
    with pytest.raises(CheckpointError, match="no CUDA execution provider"):
        default_providers("cuda")
    with pytest.raises(CheckpointError, match="expected auto, cpu, cuda or cuda:N"):
        default_providers("gpu0")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads() is None
    clf = OnnxEmotionClassifier.from_file(str(exported[0]), threads=1)
    assert clf.providers == ["CPUExecutionProvider"] and clf.device == "cpu"


# run in a fresh interpreter: torch and fairseq cannot be imported there at all
NO_TORCH = """
import sys

BLOCKED = ("torch", "fairseq", "torchaudio")

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Blocker())
from fairseq_ser.cli.main import main
status = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("modules: onnxruntime" if "onnxruntime" in sys.modules else "modules: no onnxruntime")
sys.exit(status)
"""


@pytest.mark.e2e
def test_onnx_predictor_runs_without_torch_or_fairseq(exported, audio_folder, tmp_path):
    out = tmp_path / "no_torch.jsonl"
    proc = commands.run_command(["python", "-c", NO_TORCH, "predict", "--backend", "onnx", "--checkpoint",
                                 exported[0], audio_folder / "long.wav", audio_folder / "stereo.flac",
                                 "-o", out, "--no-progress"])
    assert "modules: onnxruntime" in proc.stdout
    rows = _rows(out)
    assert len(rows) == 2 and all(r["label"] in json.loads(
        {p.key: p.value for p in onnx.load(str(exported[0])).metadata_props}["fairseq_ser.class_names"])
        for r in rows.values())
    # the blocking works: the same interpreter setup cannot load the torch backend
    proc = commands.run_command(["python", "-c", NO_TORCH, "predict", "--checkpoint", exported[0].with_suffix(".pt"),
                                 audio_folder / "long.wav", "--no-progress"], expect_ok=False)
    assert proc.returncode != 0 and "torch" in proc.stderr


def test_cpu_sessions_run_utterances_side_by_side(exported):
    clf = OnnxEmotionClassifier.from_file(str(exported[0]), threads=2)
    alone = OnnxEmotionClassifier.from_file(str(exported[0]), threads=1)
    assert clf.parallel_batches() == 2 and alone.parallel_batches() == 1
    assert clf.session.get_session_options().intra_op_num_threads == 1
    rng = np.random.default_rng(0)
    audio = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (8000, 12000, 12000, 20000, 9000)]
    done = []
    np.testing.assert_allclose(clf.predict_proba(audio, progress=done.append), alone.predict_proba(audio),
                               atol=1e-6)
    assert done == [1] * len(audio)   # one utterance per batch, equal lengths included
    many = OnnxEmotionClassifier.from_file(str(exported[0]), threads=8)
    assert many.parallel_batches() == 4 and many.session.get_session_options().intra_op_num_threads == 2
