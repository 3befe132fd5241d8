"""HuggingFace transformers wav2vec2 folders -> fairseq checkpoints, checked against transformers itself.

Tiny random transformers models (wav2vec2-base style: group-norm CNN, post-LN
Transformer; large LV-60 style: layer-norm CNN with conv bias, pre-LN
Transformer) are saved the ways users hold them, converted, rebuilt through
the package's own loader and run on the same audio as the transformers model.
"""

import json
import types

import pytest
import torch

import fairseq_ser
from fairseq_ser.errors import CheckpointError
from fairseq_ser.models.backbone import build_wav2vec2, load_backbone_weights
from fairseq_ser.models.checkpoint import load_backbone
from fairseq_ser.models.hf_import import convert_hf_folder, save_checkpoint
from fairseq_ser.models.hf_weights import read_safetensors
from fairseq_ser.models.masked_encoder import encode

import inprocess
from builders import build_classifier, build_ptapt, build_tapt
from commands import CPU_VFT, hydra_train
from hf_transformers import MISSING_REASON, import_transformers

fairseq_ser.register()
transformers = import_transformers()
needs_transformers = pytest.mark.skipif(transformers is None, reason=MISSING_REASON)

TOLERANCE = 1e-4
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            conv_dim=(16,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
            num_codevectors_per_group=10, num_codevector_groups=2, codevector_dim=24, proj_codevector_dim=20)
STYLES = {
    "base": dict(feat_extract_norm="group", do_stable_layer_norm=False),
    "large": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}
# name -> (style, transformers class, how the folder is written, task.normalize it should give)
VARIANTS = {
    # shards and an index, and the preprocessor_config.json of facebook/wav2vec2-base
    "base_pretraining": ("base", "Wav2Vec2ForPreTraining", "sharded", True),
    "large_pretraining": ("large", "Wav2Vec2ForPreTraining", "safetensors", True),
    "base_model_bin": ("base", "Wav2Vec2Model", "bin", False),  # older files: weight_g / weight_v names
    "large_ctc_fp16": ("large", "Wav2Vec2ForCTC", "fp16", True),  # no mask embedding, half-precision file
}


