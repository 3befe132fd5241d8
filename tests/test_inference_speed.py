"""The faster inference paths give the outputs of the paths they replace.

On the CPU a padded batch runs the CNN on each utterance's own samples
(masked_encoder._cnn_each_alone) instead of the batched masked group norm
(masked_encoder._per_utterance_cnn); trained models load on the meta device
and take the checkpoint's tensors as their own (checkpoint.load_trained).
Neither may change a prediction beyond float rounding.
"""

import pytest
import torch

from builders import build_classifier, make_task, padded_batch
from fairseq_ser.errors import CheckpointError
from fairseq_ser.models import masked_encoder
from fairseq_ser.models.checkpoint import load_trained

CLASSIFIER = "ser_wav2vec2_classifier"
LENGTHS = [12000, 9000, 4000, 11999]
TOL = 1e-5


@pytest.fixture(scope="module")
def classifier(pretrained_ckpt, synth_folds):
    return build_classifier(make_task(synth_folds / "fold1"), pretrained_ckpt).eval()


def valid_frames_close(a, b, frames):
    """``(B, C, T)`` features equal over each row's valid frames, and both zero after them."""
    for row, n in enumerate(frames):
        assert torch.allclose(a[row, :, :n], b[row, :, :n], atol=TOL), (a[row, :, :n] - b[row, :, :n]).abs().max()
        assert not a[row, :, n:].any() and not b[row, :, n:].any()


def test_cpu_cnn_equals_the_batched_group_norm_path(classifier):
    backbone = classifier.backbone
    source, padding = padded_batch(LENGTHS)
    frames = backbone._get_feat_extract_output_lengths(torch.tensor(LENGTHS)).tolist()
    with torch.no_grad():
        each = masked_encoder._cnn_each_alone(backbone, source, padding)
        batched = masked_encoder._per_utterance_cnn(backbone, source, padding)
    assert each.shape == batched.shape
    valid_frames_close(each, batched, frames)


def test_cpu_cnn_of_a_layer_norm_extractor_equals_the_plain_batch(classifier):
    # large-model style extractors: padding does not change valid frames, the batched CNN is exact
    from fairseq_ser.models.backbone import build_wav2vec2

    backbone = build_wav2vec2(classifier.cfg.w2v_args, {"extractor_mode": "layer_norm"}).eval()
    source, padding = padded_batch(LENGTHS)
    frames = backbone._get_feat_extract_output_lengths(torch.tensor(LENGTHS)).tolist()
    with torch.no_grad():
        each = masked_encoder._cnn_each_alone(backbone, source, padding)
        batched = backbone.feature_extractor(source)
    for row, n in enumerate(frames):
        batched[row, :, n:] = 0
    valid_frames_close(each, batched, frames)


def test_cpu_padded_batch_gives_each_utterance_its_own_logits(classifier):
    source, padding = padded_batch(LENGTHS)
    with torch.inference_mode():
        together = classifier(source, padding_mask=padding)
        alone = torch.cat([classifier(source[i:i + 1, :n]) for i, n in enumerate(LENGTHS)])
        # the path a GPU takes, forced here on the CPU
        original = masked_encoder._cnn_each_alone
        masked_encoder._cnn_each_alone = masked_encoder._per_utterance_cnn
        try:
            batched_norm = classifier(source, padding_mask=padding)
        finally:
            masked_encoder._cnn_each_alone = original
    assert torch.allclose(together, alone, atol=TOL), (together - alone).abs().max()
    assert torch.allclose(together, batched_norm, atol=TOL), (together - batched_norm).abs().max()


def test_cpu_cnn_passes_gradients_when_trained(pretrained_ckpt, synth_folds):
    model = build_classifier(make_task(synth_folds / "fold1"), pretrained_ckpt,
                             freeze_feature_encoder=False).train()
    source, padding = padded_batch(LENGTHS)
    model(source, padding_mask=padding).sum().backward()
    grad = model.backbone.feature_extractor.conv_layers[1][0].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---------------------------------------------------------------- loading

def reference_model(path):
    """The model as loading made it before: built with random weights, then the stored ones copied in."""
    from types import SimpleNamespace

    from fairseq.dataclass.utils import merge_with_parent
    from fairseq.models import MODEL_DATACLASS_REGISTRY, MODEL_REGISTRY

    from fairseq_ser.models.checkpoint import checkpoint_config, read_checkpoint

    state = read_checkpoint(str(path))
    cfg = merge_with_parent(MODEL_DATACLASS_REGISTRY[CLASSIFIER](), checkpoint_config(state, str(path)).model,
                            remove_missing=True)
    model = MODEL_REGISTRY[CLASSIFIER].build_model(cfg, SimpleNamespace(class_names=list(cfg.class_names)))
    model.load_state_dict(state["model"], strict=True)
    return model


