"""P-TAPT step 1: wav2vec 1.0 checkpoints, the frame-level emotion model, its training and frame features."""

import math
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fairseq_ser.clustering.features import load_frame_extractor
from fairseq_ser.criterions.ser_frame_emotion import SerFrameEmotionCriterion
from fairseq_ser.errors import CheckpointError
from fairseq_ser.frames import num_frames
from fairseq_ser.models.checkpoint import load_wav2vec1
from fairseq_ser.optim.ser_warmup_hold_linear import WarmupHoldLinearConfig, WarmupHoldLinearSchedule

import inprocess
from builders import build_frame_emotion, config, make_task, padding_mask
from checkpoints import make_wav2vec1
from commands import BF16, CPU_STAGE1, hydra_train

LENGTHS = [400, 401, 465, 719, 720, 1000, 4321, 16000, 48000]


@pytest.fixture(scope="module")
def wav2vec1_ckpts(tmp_path_factory):
    out = tmp_path_factory.mktemp("wav2vec1")
    return {layout: make_wav2vec1(str(out / f"w2v1_{layout}.pt"), layout) for layout in ("args", "cfg")}


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
    model = build_frame_emotion(task, wav2vec1_ckpts["args"])
    w2v = model.backbone.w2v
    assert not any(p.requires_grad for p in w2v.feature_extractor.parameters())
    assert all(p.requires_grad for p in w2v.feature_aggregator.parameters())
    for module in (model.backbone.downsample, model.frame_head, model.lstm, model.utterance_head):
        assert all(p.requires_grad for p in module.parameters())
    assert model.backbone.downsample.stride == (2,) and model.backbone.downsample.kernel_size == (4,)
    assert w2v.wav2vec_predictions is None  # the contrastive heads are dropped
    # the reference's heads: LinearHead(512, 128, n) = Linear, tanh, Linear, no dropout
    for head in (model.frame_head, model.utterance_head):
        assert [type(m) for m in head] == [torch.nn.Linear, torch.nn.Tanh, torch.nn.Linear]
        assert (head[0].in_features, head[0].out_features, head[2].out_features) == (512, 128, 4)
    assert model.lstm.bidirectional and model.lstm.hidden_size == 256 and model.lstm.batch_first
    assert isinstance(build_frame_emotion(task, wav2vec1_ckpts["args"], head_dim=0).frame_head, torch.nn.Linear)
    weights = load_wav2vec1(wav2vec1_ckpts["args"]).weights
    assert torch.equal(w2v.feature_aggregator.state_dict()["conv_layers.0.1.weight"],
                       weights["feature_aggregator.conv_layers.0.1.weight"])

    model = build_frame_emotion(task, pretrained_ckpt)
    b = model.backbone
    for module in (b.feature_extractor, b.layer_norm, b.post_extract_proj):
        assert not any(p.requires_grad for p in module.parameters())
    assert all(p.requires_grad for p in b.encoder.parameters())
    assert model.project.out_features == model.frame_dim == 512


def test_wav2vec1_features_do_not_depend_on_the_batch(wav2vec1_ckpts, synth_folds):
    model = build_frame_emotion(make_task(synth_folds / "fold1"), wav2vec1_ckpts["cfg"], frame_dim=16).eval()
    torch.manual_seed(0)
    lengths = [8000, 5000, 500]
    source = torch.randn(3, 8000)
    padding = padding_mask(lengths)
    with torch.no_grad():
        batch, frame_padding = model.extract_frame_features(source * ~padding, padding)
        for row, n in enumerate(lengths):
            alone, _ = model.extract_frame_features(source[row:row + 1, :n], None)
            assert alone.shape[1] == num_frames(n) == int((~frame_padding[row]).sum())
            assert torch.allclose(batch[row, :num_frames(n)], alone[0], atol=1e-5)
        out = model(source, padding)
        # at evaluation the frame features are unmasked and deterministic, and the heads read them
        again, _ = model.extract_frame_features(source * ~padding, padding)
        assert torch.equal(batch, again)
        assert torch.equal(out["frame_logits"], model.frame_head(model.extract_frame_features(source, padding)[0]))
    assert out["frame_logits"].shape == (3, num_frames(8000), 4) and out["utterance_logits"].shape == (3, 4)


def longest_run(flags: torch.Tensor) -> int:
    best = run = 0
    for f in flags.tolist():
        run = run + 1 if f else 0
        best = max(best, run)
    return best


