"""``ser_frame_emotion``: the frame-level emotion model of P-TAPT step 1.

Every frame is trained to predict its utterance's label, and a BiLSTM with
mean pooling predicts it per utterance (:mod:`..criterions.ser_frame_emotion`).
The frame representation the heads read is what step 2 clusters, at 50 Hz
like wav2vec 2.0's frames:

- wav2vec 1.0 backbone (the paper's): CNN encoder (frozen), context network
  (trained), then a Conv1d(kernel 4, stride 2) + ReLU from 100 Hz to 50 Hz;
  SpecAugment on the CNN output while training;
- wav2vec 2.0 backbone: the Transformer output through Linear + ReLU to
  ``frame_dim`` (or the Transformer output itself with ``frame_dim=0``);
  SpecAugment on the projected features while training.

Heads as in the reference (``PretrainedEmoClassifier``): Linear, tanh, Linear
on every frame; BiLSTM, mean over the frames, ReLU, Linear, tanh, Linear per
utterance.

:func:`fairseq_ser.clustering.features.load_extractor` turns a trained model
into the frame feature extractor of step 2.
"""

import ast
import contextlib
from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import MISSING

from ..errors import CheckpointError
from ..frames import RECEPTIVE_FIELD, num_frames
from .backbone import (SerBackboneConfig, finetuning_backbone, finetuning_overrides, freeze_frontend,
                       store_class_names)
from .checkpoint import input_normalize, is_wav2vec1
from .heads import linear_head
from .masked_encoder import Masking, encode, frame_lengths, normalize_waveform
from .pooling import MeanPooling

MODEL_NAME = "ser_frame_emotion"
W2V1_HOP = 160  # wav2vec 1.0 frames: 100 Hz at 16 kHz


@dataclass
class SerFrameEmotionConfig(SerBackboneConfig):
    w2v_path: str = field(
        default=MISSING,
        metadata={"help": "backbone checkpoint: a fairseq wav2vec 1.0 checkpoint (wav2vec_large.pt, "
                  "legacy args or cfg layout) or any wav2vec 2.0 checkpoint model.w2v_path of V-FT "
                  "accepts; the dropouts and layerdrop apply to wav2vec 2.0 only"},
    )
    class_names: Optional[List[str]] = field(
        default=None,
        metadata={"help": "class names in output order; filled from the task's dictionary at build time"},
    )
    frame_dim: int = field(
        default=512,
        metadata={"help": "size of the frame features: output channels of the stride-2 convolution "
                  "(wav2vec 1.0) or of a Linear on the Transformer output (wav2vec 2.0), both "
                  "followed by ReLU; 0 keeps the wav2vec 2.0 Transformer output (wav2vec 1.0 needs > 0)"},
    )
    head_dim: int = field(
        default=128,
        metadata={"help": "hidden size of the frame head and of the utterance head, each Linear, "
                  "tanh, Linear (the reference's LinearHead(512, 128, n)); 0: a single Linear each"},
    )
    lstm_dim: int = field(default=256, metadata={"help": "hidden size of each direction of the utterance BiLSTM"})
    freeze_feature_encoder: bool = field(
        default=True,
        metadata={"help": "keep the CNN encoder frozen (wav2vec 1.0: feature_extractor, so only the "
                  "context network trains; wav2vec 2.0: CNN and feature projection)"},
    )
    apply_mask: bool = field(
        default=True,
        metadata={"help": "SpecAugment while training, masked values set to 0: wav2vec 1.0 on the CNN "
                  "output (100 Hz, before the context network), wav2vec 2.0 on the projected "
                  "features (50 Hz, before the Transformer); frame features at evaluation are unmasked"},
    )
    mask_prob: float = field(
        default=0.08,
        metadata={"help": "time masking: an utterance of n frames gets max(2, int(mask_prob * n / "
                  "mask_length + U)) spans (U uniform in [0, 1)) at distinct random starts; spans may "
                  "overlap; 0 disables time masking"},
    )
    mask_length: int = field(
        default=15, metadata={"help": "time mask span in frames of the masked features (10 ms for "
                                      "wav2vec 1.0, 20 ms for wav2vec 2.0)"}
    )
    mask_channel_prob: float = field(
        default=0.05,
        metadata={"help": "channel masking: max(1, int(mask_channel_prob * C / mask_channel_length + U)) "
                  "spans of mask_channel_length of the C channels per utterance (exactly one at C = "
                  "512 or 768); 0 disables channel masking"},
    )
    mask_channel_length: int = field(default=64, metadata={"help": "channel mask span"})


