"""Loading the wav2vec 2.0 checkpoints users bring: the one module that reads them.

Accepted at ``model.w2v_path``:

- fairseq wav2vec 2.0 pretraining checkpoints in the current layout (``cfg``)
  and in the legacy layout whose ``args`` is an ``argparse.Namespace`` (as the
  released ``wav2vec_small.pt`` ships);
- fairseq fine-tuned checkpoints (CTC, seq2seq, classification) that carry
  the pretrained model's config in ``w2v_args``;
- this package's own checkpoints (an emotion classifier), whose backbone is
  reused;
- HuggingFace ``transformers`` wav2vec2 folders, converted in memory by
  :mod:`.hf_import` (``fairseq-ser import-hf`` writes the same checkpoint to a file).

fairseq wav2vec 1.0 checkpoints (P-TAPT step 1) are read by :func:`load_wav2vec1`.

Everything is turned into a :class:`PretrainedBackbone`: the full config the
backbone was pretrained with (kept as ``w2v_args`` inside fine-tuned models so
they load without the original file) and the backbone's weights, keyed as in
fairseq's ``Wav2Vec2Model``.
"""

import argparse
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from ..errors import CheckpointError
from .safe_load import load_checkpoint_file

logger = logging.getLogger(__name__)

# Modules of Wav2Vec2Model used only by the contrastive pretraining objective.
PRETRAINING_ONLY_PREFIXES = (
    "quantizer.",
    "input_quantizer.",
    "project_q.",
    "project_inp.",
    "final_proj.",
    "target_glu.",
)

# model name -> prefix of the wav2vec 2.0 weights inside that model's state dict
BACKBONE_PREFIXES = {
    "wav2vec2": "",
    "wav2vec_ctc": "w2v_encoder.w2v_model.",
    "wav2vec_seq2seq": "encoder.w2v_model.",
    "wav2vec_classification": "w2v_encoder.w2v_model.",
    "ser_wav2vec2_classifier": "backbone.",
    "ser_wav2vec2_ptapt": "backbone.",
    "ser_wav2vec2_tapt": "w2v_model.",
}


@dataclass
class PretrainedBackbone:
    path: str
    w2v_args: DictConfig  # full config of the wav2vec 2.0 pretraining run (model, task, ...)
    weights: Dict[str, torch.Tensor]  # Wav2Vec2Model state dict, pretraining modules included if present
    source_model: str  # the ``_name`` of the model stored in the checkpoint
    # criterion config of the self-supervised pretraining run (loss weights, infonce),
    # None when the checkpoint does not record it
    criterion: Optional[DictConfig] = None

    @property
    def has_pretraining_modules(self) -> bool:
        return any(k.startswith("quantizer.") for k in self.weights)


def read_checkpoint(path: str) -> Dict[str, Any]:
    """Load a fairseq checkpoint onto the CPU, legacy layouts included (or convert a HuggingFace folder).

    The file is read by :func:`.safe_load.load_checkpoint_file`: with
    ``weights_only`` unpickling and the classes released fairseq checkpoints
    pickle (legacy ``argparse.Namespace`` args, old meters, configs); anything
    else is refused unless the user opts in with ``FAIRSEQ_SER_TRUST_CHECKPOINTS=1``.
    """
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    if os.path.isdir(path):
        from .hf_import import convert_hf_folder, is_hf_folder

        if is_hf_folder(path):
            # a HuggingFace wav2vec2 folder, converted in memory as `fairseq-ser import-hf` would
            return convert_hf_folder(path).state
        raise CheckpointError(f"{path}: is a folder, expected a fairseq checkpoint file (.pt) or a "
                              "HuggingFace wav2vec2 folder (config.json and model weights)")
    state = load_checkpoint_file(path)
    if "model" not in state:
        raise CheckpointError(f"{path}: not a fairseq checkpoint (no 'model' weights in it)")
    return state


def checkpoint_config(state: Dict[str, Any], path: str) -> DictConfig:
    """The checkpoint's full config as a DictConfig, converting a legacy ``args`` namespace."""
    cfg = state.get("cfg")
    if cfg is not None:
        return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg, flags={"allow_objects": True})
    args = state.get("args")
    if isinstance(args, argparse.Namespace):
        return _namespace_to_config(args, path)
    raise CheckpointError(f"{path}: checkpoint has neither 'cfg' nor 'args'; cannot tell what model it holds")


def _namespace_to_config(args: argparse.Namespace, path: str) -> DictConfig:
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    inner = getattr(args, "w2v_args", None)
    if isinstance(inner, argparse.Namespace):
        # fairseq 0.10 fine-tuned checkpoints (wav2vec_small_960h.pt) nest the pretraining
        # run's flat args; fairseq's converter cannot override the nested config, so the
        # two are converted one at a time
        outer = _namespace_to_config(argparse.Namespace(**{k: v for k, v in vars(args).items()
                                                            if k != "w2v_args"}), path)
        with open_dict(outer):
            outer.model.w2v_args = _namespace_to_config(inner, path)
        return outer
    try:
        # fairseq converts through Hydra's compose API, which warns about its own deprecations
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert_namespace_to_omegaconf(args)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot convert the legacy 'args' of this checkpoint ({_first_line(e)})")