@pytest.mark.parametrize("backbone", ["wav2vec1", "wav2vec2"])
def test_training_zeroes_time_spans_and_one_channel_block_before_the_context_network(
        backbone, wav2vec1_ckpts, pretrained_ckpt, synth_folds):
    """wav2vec 1.0: on the CNN output (input of the context network); wav2vec 2.0: on the projected features."""
    task = make_task(synth_folds / "fold1")
    model = build_frame_emotion(task, wav2vec1_ckpts["args"] if backbone == "wav2vec1" else pretrained_ckpt,
                                dropout_input=0.0)
    # the masked module's input is (B, C, T) for wav2vec 1.0, (B, T, C) for wav2vec 2.0
    target, time_dim = ((model.backbone.w2v.feature_aggregator, 2) if backbone == "wav2vec1"
                        else (model.backbone.encoder, 1))
    seen = []
    target.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    torch.manual_seed(0)
    lengths = [16000, 16000, 12000]
    source = torch.randn(3, 16000) * 0.1
    padding = padding_mask(lengths)
    with torch.no_grad():
        model.eval()(source, padding)
        clean = seen[:]
        seen.clear()
        model.train()(source, padding)
    masked = seen
    assert [x.shape for x in masked] == [x.shape for x in clean]
    if backbone == "wav2vec1":  # one run per length: rows 0 and 1, then row 2, all frames valid
        rows = [(x.movedim(time_dim, -1)[r], y.movedim(time_dim, -1)[r]) for x, y in zip(masked, clean)
                for r in range(x.size(0))]
    else:  # one padded batch
        rows = [(masked[0][r, :num_frames(n)].T, clean[0][r, :num_frames(n)].T) for r, n in enumerate(lengths)]
    width = min(64, rows[0][0].size(0) // 2)  # the tiny backbones have fewer than 128 channels
    for row, (a, b) in enumerate(rows):  # (C, T) of one utterance, masked and clean
        zero_frames, zero_channels = (a == 0).all(0), (a == 0).all(1)
        assert longest_run(zero_frames) >= 15 and longest_run((b == 0).all(0)) < 15, row
        assert longest_run(zero_channels) >= width and longest_run((b == 0).all(1)) < width, row
        assert zero_channels.sum() < 2 * width, row  # one block per utterance (plus dead channels)
        keep = ~zero_frames.unsqueeze(0) & ~zero_channels.unsqueeze(1)
        assert torch.equal(a[keep], b[keep]), row  # everything else is untouched

    seen.clear()
    model.cfg.apply_mask = False
    with torch.no_grad():
        model.train()(source, padding)
    assert all(torch.equal(x, y) for x, y in zip(seen, clean))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backbone", ["wav2vec1", "wav2vec2"])
def test_half_precision_training_step(backbone, dtype, wav2vec1_ckpts, pretrained_ckpt, synth_folds):
    """As fairseq's --bf16 / --fp16 run it: model, criterion and the sample's floats cast; loss in float32."""
    task = make_task(synth_folds / "fold1")
    w2v_path = wav2vec1_ckpts["args"] if backbone == "wav2vec1" else pretrained_ckpt
    model = build_frame_emotion(task, w2v_path).to(dtype).train()
    criterion = SerFrameEmotionCriterion(task).to(dtype)
    torch.manual_seed(0)
    lengths = [16000, 9000, 4000]
    padding = padding_mask(lengths)
    source = (torch.randn(3, 16000) * 0.1 * ~padding).to(dtype)
    for pad in (padding, None):  # padded validation batches; equal-length crops of batch_shortest
        sample = {"net_input": {"source": source if pad is not None else source[:, :4000], "padding_mask": pad},
                  "target": torch.tensor([0, 1, 2])}
        loss, sample_size, log = criterion(model, sample)
        assert loss.dtype == torch.float32 and math.isfinite(loss.item()) and sample_size == 1
        loss.backward()
    # (wav2vec 2.0's mask embedding and dropped layers get no gradient: masks are zeroed here)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(g.dtype == dtype and torch.isfinite(g.float()).all() for g in grads)
    for module in (model.frame_head, model.lstm, model.utterance_head):
        assert all(p.grad is not None for p in module.parameters())


def test_warmup_ratio_schedule_of_the_reference():
    """Warm-up 5 %, flat 5 %, linear decay to 0 (PretrainedEmoClassifier), and warmup_updates otherwise."""
    from fairseq.optim.adam import FairseqAdam

    def schedule(**fields):
        optimizer = FairseqAdam(SimpleNamespace(lr=[1e-4], adam_betas="(0.9, 0.999)", adam_eps=1e-8,
                                                weight_decay=0.0, fp16_adam_stats=False, use_old_adam=False,
                                                tpu=False), [torch.nn.Parameter(torch.zeros(1))])
        return WarmupHoldLinearSchedule(config(WarmupHoldLinearConfig, max_update=10000, lr=[1e-4], **fields),
                                        optimizer)

    steps = [0, 250, 499, 500, 999, 1000, 5500, 9999, 10000]
    ref = schedule(warmup_ratio=0.05, hold_ratio=0.05)
    got = [ref.step_update(step) for step in steps]
    expected = [0.0, 5e-5, 1e-4 * 499 / 500, 1e-4, 1e-4, 1e-4, 5e-5, 1e-4 / 9000, 0.0]
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-15)
    tapt = schedule(warmup_updates=100, hold_ratio=0.05)  # warmup_ratio 0: warmup_updates counts
    assert [tapt.step_update(s) for s in (50, 100, 600, 10000)] == pytest.approx([5e-5, 1e-4, 1e-4, 0.0])
    with pytest.raises(ValueError, match=r"warmup_ratio \(1.5\)"):
        schedule(warmup_ratio=1.5)


