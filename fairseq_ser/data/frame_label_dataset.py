"""Audio with frame-level pseudo-labels (P-TAPT), cropped consistently.

Labels are read from HuBERT-format files (``{split}.{ext}``: one line per
manifest line, space-separated cluster ids, one per 20 ms frame). Every
utterance must carry exactly as many ids as wav2vec 2.0's CNN makes frames of
it (:mod:`fairseq_ser.frames`), so a crop can cut audio and labels at the same frame.
"""

import os
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
from fairseq.data import FairseqDataset

from ..errors import DataError
from ..frames import STRIDE, num_frames
from .audio import read_audio

LABEL_PAD = -100  # ignored by the loss


def iter_frame_labels(path: str, num_samples: Sequence[int], num_classes: int,
                      manifest: Optional[str] = None) -> Iterator[np.ndarray]:
    """The cluster ids of each line of a ``{split}.km{K}`` file, checked against the manifest.

    The one validator of this format: the file has one line per utterance, each
    line as many ids as the wav2vec 2.0 frame rule gives for the utterance's
    ``num_samples``, every id in ``[0, num_classes)``. Lines are read one at a
    time (the file is never held whole); the line count is checked first.
    ``manifest``, a path, names the manifest in messages.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: frame-label file not found")
    with open(path, encoding="utf-8") as f:
        count = sum(1 for _ in f)
    if count != len(num_samples):
        name = f"the manifest {manifest}" if manifest else "the manifest"
        raise DataError(f"{path}: has {count} lines but {name} lists {len(num_samples)} utterances; "
                        "were the labels made for another manifest?")
    with open(path, encoding="utf-8") as f:
        for lineno, (line, n) in enumerate(zip(f, num_samples), start=1):
            try:
                ids = np.array(line.split(), dtype=np.int64)
            except ValueError:
                raise DataError(f"{path}:{lineno}: expected space-separated cluster ids")
            want = num_frames(n)
            if len(ids) != want:
                raise DataError(f"{path}:{lineno}: {len(ids)} labels for an utterance of {n} samples "
                                f"({want} frames); labels and manifest do not match")
            if len(ids) and (ids.min() < 0 or ids.max() >= num_classes):
                raise DataError(f"{path}:{lineno}: cluster id outside 0..{num_classes - 1}")
            yield ids


def read_frame_labels(path: str, num_samples: Sequence[int], num_classes: int,
                      manifest: Optional[str] = None) -> List[np.ndarray]:
    """Every line of a ``{split}.km{K}`` file, checked by :func:`iter_frame_labels`, in a compact dtype."""
    dtype = np.int16 if num_classes < 32768 else np.int32
    return [ids.astype(dtype) for ids in iter_frame_labels(path, num_samples, num_classes, manifest)]


def check_frame_labels(path: str, num_samples: Sequence[int], num_classes: int,
                       manifest: Optional[str] = None) -> None:
    """:func:`iter_frame_labels` over the whole file, keeping nothing (for a file just written)."""
    for _ in iter_frame_labels(path, num_samples, num_classes, manifest):
        pass


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
