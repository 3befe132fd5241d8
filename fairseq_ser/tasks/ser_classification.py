"""``ser_classification``: utterance-level emotion labels over fairseq audio manifests."""

import logging
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.audio_pretraining import AudioPretrainingConfig
from omegaconf import II

from ..data.classification_dataset import BATCHINGS, CROPS, EmotionLabelDataset, SerAudioDataset
from ..data.manifest import dict_path, label_counts, load_split, manifest_path, read_label_dict
from ..frames import RECEPTIVE_FIELD
from .base import SerAudioTask

logger = logging.getLogger(__name__)

BATCHING_CHOICES = ChoiceEnum(list(BATCHINGS))
CROP_CHOICES = ChoiceEnum(list(CROPS))


@dataclass
class SerClassificationConfig(AudioPretrainingConfig):
    labels: Optional[str] = field(
        default="emo",
        metadata={"help": "extension of the label files: {split}.{labels} beside "
                  "{split}.tsv, and dict.{labels}.txt"},
    )
    max_sample_size: Optional[int] = field(
        default=160000,
        metadata={"help": "training utterances longer than this many samples are "
                  "cropped to it (160000 = 10 s; see crop); other splits are not cropped"},
    )
    crop: CROP_CHOICES = field(
        default="random",
        metadata={"help": "how training utterances are cropped: random: those longer than "
                  "max_sample_size at a random offset; start: keep their first max_sample_size "
                  "samples (the reference's V-FT); batch_shortest: every utterance of a batch at "
                  "a random offset to the batch's shortest (at most max_sample_size), so batches "
                  "hold no padding (the reference's P-TAPT stage 1)"},
    )
    min_sample_size: Optional[int] = field(
        default=RECEPTIVE_FIELD,
        metadata={"help": "skip utterances shorter than this many samples (with their "
                  f"labels); {RECEPTIVE_FIELD} is the CNN encoder's receptive field"},
    )
    batching: BATCHING_CHOICES = field(
        default="min_padding",
        metadata={"help": "training batches. min_padding: cut the length-sorted utterances into "
                  "as many batches as runs of dataset.batch_size would make (the same updates per "
                  "epoch and utterances per update on average), where the fewest samples are "
                  "padding, no batch above dataset.batch_size utterances of the longest length "
                  "(or dataset.max_tokens samples); random: new random batches of "
                  "dataset.batch_size utterances every epoch, the last incomplete one dropped "
                  "(the reference's V-FT); fixed: fairseq's runs of dataset.batch_size. "
                  "Other splits use min_padding (fixed when this is fixed)"},
    )
    class_weighting: bool = field(
        default=True,
        metadata={"help": "weight the loss by inverse class frequency of the training "
                  "labels (normalised to sum to 1)"},
    )
    train_subset: str = II("dataset.train_subset")


@register_task("ser_classification", dataclass=SerClassificationConfig)
class SerClassificationTask(SerAudioTask):
    cfg: SerClassificationConfig
    built_fields = ("w2v_args", "class_names")

    def __init__(self, cfg: SerClassificationConfig):
        super().__init__(cfg)
        self.class_names: List[str] = read_label_dict(dict_path(cfg.data, cfg.labels))
        self._class_weights = None

    @property
    def target_dictionary(self):
        # fairseq's generic code asks tasks for a Dictionary; classes are plain names here
        return None

    def load_dataset(self, split: str, task_cfg=None, **kwargs):
        data = load_split(self.cfg.data, split, self.cfg.labels, class_names=self.class_names)
        path = manifest_path(self.cfg.data, split)
        is_train = split == self.cfg.train_subset
        batching = self.cfg.batching
        if not is_train and batching == "random":
            batching = "min_padding"  # never drop or reshuffle evaluation utterances
        dataset = SerAudioDataset(
            manifest_path=path,
            sample_rate=self.cfg.sample_rate,
            max_sample_size=self.cfg.max_sample_size if is_train else None,
            min_sample_size=self.cfg.min_sample_size,
            pad=not (is_train and self.cfg.crop == "batch_shortest"),
            normalize=False,
            num_buckets=self.cfg.num_batch_buckets,
            batching=batching,
            crop="start" if is_train and self.cfg.crop == "start" else "random",
        )
        dataset.check_files_exist(path)
        targets = [t for i, t in enumerate(data.targets) if i not in dataset.skipped_indices]
        # the skipped utterances' labels are dropped with them; the two must stay aligned
        assert len(targets) == len(dataset), (path, len(targets), len(dataset))
        if dataset.skipped_indices:
            logger.warning("%s: skipped %d utterance(s) shorter than %d samples",
                           path, len(dataset.skipped_indices), self.cfg.min_sample_size)
        self.datasets[split] = EmotionLabelDataset(dataset, targets)
        counts = label_counts(self.class_names[t] for t in targets)
        logger.info("%s: %d utterances, %s", split, len(targets),
                    ", ".join(f"{n} {counts.get(n, 0)}" for n in self.class_names))

    @property
    def class_weights(self) -> Optional[torch.Tensor]:
        """Inverse-frequency weights of the training labels, normalised to sum to 1."""
        if not self.cfg.class_weighting:
            return None
        if self._class_weights is None:
            data = load_split(self.cfg.data, self.cfg.train_subset, self.cfg.labels,
                              class_names=self.class_names)
            counts = torch.bincount(torch.tensor(data.targets), minlength=len(self.class_names)).double()
            inv = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
            self._class_weights = (inv / inv.sum()).float()
            logger.info("class weights: %s", ", ".join(
                f"{n} {w:.3f}" for n, w in zip(self.class_names, self._class_weights.tolist())))
        return self._class_weights
