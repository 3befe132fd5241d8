"""P-TAPT step 3: frame-label dataset, and the whole method through the real commands, V-FT from its checkpoint."""

import json
import re

import numpy as np
import pytest
import torch

import inprocess
from builders import build_classifier, make_task, write_random_labels
from commands import BF16, CPU_VFT, assert_finite_training, hydra_train, run_command
from fairseq_ser.data.frame_label_dataset import FrameLabelDataset
from fairseq_ser.data.frame_labels import read_frame_labels
from fairseq_ser.frames import STRIDE
from fairseq_ser.frames import num_frames as cnn_frames
from fairseq_ser.data.manifest import Manifest, read_manifest
from fairseq_ser.errors import DataError


def test_cnn_frames_matches_the_model(pretrained_ckpt):
    import fairseq_ser
    from fairseq_ser.models.backbone import build_wav2vec2
    from fairseq_ser.models.checkpoint import load_backbone

    fairseq_ser.register()
    model = build_wav2vec2(load_backbone(str(pretrained_ckpt)).w2v_args)
    for n in (400, 719, 720, 16000, 16319, 16320, 48123):
        assert cnn_frames(n) == int(model._get_feat_extract_output_lengths(torch.tensor(n))), n
        assert cnn_frames(n) == model.feature_extractor(torch.zeros(1, n)).shape[-1], n
    assert cnn_frames(399) == 0


