"""Building and freezing the backbones of this package's models, from what :mod:`.checkpoint` reads.

:class:`SerBackboneConfig` holds the fields every fine-tuning model shares
(``w2v_path``, ``w2v_args``, the dropouts, ``layerdrop``); the V-FT, P-TAPT
and stage-1 model configs extend it, as fairseq's ``Wav2Vec2CtcConfig``
extends ``Wav2Vec2AsrConfig``. :func:`finetuning_backbone` builds their
backbone: from ``w2v_path`` in a new run, from the stored ``w2v_args`` when a
trained model is loaded.
"""

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from fairseq.dataclass import FairseqDataclass
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from ..errors import CheckpointError, preview
from .checkpoint import is_wav2vec1, load_backbone, load_wav2vec1_or_2
from .weights import check_weights_fit

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


@dataclass
class SerBackboneConfig(FairseqDataclass):
    """What a model fine-tuning a pretrained wav2vec 2.0 is configured with, whatever its head."""

    w2v_path: str = field(
        default=MISSING,
        metadata={"help": "wav2vec 2.0 checkpoint to start from: fairseq pretraining "
                  "(cfg or legacy args layout), fine-tuned fairseq (w2v_args), or a "
                  "TAPT / P-TAPT / classifier checkpoint of this package"},
    )
    w2v_args: Any = field(
        default=None,
        metadata={"help": "config of the pretrained backbone; filled from w2v_path at "
                  "build time and stored in the checkpoint so it loads on its own"},
    )
    dropout: float = field(default=0.1, metadata={"help": "dropout in the Transformer"})
    attention_dropout: float = field(default=0.1, metadata={"help": "dropout on attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout after the FFN activation"})
    dropout_input: float = field(default=0.1, metadata={"help": "dropout on the projected features"})
    layerdrop: float = field(default=0.1, metadata={"help": "probability of dropping a Transformer layer"})


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


def build_wav2vec1(w2v_args: DictConfig):
    """Build a fairseq wav2vec 1.0 ``Wav2VecModel`` from its config (see :func:`.checkpoint.load_wav2vec1`)."""
    from fairseq.dataclass.utils import merge_with_parent
    from fairseq.models.wav2vec.wav2vec import Wav2VecConfig, Wav2VecModel

    model_cfg = merge_with_parent(Wav2VecConfig(), w2v_args.model, remove_missing=True)
    return Wav2VecModel(model_cfg)


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


def finetuning_backbone(cfg, overrides: Dict[str, Any], allow_wav2vec1: bool = False):
    """The backbone of a fine-tuning model's ``cfg`` (``w2v_path`` / ``w2v_args``), heads removed.

    When ``cfg.w2v_args`` is unset (a new run), ``cfg.w2v_path`` is read, its
    config stored in ``cfg.w2v_args`` and its weights loaded; otherwise (a
    checkpoint of the fine-tuned model being loaded) the backbone is built from
    ``cfg.w2v_args`` and its weights come with the model's own.

    A wav2vec 2.0 gets ``overrides`` and loses its pretraining modules. With
    ``allow_wav2vec1`` (P-TAPT step 1), ``w2v_path`` may also be a fairseq
    wav2vec 1.0, returned whole (its config has no dropout or masking to
    override; the caller drops its contrastive heads).
    """
    pretrained = None
    if cfg.w2v_args is None:
        pretrained = load_wav2vec1_or_2(cfg.w2v_path) if allow_wav2vec1 else load_backbone(cfg.w2v_path)
        with open_dict(cfg):
            cfg.w2v_args = pretrained.w2v_args
    wav2vec1 = is_wav2vec1(cfg.w2v_args)
    backbone = build_wav2vec1(cfg.w2v_args) if wav2vec1 else build_wav2vec2(cfg.w2v_args, overrides)
    if pretrained is None:
        if not wav2vec1:
            backbone.remove_pretraining_modules()
    else:
        load_backbone_weights(backbone, pretrained.weights, cfg.w2v_path, keep_pretraining_modules=wav2vec1)
        logger.info("%s backbone from %s (%s checkpoint)", "wav2vec 1.0" if wav2vec1 else "wav2vec 2.0",
                    cfg.w2v_path, pretrained.source_model)
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
    check_weights_fit(model.state_dict(), weights, path)
    model.load_state_dict(weights, strict=True)
