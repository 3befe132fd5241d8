"""``ser_wav2vec2_tapt``: a pretrained wav2vec 2.0 whose self-supervised pretraining continues (TAPT).

The model is rebuilt from the checkpoint's own config, so the user does not
restate the architecture; only dropouts, masking, the CNN's gradient scale
and the quantizer's temperature schedule can be overridden. Their defaults
are the reference's TAPT (HuggingFace 4.10 ``Wav2Vec2ForPreTraining`` with
wav2vec2-base's config); null keeps the checkpoint's own pretraining value.
The whole pretraining model loads,
quantizer and projection heads included, and any missing or mis-shaped weight
is an error. Forward, logits, targets and extra losses are the wrapped
fairseq ``Wav2Vec2Model``'s, so fairseq's ``wav2vec`` criterion (and
``ser_wav2vec_tapt``) trains it unchanged.
"""

import logging
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

import torch
from fairseq.data.data_utils import compute_mask_indices
from fairseq.dataclass import FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import MISSING, open_dict

from ..errors import CheckpointError
from .backbone import build_wav2vec2, load_backbone_weights
from .checkpoint import input_normalize, load_backbone

logger = logging.getLogger(__name__)

_KEEP = "; null keeps the checkpoint's value"


@dataclass
class SerWav2Vec2TaptConfig(FairseqDataclass):
    w2v_path: str = field(
        default=MISSING,
        metadata={"help": "wav2vec 2.0 pretraining checkpoint to continue: fairseq (cfg or "
                  "legacy args layout), a TAPT checkpoint of this package, or a HuggingFace "
                  "Wav2Vec2ForPreTraining folder; it must hold the quantizer and projection heads "
                  "(fine-tuned checkpoints do not)"},
    )
    w2v_args: Any = field(
        default=None,
        metadata={"help": "config of the pretrained model (with the overrides below applied "
                  "and its pretraining criterion); filled from w2v_path at build time and "
                  "stored in the checkpoint so it loads on its own"},
    )
    dropout: Optional[float] = field(default=None, metadata={"help": "dropout in the Transformer" + _KEEP})
    attention_dropout: Optional[float] = field(
        default=None, metadata={"help": "dropout on attention weights" + _KEEP})
    activation_dropout: Optional[float] = field(
        default=None, metadata={"help": "dropout after the FFN activation" + _KEEP})
    dropout_input: Optional[float] = field(
        default=None, metadata={"help": "dropout on the projected features" + _KEEP})
    dropout_features: Optional[float] = field(
        default=None, metadata={"help": "dropout on the unmasked features (quantizer input)" + _KEEP})
    encoder_layerdrop: Optional[float] = field(
        default=None, metadata={"help": "probability of dropping a Transformer layer" + _KEEP})
    feature_grad_mult: Optional[float] = field(
        default=1.0,
        metadata={"help": "gradient scale for the CNN feature encoder, 0 freezes it (the reference "
                  "trains it at full gradient: 1; wav2vec 2.0 pretrained with 0.1)" + _KEEP})
    mask_prob: Optional[float] = field(
        default=0.05,
        metadata={"help": "an utterance of n frames gets mask_prob * n / mask_length masked spans, at "
                  "least 2 (the reference's HF wav2vec2-base config: 0.05; wav2vec 2.0 pretrained "
                  "with 0.65)" + _KEEP})
    mask_length: Optional[int] = field(
        default=10, metadata={"help": "masked span length in frames (the reference: 10)" + _KEEP})
    mask_channel_prob: Optional[float] = field(
        default=None, metadata={"help": "channel masking probability (wav2vec 2.0 pretrains with 0)" + _KEEP})
    mask_channel_length: Optional[int] = field(
        default=None, metadata={"help": "channel mask span" + _KEEP})
    latent_temp: Optional[Tuple[float, float, float]] = field(
        default=(1.0, 1.0, 1.0),
        metadata={"help": "Gumbel temperature of the quantizer (start, end, decay per update), "
                  "counted from update 0 of this run (the reference's HF 4.10 quantizer keeps 1; "
                  "wav2vec 2.0 pretrained with 2 -> 0.5)" + _KEEP},
    )


OVERRIDABLE = ("dropout", "attention_dropout", "activation_dropout", "dropout_input", "dropout_features",
               "encoder_layerdrop", "feature_grad_mult", "mask_prob", "mask_length", "mask_channel_prob",
               "mask_channel_length", "latent_temp")