class Wav2Vec1Frames(nn.Module):
    """wav2vec 1.0 encoder and context network, brought to wav2vec 2.0's 50 Hz frames by a stride-2 conv."""

    def __init__(self, w2v, conv_feature_layers: str, frame_dim: int, freeze_encoder: bool):
        super().__init__()
        agg_dim = w2v.wav2vec_predictions.project_to_steps.in_channels
        # only the encoder and the context network are used: drop the contrastive heads
        w2v.wav2vec_predictions = None
        w2v.project_features = None
        self.w2v = w2v
        self.downsample = nn.Conv1d(agg_dim, frame_dim, kernel_size=4, stride=2)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            w2v.feature_extractor.requires_grad_(False)
            if w2v.vector_quantizer is not None:
                w2v.vector_quantizer.requires_grad_(False)
        layers = ast.literal_eval(conv_feature_layers)
        stride, field_ = 1, 1
        for _, k, s in layers:
            field_ += (k - 1) * stride
            stride *= s
        if stride != W2V1_HOP:
            raise CheckpointError(f"wav2vec 1.0 encoder with a hop of {stride} samples; the stride-2 "
                                  f"convolution to 50 Hz needs {W2V1_HOP} (100 Hz)")
        self.receptive_field = field_
        # left padding (in 100 Hz frames) that centres output frame k (100 Hz frames 2k..2k+3,
        # centred at 2k + 1.5) on wav2vec 2.0's frame k (samples 320k..320k+400): 2 for
        # wav2vec 1.0 large's 465-sample receptive field
        self.left_pad = max(0, round((1.5 * W2V1_HOP + (field_ - RECEPTIVE_FIELD) / 2) / W2V1_HOP))

    def forward(self, source, padding_mask, masking: Optional[Masking] = None):
        """``(B, T, frame_dim)`` features and the frame padding mask (None when no row is padded)."""
        lengths = [source.size(1)] * source.size(0) if padding_mask is None else (~padding_mask).sum(-1).tolist()
        # group norm in both networks spans the whole time axis: padding would change
        # the features, so rows of equal length run together, and only those
        groups = {}
        for row, n in enumerate(lengths):
            groups.setdefault(int(n), []).append(row)
        rows_out: List[Optional[torch.Tensor]] = [None] * len(lengths)
        for n, rows in groups.items():
            for row, y in zip(rows, self._frames(source[rows, :n], n, masking)):
                rows_out[row] = y
        counts = [y.size(0) for y in rows_out]
        total = max(counts)
        x = torch.stack([F.pad(y, (0, 0, 0, total - y.size(0))) for y in rows_out])
        if min(counts) == total:
            return x, None
        positions = torch.arange(total, device=x.device)
        return x, positions.unsqueeze(0) >= torch.tensor(counts, device=x.device).unsqueeze(1)

    def _frames(self, wav, n, masking):
        if n < self.receptive_field:  # clips shorter than one 100 Hz frame
            wav = F.pad(wav, (0, self.receptive_field - n))
        w2v = self.w2v
        with torch.no_grad() if self.freeze_encoder else contextlib.ExitStack():
            features = w2v.feature_extractor(wav)
            if w2v.vector_quantizer is not None:
                features = w2v.vector_quantizer(features)["x"]
        # the reference's recipe: SpecAugment on the CNN output z, then the context network
        # alone (wav2vec 1.0's own dropout_feats / dropout_agg are not applied)
        if masking is not None:
            features, _ = masking.zero(features, [features.size(-1)] * features.size(0), time_dim=2)
        context = w2v.feature_aggregator(features)
        k = max(1, num_frames(n))
        # replicate frames at the edges so that the conv yields exactly wav2vec 2.0's frame count
        right = max(0, 2 * k + 2 - self.left_pad - context.size(-1))
        context = F.pad(context, (self.left_pad, right), mode="replicate")
        return F.relu(self.downsample(context))[..., :k].transpose(1, 2)


