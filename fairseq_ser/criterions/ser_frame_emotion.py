"""``ser_frame_emotion``: frame-level plus utterance-level class-weighted cross-entropy (P-TAPT step 1).

Each valid frame is trained on its utterance's label; the utterance logits
(BiLSTM, mean pooling) are trained on the same label. Both terms are weighted
means under the task's class weights; the batch loss is their weighted sum.
Set-level UA / WA / macro-F1 of the utterance predictions come from summed
confusion counts, as in :mod:`.ser_cross_entropy`.
"""

import math
from dataclasses import dataclass, field

import torch.nn.functional as F
from fairseq.criterions import register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics

from .ser_cross_entropy import SerCrossEntropyCriterion, confusion_counts


@dataclass
class SerFrameEmotionCriterionConfig(FairseqDataclass):
    frame_loss_weight: float = field(default=1.0, metadata={"help": "weight of the frame-level cross-entropy"})
    utterance_loss_weight: float = field(
        default=1.0, metadata={"help": "weight of the utterance-level (BiLSTM, mean pooling) cross-entropy"}
    )


@register_criterion("ser_frame_emotion", dataclass=SerFrameEmotionCriterionConfig)
class SerFrameEmotionCriterion(SerCrossEntropyCriterion):
    def __init__(self, task, frame_loss_weight: float = 1.0, utterance_loss_weight: float = 1.0):
        super().__init__(task)
        self.frame_loss_weight = frame_loss_weight
        self.utterance_loss_weight = utterance_loss_weight

    def forward(self, model, sample, reduce=True):
        net_output = model(**sample["net_input"])
        target = sample["target"]
        utt_logits = net_output["utterance_logits"].float()
        weight = self.loss_weights(utt_logits.device)
        utt_sum = F.cross_entropy(utt_logits, target, weight=weight, reduction="sum")
        utt_norm = weight[target].sum() if weight is not None else utt_logits.new_tensor(float(target.numel()))

        frame_logits = net_output["frame_logits"].float()
        frame_target = target.unsqueeze(1).expand(frame_logits.shape[:2])
        if net_output["frame_padding"] is not None:
            valid = ~net_output["frame_padding"]
            frame_logits, frame_target = frame_logits[valid], frame_target[valid]
        else:
            frame_logits, frame_target = frame_logits.flatten(0, 1), frame_target.flatten()
        frame_sum = F.cross_entropy(frame_logits, frame_target, weight=weight, reduction="sum")
        frame_norm = (weight[frame_target].sum() if weight is not None
                      else frame_logits.new_tensor(float(frame_target.numel())))

        # two weighted means over different units (frames, utterances) cannot share
        # fairseq's sample_size; each batch's loss is already a mean: sample_size 1
        loss = (self.frame_loss_weight * frame_sum / frame_norm
                + self.utterance_loss_weight * utt_sum / utt_norm)
        pred = utt_logits.argmax(-1)
        logging_output = {
            "loss": loss.item(),
            "sample_size": 1,
            "nsentences": target.numel(),
            "ntokens": frame_target.numel(),
            "_frame_ce": frame_sum.item(),
            "_frame_norm": frame_norm.item(),
            "_utt_ce": utt_sum.item(),
            "_utt_norm": utt_norm.item(),
        }
        logging_output.update(confusion_counts(target, pred, self.num_classes))
        return loss, 1, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        # loss (per batch), nsentences, confusion counts and ua / wa / macro_f1
        SerCrossEntropyCriterion.reduce_metrics(logging_outputs)
        for name, key in (("frame_loss", "_frame_ce"), ("utterance_loss", "_utt_ce")):
            total = sum(log.get(key, 0) for log in logging_outputs)
            norm = sum(log.get(key.replace("_ce", "_norm"), 0) for log in logging_outputs)
            metrics.log_scalar(name, total / max(norm, 1e-8) / math.log(2), norm, round=3)
