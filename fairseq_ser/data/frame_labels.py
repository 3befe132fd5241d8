"""The ``{split}.km{K}`` frame-label format (P-TAPT's pseudo-labels): its one validator.

One line per manifest line, space-separated cluster ids, one per 20 ms frame
(HuBERT's format). Every utterance must carry exactly as many ids as wav2vec
2.0's CNN makes frames of it (:mod:`fairseq_ser.frames`). Needs numpy only, so
the k-means and assign steps check the files they write without loading
torch or fairseq.
"""

import os
from typing import Iterator, List, Optional, Sequence

import numpy as np

from ..errors import DataError
from ..frames import num_frames


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
