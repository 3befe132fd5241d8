"""TAPT: the model and criterion in-process, training from a legacy checkpoint under bf16, and the
end-to-end chain (TAPT, then V-FT and evaluation from its checkpoint) through the real commands."""

import argparse
import json
import shutil

import numpy as np
import pytest
import torch

from fairseq_ser.errors import CheckpointError
from fairseq_ser.models.checkpoint import load_backbone
from fairseq_ser.models.safe_load import load_checkpoint_file

import inprocess
from builders import build_tapt, build_tapt_criterion, make_pretraining_task
from commands import BF16, CPU_TAPT, CPU_VFT, assert_finite_training, hydra_train, run_command

PRETRAINING_HEADS = ("quantizer.vars", "quantizer.weight_proj.weight", "project_q.weight", "final_proj.weight")


@pytest.fixture(scope="module")
def tapt_run(trained_ckpt, synth_folds, tmp_path_factory):
    """TAPT by the real command from a private copy of the cfg checkpoint (deleted afterwards), CNN encoder frozen."""
    work = tmp_path_factory.mktemp("tapt")
    w2v = work / "w2v.pt"
    shutil.copy(trained_ckpt, w2v)
    save = work / "tapt"
    proc = run_command(hydra_train("tapt", synth_folds / "fold1", w2v, save, *CPU_TAPT,
                                   "model.feature_grad_mult=0.0", "model.dropout=0.05"))
    w2v.unlink()
    return save / "checkpoint_last.pt", proc.stdout + proc.stderr


def legacy_with_criterion(legacy_ckpt, out, loss_weights):
    """The legacy checkpoint with the criterion options wav2vec_small.pt's ``args`` record."""
    state = load_checkpoint_file(str(legacy_ckpt))  # its meters load safely: no full unpickling needed
    args = vars(state["args"])
    args.update(infonce=True, loss_weights=loss_weights, log_keys=["prob_perplexity", "temp"])
    state["args"] = argparse.Namespace(**args)
    torch.save(state, out)
    return out


@pytest.mark.e2e
def test_tapt_checkpoint_holds_every_pretraining_weight(tapt_run, trained_ckpt, synth_folds):
    ckpt, log = tapt_run
    assert "TAPT loss: infonce=True loss_weights=[0.1, 0.0]" in log
    assert "prob_perplexity" in log and "valid on 'valid' subset" in log
    state = torch.load(ckpt, weights_only=True)
    assert state["cfg"]["model"]["_name"] == "ser_wav2vec2_tapt"
    w2v_args = state["cfg"]["model"]["w2v_args"]
    assert w2v_args["model"]["_name"] == "wav2vec2" and w2v_args["model"]["dropout"] == 0.05
    # the checkpoint's own pretraining criterion is kept for a later `criterion.loss_weights=null`
    assert w2v_args["criterion"]["loss_weights"] == [0.1, 10.0]
    assert (w2v_args["model"]["mask_prob"], w2v_args["model"]["mask_length"]) == (0.05, 10)
    assert list(w2v_args["model"]["latent_temp"]) == [1.0, 1.0, 1.0]
    assert state["optimizer_history"][-1]["num_updates"] == 4
    # fairseq loads it on its own: the copy of the original checkpoint is gone
    from fairseq import checkpoint_utils

    (model,), _, _ = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)])
    assert model.w2v_model.quantizer is not None and model.w2v_model.cfg.dropout == 0.05

    start = torch.load(trained_ckpt, weights_only=True)["model"]
    tapt = {k[len("w2v_model."):]: v for k, v in state["model"].items()}
    assert set(tapt) == set(start)
    for key in PRETRAINING_HEADS:
        assert key in tapt
    for key, value in start.items():
        changed = not torch.equal(value, tapt[key])
        # model.feature_grad_mult=0 froze the CNN encoder; everything else was trained
        assert changed != key.startswith("feature_extractor."), key
    # a TAPT checkpoint passes on the weights of the original pretraining
    task = make_pretraining_task(synth_folds / "fold1")
    assert build_tapt_criterion(task, ckpt, loss_weights=None).loss_weights == [0.1, 10.0]


def test_tapt_from_legacy_checkpoint(legacy_ckpt, synth_folds, tmp_path):
    save = tmp_path / "tapt_legacy"
    # fairseq's trainer in-process, under its bf16 training (the CPU stand-in for the GPU configs' fp16)
    proc = inprocess.run_command(hydra_train("tapt", synth_folds / "fold2", legacy_ckpt, save, *CPU_TAPT,
                                             "criterion.loss_weights=[0.2,5]", *BF16))
    assert "TAPT loss: infonce=True loss_weights=[0.2, 5.0]" in proc.stdout + proc.stderr
    assert_finite_training(proc, "tapt")
    tapt = load_backbone(str(save / "checkpoint_last.pt"))
    assert tapt.source_model == "ser_wav2vec2_tapt" and tapt.has_pretraining_modules
    start = load_backbone(str(legacy_ckpt)).weights
    assert not torch.equal(tapt.weights["final_proj.weight"], start["final_proj.weight"])
    assert not torch.equal(tapt.weights["quantizer.vars"], start["quantizer.vars"])


