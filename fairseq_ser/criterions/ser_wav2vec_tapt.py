"""``ser_wav2vec_tapt``: wav2vec 2.0's pretraining loss, weighted as the checkpoint was pretrained.

fairseq's ``wav2vec`` criterion (contrastive InfoNCE loss over quantized
targets with distractors, plus the extra losses the model returns: codebook
diversity and feature penalty), with ``infonce``, ``loss_weights`` and
``log_keys`` taken from the pretraining run of ``model.w2v_path`` when they
are left unset.
"""

import logging
from dataclasses import dataclass, field
from typing import List, Optional

from fairseq.criterions import register_criterion
from fairseq.criterions.wav2vec_criterion import Wav2vecCriterion
from fairseq.dataclass import FairseqDataclass
from omegaconf import II

from ..errors import CheckpointError
from ..models.checkpoint import load_backbone

logger = logging.getLogger(__name__)

# wav2vec 2.0's published pretraining criterion (base and large), used when a
# checkpoint does not record its own (legacy files saved without these options)
WAV2VEC2_CRITERION = {
    "infonce": True,
    "loss_weights": [0.1, 10.0],
    "log_keys": ["prob_perplexity", "code_perplexity", "temp"],
}


@dataclass
class SerWav2VecTaptCriterionConfig(FairseqDataclass):
    infonce: Optional[bool] = field(
        default=None,
        metadata={"help": "cross entropy over the target and its distractors (InfoNCE); "
                  "unset: the checkpoint's pretraining setting"},
    )
    loss_weights: Optional[List[float]] = field(
        default_factory=lambda: [0.1, 0.0],
        metadata={"help": "weights of the model's extra losses: codebook diversity, feature "
                  "penalty (the reference's: 0.1, none); null: the checkpoint's pretraining "
                  "weights (wav2vec 2.0: [0.1, 10]); [0, 0] disables them"},
    )
    log_keys: Optional[List[str]] = field(
        default=None,
        metadata={"help": "model outputs to log (e.g. prob_perplexity, code_perplexity, temp); "
                  "unset: the checkpoint's pretraining setting"},
    )
    extra_losses_per_frame: bool = field(
        default=False,
        metadata={"help": "multiply the extra losses by the batch's masked frames, as fairseq's "
                  "wav2vec 2.0 pretraining does (true); false adds them once per batch, as the "
                  "reference's HuggingFace 4.10 Wav2Vec2ForPreTraining does (the contrastive loss "
                  "is a sum over masked frames, so the diversity loss then weighs little)"},
    )
    w2v_path: Optional[str] = field(
        default=II("model.w2v_path"),
        metadata={"help": "checkpoint whose pretraining criterion gives the unset values "
                  "(the model's w2v_path)"},
    )


@register_criterion("ser_wav2vec_tapt", dataclass=SerWav2VecTaptCriterionConfig)
class SerWav2VecTaptCriterion(Wav2vecCriterion):
    def __init__(self, task, infonce=None, loss_weights=None, log_keys=None, extra_losses_per_frame=False,
                 w2v_path=None):
        settings = {"infonce": infonce, "loss_weights": loss_weights, "log_keys": log_keys}
        unset = [k for k, v in settings.items() if v is None]
        if unset:
            pretraining = pretraining_criterion(w2v_path)
            for key in unset:
                settings[key] = pretraining[key]
        logger.info("TAPT loss: infonce=%s loss_weights=%s log_keys=%s%s", settings["infonce"],
                    settings["loss_weights"], settings["log_keys"],
                    f" ({', '.join(unset)} from {w2v_path})" if unset else "")
        super().__init__(task, infonce=settings["infonce"],
                         loss_weights=_plain(settings["loss_weights"]), log_keys=_plain(settings["log_keys"]))
        self.extra_losses_per_frame = extra_losses_per_frame
        self.w2v_path = w2v_path

    def forward(self, model, sample, reduce=True):
        if self.loss_weights is None:
            return super().forward(model, sample, reduce)
        return super().forward(_CheckedExtraLosses(model, self), sample, reduce)


class _CheckedExtraLosses:
    """The model as fairseq's wav2vec criterion sees it, with its extra losses checked and scaled.

    fairseq's criterion asserts ``len(extra_losses) == len(loss_weights)``
    with a bare ``AssertionError: 1, 2`` and multiplies each extra loss by the
    batch's masked frames; here a mismatch is an error naming the checkpoint,
    and without ``extra_losses_per_frame`` the scaling is undone.
    """

    def __init__(self, model, criterion):
        self._model = model
        self._criterion = criterion

    def __call__(self, *args, **kwargs):
        return self._model(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)

    def get_extra_losses(self, net_output):
        losses = self._model.get_extra_losses(net_output)
        weights = self._criterion.loss_weights
        if len(weights) != 1 and len(losses) != len(weights):
            names = [name for key, name in (("prob_perplexity", "codebook diversity"),
                                            ("features_pen", "feature penalty")) if key in net_output]
            raise CheckpointError(
                f"{self._criterion.w2v_path}: this model returns {len(losses)} extra loss(es) "
                f"({', '.join(names) or 'none'}) but criterion.loss_weights has {len(weights)} "
                f"({list(weights)}); give one weight per extra loss")
        if self._criterion.extra_losses_per_frame:
            return losses
        # infonce: one row of logits per masked frame, fairseq's sample_size
        frames = max(1, self._model.get_logits(net_output).size(0))
        return [p if p is None else p / frames for p in losses]


def pretraining_criterion(w2v_path: Optional[str]) -> dict:
    """``infonce``, ``loss_weights``, ``log_keys`` of the run that pretrained ``w2v_path``."""
    if not w2v_path:
        raise ValueError("criterion ser_wav2vec_tapt: infonce, loss_weights and log_keys "
                         "default to model.w2v_path's pretraining criterion, but no w2v_path is set")
    recorded = load_backbone(w2v_path).criterion
    # wav2vec 2.0 trains with InfoNCE only (its targets are class indices); a
    # recorded infonce=false comes from a legacy config that did not store it
    if recorded is None or recorded.get("_name", "wav2vec") != "wav2vec" or not recorded.get("infonce", False):
        logger.warning("%s: does not record a wav2vec 2.0 pretraining criterion; using wav2vec 2.0's "
                       "published one (%s)", w2v_path, WAV2VEC2_CRITERION)
        return dict(WAV2VEC2_CRITERION)
    return {
        "infonce": True,
        "loss_weights": recorded.get("loss_weights", None),
        "log_keys": recorded.get("log_keys", None) or [],
    }


def _plain(value):
    """ListConfig -> list (the parent criterion may rewrite loss_weights in place)."""
    return None if value is None else list(value)