def make_hf_folder(folder, style, cls_name, how, seed=0):
    """Save a tiny random transformers wav2vec2; return the model (float32, eval) whose weights the folder holds."""
    extra = {"mask_time_prob": 0.0} if how == "fp16" else {}
    config = transformers.Wav2Vec2Config(**TINY, **STYLES[style], **extra)
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(config).eval()
    if how == "bin":
        config.architectures = [cls_name]
        config.save_pretrained(folder)
        old_names = {k.replace("parametrizations.weight.original0", "weight_g")
                     .replace("parametrizations.weight.original1", "weight_v"): v
                     for k, v in model.state_dict().items()}
        torch.save(old_names, folder / "pytorch_model.bin")
    elif how == "fp16":
        model.half().save_pretrained(folder)
        model.float()  # the weights now hold exactly what the file does
    elif how == "sharded":
        model.save_pretrained(folder, max_shard_size="40KB")
        assert (folder / "model.safetensors.index.json").is_file()
        (folder / "preprocessor_config.json").write_text(json.dumps(
            {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": True, "sampling_rate": 16000}))
    else:
        model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    """name -> (folder, transformers model, converted checkpoint path)."""
    if transformers is None:
        pytest.skip(MISSING_REASON)
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for name, (style, cls_name, how, _) in VARIANTS.items():
        folder = root / name
        model = make_hf_folder(folder, style, cls_name, how)
        ckpt = root / f"{name}.pt"
        save_checkpoint(convert_hf_folder(str(folder)), str(ckpt))
        out[name] = (folder, model, ckpt)
    return out


def fairseq_model(ckpt):
    """The converted checkpoint through the package's loader: fairseq Wav2Vec2Model, eval mode."""
    pretrained = load_backbone(str(ckpt))
    model = build_wav2vec2(pretrained.w2v_args)
    load_backbone_weights(model, pretrained.weights, str(ckpt),
                          keep_pretraining_modules=pretrained.has_pretraining_modules)
    return model.eval(), pretrained


def hf_backbone(model):
    return getattr(model, "wav2vec2", model)


@needs_transformers
@pytest.mark.parametrize("name", list(VARIANTS))
def test_outputs_match_transformers(hf_models, name):
    folder, hf, ckpt = hf_models[name]
    model, pretrained = fairseq_model(ckpt)
    style, _, _, normalize = VARIANTS[name]
    assert pretrained.w2v_args.model.extractor_mode == ("default" if style == "base" else "layer_norm")
    assert pretrained.w2v_args.model.layer_norm_first == (style == "large")
    assert pretrained.w2v_args.task.normalize == normalize
    torch.manual_seed(1)
    wav = torch.randn(2, 12000) * 0.2
    with torch.no_grad():
        expected = hf_backbone(hf)(wav).last_hidden_state
        got = model.extract_features(wav, None)["x"]
        assert got.shape == expected.shape and expected.std() > 0.1
        assert (got - expected).abs().max() < TOLERANCE

        # padded batch through the package's encoder: the second utterance is 7000 samples
        padding = torch.zeros(2, 12000, dtype=torch.bool)
        padding[1, 7000:] = True
        padded = wav.masked_fill(padding, 0.0)
        x, frame_padding, _, _ = encode(model, padded, padding)
        alone = hf_backbone(hf)(padded[1:, :7000]).last_hidden_state[0]
        n = alone.shape[0]
        assert int((~frame_padding[1]).sum()) == n
        assert (x[1, :n] - alone).abs().max() < TOLERANCE
        assert (x[0] - expected[0]).abs().max() < TOLERANCE
        if style == "large":
            # transformers honours attention masks only with a layer-norm CNN
            masked = hf_backbone(hf)(padded, attention_mask=(~padding).long()).last_hidden_state
            assert (x[1, :n] - masked[1, :n]).abs().max() < TOLERANCE
            assert (x[0] - masked[0]).abs().max() < TOLERANCE


@needs_transformers
@pytest.mark.parametrize("name", ["base_pretraining", "large_pretraining"])
def test_pretraining_modules_match(hf_models, name):
    folder, hf, ckpt = hf_models[name]
    model, pretrained = fairseq_model(ckpt)
    assert pretrained.has_pretraining_modules
    assert torch.equal(model.quantizer.vars, hf.quantizer.codevectors)
    assert torch.equal(model.quantizer.weight_proj.weight, hf.quantizer.weight_proj.weight)
    assert torch.equal(model.final_proj.weight, hf.project_hid.weight)
    assert torch.equal(model.project_q.bias, hf.project_q.bias)
    torch.manual_seed(2)
    wav = torch.randn(2, 12000) * 0.2
    with torch.no_grad():
        out = hf(wav)
        res = model.extract_features(wav, None)
        # eval mode: both quantizers take the argmax codeword of each group
        quantized = model.project_q(model.quantizer(res["features"])["x"])
        assert (quantized - out.projected_quantized_states).abs().max() < TOLERANCE
        assert (model.final_proj(res["x"]) - out.projected_states).abs().max() < TOLERANCE


@needs_transformers
def test_fairseq_itself_loads_the_checkpoint(hf_models):
    from fairseq import checkpoint_utils

    _, hf, ckpt = hf_models["large_pretraining"]
    models, cfg, _ = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)], arg_overrides={"data": "."})
    assert cfg.model._name == "wav2vec2" and cfg.task._name == "audio_pretraining"
    assert torch.equal(models[0].quantizer.vars, hf.quantizer.codevectors)


