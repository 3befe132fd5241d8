"""``ser_ptapt``: audio with frame-level pseudo-labels at several granularities (P-TAPT step 3)."""

import logging
from dataclasses import dataclass, field
from typing import List

from fairseq.tasks import register_task
from fairseq.tasks.audio_pretraining import AudioPretrainingConfig
from omegaconf import II, MISSING

from ..data.frame_label_dataset import FrameLabelDataset
from ..data.frame_labels import read_frame_labels
from ..data.manifest import dict_path, label_path, manifest_path, read_label_dict, read_manifest
from ..errors import DataError
from .base import SerAudioTask

logger = logging.getLogger(__name__)


@dataclass
class SerPtaptConfig(AudioPretrainingConfig):
    label_dir: str = field(
        default=MISSING,
        metadata={"help": "folder with {split}.{ext} frame-label files and dict.{ext}.txt "
                  "(written by fairseq-ser pseudo-labels)"},
    )
    cluster_labels: List[str] = field(
        default_factory=lambda: ["km64", "km512", "km4096"],
        metadata={"help": "extensions of the frame-label files, one per granularity; "
                  "the model gets one prediction head per entry"},
    )
    max_sample_size: int = field(
        default=160000,
        metadata={"help": "training utterances longer than this many samples are cropped "
                  "(at a frame boundary, labels with them); 160000 = 10 s"},
    )
    train_subset: str = II("dataset.train_subset")


@register_task("ser_ptapt", dataclass=SerPtaptConfig)
class SerPtaptTask(SerAudioTask):
    cfg: SerPtaptConfig
    built_fields = ("w2v_args", "cluster_sizes")

    def __init__(self, cfg: SerPtaptConfig):
        super().__init__(cfg)
        if not cfg.cluster_labels:
            raise DataError("task.cluster_labels is empty: name at least one frame-label set")
        self.cluster_sizes: List[int] = [
            len(read_label_dict(dict_path(cfg.label_dir, ext)))
            for ext in cfg.cluster_labels
        ]

    def load_dataset(self, split: str, task_cfg=None, **kwargs):
        manifest = read_manifest(manifest_path(self.cfg.data, split))
        sizes = [n for _, n in manifest.entries]
        labels = [
            read_frame_labels(label_path(self.cfg.label_dir, split, ext), sizes, k)
            for ext, k in zip(self.cfg.cluster_labels, self.cluster_sizes)
        ]
        crop = self.cfg.max_sample_size if split == self.cfg.train_subset else None
        self.datasets[split] = FrameLabelDataset(manifest, labels, max_sample_size=crop)
        logger.info("%s: %d utterances, labels %s", split, len(manifest),
                    ", ".join(f"{e} (K={k})" for e, k in zip(self.cfg.cluster_labels, self.cluster_sizes)))
