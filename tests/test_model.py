"""The classifier model in-process: checkpoint layouts, masking of short clips, options, bad checkpoints."""

import pytest
import torch

from fairseq_ser.errors import CheckpointError
from fairseq_ser.models.masked_encoder import channel_mask, span_mask
from fairseq_ser.models.checkpoint import load_backbone

from builders import build_classifier, make_task


def test_cfg_legacy_and_finetuned_checkpoints_give_the_same_backbone(pretrained_ckpt, legacy_ckpt, ctc_ckpt):
    cfg_b = load_backbone(str(pretrained_ckpt))
    legacy_b = load_backbone(str(legacy_ckpt))
    ctc_b = load_backbone(str(ctc_ckpt))
    assert (cfg_b.source_model, legacy_b.source_model, ctc_b.source_model) == ("wav2vec2", "wav2vec2", "wav2vec_ctc")
    assert cfg_b.has_pretraining_modules and legacy_b.has_pretraining_modules
    assert not ctc_b.has_pretraining_modules
    for key, value in ctc_b.weights.items():
        assert torch.equal(value, cfg_b.weights[key]), key
        assert torch.equal(value, legacy_b.weights[key]), key
    assert legacy_b.w2v_args.model.encoder_embed_dim == cfg_b.w2v_args.model.encoder_embed_dim


@pytest.mark.parametrize("which", ["pretrained_ckpt", "legacy_ckpt", "ctc_ckpt"])
def test_classifier_builds_from_every_layout(which, request, synth_folds):
    task = make_task(synth_folds / "fold1")
    ckpt = request.getfixturevalue(which)
    model = build_classifier(task, ckpt)
    weights = load_backbone(str(ckpt)).weights
    backbone = model.backbone.state_dict()
    assert torch.equal(backbone["encoder.layers.0.fc1.weight"], weights["encoder.layers.0.fc1.weight"])
    assert model.backbone.quantizer is None  # pretraining heads dropped
    assert list(model.cfg.class_names) == task.class_names
    assert model.cfg.w2v_args is not None


def test_frozen_parts_and_head(pretrained_ckpt, synth_folds):
    model = build_classifier(make_task(synth_folds / "fold1"), pretrained_ckpt)
    assert not any(p.requires_grad for p in model.backbone.feature_extractor.parameters())
    assert not any(p.requires_grad for p in model.backbone.post_extract_proj.parameters())
    assert not any(p.requires_grad for p in model.backbone.layer_norm.parameters())
    assert all(p.requires_grad for p in model.backbone.encoder.parameters())
    assert model.output.out_features == 4


@pytest.mark.parametrize("pooling,weighted", [("mean", False), ("attentive_stats", True)])
def test_short_clips_do_not_crash_masking(pretrained_ckpt, synth_folds, pooling, weighted):
    model = build_classifier(make_task(synth_folds / "fold1"), pretrained_ckpt,
                             pooling=pooling, weighted_layer_sum=weighted, mask_channel_length=16)
    model.train()
    torch.manual_seed(0)
    # 400 samples = one frame; 2000 samples = 6 frames, fewer than one 15-frame span
    lengths = [400, 720, 2000, 5000, 32000]
    source = torch.randn(len(lengths), max(lengths)) * 0.1
    padding = torch.ones(len(lengths), max(lengths), dtype=torch.bool)
    for i, n in enumerate(lengths):
        padding[i, :n] = False
        source[i, n:] = 0
    for _ in range(5):
        logits = model(source, padding_mask=padding)
        assert logits.shape == (len(lengths), 4)
        assert torch.isfinite(logits).all()
        logits.sum().backward()


def test_padding_does_not_change_the_prediction(pretrained_ckpt, synth_folds):
    model = build_classifier(make_task(synth_folds / "fold1"), pretrained_ckpt).eval()
    wav = torch.randn(1, 12000) * 0.1
    alone = model(wav, padding_mask=torch.zeros(1, 12000, dtype=torch.bool))
    padded = torch.cat([wav, torch.zeros(1, 20000)], dim=1)
    mask = torch.zeros(1, 32000, dtype=torch.bool)
    mask[0, 12000:] = True
    with torch.no_grad():
        together = model(padded, padding_mask=mask)
    assert torch.allclose(alone, together, atol=1e-4)