@needs_transformers
def test_encoder_only_imports(hf_models):
    _, ctc, ckpt = hf_models["large_ctc_fp16"]
    state = torch.load(ckpt, weights_only=True)
    info = state["extra_state"]["hf_import"]
    assert info["architectures"] == ["Wav2Vec2ForCTC"] and not info["pretraining_modules"]
    assert info["dropped"] == ["lm_head.bias", "lm_head.weight"] and info["mask_emb_initialised"]
    assert not any(k.startswith(("quantizer.", "project_q.", "final_proj.")) for k in state["model"])
    assert torch.equal(state["model"]["encoder.layers.1.fc1.weight"],
                       ctc.wav2vec2.encoder.layers[1].feed_forward.intermediate_dense.weight)
    _, model, bin_ckpt = hf_models["base_model_bin"]
    assert torch.equal(torch.load(bin_ckpt, weights_only=True)["model"]["mask_emb"], model.masked_spec_embed)


@needs_transformers
def test_tapt_needs_a_pretraining_import(hf_models):
    folder, hf, ckpt = hf_models["base_pretraining"]
    for path in (ckpt, folder):  # the converted file, or the folder converted in memory
        tapt = build_tapt(None, path)
        assert torch.equal(tapt.w2v_model.quantizer.vars, hf.quantizer.codevectors)
    _, _, model_ckpt = hf_models["base_model_bin"]
    with pytest.raises(CheckpointError, match=r"base_model_bin\.pt: .*no pretraining heads.*Wav2Vec2ForPreTraining"):
        build_tapt(None, model_ckpt)


@needs_transformers
def test_encoder_only_import_serves_vft_and_ptapt_builds(hf_models):
    folder, ctc, ckpt = hf_models["large_ctc_fp16"]
    weight = ctc.wav2vec2.encoder.layers[0].attention.k_proj.weight
    ptapt = build_ptapt(ckpt, cluster_sizes=[4, 8])
    assert torch.equal(ptapt.backbone.encoder.layers[0].self_attn.k_proj.weight, weight)
    clf = build_classifier(types.SimpleNamespace(class_names=["a", "b", "c"]), folder)
    assert torch.equal(clf.backbone.encoder.layers[0].self_attn.k_proj.weight, weight)
    assert clf.normalize_input and clf(torch.randn(2, 8000)).shape == (2, 3)


@needs_transformers
def test_vft_training_from_an_import(hf_models, synth_folds, tmp_path):
    _, _, ckpt = hf_models["base_model_bin"]
    save = tmp_path / "vft"
    overrides = [o for o in CPU_VFT if not o.startswith("optimization.max_update=")]
    inprocess.run_command(hydra_train("vft", synth_folds / "fold1", ckpt, save, *overrides,
                                      "optimization.max_update=2"))
    state = torch.load(save / "checkpoint_last.pt", weights_only=True)
    assert state["optimizer_history"][-1]["num_updates"] == 2
    assert state["cfg"]["model"]["w2v_args"]["model"]["encoder_embed_dim"] == TINY["hidden_size"]


@needs_transformers
def test_command(hf_models, tmp_path, capsys):
    from fairseq_ser.cli.main import main

    folder = hf_models["large_ctc_fp16"][0]
    out = tmp_path / "w2v.pt"
    proc = inprocess.run_command(["fairseq-ser", "import-hf", folder, out])
    assert "dropped (task head): lm_head.bias, lm_head.weight" in proc.stdout
    assert "absent; usable for V-FT and P-TAPT, not TAPT" in proc.stdout
    first = torch.load(out, weights_only=True)
    assert first["cfg"]["task"]["normalize"] is True
    # the same command again: an existing file needs --force
    assert main(["import-hf", str(folder), str(out)]) == 2
    assert f"{out}: already exists; pass --force" in capsys.readouterr().err
    assert main(["import-hf", str(folder), str(out), "--force", "--normalize", "false"]) == 0
    assert "task.normalize=false" in capsys.readouterr().out
    second = torch.load(out, weights_only=True)
    assert second["cfg"]["task"]["normalize"] is False
    assert all(torch.equal(first["model"][k], second["model"][k]) for k in first["model"])


