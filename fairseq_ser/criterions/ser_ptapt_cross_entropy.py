"""``ser_ptapt_cross_entropy``: cluster prediction at masked frames, summed over granularities."""

import math
import re
from dataclasses import dataclass

import torch.nn.functional as F
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics

from ..data.frame_label_dataset import LABEL_PAD
from ..errors import DataError
from ..frames import RULE

_CORRECT = re.compile(r"^_correct_(\d+)$")


@dataclass
class SerPtaptCrossEntropyConfig(FairseqDataclass):
    pass


@register_criterion("ser_ptapt_cross_entropy", dataclass=SerPtaptCrossEntropyConfig)
class SerPtaptCrossEntropyCriterion(FairseqCriterion):
    """Sum over label sets of the cross-entropy at masked, non-padded frames.

    The gradient is normalised by the number of masked frames; each label
    set's accuracy at those frames is logged as ``acc_km{K}``.
    """

    def forward(self, model, sample, reduce=True):
        out = model(**sample["net_input"])
        # the model scores the masked, non-padded frames only: out["selected"] (B x T)
        selected = out["selected"]
        loss = 0.0
        sample_size = 0
        logging_output = {}
        for k, (logits, target) in enumerate(zip(out["logits"], sample["target_list"])):
            if selected.shape != target.shape:
                raise DataError(f"the model makes {selected.size(1)} frames of this batch but its labels "
                                f"have {target.size(1)}; P-TAPT needs wav2vec 2.0's standard CNN "
                                f"({RULE})")
            # label sets share the frames: every set is scored at the same masked frames
            gold = target[selected]
            keep = gold != LABEL_PAD
            picked = logits[keep].float()
            gold = gold[keep]
            loss = loss + F.cross_entropy(picked, gold, reduction="sum")
            sample_size = int(keep.sum().item())
            logging_output[f"_correct_{k}"] = (picked.argmax(-1) == gold).sum().item()
            logging_output[f"_k_{k}"] = logits.size(-1)
        logging_output.update({
            "loss": float(loss),
            "sample_size": sample_size,
            "ntokens": sample_size,
            "nsentences": sample["nsentences"],
        })
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        loss = sum(log.get("loss", 0) for log in logging_outputs)
        size = sum(log.get("sample_size", 0) for log in logging_outputs)
        metrics.log_scalar("loss", loss / max(size, 1) / math.log(2), size, round=3)
        metrics.log_scalar_sum("masked_frames", size)
        first = logging_outputs[0] if logging_outputs else {}
        for key in first:
            m = _CORRECT.match(key)
            if m:
                k = m.group(1)
                correct = sum(log.get(key, 0) for log in logging_outputs)
                name = f"acc_km{int(first.get(f'_k_{k}', 0))}"
                metrics.log_scalar(name, 100.0 * correct / max(size, 1), size, round=2)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        # the _k_ entries are cluster counts, not sums
        return False