def test_span_mask_rules():
    import numpy as np

    rng = np.random.default_rng(0)
    lengths = list(range(1, 60))
    mask = span_mask(lengths, 60, prob=0.08, span=15, min_masks=2, rng=rng)
    for row, n in enumerate(lengths):
        assert not mask[row, n:].any(), "padding must never be masked"
        if n == 1:
            assert not mask[row].any()
        else:
            assert 0 < mask[row, :n].sum() < n, f"length {n}: at least one frame masked and one visible"
    # at least one channel span per row, never all channels
    cmask = channel_mask(64, 48, prob=0.05, span=64, min_masks=1, rng=rng)
    assert cmask.any(dim=1).all() and not cmask.all(dim=1).any()
    # long rows: about prob of the frames masked (overlaps make it a little less)
    long = span_mask([5000] * 20, 5000, prob=0.08, span=15, min_masks=2, rng=rng)
    assert 0.05 < long.float().mean().item() < 0.09


@pytest.mark.parametrize("seconds", [0.5, 1, 2, 4, 8])
def test_fraction_rule_masks_mask_prob_at_every_length(seconds):
    """mask_rule=fraction: about mask_prob of every utterance, short clips included (min_spans: far more)."""
    import numpy as np

    from fairseq_ser.frames import num_frames

    rng = np.random.default_rng(int(seconds * 10))
    n = num_frames(int(seconds * 16000))
    draws = 4000
    mask = span_mask([n] * draws, n + 7, prob=0.08, span=15, min_masks=2, rng=rng, rule="fraction")
    assert not mask[:, n:].any(), "padding must never be masked"
    fraction = mask[:, :n].float().mean().item()
    # 0.08 before overlaps; overlapping spans make it a little less
    assert 0.065 < fraction < 0.085, (seconds, fraction)
    # the masked share of one row does not depend on the other rows of its batch
    mixed = span_mask([n] * draws + [2000] * draws, 2000, prob=0.08, span=15, min_masks=2, rng=rng,
                      rule="fraction")
    assert abs(mixed[:draws, :n].float().mean().item() - fraction) < 0.01
    if seconds <= 2:
        old = span_mask([n] * draws, n, prob=0.08, span=15, min_masks=2, rng=rng, rule="min_spans")
        assert old.float().mean().item() > fraction + 0.05


def test_freeze_finetune_updates(pretrained_ckpt, synth_folds):
    # no layerdrop: a dropped layer would get no gradient either way
    model = build_classifier(make_task(synth_folds / "fold1"), pretrained_ckpt, freeze_finetune_updates=3,
                             layerdrop=0.0)
    model.train()
    wav = torch.randn(2, 8000) * 0.1
    model(wav).sum().backward()
    assert model.backbone.encoder.layers[0].fc1.weight.grad is None
    assert model.output.weight.grad is not None
    model.set_num_updates(3)
    model(wav).sum().backward()
    assert model.backbone.encoder.layers[0].fc1.weight.grad is not None


def test_bad_w2v_paths(tmp_path, synth_folds):
    task = make_task(synth_folds / "fold1")
    with pytest.raises(CheckpointError, match="not found") as e:
        build_classifier(task, tmp_path / "nope.pt")
    assert "nope.pt" in str(e.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a PyTorch checkpoint"):
        build_classifier(task, junk)
    other = tmp_path / "lm.pt"
    torch.save({"cfg": {"model": {"_name": "transformer_lm"}}, "model": {"w": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="'transformer_lm' model, not a wav2vec 2.0 model"):
        build_classifier(task, other)
    with pytest.raises(CheckpointError, match="is a folder"):
        build_classifier(task, tmp_path)


def test_truncated_checkpoint_weights_rejected(pretrained_ckpt, tmp_path, synth_folds):
    state = torch.load(pretrained_ckpt, weights_only=True)
    del state["model"]["encoder.layers.1.fc2.weight"]
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    with pytest.raises(CheckpointError, match="missing encoder.layers.1.fc2.weight"):
        build_classifier(make_task(synth_folds / "fold1"), broken)