def write_config(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(fields))
    return folder


def test_command_rejects_other_architectures(tmp_path):
    hubert = write_config(tmp_path / "hubert-base", model_type="hubert", architectures=["HubertModel"])
    proc = inprocess.run_command(["fairseq-ser", "import-hf", hubert, tmp_path / "out.pt"], expect_ok=False)
    assert proc.returncode == 2
    assert f"{hubert}: config.json describes a 'hubert' model (HubertModel), not wav2vec2" in proc.stderr
    assert not (tmp_path / "out.pt").exists()


def test_bad_folders(tmp_path):
    with pytest.raises(CheckpointError, match="facebook/wav2vec2-base: not a folder"):
        convert_hf_folder("facebook/wav2vec2-base")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="empty: no config.json; not a HuggingFace model folder"):
        convert_hf_folder(str(empty))
    with pytest.raises(CheckpointError, match="empty: is a folder, expected a fairseq checkpoint file"):
        load_backbone(str(empty))
    conformer = write_config(tmp_path / "conf", model_type="wav2vec2-conformer")
    with pytest.raises(CheckpointError, match="conf: .*'wav2vec2-conformer' model, not wav2vec2"):
        load_backbone(str(conformer))
    no_weights = write_config(tmp_path / "no_weights", model_type="wav2vec2", architectures=["Wav2Vec2ForCTC"])
    with pytest.raises(CheckpointError, match="no_weights: no model weights"):
        convert_hf_folder(str(no_weights))
    (no_weights / "tf_model.h5").write_bytes(b"")
    with pytest.raises(CheckpointError, match="TensorFlow / Flax weights are not read here"):
        convert_hf_folder(str(no_weights))
    odd = write_config(tmp_path / "odd", model_type="wav2vec2", feat_extract_activation="relu",
                       add_adapter=True, layer_norm_eps=1e-6)
    with pytest.raises(CheckpointError, match=r"odd: .*cannot represent: feat_extract_activation='relu' "
                                              r".*layer_norm_eps=1e-06.*add_adapter=true"):
        convert_hf_folder(str(odd))
    bert = write_config(tmp_path / "bert", model_type="wav2vec2", architectures=["Wav2Vec2BertModel"])
    with pytest.raises(CheckpointError, match="bert: architecture Wav2Vec2BertModel is not one of"):
        convert_hf_folder(str(bert))


@needs_transformers
def test_weights_that_do_not_fit(hf_models, tmp_path):
    import shutil

    folder = tmp_path / "wrong"
    shutil.copytree(hf_models["base_model_bin"][0], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match="wrong: weights do not fit .*missing encoder.layers.2"):
        convert_hf_folder(str(folder))
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(CheckpointError, match=r"wrong: weight encoder.layers.0.fc1.weight has shape \(64, 32\), "
                                                  r"its config.json implies \(48, 32\)"):
        convert_hf_folder(str(folder))


def test_safetensors_reader(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    tensors = {"f32": torch.randn(3, 4), "f16": torch.randn(5).half(), "bf16": torch.randn(2, 3).bfloat16(),
               "f64": torch.randn(()).double(), "empty": torch.zeros(0, 2)}
    path = tmp_path / "x.safetensors"
    safetensors_torch.save_file(tensors, str(path), metadata={"format": "pt"})
    read = read_safetensors(str(path))
    assert set(read) == set(tensors)
    for name, tensor in tensors.items():
        assert read[name].dtype == torch.float32 and torch.equal(read[name], tensor.float()), name
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(CheckpointError, match="x.safetensors: .*truncated .*not fully covered"):
        read_safetensors(str(path))
    path.write_bytes(b"\xff" * 16)
    with pytest.raises(CheckpointError, match="x.safetensors: not a safetensors file"):
        read_safetensors(str(path))
