"""Utterance-level pooling of frame features, aware of padding.

Under fairseq's fp16 / bf16 training the frames arrive in half precision.
Sums over hundreds of frames overflow fp16 (its largest value is 65504) and
lose digits in bf16, so the statistics are accumulated in float32 and the
result is returned in the input's precision, which the next layer expects.
"""

from typing import Optional

import torch
import torch.nn as nn


def valid_mask(x: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """``(B, T, 1)`` float32 mask of the non-padded frames of ``x`` (``B, T, C``)."""
    if padding_mask is None:
        return torch.ones(x.shape[0], x.shape[1], 1, dtype=torch.float32, device=x.device)
    return (~padding_mask).unsqueeze(-1).float()


class MeanPooling(nn.Module):
    """Mean over the valid frames."""

    def output_dim(self, input_dim: int) -> int:
        return input_dim

    def forward(self, x, padding_mask=None):
        mask = valid_mask(x, padding_mask)
        # clamp: an utterance always has at least one frame, but guard the division
        mean = (x.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return mean.to(x.dtype)


class AttentiveStatisticsPooling(nn.Module):
    """Attention-weighted mean and standard deviation (Okabe et al., 2018)."""

    def __init__(self, input_dim: int, attention_dim: int = 128):
        super().__init__()
        self.attention = nn.Sequential(
            nn.Linear(input_dim, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1)
        )

    def output_dim(self, input_dim: int) -> int:
        return 2 * input_dim

    def forward(self, x, padding_mask=None):
        scores = self.attention(x).float()  # B x T x 1
        if padding_mask is not None:
            scores = scores.masked_fill(padding_mask.unsqueeze(-1), float("-inf"))
        weights = torch.softmax(scores, dim=1)
        h = x.float()
        mean = (weights * h).sum(1)
        var = (weights * (h - mean.unsqueeze(1)) ** 2).sum(1)
        return torch.cat([mean, var.clamp(min=1e-6).sqrt()], dim=-1).to(x.dtype)


def build_pooling(name: str, input_dim: int) -> nn.Module:
    if name == "mean":
        return MeanPooling()
    if name == "attentive_stats":
        return AttentiveStatisticsPooling(input_dim)
    raise ValueError(f"unknown pooling {name!r} (choose mean or attentive_stats)")
