"""``ser_wav2vec2_classifier``: wav2vec 2.0 with a pooled classification head (V-FT)."""

import contextlib
import logging
from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.dataclass import ChoiceEnum
from fairseq.models import BaseFairseqModel, register_model

from .backbone import (SerBackboneConfig, finetuning_backbone, finetuning_overrides, freeze_frontend,
                       store_class_names)
from .checkpoint import input_normalize
from .masked_encoder import Masking, encode, normalize_waveform
from .pooling import build_pooling

logger = logging.getLogger(__name__)


@dataclass
class SerWav2Vec2ClassifierConfig(SerBackboneConfig):
    class_names: Optional[List[str]] = field(
        default=None,
        metadata={"help": "class names in output order; filled from the task's "
                  "dictionary at build time and stored in the checkpoint"},
    )
    pooling: ChoiceEnum(["mean", "attentive_stats"]) = field(
        default="mean",
        metadata={"help": "utterance pooling over valid frames: mean (the paper's "
                  "head) or attentive statistics (weighted mean and std)"},
    )
    weighted_layer_sum: bool = field(
        default=False,
        metadata={"help": "pool a learned softmax-weighted sum of all Transformer "
                  "layers instead of the last layer (disables layerdrop)"},
    )
    freeze_feature_encoder: bool = field(
        default=True, metadata={"help": "keep the CNN feature encoder frozen"}
    )
    freeze_feature_projection: bool = field(
        default=True,
        metadata={"help": "keep the feature projection (layer norm + linear after the CNN) frozen"},
    )
    freeze_mask_emb: bool = field(
        default=True,
        metadata={"help": "keep the learned mask embedding that masked frames get at its "
                  "pretrained value (the reference does not train it); false trains it"},
    )
    freeze_finetune_updates: int = field(
        default=0,
        metadata={"help": "train only the head for this many updates before the Transformer"},
    )
    apply_mask: bool = field(
        default=True, metadata={"help": "SpecAugment-style masking of the projected features while training"}
    )
    mask_prob: float = field(
        default=0.08,
        metadata={"help": "time masking: about this fraction of each utterance's frames is "
                  "replaced by the learned mask embedding (see mask_rule)"},
    )
    mask_length: int = field(default=15, metadata={"help": "time mask span in frames"})
    mask_rule: ChoiceEnum(["fraction", "min_spans"]) = field(
        default="fraction",
        metadata={"help": "fraction: every frame is masked with probability about mask_prob "
                  "at any utterance length, spans may run over an utterance's ends (the "
                  "reference's batch-level masks, independent of how batches are formed); "
                  "min_spans: mask_prob * n / mask_length spans inside an utterance of n frames, "
                  "at least 2 (more masking on short clips: 40 % of a 1.5 s clip)"},
    )
    mask_channel_prob: float = field(
        default=0.05,
        metadata={"help": "channel masking: about this fraction of channels zeroed, in "
                  "spans of mask_channel_length (at least one span)"},
    )
    mask_channel_length: int = field(default=64, metadata={"help": "channel mask span"})
    head_dropout: float = field(default=0.0, metadata={"help": "dropout before the output layer"})


@register_model("ser_wav2vec2_classifier", dataclass=SerWav2Vec2ClassifierConfig)
class SerWav2Vec2Classifier(BaseFairseqModel):
    def __init__(self, cfg: SerWav2Vec2ClassifierConfig, backbone, num_classes: int, normalize_input: bool):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.normalize_input = normalize_input
        self.num_updates = 0
        self.masking = Masking(
            prob=cfg.mask_prob,
            span=cfg.mask_length,
            min_masks=2,
            rule=cfg.mask_rule,
            channel_prob=cfg.mask_channel_prob,
            channel_span=cfg.mask_channel_length,
        )
        dim = backbone.cfg.encoder_embed_dim
        num_layers = len(backbone.encoder.layers)
        self.layer_weights = nn.Parameter(torch.zeros(num_layers)) if cfg.weighted_layer_sum else None
        self.pooling = build_pooling(cfg.pooling, dim)
        self.head_dropout = nn.Dropout(cfg.head_dropout)
        self.output = nn.Linear(self.pooling.output_dim(dim), num_classes)
        freeze_frontend(backbone, cfg.freeze_feature_encoder, cfg.freeze_feature_projection,
                        mask_emb=cfg.freeze_mask_emb)

    @classmethod
    def build_model(cls, cfg: SerWav2Vec2ClassifierConfig, task):
        store_class_names(cfg, task.class_names)
        # weighted_layer_sum needs every layer's output: no layerdrop
        overrides = finetuning_overrides(cfg, layerdrop=0.0 if cfg.weighted_layer_sum else None,
                                         freeze_feature_encoder=cfg.freeze_feature_encoder)
        backbone = finetuning_backbone(cfg, overrides)
        return cls(cfg, backbone, len(cfg.class_names), input_normalize(cfg.w2v_args))

    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        self.num_updates = num_updates

    def forward(self, source, padding_mask=None, **kwargs):
        if self.normalize_input:
            source = normalize_waveform(source, padding_mask)
        finetune_backbone = self.num_updates >= self.cfg.freeze_finetune_updates
        with contextlib.ExitStack() if finetune_backbone else torch.no_grad():
            masking = self.masking if self.training and self.cfg.apply_mask else None
            x, frame_padding, layer_results, _ = encode(self.backbone, source, padding_mask, masking)
        if self.layer_weights is not None:
            layers = torch.stack([lr[0].transpose(0, 1) for lr in layer_results], dim=0)
            weights = F.softmax(self.layer_weights, dim=0).to(layers.dtype)
            x = (weights.view(-1, 1, 1, 1) * layers).sum(0)
        # the paper's head: ReLU, pooling over valid frames, ReLU, linear
        pooled = F.relu(self.pooling(F.relu(x), frame_padding))
        return self.output(self.head_dropout(pooled))

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        logits = net_output.float()
        return F.log_softmax(logits, dim=-1) if log_probs else F.softmax(logits, dim=-1)

    def get_logits(self, net_output):
        return net_output