@pytest.mark.e2e
def test_vft_from_tapt_checkpoint_then_evaluate(tapt_run, synth_folds, tmp_path):
    ckpt, _ = tapt_run
    fold = synth_folds / "fold1"
    save = tmp_path / "vft"
    run_command(hydra_train("vft", fold, ckpt, save, *CPU_VFT))
    state = torch.load(save / "checkpoint_best.pt", weights_only=True)
    assert not any(k.startswith(("backbone.quantizer.", "backbone.final_proj.")) for k in state["model"])
    tapt = torch.load(ckpt, weights_only=True)["model"]
    key = "feature_extractor.conv_layers.0.0.weight"  # frozen in V-FT: still the TAPT weight
    assert torch.equal(state["model"]["backbone." + key], tapt["w2v_model." + key])
    results = tmp_path / "eval"
    proc = run_command(["fairseq-ser", "evaluate", fold, "--checkpoint", save / "checkpoint_best.pt",
                        "--gen-subset", "test", "--results-path", results])
    assert "UA" in proc.stdout
    n_test = len((fold / "test.tsv").read_text().splitlines()) - 1
    assert json.loads((results / "metrics.json").read_text())["num_utterances"] == n_test


def test_loss_weights_reference_or_the_checkpoints(pretrained_ckpt, legacy_ckpt, synth_folds, tmp_path):
    task = make_pretraining_task(synth_folds / "fold1")
    crit = build_tapt_criterion(task, pretrained_ckpt)
    # the reference's: diversity 0.1, no feature penalty, extra losses once per batch
    assert (crit.infonce, crit.loss_weights, crit.extra_losses_per_frame) == (True, [0.1, 0.0], False)
    crit = build_tapt_criterion(task, pretrained_ckpt, loss_weights=None)
    assert (crit.infonce, crit.loss_weights) == (True, [0.1, 10.0])
    assert crit.log_keys == ["prob_perplexity", "code_perplexity", "temp"]
    # a legacy file records them in its args namespace
    legacy = legacy_with_criterion(legacy_ckpt, tmp_path / "legacy.pt", [0.5, 2.0])
    crit = build_tapt_criterion(task, legacy, loss_weights=None)
    assert (crit.infonce, crit.loss_weights, crit.log_keys) == (True, [0.5, 2.0], ["prob_perplexity", "temp"])
    # explicit values win; unset ones still come from the checkpoint
    crit = build_tapt_criterion(task, legacy, loss_weights=[1.0, 0.0])
    assert crit.loss_weights == [1.0, 0.0] and crit.log_keys == ["prob_perplexity", "temp"]
    # (a TAPT checkpoint passing them on: test_tapt_checkpoint_holds_every_pretraining_weight)


def test_tapt_model_continues_from_the_checkpoint(pretrained_ckpt, synth_folds):
    task = make_pretraining_task(synth_folds / "fold1")
    model = build_tapt(task, pretrained_ckpt)
    # the reference's TAPT by default: HF 4.10's masking, CNN at full gradient, temperature fixed at 1
    cfg = model.w2v_model.cfg
    assert (cfg.mask_prob, cfg.mask_length, cfg.feature_grad_mult) == (0.05, 10, 1.0)
    model.set_num_updates(1000)
    assert model.w2v_model.quantizer.curr_temp == 1.0
    # null: the checkpoint's own pretraining settings (pretrain_tiny.yaml: 0.65, 0.1, 2 -> 0.5)
    model = build_tapt(task, pretrained_ckpt, mask_prob=None, feature_grad_mult=None, latent_temp=None)
    assert (model.w2v_model.cfg.mask_prob, model.w2v_model.cfg.feature_grad_mult) == (0.65, 0.1)
    model = build_tapt(task, pretrained_ckpt, mask_prob=0.5, latent_temp=None)
    start = load_backbone(str(pretrained_ckpt))
    assert model.w2v_model.cfg.mask_prob == 0.5
    assert model.w2v_model.cfg.encoder_embed_dim == start.w2v_args.model.encoder_embed_dim
    for key, value in model.w2v_model.state_dict().items():
        assert torch.equal(value, start.weights[key]), key
    model.set_num_updates(1000)
    assert model.w2v_model.quantizer.curr_temp < model.w2v_model.quantizer.max_temp
    model = build_tapt(task, pretrained_ckpt, latent_temp=[0.7, 0.5, 0.999])
    assert model.w2v_model.quantizer.curr_temp == 0.7


