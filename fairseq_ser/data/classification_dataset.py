"""Audio datasets for utterance classification, on top of fairseq's ``FileAudioDataset``."""

import os
from typing import Sequence

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, FileAudioDataset

from ..errors import DataError
from .audio import read_audio
from .batching import min_padding_batches

BATCHINGS = ("min_padding", "random", "fixed")
CROPS = ("random", "start", "batch_shortest")


class SerAudioDataset(FileAudioDataset):
    """``FileAudioDataset`` that reads through :func:`read_audio`.

    fairseq's reader retries a failing file with sleeps and then raises a bare
    ``Exception``, and refuses any sample rate but the task's; this one fails
    at once naming the file, and resamples / downmixes what is not 16 kHz mono.

    Batching (``batching``):

    - ``"min_padding"``: batches come from
      :func:`~fairseq_ser.data.batching.min_padding_batches` over the cropped
      lengths instead of fairseq's runs of ``batch_size`` utterances;
    - ``"random"``: each epoch a new random partition into batches of
      ``batch_size`` utterances of any length, the last incomplete one dropped
      (the reference's V-FT loader: shuffled, ``drop_last``);
    - ``"fixed"``: fairseq's runs of ``batch_size`` length-sorted utterances.

    Cropping of utterances longer than ``max_sample_size`` (``crop``):
    ``"random"`` offset (fairseq's) or ``"start"`` (their first samples, the
    reference's V-FT). With ``pad=False`` fairseq's collater crops every
    utterance of a batch to the batch's shortest instead.
    """

    def __init__(self, *args, batching: str = "fixed", crop: str = "random", **kwargs):
        super().__init__(*args, **kwargs)
        if batching not in BATCHINGS:
            raise ValueError(f"unknown batching {batching!r} (choose {', '.join(BATCHINGS)})")
        if crop not in ("random", "start"):
            raise ValueError(f"unknown crop {crop!r} (choose random or start)")
        self.batching = batching
        self.crop = crop

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        # random batches are drawn anew each epoch: fairseq must ask for them again
        return self.batching != "random"

    def ordered_indices(self):
        if self.batching == "random" and self.shuffle:
            # fairseq calls this under numpy_seed(seed + epoch): a new order each epoch
            return np.random.permutation(len(self))
        return super().ordered_indices()

    def crop_to_max_size(self, t, target_size, dim=0):
        if self.crop == "start" and dim == 0:
            return t[:target_size]
        return super().crop_to_max_size(t, target_size, dim)

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        if self.batching == "random" and max_sentences:
            order = np.asarray(indices, dtype=np.int64)
            full = len(order) // max_sentences
            # drop_last as the reference, but never the only batch of a small split
            end = full * max_sentences if full > 0 else len(order)
            return [order[a:a + max_sentences] for a in range(0, end, max_sentences)]
        if self.batching != "min_padding" or (max_tokens is None and max_sentences is None):
            return super().batch_by_size(indices, max_tokens, max_sentences, required_batch_size_multiple)
        lengths = np.minimum(np.asarray(self.sizes, dtype=np.int64), self.max_sample_size)
        return min_padding_batches(indices, lengths, max_sentences, max_tokens)

    def __getitem__(self, index):
        path = os.path.join(self.root_dir, self._fname(index))
        wav = read_audio(path, self.sample_rate)
        feats = self.postprocess(torch.from_numpy(wav), self.sample_rate)
        return {"id": index, "source": feats}

    def _fname(self, index):
        fn = self.fnames[index]
        fn = fn if isinstance(self.fnames, list) else fn.as_py()
        return self.text_compressor.decompress(fn)

    def check_files_exist(self, manifest_path: str) -> None:
        """Fail before training when the manifest lists audio that is not there."""
        missing = [
            self._fname(i) for i in range(len(self))
            if not os.path.isfile(os.path.join(self.root_dir, self._fname(i)))
        ]
        if missing:
            preview = ", ".join(missing[:3]) + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
            raise DataError(
                f"{manifest_path}: {len(missing)} audio file(s) not found under root "
                f"{self.root_dir!r}: {preview}"
            )


class EmotionLabelDataset(BaseWrapperDataset):
    """Adds the utterance's class index as ``target`` to each sample and batch."""

    def __init__(self, dataset, targets: Sequence[int]):
        super().__init__(dataset)
        if len(targets) != len(dataset):
            raise DataError(f"{len(targets)} labels for {len(dataset)} utterances")
        self.targets = torch.as_tensor(list(targets), dtype=torch.long)

    def __getitem__(self, index):
        item = self.dataset[index]
        item["target"] = self.targets[index]
        return item

    def collater(self, samples):
        batch = self.dataset.collater(samples)
        if not batch:
            return batch
        batch["target"] = torch.stack([s["target"] for s in samples if s["source"] is not None])
        batch["nsentences"] = len(batch["target"])
        return batch