@register_model("ser_wav2vec2_tapt", dataclass=SerWav2Vec2TaptConfig)
class SerWav2Vec2Tapt(BaseFairseqModel):
    def __init__(self, cfg: SerWav2Vec2TaptConfig, w2v_model):
        super().__init__()
        self.cfg = cfg
        self.w2v_model = w2v_model

    @classmethod
    def build_model(cls, cfg: SerWav2Vec2TaptConfig, task):
        pretrained = None
        if cfg.w2v_args is None:
            pretrained = load_backbone(cfg.w2v_path)
            if "final_proj.weight" in pretrained.weights and not pretrained.has_pretraining_modules:
                raise CheckpointError(
                    f"{cfg.w2v_path}: this wav2vec 2.0 checkpoint has no quantizer (it was pretrained "
                    "with quantize_targets=false); TAPT continues the contrastive loss over quantized "
                    "targets and its codebook diversity loss, which need one")
            if "final_proj.weight" not in pretrained.weights:
                raise CheckpointError(
                    f"{cfg.w2v_path}: this {pretrained.source_model!r} checkpoint has no pretraining "
                    "heads (quantizer, project_q, final_proj); TAPT continues wav2vec 2.0 "
                    "pretraining and needs a pretraining checkpoint (fairseq's, or a HuggingFace "
                    "Wav2Vec2ForPreTraining model: fairseq-ser import-hf converts one)")
            w2v_args = pretrained.w2v_args
            with open_dict(w2v_args):
                # kept so that a TAPT checkpoint still tells the criterion its loss weights
                w2v_args.criterion = pretrained.criterion
                for key in OVERRIDABLE:
                    value = getattr(cfg, key, None)
                    if value is not None:
                        w2v_args.model[key] = value
            with open_dict(cfg):
                cfg.w2v_args = w2v_args
        check_normalize(cfg, task)
        w2v_model = build_wav2vec2(cfg.w2v_args)
        if pretrained is not None:
            load_backbone_weights(w2v_model, pretrained.weights, cfg.w2v_path, keep_pretraining_modules=True)
            logger.info("continuing wav2vec 2.0 pretraining from %s (%s checkpoint)",
                        cfg.w2v_path, pretrained.source_model)
        return cls(cfg, w2v_model)

    def forward(self, **kwargs):
        w2v = self.w2v_model
        if self.training and kwargs.get("mask", True):
            source, padding = kwargs["source"], kwargs.get("padding_mask")
            if w2v.mask_prob > 0 and kwargs.get("mask_indices") is None:
                kwargs["mask_indices"] = self._seeded_time_mask(source, padding)
            if w2v.mask_channel_prob > 0 and not w2v.mask_channel_before \
                    and kwargs.get("mask_channel_indices") is None:
                kwargs["mask_channel_indices"] = self._seeded_channel_mask(source)
        return w2v(**kwargs)

    # fairseq's compute_mask_indices, unless given a seed, draws every utterance's spans from
    # fresh OS entropy, so that no two TAPT runs masked alike. Here the seed comes from torch's
    # generator, which fairseq's trainer reseeds at every update (common.seed + num_updates),
    # as it does for dropout: the same seed gives the same masks. The spans are fairseq's own.
    def _mask_seed(self) -> int:
        return int(torch.randint(0, 2 ** 31 - 1, (1,)).item())

    def _frames(self, source, padding_mask):
        """``(T, frame padding or None)``: the frames the wrapped model's apply_mask will see."""
        w2v = self.w2v_model
        frames = int(w2v._get_feat_extract_output_lengths(torch.tensor(source.size(1))).item())
        frames -= frames % w2v.crop_seq_to_multiple
        if padding_mask is None or not padding_mask.any():
            return frames, None
        lengths = w2v._get_feat_extract_output_lengths((~padding_mask).long().sum(-1))
        return frames, torch.arange(frames, device=source.device).unsqueeze(0) >= lengths.unsqueeze(1)

    def _seeded_time_mask(self, source, padding_mask):
        w2v = self.w2v_model
        frames, frame_padding = self._frames(source, padding_mask)
        batch = source.size(0)
        mask = compute_mask_indices(
            (batch, frames), frame_padding, w2v.mask_prob, w2v.mask_length, w2v.mask_selection,
            w2v.mask_other, min_masks=2, no_overlap=w2v.no_mask_overlap, min_space=w2v.mask_min_space,
            require_same_masks=w2v.cfg.require_same_masks, mask_dropout=w2v.cfg.mask_dropout,
            seed=self._mask_seed(), epoch=1, indices=torch.arange(batch))
        return torch.from_numpy(mask).to(source.device)

    def _seeded_channel_mask(self, source):
        w2v = self.w2v_model
        frames, _ = self._frames(source, None)
        batch, channels = source.size(0), w2v.cfg.encoder_embed_dim
        mask = compute_mask_indices(
            (batch, channels), None, w2v.mask_channel_prob, w2v.mask_channel_length,
            w2v.mask_channel_selection, w2v.mask_channel_other, no_overlap=w2v.no_mask_channel_overlap,
            min_space=w2v.mask_channel_min_space, seed=self._mask_seed(), epoch=1, indices=torch.arange(batch))
        return torch.from_numpy(mask).to(source.device).unsqueeze(1).expand(-1, frames, -1)

    def get_logits(self, net_output):
        return self.w2v_model.get_logits(net_output)

    def get_targets(self, sample, net_output, expand_steps=True):
        return self.w2v_model.get_targets(sample, net_output, expand_steps)

    def get_extra_losses(self, net_output):
        return self.w2v_model.get_extra_losses(net_output)

    def set_num_updates(self, num_updates):
        # the wrapped model forwards it to the quantizer (temperature schedule)
        self.w2v_model.set_num_updates(num_updates)


def check_normalize(cfg: SerWav2Vec2TaptConfig, task) -> None:
    """The audio must be normalised the way the checkpoint was pretrained."""
    pretrained = input_normalize(cfg.w2v_args)
    current = getattr(task.cfg, "normalize", None) if task is not None else None
    if current is not None and bool(current) != pretrained:
        raise CheckpointError(
            f"{cfg.w2v_path}: was pretrained with task.normalize={str(pretrained).lower()} but this "
            f"run has task.normalize={str(bool(current)).lower()}; set "
            f"task.normalize={str(pretrained).lower()}")
