"""Prediction heads shared by the models."""

import torch.nn as nn


def linear_head(dim: int, hidden: int, num_outputs: int) -> nn.Module:
    """Linear, tanh, Linear (the reference's ``LinearHead``); a single Linear when ``hidden`` is 0.

    The stage-1 frame and utterance heads and P-TAPT's cluster heads.
    """
    if hidden <= 0:
        return nn.Linear(dim, num_outputs)
    return nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, num_outputs))
