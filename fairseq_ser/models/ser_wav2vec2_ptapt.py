"""``ser_wav2vec2_ptapt``: wav2vec 2.0 trained to predict frame pseudo-labels at masked frames."""

import logging
from dataclasses import dataclass, field
from typing import List, Optional

import torch.nn as nn
import torch.nn.functional as F
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import open_dict

from ..errors import CheckpointError
from .backbone import SerBackboneConfig, finetuning_backbone, finetuning_overrides, freeze_frontend
from .checkpoint import input_normalize
from .heads import linear_head
from .masked_encoder import Masking, encode, normalize_waveform

logger = logging.getLogger(__name__)


@dataclass
class SerWav2Vec2PtaptConfig(SerBackboneConfig):
    cluster_sizes: Optional[List[int]] = field(
        default=None, metadata={"help": "clusters per label set; filled from the task and stored"}
    )
    head_dim: int = field(default=256, metadata={"help": "hidden size of each prediction head"})
    mask_prob: float = field(
        default=0.06,
        metadata={"help": "an utterance of n frames gets mask_prob * n / mask_length masked "
                  "spans (at least 2); the loss is computed at masked frames only"},
    )
    mask_length: int = field(default=15, metadata={"help": "mask span in frames"})
    freeze_feature_projection: bool = field(
        default=True, metadata={"help": "keep the feature projection after the CNN frozen"}
    )
    freeze_mask_emb: bool = field(
        default=True,
        metadata={"help": "keep the learned mask embedding at its pretrained value (the "
                  "reference does not train it); false trains it"},
    )


@register_model("ser_wav2vec2_ptapt", dataclass=SerWav2Vec2PtaptConfig)
class SerWav2Vec2Ptapt(BaseFairseqModel):
    def __init__(self, cfg: SerWav2Vec2PtaptConfig, backbone, cluster_sizes: List[int], normalize_input=False):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.normalize_input = normalize_input
        dim = backbone.cfg.encoder_embed_dim
        self.heads = nn.ModuleList(linear_head(dim, cfg.head_dim, k) for k in cluster_sizes)
        self.masking = Masking(prob=cfg.mask_prob, span=cfg.mask_length, min_masks=2)
        freeze_frontend(backbone, feature_encoder=True, projection=cfg.freeze_feature_projection,
                        mask_emb=cfg.freeze_mask_emb)

    @classmethod
    def build_model(cls, cfg: SerWav2Vec2PtaptConfig, task):
        sizes = list(task.cluster_sizes)
        if cfg.cluster_sizes is not None and list(cfg.cluster_sizes) != sizes:
            raise CheckpointError(f"the model predicts {list(cfg.cluster_sizes)} clusters per label "
                                  f"set but the task's dictionaries have {sizes}")
        with open_dict(cfg):
            cfg.cluster_sizes = sizes
        backbone = finetuning_backbone(cfg, finetuning_overrides(cfg))
        return cls(cfg, backbone, sizes, normalize_input=input_normalize(cfg.w2v_args))

    def forward(self, source, padding_mask=None, **kwargs):
        if self.normalize_input:
            source = normalize_waveform(source, padding_mask)
        # masked also in validation: the objective is only defined at masked frames
        x, frame_padding, _, time_mask = encode(self.backbone, source, padding_mask, self.masking)
        selected = time_mask if frame_padding is None else time_mask & ~frame_padding
        # the heads read ReLU of the encoder output (the reference's), and only at the
        # scored frames: logits of every frame for K = 4096 would be B x T x 4096
        reps = F.relu(x[selected])
        return {"logits": [head(reps) for head in self.heads], "selected": selected}
