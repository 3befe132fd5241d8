"""Converting HuggingFace ``transformers`` wav2vec2 folders into fairseq wav2vec 2.0 checkpoints.

A folder with ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``
(``Wav2Vec2ForPreTraining``, ``Wav2Vec2Model``, ``Wav2Vec2ForCTC`` or another
``Wav2Vec2For...`` head) becomes a checkpoint in fairseq's own ``cfg`` layout
for its ``wav2vec2`` model (``audio_pretraining`` task), which every stage
reads as ``w2v_path``. ``transformers`` is not needed: the config is JSON and
the weights are read by :mod:`.hf_weights`.

``Wav2Vec2ForPreTraining`` brings the quantizer and both projections
(``project_q``; ``project_hid``, fairseq's ``final_proj``), so TAPT can
continue its pretraining. Other heads hold the encoder only: their checkpoint
serves V-FT and P-TAPT, and TAPT refuses it. Task heads (``lm_head``,
classifiers) are dropped.
"""

import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from ..errors import CheckpointError, preview
from ..fileio import atomic_path
from .hf_weights import read_weights, weight_files

logger = logging.getLogger(__name__)

HF_MODEL_TYPE = "wav2vec2"
PRETRAINING_ARCHITECTURE = "Wav2Vec2ForPreTraining"
ACCEPTED_ARCHITECTURES = (
    PRETRAINING_ARCHITECTURE, "Wav2Vec2Model", "Wav2Vec2ForCTC", "Wav2Vec2ForMaskedLM",
    "Wav2Vec2ForSequenceClassification", "Wav2Vec2ForAudioFrameClassification", "Wav2Vec2ForXVector",
)
SAMPLE_RATE = 16000

# transformers' Wav2Vec2Config defaults, for config.json files written before a field existed
HF_DEFAULTS = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "hidden_act": "gelu", "hidden_dropout": 0.1, "activation_dropout": 0.1, "attention_dropout": 0.1,
    "feat_proj_dropout": 0.0, "feat_quantizer_dropout": 0.0, "layerdrop": 0.1, "layer_norm_eps": 1e-5,
    "feat_extract_norm": "group", "feat_extract_activation": "gelu",
    "conv_dim": [512] * 7, "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_bias": False, "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": False, "num_codevectors_per_group": 320, "num_codevector_groups": 2,
    "contrastive_logits_temperature": 0.1, "num_negatives": 100, "codevector_dim": 256,
    "proj_codevector_dim": 256, "add_adapter": False, "adapter_attn_dim": None,
}

# transformers activation -> fairseq activation_fn computing the same function
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "tanh": "tanh", "linear": "linear",
               "gelu_new": "gelu_accurate", "gelu_pytorch_tanh": "gelu_accurate"}

# transformers name (inside the wav2vec2 backbone) -> fairseq Wav2Vec2Model name; {norm} and
# {pos_g} / {pos_v} depend on the feature encoder's norm and on fairseq's weight-norm names
_BACKBONE_NAMES = [
    (r"masked_spec_embed", r"mask_emb"),
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", r"feature_extractor.conv_layers.\1.0.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)",
     r"feature_extractor.conv_layers.\1.{norm}.\2"),
    (r"feature_projection\.layer_norm\.(weight|bias)", r"layer_norm.\1"),
    (r"feature_projection\.projection\.(weight|bias)", r"post_extract_proj.\1"),
    (r"encoder\.pos_conv_embed\.conv\.bias", r"encoder.pos_conv.0.bias"),
    (r"encoder\.pos_conv_embed\.conv\.(?:weight_g|parametrizations\.weight\.original0)", r"{pos_g}"),
    (r"encoder\.pos_conv_embed\.conv\.(?:weight_v|parametrizations\.weight\.original1)", r"{pos_v}"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.attention\.(q|k|v|out)_proj\.(weight|bias)",
     r"encoder.layers.\1.self_attn.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.layer_norm\.(weight|bias)", r"encoder.layers.\1.self_attn_layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(weight|bias)", r"encoder.layers.\1.fc1.\2"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.(weight|bias)", r"encoder.layers.\1.fc2.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
]
# Wav2Vec2ForPreTraining's own modules (outside its "wav2vec2." backbone); same codebook layout
# in both: (1, groups * vars, codevector_dim / groups)
_PRETRAINING_NAMES = [
    (r"quantizer\.codevectors", r"quantizer.vars"),
    (r"quantizer\.weight_proj\.(weight|bias)", r"quantizer.weight_proj.\1"),
    (r"project_q\.(weight|bias)", r"project_q.\1"),
    (r"project_hid\.(weight|bias)", r"final_proj.\1"),
]
PRETRAINING_MODULES = ("quantizer.", "project_q.", "final_proj.")