@register_model(MODEL_NAME, dataclass=SerFrameEmotionConfig)
class SerFrameEmotionModel(BaseFairseqModel):
    def __init__(self, cfg: SerFrameEmotionConfig, backbone, num_classes: int, normalize_input: bool):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.normalize_input = normalize_input
        self.wav2vec1 = isinstance(backbone, Wav2Vec1Frames)
        if self.wav2vec1:
            self.project = None
            dim = cfg.frame_dim
        else:
            embed = backbone.cfg.encoder_embed_dim
            self.project = nn.Linear(embed, cfg.frame_dim) if cfg.frame_dim > 0 else None
            dim = cfg.frame_dim if cfg.frame_dim > 0 else embed
            freeze_frontend(backbone, cfg.freeze_feature_encoder, cfg.freeze_feature_encoder)
        # the reference masks wav2vec 1.0's z with zeros (it has no mask embedding); the
        # wav2vec 2.0 option (ours) masks its projected features the same way, so that
        # both backbones train under one augmentation; per-utterance span counts (at
        # least 2) also cover padded batches, where the reference's batches are never padded
        self.masking = Masking(prob=cfg.mask_prob, span=cfg.mask_length, min_masks=2 if cfg.mask_prob > 0 else 0,
                               channel_prob=cfg.mask_channel_prob, channel_span=cfg.mask_channel_length,
                               channel_min_masks=1, rule="min_spans", time_fill="zero")
        self.frame_dim = dim
        self.frame_head = linear_head(dim, cfg.head_dim, num_classes)
        self.lstm = nn.LSTM(dim, cfg.lstm_dim, batch_first=True, bidirectional=True)
        self.pooling = MeanPooling()
        self.utterance_head = linear_head(2 * cfg.lstm_dim, cfg.head_dim, num_classes)

    @classmethod
    def build_model(cls, cfg: SerFrameEmotionConfig, task):
        store_class_names(cfg, task.class_names)
        overrides = finetuning_overrides(cfg, freeze_feature_encoder=cfg.freeze_feature_encoder)
        backbone = finetuning_backbone(cfg, overrides, allow_wav2vec1=True)
        if is_wav2vec1(cfg.w2v_args):
            if cfg.frame_dim <= 0:
                raise ValueError("model.frame_dim must be > 0 with a wav2vec 1.0 backbone")
            backbone = Wav2Vec1Frames(backbone, cfg.w2v_args.model.conv_feature_layers, cfg.frame_dim,
                                      cfg.freeze_feature_encoder)
        return cls(cfg, backbone, len(cfg.class_names), input_normalize(cfg.w2v_args))

    def extract_frame_features(self, source, padding_mask=None, masking: Optional[Masking] = None):
        """Frame features ``(B, T, frame_dim)`` at 50 Hz and their padding mask (None when unpadded).

        Unmasked unless ``masking`` is given (``forward`` gives it while training).
        """
        if self.normalize_input:
            source = normalize_waveform(source, padding_mask)
        if self.wav2vec1:
            return self.backbone(source, padding_mask, masking)
        x, frame_padding, _, _ = encode(self.backbone, source, padding_mask, masking)
        if self.project is not None:
            x = F.relu(self.project(x))
        return x, frame_padding

    def forward(self, source, padding_mask=None, **kwargs):
        masking = self.masking if self.training and self.cfg.apply_mask else None
        x, frame_padding = self.extract_frame_features(source, padding_mask, masking)
        if frame_padding is None:
            hidden, _ = self.lstm(x)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(x, frame_lengths(x, frame_padding), batch_first=True,
                                                       enforce_sorted=False)
            hidden, _ = self.lstm(packed)
            hidden, _ = nn.utils.rnn.pad_packed_sequence(hidden, batch_first=True, total_length=x.size(1))
        return {
            "frame_logits": self.frame_head(x),
            "utterance_logits": self.utterance_head(F.relu(self.pooling(hidden, frame_padding))),
            "frame_padding": frame_padding,
        }

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        logits = net_output["utterance_logits"].float()
        return F.log_softmax(logits, dim=-1) if log_probs else F.softmax(logits, dim=-1)

    def get_logits(self, net_output):
        return net_output["utterance_logits"]

