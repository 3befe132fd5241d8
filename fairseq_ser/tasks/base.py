"""What the package's audio tasks share on top of fairseq's ``AudioPretrainingTask``."""

import logging
from typing import Sequence

from fairseq.tasks.audio_pretraining import AudioPretrainingTask
from omegaconf import open_dict

logger = logging.getLogger(__name__)


def copy_built_fields(model_cfg, model, names):
    """Copy ``names`` from ``model.cfg`` back into ``model_cfg``.

    fairseq builds a model from a merged copy of ``cfg.model`` but saves the
    original in checkpoints; fields that build_model fills in (``w2v_args``,
    class names, cluster sizes) must be copied back so that the checkpoint
    loads on its own.
    """
    built = getattr(model, "cfg", None)
    if built is None:
        return
    with open_dict(model_cfg):
        for name in names:
            if name in built:
                model_cfg[name] = built[name]


class SerAudioTask(AudioPretrainingTask):
    """Base of ``ser_classification`` and ``ser_ptapt``.

    Subclasses name in ``built_fields`` the model config fields their models
    fill in at build time, which must reach the checkpoint.
    """

    built_fields: Sequence[str] = ("w2v_args",)

    def get_batch_iterator(self, dataset, *args, required_batch_size_multiple=1, **kwargs):
        # fairseq-fixed 0.12.3.1's batch_by_size drops the last batch whenever
        # required_batch_size_multiple > 1 (fairseq's default is 8): utterances
        # would silently go missing from every epoch and from validation
        if required_batch_size_multiple != 1:
            logger.info("dataset.required_batch_size_multiple=%d ignored: it would drop utterances",
                        required_batch_size_multiple)
        return super().get_batch_iterator(dataset, *args, required_batch_size_multiple=1, **kwargs)

    def build_model(self, model_cfg, from_checkpoint=False):
        model = super().build_model(model_cfg, from_checkpoint)
        copy_built_fields(model_cfg, model, self.built_fields)
        return model

    def max_positions(self):
        return None