def test_stage1_training_then_frame_features(wav2vec1_ckpts, synth_folds, tmp_path):
    """On wav2vec 1.0: fairseq's trainer in-process, a few updates under its bf16 (the precision of GPU
    runs), then the checkpoint's frame features."""
    fold = synth_folds / "fold1"
    # a private copy of the backbone, deleted after training: the model must load without it
    w2v = tmp_path / "backbone.pt"
    shutil.copy(wav2vec1_ckpts["args"], w2v)
    save = tmp_path / "stage1"
    proc = inprocess.run_command(hydra_train("ptapt_stage1", fold, w2v, save, *CPU_STAGE1, *BF16))
    w2v.unlink()
    check_stage1_run("wav2vec1", proc.stdout + proc.stderr, save, fold, tmp_path)


@pytest.mark.e2e
def test_stage1_command_then_frame_features(stage1_run, trained_ckpt, synth_folds, tmp_path):
    """On wav2vec 2.0: the real command (conftest's stage1_run, which the P-TAPT chain goes on from)."""
    save, log = stage1_run
    check_stage1_run("wav2vec2", log, save, synth_folds / "fold1", tmp_path, start=trained_ckpt)


def check_stage1_run(backbone, log, save, fold, tmp_path, start=None):
    """What stage 1 on ``backbone`` logged and saved in ``save``, its frame features, bf16-stored weights."""
    for text in ("valid on 'valid' subset", "| ua ", "| macro_f1 ", "| frame_loss ", "| utterance_loss "):
        assert text in log, text
    lines = [line for line in log.splitlines() if "[train_inner]" in line or "valid on 'valid'" in line]
    losses = [dict(re.findall(r"(\w*loss)[= ]([^,| ]+)", line)) for line in lines]
    updates = sum("[train_inner]" in line for line in lines)
    # every update logged, and a validation after each epoch (random batches of 8, the last
    # incomplete one dropped: 3 updates an epoch, so 2 epochs)
    assert updates == 4 and len(losses) - updates == 2, lines
    for values in losses:
        assert values.keys() == {"loss", "frame_loss", "utterance_loss"}, values
        assert all(math.isfinite(float(v)) for v in values.values()), lines
    best = save / "checkpoint_best.pt"
    state = torch.load(best, weights_only=True)
    assert state["cfg"]["common"]["bf16"] and state["cfg"]["lr_scheduler"]["warmup_ratio"] == 0.05
    assert state["cfg"]["model"]["w2v_args"]["model"]["_name"] == ("wav2vec" if backbone == "wav2vec1" else "wav2vec2")
    assert state["cfg"]["model"]["class_names"] == make_task(fold).class_names
    assert state["cfg"]["checkpoint"]["best_checkpoint_metric"] == "ua"

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

    # weights stored in bf16 (fairseq 0.12 writes float32; other writers keep the training dtype)
    # load into the float32 model, and the pseudo-label command reads them
    half = tmp_path / "stage1_bf16.pt"
    state["model"] = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, half)
    feats = load_frame_extractor(str(half)).extract(rng.standard_normal(16000).astype(np.float32) * 0.1)
    assert feats.dtype == np.float32 and feats.shape == (num_frames(16000), 512) and np.isfinite(feats).all()
    labels = tmp_path / "labels"
    inprocess.run_command(["fairseq-ser", "pseudo-labels", "run", fold, labels, "--checkpoint", half, "--ks", "4",
                           "--no-progress"])
    assert all((labels / f"{split}.km4").is_file() for split in ("train", "valid", "test"))

    # a checkpoint of another kind, as the backbone of stage 1 and as a frame extractor
    with pytest.raises(CheckpointError, match=f"{best}: holds a 'ser_frame_emotion' model; stage 1 starts from"):
        build_frame_emotion(make_task(fold), best)
    if backbone == "wav2vec2":
        with pytest.raises(CheckpointError, match=f"{start}: holds a 'wav2vec2' model, not a frame-level"):
            load_frame_extractor(str(start))


def test_frame_extractor_reports_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.pt: checkpoint not found"):
        load_frame_extractor(str(tmp_path / "nothing.pt"))