def logits(model):
    source, padding = padded_batch(LENGTHS, seed=3)
    with torch.inference_mode():
        return model.eval()(source, padding_mask=padding)


def test_loaded_classifier_is_the_stored_one(classifier_ckpt):
    loaded, reference = load_trained(str(classifier_ckpt), CLASSIFIER), reference_model(classifier_ckpt)
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    ours, theirs = dict(loaded.named_parameters()), dict(reference.named_parameters())
    assert ours.keys() == theirs.keys()
    for name, p in ours.items():
        assert p.dtype == theirs[name].dtype and p.requires_grad == theirs[name].requires_grad, name
        assert torch.equal(p, theirs[name]), name
    assert loaded.training  # as built, like the reference
    assert torch.equal(logits(loaded), logits(reference))


def with_optimizer_state(src, dst):
    """``src`` with an Adam-like state of every weight beside the model, as a training checkpoint holds."""
    state = torch.load(src, weights_only=False)
    state["last_optimizer_state"] = {"state": {i: {"exp_avg": torch.zeros_like(v), "exp_avg_sq": torch.ones_like(v)}
                                               for i, v in enumerate(state["model"].values())}}
    torch.save(state, dst)
    return dst


@pytest.mark.parametrize("layout", ["model only", "training checkpoint"])
def test_loaded_weights_do_not_live_on_the_file(classifier_ckpt, tmp_path, layout):
    # fairseq overwrites checkpoint_best.pt in place; a model on the file's map would change or crash
    path = tmp_path / "checkpoint_best.pt"
    if layout == "model only":
        path.write_bytes(classifier_ckpt.read_bytes())
    else:
        with_optimizer_state(classifier_ckpt, path)
    model = load_trained(str(path), CLASSIFIER)
    expected = logits(reference_model(classifier_ckpt))
    size = path.stat().st_size
    with open(path, "r+b") as f:  # in place, as shutil.copyfile writes
        f.write(b"\0" * size)
    assert torch.equal(logits(model), expected)


def test_fp16_weights_load_as_float32(classifier_ckpt, tmp_path):
    state = torch.load(classifier_ckpt, weights_only=False)
    state["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    path = tmp_path / "fp16.pt"
    torch.save(state, path)
    model = load_trained(str(path), CLASSIFIER)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    for name, p in model.state_dict().items():
        assert torch.equal(p, state["model"][name].float()), name


def test_wrong_weights_are_refused(classifier_ckpt, tmp_path):
    state = torch.load(classifier_ckpt, weights_only=False)
    key = next(k for k in state["model"] if k.endswith("fc1.weight"))
    state["model"][key] = state["model"][key][:, :-1].clone()
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"{path}: weight {key} has shape"):
        load_trained(str(path), CLASSIFIER)
    del state["model"][key]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"{path}: weights do not fit .*missing {key}"):
        load_trained(str(path), CLASSIFIER)


@pytest.mark.parametrize("backbone", ["wav2vec 2.0", "wav2vec 1.0"])
def test_frame_emotion_model_loads_as_saved(backbone, pretrained_ckpt, synth_folds, tmp_path):
    # P-TAPT stage 1's model (an LSTM head; a wav2vec 1.0 backbone in the paper) loads the same way
    from omegaconf import OmegaConf

    from builders import build_frame_emotion
    from checkpoints import make_wav2vec1

    w2v = pretrained_ckpt if backbone == "wav2vec 2.0" else make_wav2vec1(str(tmp_path / "w2v1.pt"))
    model = build_frame_emotion(make_task(synth_folds / "fold1"), w2v).eval()
    model_cfg = OmegaConf.to_container(model.cfg, resolve=True, enum_to_str=True)
    model_cfg["_name"] = "ser_frame_emotion"
    path = tmp_path / "stage1.pt"
    torch.save({"cfg": {"model": model_cfg, "task": {"_name": "ser_classification"}}, "model": model.state_dict()},
               path)
    loaded = load_trained(str(path), "ser_frame_emotion").eval()
    source, padding = padded_batch(LENGTHS)
    with torch.inference_mode():
        ours, theirs = loaded(source, padding_mask=padding), model(source, padding_mask=padding)
    for key in ("frame_logits", "utterance_logits"):
        assert torch.equal(ours[key], theirs[key]), key
