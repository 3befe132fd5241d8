"""P-TAPT step 1: wav2vec 1.0 checkpoints, the frame-level emotion model, its training command and frame features."""

import shutil

import numpy as np
import pytest
import torch
from fairseq.dataclass.utils import merge_with_parent
from omegaconf import OmegaConf

import fairseq_ser
from fairseq_ser.errors import CheckpointError
from fairseq_ser.models.pretrained import load_wav2vec1
from fairseq_ser.models.ser_frame_emotion import (SerFrameEmotionConfig, SerFrameEmotionModel,
                                                  load_frame_extractor, num_frames)

from checkpoints import make_wav2vec1
from conftest import run_command
from test_model import make_task

fairseq_ser.register()

CPU_STAGE1 = [
    "common.cpu=true",
    "common.fp16=false",
    "common.log_interval=1",
    "dataset.num_workers=0",
    "dataset.batch_size=8",
    "optimization.max_update=4",
]
LENGTHS = [400, 401, 465, 719, 720, 1000, 4321, 16000, 48000]


@pytest.fixture(scope="module")
def wav2vec1_ckpts(tmp_path_factory):
    out = tmp_path_factory.mktemp("wav2vec1")
    return {layout: make_wav2vec1(str(out / f"w2v1_{layout}.pt"), layout) for layout in ("args", "cfg")}


def build(task, w2v_path, **overrides):
    cfg = merge_with_parent(SerFrameEmotionConfig(), OmegaConf.create({"w2v_path": str(w2v_path), **overrides}))
    return SerFrameEmotionModel.build_model(cfg, task)


def train_stage1(data_dir, w2v_path, save_dir, extra=()):
    return run_command(["fairseq-hydra-train", "--config-dir", "config", "--config-name", "ptapt_stage1",
                        f"task.data={data_dir}", f"model.w2v_path={w2v_path}", f"checkpoint.save_dir={save_dir}",
                        *CPU_STAGE1, *extra])


def test_wav2vec1_legacy_args_and_cfg_layouts_load_the_same(wav2vec1_ckpts, pretrained_ckpt):
    legacy, current = load_wav2vec1(wav2vec1_ckpts["args"]), load_wav2vec1(wav2vec1_ckpts["cfg"])
    assert legacy.w2v_args.model._name == current.w2v_args.model._name == "wav2vec"
    for key in ("conv_feature_layers", "conv_aggregator_layers", "prediction_steps"):
        assert legacy.w2v_args.model[key] == current.w2v_args.model[key]
    assert legacy.weights.keys() == current.weights.keys()
    with pytest.raises(CheckpointError,
                       match=f"{pretrained_ckpt}: holds a 'wav2vec2' model, not a fairseq wav2vec 1.0"):
        load_wav2vec1(str(pretrained_ckpt))


def test_only_the_intended_parts_train(wav2vec1_ckpts, pretrained_ckpt, synth_folds):
    task = make_task(synth_folds / "fold1")
    model = build(task, wav2vec1_ckpts["args"])
    w2v = model.backbone.w2v
    assert not any(p.requires_grad for p in w2v.feature_extractor.parameters())
    assert all(p.requires_grad for p in w2v.feature_aggregator.parameters())
    for module in (model.backbone.downsample, model.frame_head, model.lstm, model.utterance_head):
        assert all(p.requires_grad for p in module.parameters())
    assert model.backbone.downsample.stride == (2,) and model.backbone.downsample.kernel_size == (4,)
    assert w2v.wav2vec_predictions is None  # the contrastive heads are dropped
    weights = load_wav2vec1(wav2vec1_ckpts["args"]).weights
    assert torch.equal(w2v.feature_aggregator.state_dict()["conv_layers.0.1.weight"],
                       weights["feature_aggregator.conv_layers.0.1.weight"])

    model = build(task, pretrained_ckpt)
    b = model.backbone
    for module in (b.feature_extractor, b.layer_norm, b.post_extract_proj):
        assert not any(p.requires_grad for p in module.parameters())
    assert all(p.requires_grad for p in b.encoder.parameters())
    assert model.project.out_features == model.frame_dim == 512


def test_wav2vec1_features_do_not_depend_on_the_batch(wav2vec1_ckpts, synth_folds):
    model = build(make_task(synth_folds / "fold1"), wav2vec1_ckpts["cfg"], frame_dim=16).eval()
    torch.manual_seed(0)
    lengths = [8000, 5000, 500]
    source = torch.randn(3, 8000)
    padding = torch.arange(8000).unsqueeze(0) >= torch.tensor(lengths).unsqueeze(1)
    with torch.no_grad():
        batch, frame_padding = model.extract_frame_features(source * ~padding, padding)
        for row, n in enumerate(lengths):
            alone, _ = model.extract_frame_features(source[row:row + 1, :n], None)
            assert alone.shape[1] == num_frames(n) == int((~frame_padding[row]).sum())
            assert torch.allclose(batch[row, :num_frames(n)], alone[0], atol=1e-5)
        out = model(source, padding)
    assert out["frame_logits"].shape == (3, num_frames(8000), 4) and out["utterance_logits"].shape == (3, 4)


@pytest.mark.parametrize("backbone", ["wav2vec2", "wav2vec1"])
def test_stage1_training_then_frame_features(backbone, wav2vec1_ckpts, pretrained_ckpt, synth_folds, tmp_path):
    fold = synth_folds / "fold1"
    # a private copy of the backbone, deleted after training: the model must load without it
    w2v = tmp_path / "backbone.pt"
    shutil.copy(pretrained_ckpt if backbone == "wav2vec2" else wav2vec1_ckpts["args"], w2v)
    save = tmp_path / "stage1"
    proc = train_stage1(fold, w2v, save)
    log = proc.stdout + proc.stderr
    for text in ("valid on 'valid' subset", "| ua ", "| macro_f1 ", "| frame_loss ", "| utterance_loss "):
        assert text in log, text
    best = save / "checkpoint_best.pt"
    state = torch.load(best, weights_only=True)
    assert state["cfg"]["model"]["w2v_args"]["model"]["_name"] == ("wav2vec" if backbone == "wav2vec1" else "wav2vec2")
    assert state["cfg"]["model"]["class_names"] == make_task(fold).class_names
    assert state["cfg"]["checkpoint"]["best_checkpoint_metric"] == "ua"
    w2v.unlink()

    extractor = load_frame_extractor(str(best))
    info = extractor.describe()
    assert info["model"] == "ser_frame_emotion" and info["dim"] == extractor.dim == 512
    assert info["checkpoint_size"] == best.stat().st_size and info["checkpoint_mtime"] > 0
    rng = np.random.default_rng(0)
    for n in LENGTHS:
        feats = extractor.extract(rng.standard_normal(n).astype(np.float32) * 0.1)
        assert feats.dtype == np.float32 and feats.shape[1] == 512
        assert abs(feats.shape[0] - extractor.num_frames(n)) <= 1, (n, feats.shape)
        assert np.isfinite(feats).all()

    # a checkpoint of another kind, as the backbone of stage 1 and as a frame extractor
    with pytest.raises(CheckpointError, match=f"{best}: holds a 'ser_frame_emotion' model; stage 1 starts from"):
        build(make_task(fold), best)
    if backbone == "wav2vec2":
        with pytest.raises(CheckpointError, match=f"{pretrained_ckpt}: holds a 'wav2vec2' model, not a frame-level"):
            load_frame_extractor(str(pretrained_ckpt))


def test_frame_extractor_reports_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.pt: checkpoint not found"):
        load_frame_extractor(str(tmp_path / "nothing.pt"))
