"""``ser_cross_entropy``: class-weighted cross-entropy with set-level UA / WA / F1.

Per-batch accuracies cannot be averaged into UA, so each batch logs its
confusion-matrix counts (summed by fairseq over the whole validation set) and
the metrics are derived from the sums with :mod:`fairseq_ser.metrics`.
"""

import math
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics

from .. import metrics as ser_metrics

_CM_KEY = re.compile(r"^_cm_(\d+)_(\d+)$")


@dataclass
class SerCrossEntropyConfig(FairseqDataclass):
    pass


def confusion_counts(target: torch.Tensor, pred: torch.Tensor, num_classes: int):
    """Logging-output entries ``_cm_{ref}_{pred}`` for one batch.

    Every cell is logged, zeros included: fairseq's fast distributed sum needs
    the same keys on every worker.
    """
    flat = (target * num_classes + pred).cpu()
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return {f"_cm_{i // num_classes}_{i % num_classes}": int(c) for i, c in enumerate(counts.tolist())}


def matrix_from_counts(counts):
    """Rebuild the confusion matrix from ``_cm_r_p`` entries; None when there are none."""
    cells = {}
    for key, value in counts.items():
        m = _CM_KEY.match(key)
        if m:
            cells[(int(m.group(1)), int(m.group(2)))] = value
    if not cells:
        return None
    n = 1 + max(max(r, p) for r, p in cells)
    cm = np.zeros((n, n), dtype=np.int64)
    for (r, p), v in cells.items():
        cm[r, p] = int(round(float(v)))
    return cm


@register_criterion("ser_cross_entropy", dataclass=SerCrossEntropyConfig)
class SerCrossEntropyCriterion(FairseqCriterion):
    def __init__(self, task):
        super().__init__(task)
        self.num_classes = len(task.class_names)
        # a plain float32 attribute, not a buffer: fairseq's trainer casts the criterion's
        # buffers to fp16 / bf16 with the model, and the loss is computed in float32
        weights = task.class_weights
        self._class_weights = None if weights is None else weights.detach().float().clone()

    def loss_weights(self, device) -> Optional[torch.Tensor]:
        """The class weights in float32 on ``device`` (None without class weighting)."""
        if self._class_weights is None:
            return None
        if self._class_weights.device != device:
            self._class_weights = self._class_weights.to(device)
        return self._class_weights

    def forward(self, model, sample, reduce=True):
        logits = model(**sample["net_input"]).float()
        target = sample["target"]
        weight = self.loss_weights(logits.device)
        loss = F.cross_entropy(logits, target, weight=weight, reduction="sum" if reduce else "none")
        # normalising by the summed weights makes the update a weighted mean, as in
        # torch's weighted cross-entropy, also when fairseq sums over workers
        sample_size = weight[target].sum().item() if weight is not None else target.numel()
        pred = logits.argmax(-1)
        logging_output = {
            "loss": loss.data.sum().item() if reduce else loss.data,
            "sample_size": sample_size,
            "nsentences": target.numel(),
            "ntokens": target.numel(),
            "ncorrect": (pred == target).sum().item(),
        }
        logging_output.update(confusion_counts(target, pred, self.num_classes))
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        loss_sum = sum(log.get("loss", 0) for log in logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        nsentences = sum(log.get("nsentences", 0) for log in logging_outputs)
        metrics.log_scalar("loss", loss_sum / max(sample_size, 1e-8) / math.log(2), sample_size, round=3)
        metrics.log_scalar("nsentences", nsentences, round=0)
        keys = {k for log in logging_outputs for k in log if _CM_KEY.match(k)}
        for key in sorted(keys):
            metrics.log_scalar_sum(key, sum(log.get(key, 0) for log in logging_outputs))
        if keys:
            for name, fn in (("ua", ser_metrics.unweighted_accuracy),
                             ("wa", ser_metrics.weighted_accuracy),
                             ("macro_f1", ser_metrics.macro_f1)):
                metrics.log_derived(name, _derived(fn))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def _derived(fn):
    def compute(meters):
        cm = matrix_from_counts({k: m.sum for k, m in meters.items() if _CM_KEY.match(k)})
        return round(100.0 * fn(cm), 2) if cm is not None else 0.0

    return compute