def test_bad_checkpoints_are_rejected(pretrained_ckpt, ctc_ckpt, synth_folds, tmp_path):
    task = make_pretraining_task(synth_folds / "fold1")
    state = torch.load(pretrained_ckpt, weights_only=True)
    missing = tmp_path / "missing.pt"
    torch.save({**state, "model": {k: v for k, v in state["model"].items() if k != "project_q.weight"}}, missing)
    with pytest.raises(CheckpointError, match="missing.pt: .*missing project_q.weight"):
        build_tapt(task, missing)
    shaped = tmp_path / "shaped.pt"
    weights = dict(state["model"])
    weights["quantizer.vars"] = weights["quantizer.vars"][:, :-1]
    torch.save({**state, "model": weights}, shaped)
    with pytest.raises(CheckpointError, match="shaped.pt: weight quantizer.vars has shape"):
        build_tapt(task, shaped)
    with pytest.raises(CheckpointError, match="w2v_ctc.pt: .*no pretraining heads"):
        build_tapt(task, ctc_ckpt)
    with pytest.raises(CheckpointError, match="pretrained with task.normalize=false .* set task.normalize=false"):
        build_tapt(make_pretraining_task(synth_folds / "fold1", normalize=True), pretrained_ckpt)


def test_tapt_without_a_quantizer_or_with_wrong_loss_weights_is_a_clear_error(pretrained_ckpt, synth_folds,
                                                                             tmp_path):
    task = make_pretraining_task(synth_folds / "fold1")
    state = torch.load(pretrained_ckpt, weights_only=True)
    no_quantizer = tmp_path / "no_quantizer.pt"
    cfg = dict(state["cfg"], model=dict(state["cfg"]["model"], quantize_targets=False))
    weights = {k: v for k, v in state["model"].items() if not k.startswith("quantizer.")}
    torch.save({**state, "cfg": cfg, "model": weights}, no_quantizer)
    with pytest.raises(CheckpointError, match="no_quantizer.pt: .*no quantizer .*quantize_targets=false"):
        build_tapt(task, no_quantizer)

    model = build_tapt(task, pretrained_ckpt).train()
    sample = {"id": torch.arange(2), "net_input": {"source": torch.randn(2, 16000) * 0.1}}
    criterion = build_tapt_criterion(task, pretrained_ckpt, loss_weights=[0.1, 0.0, 1.0])
    with pytest.raises(CheckpointError, match=r"checkpoint_last.pt: this model returns 2 extra loss\(es\) "
                                              r"\(codebook diversity, feature penalty\) but criterion.loss_weights "
                                              r"has 3"):
        criterion(model, sample)
    # the reference adds the diversity term once per batch; fairseq (per_frame) once per masked frame
    from fairseq_ser.criterions.ser_wav2vec_tapt import _CheckedExtraLosses

    net_output = model(**sample["net_input"])
    frames = model.get_logits(net_output).size(0)
    once, per_frame = (
        _CheckedExtraLosses(model, build_tapt_criterion(task, pretrained_ckpt, extra_losses_per_frame=flag))
        .get_extra_losses(net_output) for flag in (False, True))
    assert len(once) == len(per_frame) == 2 and frames > 1
    for a, b in zip(once, per_frame):
        assert torch.allclose(a * frames, b)
    _, _, log = build_tapt_criterion(task, pretrained_ckpt)(model, sample)
    assert np.isfinite(log["loss"])


def test_tapt_masks_follow_the_seed(pretrained_ckpt, synth_folds):
    # fairseq's compute_mask_indices draws each utterance's spans from fresh OS entropy unless it is
    # given a seed; TAPT's masks must come from the per-update seed fairseq sets, like its dropout
    model = build_tapt(make_pretraining_task(synth_folds / "fold1"), pretrained_ckpt, mask_prob=0.3).train()
    source = torch.randn(3, 16000)

    def masked(seed):
        torch.manual_seed(seed)
        np.random.seed(seed)
        return model(source=source)["x"].detach()

    assert torch.equal(masked(5), masked(5))
    assert not torch.equal(masked(5), masked(6))
    # a padded batch: no span starts in an utterance's padding
    padding = torch.zeros(3, 16000, dtype=torch.bool)
    padding[1, 8000:] = True
    torch.manual_seed(0)
    mask = model._seeded_time_mask(source, padding)
    frames = model.w2v_model._get_feat_extract_output_lengths(torch.tensor(8000)).item()
    assert mask.shape[0] == 3 and not mask[1, frames:].any() and mask[1, :frames].any()