def model_name(cfg: DictConfig) -> Optional[str]:
    model_cfg = cfg.get("model") if cfg is not None else None
    if model_cfg is None:
        return None
    return model_cfg.get("_name", None) or model_cfg.get("arch", None)


def load_backbone(path: str) -> PretrainedBackbone:
    """Read any accepted checkpoint and return its wav2vec 2.0 backbone config and weights."""
    state = read_checkpoint(path)
    cfg = checkpoint_config(state, path)
    name = model_name(cfg)
    if name not in BACKBONE_PREFIXES:
        known = ", ".join(sorted(BACKBONE_PREFIXES))
        raise CheckpointError(
            f"{path}: holds a {name!r} model, not a wav2vec 2.0 model (accepted: {known})"
        )
    if BACKBONE_PREFIXES[name] == "":
        w2v_args = cfg
    else:
        w2v_args = cfg.model.get("w2v_args", None)
        if isinstance(w2v_args, argparse.Namespace):
            w2v_args = _namespace_to_config(w2v_args, path)
        elif isinstance(w2v_args, dict):
            w2v_args = OmegaConf.create(w2v_args)
        if w2v_args is None:
            raise CheckpointError(f"{path}: fine-tuned {name!r} checkpoint without 'w2v_args'; "
                                  "cannot rebuild its wav2vec 2.0 backbone")
        inner = model_name(w2v_args)
        if inner != "wav2vec2":
            raise CheckpointError(f"{path}: its backbone is a {inner!r} model, not wav2vec2")
    prefix = BACKBONE_PREFIXES[name]
    weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if not weights:
        raise CheckpointError(f"{path}: no weights under {prefix!r} in this {name!r} checkpoint")
    criterion = w2v_args.get("criterion", None)
    if criterion is not None:
        # detached copy: the node is removed from w2v_args just below
        criterion = OmegaConf.create(OmegaConf.to_container(criterion, resolve=True))
    with open_dict(w2v_args):
        # the training objective of the pretraining run has no meaning for fine-tuning;
        # it is kept apart for continued pretraining (TAPT)
        w2v_args.criterion = None
        w2v_args.lr_scheduler = None
    return PretrainedBackbone(path=path, w2v_args=w2v_args, weights=weights, source_model=name,
                              criterion=criterion)


def build_wav2vec2(w2v_args: DictConfig, overrides: Optional[Dict[str, Any]] = None):
    """Build a fairseq ``Wav2Vec2Model`` from a pretraining config, with field overrides."""
    from fairseq.dataclass.utils import merge_with_parent
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model

    model_cfg = OmegaConf.create(OmegaConf.to_container(w2v_args.model, resolve=True))
    with open_dict(model_cfg):
        model_cfg.pop("_name", None)
        for key, value in (overrides or {}).items():
            model_cfg[key] = value
    model_cfg = merge_with_parent(Wav2Vec2Config(), model_cfg, remove_missing=True)
    return Wav2Vec2Model(model_cfg)


def finetuning_overrides(cfg, layerdrop: Optional[float] = None, freeze_feature_encoder: bool = True):
    """Backbone config fields a fine-tuning model (V-FT, P-TAPT, stage 1) replaces.

    ``cfg`` holds the model's dropout fields. Masking is switched off in the
    backbone: this package draws its own masks (see masked_encoder).
    """
    return {
        "dropout": cfg.dropout,
        "attention_dropout": cfg.attention_dropout,
        "activation_dropout": cfg.activation_dropout,
        "dropout_input": cfg.dropout_input,
        "dropout_features": 0.0,
        "encoder_layerdrop": cfg.layerdrop if layerdrop is None else layerdrop,
        "mask_prob": 0.0,
        "mask_channel_prob": 0.0,
        "feature_grad_mult": 0.0 if freeze_feature_encoder else 1.0,
    }


def finetuning_backbone(cfg, overrides: Dict[str, Any]):
    """The wav2vec 2.0 of a fine-tuning model's ``cfg`` (``w2v_path`` / ``w2v_args``), heads removed.

    When ``cfg.w2v_args`` is unset (a new run), ``cfg.w2v_path`` is read, its
    config stored in ``cfg.w2v_args`` and its weights loaded; otherwise (a
    checkpoint of the fine-tuned model being loaded) the backbone is built from
    ``cfg.w2v_args`` and its weights come with the model's own.
    """
    pretrained = None
    if cfg.w2v_args is None:
        pretrained = load_backbone(cfg.w2v_path)
        with open_dict(cfg):
            cfg.w2v_args = pretrained.w2v_args
    backbone = build_wav2vec2(cfg.w2v_args, overrides)
    if pretrained is None:
        backbone.remove_pretraining_modules()
    else:
        load_backbone_weights(backbone, pretrained.weights, cfg.w2v_path, keep_pretraining_modules=False)
        logger.info("wav2vec 2.0 backbone from %s (%s checkpoint)", cfg.w2v_path, pretrained.source_model)
    return backbone


