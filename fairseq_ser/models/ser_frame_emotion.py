"""``ser_frame_emotion``: the frame-level emotion model of P-TAPT step 1, and its frame features.

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
"""

import ast
import contextlib
import logging
import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.dataclass import FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import MISSING, open_dict

from ..errors import CheckpointError
from .heads import linear_head
from .masked_encoder import Masking, encode, frame_lengths, normalize_waveform
from .pooling import MeanPooling
from .pretrained import (BACKBONE_PREFIXES, WAV2VEC1_MODELS, build_wav2vec2, checkpoint_config,
                         finetuning_overrides, freeze_frontend, load_backbone, load_backbone_weights,
                         load_wav2vec1, read_checkpoint, store_class_names, stored_model_name)

logger = logging.getLogger(__name__)

MODEL_NAME = "ser_frame_emotion"
W2V1_HOP = 160  # wav2vec 1.0 frames: 100 Hz at 16 kHz


@dataclass
class SerFrameEmotionConfig(FairseqDataclass):
    w2v_path: str = field(
        default=MISSING,
        metadata={"help": "backbone checkpoint: a fairseq wav2vec 1.0 checkpoint (wav2vec_large.pt, "
                  "legacy args or cfg layout) or any wav2vec 2.0 checkpoint model.w2v_path of V-FT accepts"},
    )
    w2v_args: Any = field(
        default=None,
        metadata={"help": "config of the backbone (model._name wav2vec or wav2vec2); filled from "
                  "w2v_path at build time and stored in the checkpoint so it loads on its own"},
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
    dropout: float = field(default=0.1, metadata={"help": "wav2vec 2.0 only: dropout in the Transformer"})
    attention_dropout: float = field(
        default=0.1, metadata={"help": "wav2vec 2.0 only: dropout on attention weights"}
    )
    activation_dropout: float = field(
        default=0.0, metadata={"help": "wav2vec 2.0 only: dropout after the FFN activation"}
    )
    dropout_input: float = field(
        default=0.1, metadata={"help": "wav2vec 2.0 only: dropout on the projected features"}
    )
    layerdrop: float = field(
        default=0.1, metadata={"help": "wav2vec 2.0 only: probability of dropping a Transformer layer"}
    )


def num_frames(num_samples: int) -> int:
    """Frames the wav2vec 2.0 CNN makes of ``num_samples`` (receptive field 400, hop 320); both backbones match it."""
    return max(0, (int(num_samples) - 400) // 320 + 1)


def is_wav2vec1(w2v_args) -> bool:
    return w2v_args.model.get("_name") in WAV2VEC1_MODELS


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
        # left padding (in 100 Hz frames) that centres output frame k on wav2vec 2.0's frame k
        # (samples 320k..320k+400): 2 for wav2vec 1.0 large's 465-sample receptive field
        self.left_pad = max(0, round((40 + field_ / 2) / W2V1_HOP))

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
        pretrained = None
        if cfg.w2v_args is None:
            pretrained = _load_pretrained(cfg.w2v_path)
            with open_dict(cfg):
                cfg.w2v_args = pretrained.w2v_args
        if is_wav2vec1(cfg.w2v_args):
            if cfg.frame_dim <= 0:
                raise ValueError("model.frame_dim must be > 0 with a wav2vec 1.0 backbone")
            w2v = _build_wav2vec1(cfg.w2v_args)
            if pretrained is not None:
                load_backbone_weights(w2v, pretrained.weights, cfg.w2v_path, keep_pretraining_modules=True)
            backbone = Wav2Vec1Frames(w2v, cfg.w2v_args.model.conv_feature_layers, cfg.frame_dim,
                                      cfg.freeze_feature_encoder)
        else:
            backbone = build_wav2vec2(cfg.w2v_args, finetuning_overrides(
                cfg, freeze_feature_encoder=cfg.freeze_feature_encoder))
            if pretrained is not None:
                load_backbone_weights(backbone, pretrained.weights, cfg.w2v_path, keep_pretraining_modules=False)
            else:
                backbone.remove_pretraining_modules()
        if pretrained is not None:
            logger.info("loaded %s backbone from %s", cfg.w2v_args.model._name, cfg.w2v_path)
        normalize = bool(cfg.w2v_args.get("task", {}).get("normalize", False))
        return cls(cfg, backbone, len(cfg.class_names), normalize)

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


def _load_pretrained(path):
    state = read_checkpoint(path)
    name = stored_model_name(state, path)
    if name in WAV2VEC1_MODELS:
        return load_wav2vec1(path, state)
    if name in BACKBONE_PREFIXES:
        return load_backbone(path)
    raise CheckpointError(f"{path}: holds a {name!r} model; stage 1 starts from a wav2vec 1.0 (wav2vec) "
                          f"or wav2vec 2.0 ({', '.join(sorted(BACKBONE_PREFIXES))}) checkpoint")


def _build_wav2vec1(w2v_args):
    from fairseq.dataclass.utils import merge_with_parent
    from fairseq.models.wav2vec.wav2vec import Wav2VecConfig, Wav2VecModel

    model_cfg = merge_with_parent(Wav2VecConfig(), w2v_args.model, remove_missing=True)
    return Wav2VecModel(model_cfg)


class FrameExtractor:
    """A trained stage-1 model turning 16 kHz waveforms into frame features for clustering."""

    def __init__(self, model: SerFrameEmotionModel, path: str, device: torch.device):
        self.model = model.eval().to(device)
        self.path = path
        self.device = device
        self.dim = model.frame_dim

    def describe(self) -> dict:
        return {
            "model": MODEL_NAME,
            "backbone": "wav2vec 1.0" if self.model.wav2vec1 else "wav2vec 2.0",
            "checkpoint": os.path.abspath(self.path),
            "checkpoint_size": os.path.getsize(self.path),
            "checkpoint_mtime": os.path.getmtime(self.path),
            "dim": self.dim,
            "frame_rate": 50,
        }

    @staticmethod
    def num_frames(num_samples: int) -> int:
        return num_frames(num_samples)

    @torch.inference_mode()
    def extract(self, wav: np.ndarray) -> np.ndarray:
        """``(T, dim)`` float32 features of one mono 16 kHz waveform; T = ``num_frames(len(wav))``."""
        source = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).unsqueeze(0).to(self.device)
        features, _ = self.model.extract_frame_features(source, None)
        return features[0].float().cpu().numpy()


def load_frame_extractor(path: str, device: Optional[str] = None) -> FrameExtractor:
    """Load a ``ser_frame_emotion`` checkpoint on its own (backbone config and classes are stored in it)."""
    import fairseq_ser
    from fairseq.dataclass.utils import merge_with_parent

    fairseq_ser.register()
    state = read_checkpoint(path)
    name = stored_model_name(state, path)
    if name != MODEL_NAME:
        raise CheckpointError(f"{path}: holds a {name!r} model, not a frame-level emotion model "
                              f"({MODEL_NAME}); train one with config/ptapt_stage1.yaml")
    stored = checkpoint_config(state, path).model
    if not stored.get("class_names") or stored.get("w2v_args") is None:
        raise CheckpointError(f"{path}: {MODEL_NAME} checkpoint without its backbone config or class names")
    cfg = merge_with_parent(SerFrameEmotionConfig(), stored, remove_missing=True)
    model = SerFrameEmotionModel.build_model(cfg, SimpleNamespace(class_names=list(cfg.class_names)))
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the stored config ({str(e).splitlines()[0]})")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return FrameExtractor(model, path, dev)
