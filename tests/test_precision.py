"""Reduced precision: every stage as fairseq's trainer runs it under ``common.bf16`` (the CPU stand-in for fp16).

fairseq casts the model and the criterion, buffers included, to half or
bfloat16, and every float32 tensor of a sample with them. Two layers:

- in-process, each model with its criterion cast the way the trainer casts
  them computes a finite loss close to its float32 loss, and no criterion
  holds a floating buffer the cast would change;
- the real commands run under ``common.bf16=true`` in the end-to-end tests
  of each stage, with ``commands.assert_finite_training``: TAPT
  (tests/test_tapt.py), stage 1 on both backbones and pseudo-labels from it
  (tests/test_ptapt_stage1.py), P-TAPT, V-FT from its checkpoint, and
  ``evaluate`` and ``predict`` on that classifier (tests/test_ptapt.py).
"""

import math
from types import SimpleNamespace

import numpy as np
import torch

from builders import (build_classifier, build_ptapt, build_tapt, build_tapt_criterion, make_pretraining_task,
                      make_task, padded_batch)


def floating_buffers(module):
    return [name for name, b in module.named_buffers() if b.is_floating_point()]


def cast_like_fairseq(model, criterion, sample, dtype):
    """What fairseq's Trainer does under common.bf16 / common.fp16: module casts, then float32 sample tensors."""
    model, criterion = model.to(dtype=dtype), criterion.to(dtype=dtype)

    def cast(x):
        if torch.is_tensor(x):
            return x.to(dtype) if x.dtype == torch.float32 else x
        if isinstance(x, dict):
            return {k: cast(v) for k, v in x.items()}
        if isinstance(x, list):
            return [cast(v) for v in x]
        return x

    return model, criterion, cast(sample)


def losses_in_both_precisions(model, criterion, sample):
    """(float32 loss, bfloat16 loss) of the same batch with the same masks."""
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        np.random.seed(0)  # fairseq's own masks (TAPT) are drawn with numpy
        m, c, s = cast_like_fairseq(model, criterion, sample, dtype)
        loss, _, _ = c(m, s)
        assert loss.dtype == torch.float32, f"the loss must be accumulated in float32, not {loss.dtype}"
        results.append(float(loss.detach()))
    return results


def test_classifier_and_criterion_in_bf16(pretrained_ckpt, synth_folds):
    from fairseq_ser.criterions.ser_cross_entropy import SerCrossEntropyCriterion

    task = make_task(synth_folds / "fold1")
    criterion = SerCrossEntropyCriterion(task)
    assert task.class_weights is not None
    assert floating_buffers(criterion) == [], "fairseq's cast would change these criterion buffers"
    for pooling in ("mean", "attentive_stats"):
        model = build_classifier(task, pretrained_ckpt, pooling=pooling, weighted_layer_sum=True)
        assert floating_buffers(model) == []
        source, padding = padded_batch([16000, 9000, 4000, 1200])
        sample = {"net_input": {"source": source, "padding_mask": padding},
                  "target": torch.tensor([0, 1, 2, 3]), "nsentences": 4}
        model.train()
        full, half = losses_in_both_precisions(model, criterion, sample)
        assert math.isfinite(half) and abs(half - full) < 0.05 * abs(full) + 0.05, (pooling, full, half)


def test_ptapt_model_and_criterion_in_bf16(pretrained_ckpt):
    from fairseq_ser.criterions.ser_ptapt_cross_entropy import SerPtaptCrossEntropyCriterion
    from fairseq_ser.frames import num_frames as cnn_frames

    model = build_ptapt(pretrained_ckpt, cluster_sizes=[8, 64])
    criterion = SerPtaptCrossEntropyCriterion(SimpleNamespace())
    assert floating_buffers(model) == [] and floating_buffers(criterion) == []
    lengths = [16000, 12000, 6000]
    source, padding = padded_batch(lengths)
    frames = cnn_frames(max(lengths))
    gen = torch.Generator().manual_seed(1)
    targets = []
    for k in (8, 64):
        t = torch.randint(0, k, (len(lengths), frames), generator=gen)
        for row, n in enumerate(lengths):
            t[row, cnn_frames(n):] = -100
        targets.append(t)
    sample = {"net_input": {"source": source, "padding_mask": padding}, "target_list": targets, "nsentences": 3}
    full, half = losses_in_both_precisions(model.train(), criterion, sample)
    assert math.isfinite(half) and abs(half - full) < 0.05 * abs(full), (full, half)


def test_tapt_model_and_criterion_in_bf16(pretrained_ckpt, synth_folds):
    task = make_pretraining_task(synth_folds / "fold1")
    model = build_tapt(task, pretrained_ckpt)
    criterion = build_tapt_criterion(task, pretrained_ckpt)
    assert floating_buffers(model) == [] and floating_buffers(criterion) == []
    source = torch.randn(3, 16000, generator=torch.Generator().manual_seed(2)) * 0.1
    sample = {"id": torch.arange(3), "net_input": {"source": source}}
    full, half = losses_in_both_precisions(model.train(), criterion, sample)
    # bf16 rounding of the quantizer's logits flips codebook choices of this untrained
    # tiny model, which changes the targets: only the magnitude can be compared
    assert math.isfinite(half) and 0.5 < half / full < 2.0, (full, half)


def test_a_floating_criterion_buffer_is_caught():
    """The check above fails for the pattern that broke V-FT under fp16: class weights held as a buffer."""
    module = torch.nn.Module()
    module.register_buffer("class_weights", torch.tensor([0.3, 0.7]), persistent=False)
    assert floating_buffers(module) == ["class_weights"]
    assert module.to(dtype=torch.bfloat16).class_weights.dtype == torch.bfloat16

