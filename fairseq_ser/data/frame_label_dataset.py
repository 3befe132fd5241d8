"""Audio with frame-level pseudo-labels (P-TAPT), cropped consistently.

Labels are read from HuBERT-format files (``{split}.{ext}``, read and checked
by :mod:`.frame_labels`): every utterance carries exactly as many ids as
wav2vec 2.0's CNN makes frames of it, so a crop can cut audio and labels at
the same frame.
"""

from typing import List

import numpy as np
import torch
from fairseq.data import FairseqDataset

from ..errors import DataError
from ..frames import STRIDE, num_frames
from .audio import read_audio

LABEL_PAD = -100  # ignored by the loss


class FrameLabelDataset(FairseqDataset):
    """Utterances of a manifest with one frame-label sequence per label set.

    Utterances longer than ``max_sample_size`` are cropped at a random frame
    boundary; audio and every label sequence are cut at the same frame.
    """

    def __init__(self, manifest, labels: List[List[np.ndarray]], max_sample_size=None, shuffle=True):
        super().__init__()
        self.manifest = manifest
        self.labels = labels  # [label set][utterance] -> ids
        self.sizes = np.array([n for _, n in manifest.entries], dtype=np.int64)
        self.max_sample_size = max_sample_size
        self.shuffle = shuffle

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, index):
        wav = read_audio(self.manifest.audio_path(index))
        n = num_frames(len(wav))
        if n != len(self.labels[0][index]):
            raise DataError(f"{self.manifest.audio_path(index)}: {len(wav)} samples on disk, "
                            f"the manifest says {self.sizes[index]}; re-run prepare")
        return {"id": index, "source": torch.from_numpy(wav),
                "targets": [torch.from_numpy(lab[index].astype(np.int64)) for lab in self.labels]}

    def _crop(self, sample):
        wav, targets = sample["source"], sample["targets"]
        if not self.max_sample_size or len(wav) <= self.max_sample_size:
            return wav, targets
        keep = num_frames(self.max_sample_size)
        start = np.random.randint(0, len(targets[0]) - keep + 1)
        wav = wav[start * STRIDE: start * STRIDE + self.max_sample_size]
        return wav, [t[start:start + keep] for t in targets]

    def collater(self, samples):
        if not samples:
            return {}
        cropped = [self._crop(s) for s in samples]
        longest = max(len(w) for w, _ in cropped)
        frames = num_frames(longest)
        source = torch.zeros(len(samples), longest)
        padding = torch.ones(len(samples), longest, dtype=torch.bool)
        targets = [torch.full((len(samples), frames), LABEL_PAD, dtype=torch.long) for _ in cropped[0][1]]
        for row, (wav, labs) in enumerate(cropped):
            source[row, : len(wav)] = wav
            padding[row, : len(wav)] = False
            for k, lab in enumerate(labs):
                targets[k][row, : len(lab)] = lab
        return {
            "id": torch.LongTensor([s["id"] for s in samples]),
            "net_input": {"source": source, "padding_mask": padding},
            "target_list": targets,
            "nsentences": len(samples),
        }

    # fairseq batching API
    def num_tokens(self, index):
        return self.size(index)

    def size(self, index):
        return min(int(self.sizes[index]), self.max_sample_size or int(self.sizes[index]))

    def ordered_indices(self):
        # longest first with random ties, as fairseq's audio datasets do: length-bucketed batches
        order = [np.random.permutation(len(self))] if self.shuffle else [np.arange(len(self))]
        order.append(np.minimum(self.sizes, self.max_sample_size or np.iinfo(np.int64).max))
        return np.lexsort(order)[::-1]

    def filter_indices_by_size(self, indices, max_sizes):
        return indices, []