def store_class_names(cfg, class_names) -> None:
    """Record the task's classes in a model config; a loaded model must have been trained on them."""
    class_names = list(class_names)
    if cfg.class_names is not None and list(cfg.class_names) != class_names:
        raise CheckpointError(f"the model was trained on classes {list(cfg.class_names)} but the data "
                              f"dictionary lists {class_names}")
    with open_dict(cfg):
        cfg.class_names = class_names


def freeze_frontend(backbone, feature_encoder: bool = True, projection: bool = True,
                    mask_emb: bool = False) -> None:
    """Freeze the CNN feature encoder, the feature projection (layer norm + linear) and / or the mask embedding."""
    if feature_encoder:
        backbone.feature_extractor.requires_grad_(False)
    if projection:
        for module in (backbone.layer_norm, backbone.post_extract_proj):
            if module is not None:
                module.requires_grad_(False)
    if mask_emb:
        backbone.mask_emb.requires_grad_(False)


def load_backbone_weights(model, weights: Dict[str, torch.Tensor], path: str, keep_pretraining_modules: bool):
    """Load ``weights`` into ``model``; any missing or mismatched weight is an error.

    Without ``keep_pretraining_modules``, the quantizer and projection heads
    are removed from the model first and their weights ignored.
    """
    if not keep_pretraining_modules:
        model.remove_pretraining_modules()
        weights = {k: v for k, v in weights.items() if not k.startswith(PRETRAINING_ONLY_PREFIXES)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected {_preview(unexpected)}")
        raise CheckpointError(f"{path}: weights do not fit the model its config describes: " + "; ".join(parts))
    mismatched = [k for k in expected if tuple(expected[k].shape) != tuple(weights[k].shape)]
    if mismatched:
        k = mismatched[0]
        raise CheckpointError(f"{path}: weight {k} has shape {tuple(weights[k].shape)}, "
                              f"the model expects {tuple(expected[k].shape)}")
    model.load_state_dict(weights, strict=True)


# model names of fairseq wav2vec 1.0 ("audio_cpc": its name before fairseq 0.9)
WAV2VEC1_MODELS = ("wav2vec", "audio_cpc")


@dataclass
class PretrainedWav2Vec1:
    path: str
    w2v_args: DictConfig  # {"model": Wav2VecConfig fields with _name "wav2vec", "task": {...}}
    weights: Dict[str, torch.Tensor]  # fairseq Wav2VecModel state dict


def stored_model_name(state: Dict[str, Any], path: str) -> Optional[str]:
    """Name of the model a checkpoint read by :func:`read_checkpoint` holds, without converting legacy args."""
    if state.get("cfg") is not None:
        return model_name(checkpoint_config(state, path))
    args = state.get("args")
    if isinstance(args, argparse.Namespace):
        return getattr(args, "arch", None)
    raise CheckpointError(f"{path}: checkpoint has neither 'cfg' nor 'args'; cannot tell what model it holds")


def load_wav2vec1(path: str, state: Optional[Dict[str, Any]] = None) -> PretrainedWav2Vec1:
    """Config and weights of a fairseq wav2vec 1.0 checkpoint (``wav2vec_large.pt``: legacy ``args``; or ``cfg``).

    Only the model's own fields are kept (legacy ``args`` mix every option of
    the run, and old ones name tasks fairseq no longer registers).
    ``state``: the checkpoint already read by :func:`read_checkpoint`.
    """
    import dataclasses

    from fairseq.models.wav2vec.wav2vec import Wav2VecConfig

    state = read_checkpoint(path) if state is None else state
    name = stored_model_name(state, path)
    if name not in WAV2VEC1_MODELS:
        raise CheckpointError(f"{path}: holds a {name!r} model, not a fairseq wav2vec 1.0 model (arch 'wav2vec')")
    if state.get("cfg") is not None:
        stored = OmegaConf.to_container(checkpoint_config(state, path).model, resolve=False)
    else:
        stored = vars(state["args"])
    fields = {f.name: stored[f.name] for f in dataclasses.fields(Wav2VecConfig)
              if f.name in stored and f.name != "infonce"}
    # infonce only shapes the contrastive loss, which is not used downstream
    fields.update(_name="wav2vec", infonce=False)
    if isinstance(fields.get("vq_temp"), tuple):
        fields["vq_temp"] = list(fields["vq_temp"])
    w2v_args = OmegaConf.create({"model": fields,
                                 "task": {"_name": "audio_pretraining", "normalize": False, "sample_rate": 16000}})
    return PretrainedWav2Vec1(path=path, w2v_args=w2v_args, weights=dict(state["model"]))


def _preview(keys, n=5):
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