@dataclass
class HfImport:
    folder: str
    state: Dict[str, Any]  # the fairseq checkpoint (cfg layout), ready for torch.save
    architectures: List[str]
    files: List[str]
    has_pretraining_modules: bool
    normalize: bool
    dropped: List[str] = field(default_factory=list)  # HF weights not carried over (task heads)
    mask_emb_initialised: bool = False  # the HF model had no mask embedding; fairseq's init was used


def is_hf_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


def convert_hf_folder(folder: str, normalize: Optional[bool] = None) -> HfImport:
    """Read a HuggingFace wav2vec2 folder and build the equivalent fairseq checkpoint in memory.

    ``normalize``: whether the model expects zero-mean unit-variance audio;
    None reads ``do_normalize`` of ``preprocessor_config.json``, else assumes
    it for layer-norm feature encoders (large LV-60, XLS-R) only.
    """
    if not os.path.isdir(folder):
        raise CheckpointError(f"{folder}: not a folder; download the HuggingFace model first "
                              "(e.g. huggingface-cli download facebook/wav2vec2-base --local-dir DIR)")
    config = _read_json(os.path.join(folder, "config.json"), folder)
    architectures = _check_config(config, folder)
    hf = {key: config.get(key, default) for key, default in HF_DEFAULTS.items()}
    preprocessor = _read_preprocessor(folder)
    rate = preprocessor.get("sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise CheckpointError(f"{folder}: the model takes {rate} Hz audio; fairseq-ser feeds 16000 Hz")
    if normalize is None:
        normalize = bool(preprocessor.get("do_normalize", hf["feat_extract_norm"] == "layer"))
    model_cfg = fairseq_model_config(hf)
    template = _template_shapes(model_cfg, hf["num_hidden_layers"])
    files = weight_files(folder)
    weights, has_pretraining, dropped = map_weights(read_weights(files), hf, template, folder)
    mask_emb_initialised = "mask_emb" not in weights
    if mask_emb_initialised:
        # transformers only creates it when its config masks; fairseq's initialisation stands in
        logger.warning("%s: has no mask embedding (masked_spec_embed); initialising it as fairseq does", folder)
        weights["mask_emb"] = torch.empty(hf["hidden_size"]).uniform_(generator=torch.Generator().manual_seed(0))
    _check_shapes(weights, template, has_pretraining, folder)
    state = {
        "args": None,
        "cfg": {"model": model_cfg,
                "task": {"_name": "audio_pretraining", "normalize": normalize, "sample_rate": SAMPLE_RATE}},
        "model": weights,
        "optimizer_history": [{"criterion_name": "Wav2vecCriterion", "optimizer_name": "none",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {},
        "extra_state": {"hf_import": {"source": os.path.abspath(folder), "architectures": architectures,
                                      "pretraining_modules": has_pretraining, "dropped": dropped,
                                      "mask_emb_initialised": mask_emb_initialised}},
        "last_optimizer_state": None,
    }
    return HfImport(folder=folder, state=state, architectures=architectures, files=files,
                    has_pretraining_modules=has_pretraining, normalize=normalize, dropped=dropped,
                    mask_emb_initialised=mask_emb_initialised)


def save_checkpoint(result: HfImport, out: str, force: bool = False) -> None:
    """Write the converted checkpoint to ``out`` atomically; an existing file needs ``force``."""
    if os.path.isdir(out):
        raise CheckpointError(f"{out}: is a folder; give the checkpoint file to write (e.g. {out}/w2v.pt)")
    if os.path.exists(out) and not force:
        raise CheckpointError(f"{out}: already exists; pass --force to overwrite it")
    with atomic_path(out) as tmp:
        torch.save(result.state, tmp)


def _read_json(path: str, folder: str) -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"{folder}: no {os.path.basename(path)}; not a HuggingFace model folder")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read JSON ({e})")
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data


def _read_preprocessor(folder: str) -> dict:
    path = os.path.join(folder, "preprocessor_config.json")
    return _read_json(path, folder) if os.path.isfile(path) else {}


def _check_config(config: dict, folder: str) -> List[str]:
    """The config's architectures; anything fairseq's wav2vec2 cannot hold is an error naming the folder."""
    architectures = list(config.get("architectures") or [])
    model_type = config.get("model_type")
    if model_type != HF_MODEL_TYPE:
        what = f"a {model_type!r} model" if model_type else "a model without 'model_type'"
        raise CheckpointError(
            f"{folder}: config.json describes {what}{_listed(architectures)}, not wav2vec2; only "
            f"transformers wav2vec2 models convert to fairseq's wav2vec2 "
            f"(HuBERT, WavLM, data2vec-audio, wav2vec2-conformer and wav2vec2-bert are other architectures)")
    others = [a for a in architectures if a not in ACCEPTED_ARCHITECTURES]
    if others:
        raise CheckpointError(f"{folder}: architecture {others[0]} is not one of {', '.join(ACCEPTED_ARCHITECTURES)}")
    hf = {key: config.get(key, default) for key, default in HF_DEFAULTS.items()}
    problems = []
    if hf["feat_extract_norm"] not in ("group", "layer"):
        problems.append(f"feat_extract_norm={hf['feat_extract_norm']!r} (fairseq: 'group' or 'layer')")
    if hf["feat_extract_activation"] != "gelu":
        problems.append(f"feat_extract_activation={hf['feat_extract_activation']!r} (fairseq: gelu)")
    if hf["hidden_act"] not in ACTIVATIONS:
        problems.append(f"hidden_act={hf['hidden_act']!r} (fairseq: {', '.join(ACTIVATIONS)})")
    if abs(float(hf["layer_norm_eps"]) - 1e-5) > 1e-12:
        problems.append(f"layer_norm_eps={hf['layer_norm_eps']} (fairseq: 1e-05)")
    if hf["add_adapter"]:
        problems.append("add_adapter=true (an output adapter after the encoder)")
    if hf["adapter_attn_dim"] is not None:
        problems.append(f"adapter_attn_dim={hf['adapter_attn_dim']} (attention adapters, as in MMS)")
    if not len(hf["conv_dim"]) == len(hf["conv_kernel"]) == len(hf["conv_stride"]):
        problems.append("conv_dim, conv_kernel and conv_stride of different lengths")
    elif hf["conv_dim"][-1] == hf["hidden_size"]:
        problems.append(f"conv_dim[-1] == hidden_size ({hf['hidden_size']}): fairseq has no feature "
                        "projection in that case")
    if problems:
        raise CheckpointError(f"{folder}: this wav2vec2 config has options fairseq's wav2vec2 cannot "
                              "represent: " + "; ".join(problems))
    return architectures


def fairseq_model_config(hf: dict) -> dict:
    """fairseq ``Wav2Vec2Config`` fields (all of them, as fairseq stores them) for a transformers config."""
    from fairseq.dataclass.utils import merge_with_parent
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config
    from omegaconf import OmegaConf

    group_norm = hf["feat_extract_norm"] == "group"
    layers = zip(hf["conv_dim"], hf["conv_kernel"], hf["conv_stride"])
    fields = {
        "extractor_mode": "default" if group_norm else "layer_norm",
        "conv_feature_layers": "[" + ", ".join(f"({d}, {k}, {s})" for d, k, s in layers) + "]",
        "conv_bias": bool(hf["conv_bias"]),
        "encoder_layers": hf["num_hidden_layers"],
        "encoder_embed_dim": hf["hidden_size"],
        "encoder_ffn_embed_dim": hf["intermediate_size"],
        "encoder_attention_heads": hf["num_attention_heads"],
        "activation_fn": ACTIVATIONS[hf["hidden_act"]],
        "layer_norm_first": bool(hf["do_stable_layer_norm"]),
        "dropout": hf["hidden_dropout"],
        "attention_dropout": hf["attention_dropout"],
        "activation_dropout": hf["activation_dropout"],
        "dropout_input": hf["feat_proj_dropout"],
        "dropout_features": hf["feat_quantizer_dropout"],
        "encoder_layerdrop": hf["layerdrop"],
        "conv_pos": hf["num_conv_pos_embeddings"],
        "conv_pos_groups": hf["num_conv_pos_embedding_groups"],
        "quantize_targets": True,
        "latent_vars": hf["num_codevectors_per_group"],
        "latent_groups": hf["num_codevector_groups"],
        "latent_dim": hf["codevector_dim"],
        "final_dim": hf["proj_codevector_dim"],
        "logit_temp": hf["contrastive_logits_temperature"],
        "num_negatives": hf["num_negatives"],
        # fairseq's published pretraining settings (base: 0.1, large: 1.0). Masking keeps
        # fairseq's pretraining defaults: transformers' mask_time_* are fine-tuning SpecAugment
        "feature_grad_mult": 0.1 if group_norm else 1.0,
    }
    cfg = merge_with_parent(Wav2Vec2Config(), OmegaConf.create(fields))
    model_cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    model_cfg["_name"] = "wav2vec2"
    return model_cfg


def _template_shapes(model_cfg: dict, num_layers: int) -> Dict[str, tuple]:
    """Name -> shape of every weight of the fairseq model ``model_cfg`` describes.

    Built with one Transformer layer (the others have the same shapes), so
    that checking a large model does not allocate it.
    """
    from fairseq.dataclass.utils import merge_with_parent
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
    from omegaconf import OmegaConf

    fields = {k: v for k, v in model_cfg.items() if k != "_name"}
    fields["encoder_layers"] = 1
    model = Wav2Vec2Model(merge_with_parent(Wav2Vec2Config(), OmegaConf.create(fields)))
    shapes = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("encoder.layers.0."):
            for i in range(num_layers):
                shapes[f"encoder.layers.{i}." + name[len("encoder.layers.0."):]] = tuple(tensor.shape)
        else:
            shapes[name] = tuple(tensor.shape)
    return shapes


def map_weights(hf_weights: Dict[str, torch.Tensor], hf: dict, template: Dict[str, tuple], folder: str):
    """transformers state dict -> (fairseq Wav2Vec2Model weights, has pretraining modules, dropped names)."""
    prefix = "wav2vec2." if any(k.startswith("wav2vec2.") for k in hf_weights) else ""
    # fairseq's positional convolution is weight-normed: weight_g / weight_v, or the
    # parametrization names of torch's newer weight_norm, whichever this fairseq uses
    pos = sorted(k for k in template if k.startswith("encoder.pos_conv.0.") and not k.endswith(".bias"))
    names = {"norm": "2" if hf["feat_extract_norm"] == "group" else "2.1", "pos_g": pos[0], "pos_v": pos[1]}
    backbone = [(re.compile(a), b.format(**names)) for a, b in _BACKBONE_NAMES]
    pretraining = [(re.compile(a), b) for a, b in _PRETRAINING_NAMES]
    weights, dropped, unknown = {}, [], []
    for name, tensor in hf_weights.items():
        if prefix and not name.startswith(prefix):
            target = _rename(name, pretraining)
            if target is None:
                dropped.append(name)  # a task head: lm_head, projector, classifier, ...
                continue
        else:
            target = _rename(name[len(prefix):], backbone)
            if target is None:
                unknown.append(name)
                continue
        weights[target] = tensor
    if unknown:
        raise CheckpointError(f"{folder}: weights fairseq's wav2vec2 has no place for: {preview(unknown)}")
    present = [m for m in PRETRAINING_MODULES if any(k.startswith(m) for k in weights)]
    if present and len(present) != len(PRETRAINING_MODULES):
        raise CheckpointError(f"{folder}: holds only part of the pretraining modules ({', '.join(present)})")
    return weights, bool(present), sorted(dropped)


def _rename(name: str, rules) -> Optional[str]:
    for pattern, replacement in rules:
        if pattern.fullmatch(name):
            return pattern.sub(replacement, name)
    return None


def _check_shapes(weights: Dict[str, torch.Tensor], template: Dict[str, tuple], has_pretraining: bool,
                  folder: str) -> None:
    expected = {k: v for k, v in template.items() if has_pretraining or not k.startswith(PRETRAINING_MODULES)}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        parts = ([f"missing {preview(missing)}"] if missing else []) + (
            [f"unexpected {preview(unexpected)}"] if unexpected else [])
        raise CheckpointError(f"{folder}: weights do not fit the wav2vec2 its config.json describes "
                              f"(fairseq names): " + "; ".join(parts))
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise CheckpointError(f"{folder}: weight {name} has shape {tuple(weights[name].shape)}, "
                                  f"its config.json implies {shape}")


def _listed(architectures: List[str]) -> str:
    return f" ({', '.join(architectures)})" if architectures else ""
