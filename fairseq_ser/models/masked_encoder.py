"""Running a fairseq ``Wav2Vec2Model`` with this package's own span masking.

fairseq's ``Wav2Vec2Model.apply_mask`` is not usable for fine-tuning on
emotional speech: a clip shorter than two mask spans raises "the entire
sequence is masked", a row drawing zero channel masks raises "this should
never happens" (fairseq-fixed 0.12.3.1), and masks of different counts per
row break its target gathering. So the steps before the Transformer (CNN,
feature layer norm, projection) are run here, the masks are drawn here, and
the Transformer is the backbone's own.
"""

import contextlib
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from fairseq.modules import GradMultiply


MASK_RULES = ("fraction", "min_spans")


def span_mask(lengths, total: int, prob: float, span: int, min_masks: int,
              rng: np.random.Generator, rule: str = "min_spans") -> torch.Tensor:
    """``(B, total)`` bool mask of time spans, drawn per row over its ``lengths[b]`` valid frames.

    ``rule="fraction"``: every frame of every row is masked with probability
    about ``prob`` (before overlaps), whatever the row's length. Span starts
    are uniform over the ``n + span - 1`` positions whose span touches the
    row, spans running over its ends are cut, and a row gets
    ``prob * (n + span - 1) / span`` spans (randomly rounded), so each frame
    lies under ``prob`` spans in expectation. This is what the reference's
    V-FT masks amount to: spans drawn over a batch's padded length,
    intersected with each utterance. ``min_masks`` is not applied.

    ``rule="min_spans"``: a row of ``n`` frames gets ``prob * n / span`` spans
    (randomly rounded, at least ``min_masks``) inside it, the rule of fairseq
    and of the HuggingFace version the paper's code used for its bucketed
    batches. Short clips lose more than ``prob`` (two spans of 15 frames are
    40 % of a 1.5 s clip). In clips shorter than two spans the span is cut to
    half the clip.

    At least one frame always stays visible, so masking never hides a whole
    utterance; clips of one frame are not masked.
    """
    if rule not in MASK_RULES:
        raise ValueError(f"unknown mask rule {rule!r} (choose {', '.join(MASK_RULES)})")
    mask = np.zeros((len(lengths), total), dtype=bool)
    for b, length in enumerate(int(n) for n in lengths):
        if length < 2 or span < 1:
            continue
        if rule == "fraction":
            positions = length + span - 1
            num = min(int(prob * positions / span + rng.random()), positions)
            for s in rng.choice(positions, num, replace=False) - (span - 1):
                mask[b, max(0, s):s + span] = True
        else:
            width = min(span, length // 2)
            num = max(min_masks, int(prob * length / span + rng.random()))
            num = min(num, length - width + 1)
            for s in rng.choice(length - width + 1, num, replace=False):
                mask[b, s:s + width] = True
        mask[b, length:] = False
        if mask[b, :length].all():
            mask[b, rng.integers(length)] = False
    return torch.from_numpy(mask)


def channel_mask(batch: int, channels: int, prob: float, span: int, min_masks: int,
                 rng: np.random.Generator) -> torch.Tensor:
    """``(B, channels)`` bool mask; ``prob * channels / span`` spans per row, at least ``min_masks``."""
    mask = np.zeros((batch, channels), dtype=bool)
    width = min(span, channels // 2)
    if width < 1 or prob <= 0:
        return torch.from_numpy(mask)
    for b in range(batch):
        num = max(min_masks, int(prob * channels / span + rng.random()))
        for s in rng.integers(0, channels - width + 1, size=num):
            mask[b, s:s + width] = True
    return torch.from_numpy(mask)


def project_features(backbone, source: torch.Tensor, padding_mask: Optional[torch.Tensor]
                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """CNN, feature layer norm, projection and input dropout of ``backbone``; frame padding mask."""
    # a traced graph (the ONNX export) must serve padded and unpadded batches alike: it always
    # takes the padded path, which gives an unpadded batch the same outputs
    padded = padding_mask is not None and (torch.jit.is_tracing() or bool(padding_mask.any()))
    with contextlib.ExitStack() if backbone.feature_grad_mult > 0 else torch.no_grad():
        if padded and source.device.type == "cpu" and not torch.jit.is_tracing():
            features = _cnn_each_alone(backbone, source, padding_mask)
        elif padded and _has_group_norm(backbone):
            features = _per_utterance_cnn(backbone, source, padding_mask)
        else:
            features = backbone.feature_extractor(source)
    if 0 < backbone.feature_grad_mult != 1.0:
        features = GradMultiply.apply(features, backbone.feature_grad_mult)
    features = backbone.layer_norm(features.transpose(1, 2))
    frame_padding = None
    if padded:
        lengths = backbone._get_feat_extract_output_lengths((~padding_mask).long().sum(-1))
        positions = torch.arange(features.size(1), device=features.device)
        frame_padding = positions.unsqueeze(0) >= lengths.unsqueeze(1)
    if backbone.post_extract_proj is not None:
        features = backbone.post_extract_proj(features)
    return backbone.dropout_input(features), frame_padding


def _has_group_norm(backbone) -> bool:
    # wav2vec2-base style encoders ("default" mode) normalise their first
    # convolution over the whole time axis, so padding would change every frame
    return backbone.cfg.extractor_mode == "default"


def _cnn_each_alone(backbone, source, padding_mask):
    """The CNN on each utterance's own samples, its features zero-padded into a ``(B, C, frames)`` batch.

    Used on the CPU, where it is the faster of the exact paths: the CNN's
    convolutions use the cores fully at any batch size, so a padded batch
    gains nothing there and pays for its padding and, in group-norm encoders,
    the masked statistics of :func:`_per_utterance_cnn` (about 1.25 to 1.6x the
    time of a whole ``predict`` on EmoDB; tests/benchmarks/bench_inference.py).
    Each utterance's features are those it gets alone, whatever the extractor.
    """
    lengths = (~padding_mask).long().sum(-1).tolist()
    features = [backbone.feature_extractor(source[b:b + 1, :n]) for b, n in enumerate(lengths)]
    batch = features[0].new_zeros(len(features), features[0].size(1), max(f.size(-1) for f in features))
    for b, f in enumerate(features):
        batch[b, :, :f.size(-1)] = f[0]
    return batch


def _per_utterance_cnn(backbone, source, padding_mask):
    """The group-norm CNN on a padded batch, each utterance's features as if it ran alone.

    The first convolution's group norm (one group per channel) normalises over
    time; its statistics are taken over each utterance's valid frames only.
    A valid output frame of every convolution reads valid inputs only, and the
    later blocks have no normalisation, so the valid frames equal those of the
    utterance run alone; frames past an utterance's end are zeroed. One batched
    pass instead of one CNN call per utterance.
    """
    conv, dropout, norm, activation = backbone.feature_extractor.conv_layers[0]
    lengths = (~padding_mask).long().sum(-1)
    x = dropout(conv(source.unsqueeze(1)))
    first = torch.div(lengths - conv.kernel_size[0], conv.stride[0], rounding_mode="floor") + 1
    valid = (torch.arange(x.size(-1), device=x.device).unsqueeze(0) < first.unsqueeze(1)).unsqueeze(1)
    h, valid_f = x.float(), valid.float()
    count = first.clamp(min=1).view(-1, 1, 1).float()
    mean = (h * valid_f).sum(-1, keepdim=True) / count
    var = (((h - mean) * valid_f) ** 2).sum(-1, keepdim=True) / count
    h = (h - mean) / torch.sqrt(var + norm.eps)
    if norm.affine:
        h = h * norm.weight.float().view(1, -1, 1) + norm.bias.float().view(1, -1, 1)
    x = activation(h.to(x.dtype))
    for block in backbone.feature_extractor.conv_layers[1:]:
        x = block(x)
    frames = backbone._get_feat_extract_output_lengths(lengths)
    keep = torch.arange(x.size(-1), device=x.device).unsqueeze(0) < frames.unsqueeze(1)
    return x * keep.unsqueeze(1).to(x.dtype)


def frame_lengths(features: torch.Tensor, frame_padding: Optional[torch.Tensor]) -> torch.Tensor:
    if frame_padding is None:
        return torch.full((features.size(0),), features.size(1), dtype=torch.long)
    return (~frame_padding).long().sum(-1).cpu()


def torch_seeded_rng() -> np.random.Generator:
    """A numpy generator seeded from torch's RNG, so fairseq's seeding makes masks reproducible."""
    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))


@dataclass
class Masking:
    """SpecAugment-style masks of the projected features (time spans and channel spans)."""

    prob: float
    span: int
    min_masks: int = 2
    channel_prob: float = 0.0
    channel_span: int = 64
    channel_min_masks: int = 1
    rule: str = "min_spans"  # see span_mask
    # what masked frames become in encode: the backbone's learned mask embedding, or 0
    # (the reference's SpecAugment of P-TAPT stage 1, whose wav2vec 1.0 has no embedding)
    time_fill: str = "embedding"

    def draw(self, lengths, frames: int, channels: int):
        rng = torch_seeded_rng()
        time = span_mask(lengths, frames, self.prob, self.span, self.min_masks, rng, self.rule)
        chan = channel_mask(len(lengths), channels, self.channel_prob, self.channel_span,
                            self.channel_min_masks, rng)
        return time, chan

    def zero(self, x: torch.Tensor, lengths, time_dim: int = 1):
        """``x`` (time on ``time_dim``, 1 or 2, channels on the other) with its masked frames and
        channels set to 0, and the ``(B, T)`` time mask."""
        channel_dim = 3 - time_dim
        time, chan = self.draw(lengths, x.size(time_dim), x.size(channel_dim))
        time = time.to(x.device)
        mask = time.unsqueeze(channel_dim) | chan.to(x.device).unsqueeze(time_dim)
        return x.masked_fill(mask, 0.0), time


def encode(backbone, source, padding_mask=None, masking: Optional[Masking] = None):
    """Run ``backbone``, masking when ``masking`` is given.

    Returns ``(x, frame_padding, layer_results, time_mask)``: Transformer output
    ``B×T×C``, the frame padding mask (None without padding), fairseq's layer
    results, and the time mask that was applied (None when not masking).
    """
    x, frame_padding = project_features(backbone, source, padding_mask)
    time_mask = None
    if masking is not None and masking.time_fill == "zero":
        x, time_mask = masking.zero(x, frame_lengths(x, frame_padding))
    elif masking is not None:
        time_mask, chan_mask = masking.draw(frame_lengths(x, frame_padding), x.size(1), x.size(2))
        time_mask = time_mask.to(x.device)
        # fairseq's order: masked frames get the learned embedding, then channels are zeroed
        x = torch.where(time_mask.unsqueeze(-1), backbone.mask_emb.to(x.dtype), x)
        x = x.masked_fill(chan_mask.to(x.device).unsqueeze(1), 0.0)
    x, layer_results = backbone.encoder(x, padding_mask=frame_padding, layer=None)
    return x, frame_padding, layer_results, time_mask


def normalize_waveform(source: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its valid samples (for backbones pretrained with normalize).

    The statistics of up to 160000 samples are taken in float32 (fp16 sums
    overflow), and the result keeps ``source``'s precision.
    """
    wav = source.float()
    if padding_mask is None:
        return F.layer_norm(wav, wav.shape[-1:]).to(source.dtype)
    valid = (~padding_mask).float()
    n = valid.sum(-1, keepdim=True).clamp(min=1.0)
    mean = (wav * valid).sum(-1, keepdim=True) / n
    var = (((wav - mean) * valid) ** 2).sum(-1, keepdim=True) / n
    return ((wav - mean) / torch.sqrt(var + 1e-5) * valid).to(source.dtype)