def test_crop_cuts_audio_and_labels_at_the_same_frame(tmp_path):
    # each sample's value is the index of the frame starting at it, so the
    # label that belongs with a frame can be read back from the audio
    import soundfile as sf

    n = 16000 * 3 + 123
    wav = (np.arange(n) // STRIDE).astype(np.float32) / 1000.0
    path = tmp_path / "ramp.wav"
    sf.write(path, wav, 16000, subtype="FLOAT")
    frames = cnn_frames(n)
    manifest = Manifest(path=str(tmp_path / "x.tsv"), root=str(tmp_path), entries=[("ramp.wav", n)])
    labels = [[np.arange(frames, dtype=np.int16)], ]
    dataset = FrameLabelDataset(manifest, labels, max_sample_size=16000)
    for _ in range(20):
        batch = dataset.collater([dataset[0]])
        source, target = batch["net_input"]["source"][0], batch["target_list"][0][0]
        assert len(target) == cnn_frames(16000) == cnn_frames(len(source))
        first = int(round(source[0].item() * 1000))
        assert target[0].item() == first
        for i in (0, 7, len(target) - 1):
            assert target[i].item() == int(round(source[i * STRIDE].item() * 1000))


def test_label_file_checks(tmp_path):
    path = tmp_path / "train.km4"
    path.write_text("0 1 2\n3 3\n")
    with pytest.raises(DataError, match="has 2 lines but the manifest lists 3"):
        read_frame_labels(str(path), [1360, 1040, 1040], 4)
    with pytest.raises(DataError, match=r"train\.km4:1: 3 labels for an utterance of 1040 samples \(3 frames\)|"
                                        r"train\.km4:2: 2 labels for an utterance of 1360 samples"):
        read_frame_labels(str(path), [1040, 1360], 4)
    path.write_text("0 1 9\n")
    with pytest.raises(DataError, match=r"train\.km4:1: cluster id outside 0..3"):
        read_frame_labels(str(path), [1040], 4)


@pytest.mark.e2e
def test_whole_chain_through_the_commands(trained_ckpt, stage1_run, synth_folds, tmp_path):
    """Stage 1 -> pseudo-labels (FAISS on the CPU) -> P-TAPT -> V-FT, as the README gives them.

    Stage 1 is conftest's ``stage1_run`` (also checked by test_ptapt_stage1.py).
    """
    fold = synth_folds / "fold1"
    stage1, _ = stage1_run
    labels = tmp_path / "labels"
    run_command(["fairseq-ser", "pseudo-labels", "run", fold, labels,
                 "--checkpoint", stage1 / "checkpoint_best.pt", "--ks", "4", "8", "--no-progress"])
    for split in ("train", "valid", "test"):
        manifest = read_manifest(str(fold / f"{split}.tsv"))
        for k in (4, 8):
            ids = read_frame_labels(str(labels / f"{split}.km{k}"), [n for _, n in manifest.entries], k)
            assert len(ids) == len(manifest)

    save = tmp_path / "ptapt"
    proc = run_command(hydra_train(
        "ptapt", fold, trained_ckpt, save, f"task.label_dir={labels}", "task.cluster_labels=[km4,km8]",
        "common.cpu=true", "common.log_interval=1", "dataset.num_workers=0",
        "dataset.max_tokens=160000", "optimization.max_update=4", "dataset.validate_interval_updates=2", *BF16,
    ))
    assert_finite_training(proc, "ptapt")
    log = proc.stdout + proc.stderr
    assert "acc_km4" in log and "acc_km8" in log and "masked_frames" in log
    state = torch.load(save / "checkpoint_last.pt", weights_only=True)
    assert state["cfg"]["model"]["cluster_sizes"] == [4, 8]
    assert state["cfg"]["model"]["w2v_args"]["model"]["_name"] == "wav2vec2"
    assert state["model"]["heads.1.2.weight"].shape == (8, 256)

    vft = tmp_path / "vft"
    proc = run_command(hydra_train("vft", fold, save / "checkpoint_last.pt", vft, *CPU_VFT, *BF16))
    assert_finite_training(proc, "vft")
    best = vft / "checkpoint_best.pt"
    clf = torch.load(best, weights_only=True)
    assert not any(k.startswith("heads.") for k in clf["model"])
    # fairseq moves checkpoints to the CPU in float32 (utils.move_to_cpu), whatever the training precision
    assert clf["cfg"]["common"]["bf16"] is True
    assert {v.dtype for v in clf["model"].values() if v.is_floating_point()} == {torch.float32}
    # evaluate and predict read the bf16-trained classifier
    results = tmp_path / "eval"
    proc = run_command(["fairseq-ser", "evaluate", fold, "--checkpoint", best, "--results-path", results])
    assert "UA" in proc.stdout
    metrics = json.loads((results / "metrics.json").read_text())
    assert 0.0 <= metrics["ua"] <= 1.0 and np.isfinite(metrics["macro_f1"])
    lines = (fold / "test.tsv").read_text().splitlines()
    out = tmp_path / "pred.jsonl"
    run_command(["fairseq-ser", "predict", "--checkpoint", best, f"{lines[0]}/{lines[1].split(chr(9))[0]}",
                 "--output", out])
    probs = json.loads(out.read_text().splitlines()[0])["probabilities"]
    assert abs(sum(probs.values()) - 1.0) < 1e-3 and all(np.isfinite(v) for v in probs.values())

    # V-FT starts from the P-TAPT weights, not from the original checkpoint's
    model = build_classifier(make_task(fold), save / "checkpoint_last.pt")
    key = "encoder.layers.0.fc1.weight"
    original = torch.load(trained_ckpt, weights_only=True)["model"][key]
    assert torch.equal(model.backbone.state_dict()[key], state["model"]["backbone." + key])
    assert not torch.equal(state["model"]["backbone." + key], original)


def test_labels_from_another_manifest_are_rejected(pretrained_ckpt, synth_folds, tmp_path):
    labels = write_random_labels(synth_folds / "fold2", tmp_path / "labels")
    proc = inprocess.run_command(hydra_train(
        "ptapt", synth_folds / "fold1", pretrained_ckpt, tmp_path / "out", f"task.label_dir={labels}",
        "task.cluster_labels=[km4]", "common.cpu=true", "common.fp16=false", "optimization.max_update=1",
    ), expect_ok=False)
    assert proc.returncode != 0
    # fairseq loads the valid split first; whichever is read first is named
    assert re.search(r"(train|valid)\.km4(:\d+)?: .*(lines but the manifest lists|do not match)", proc.stderr)
