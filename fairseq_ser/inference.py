"""Running a trained emotion classifier with PyTorch: loading its checkpoint and scoring audio.

A classifier checkpoint holds everything needed: the backbone's pretraining
config (``w2v_args``), the head's config and the class names. Neither the
original ``w2v_path`` nor the training manifests are read.

Reading, windowing, batching and combining window probabilities are shared
with the ONNX predictor and live in :mod:`.windowing`; their names are
importable from here too. Recordings longer than a window are cut into
windows (:class:`Windowing`); a recording's probabilities are the
duration-weighted mean of its windows' probabilities, and its label the most
probable class of that mean.
"""

import contextlib
from typing import Optional, Sequence

import numpy as np
import torch

from .errors import SerError
from .models.checkpoint import load_trained
from .windowing import (Batches, Prediction, Span, WindowedClassifier, WindowPrediction,  # noqa: F401
                        Windowing, length_batches, prepare_audio)

CLASSIFIER_MODEL = "ser_wav2vec2_classifier"
# autocast dtype of each --precision; fp32 runs without autocast
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class EmotionClassifier(WindowedClassifier):
    """A fine-tuned ``ser_wav2vec2_classifier`` ready for inference.

    >>> clf = EmotionClassifier.from_checkpoint("checkpoint_best.pt")
    >>> clf.predict(wav, sample_rate).label

    ``predict``, ``predict_batch``, ``predict_windows`` and ``predict_proba``
    are :class:`.windowing.WindowedClassifier`'s.
    """

    def __init__(self, model, class_names: Sequence[str], device: torch.device, path: str = "",
                 precision: str = "fp32"):
        check_precision(precision, device)
        self.model = model.eval().to(device)
        self.class_names = list(class_names)
        self.device = device
        self.path = path
        self.precision = precision

    @classmethod
    def from_checkpoint(cls, path: str, device: Optional[str] = None, precision: str = "fp32"
                        ) -> "EmotionClassifier":
        """Load a classifier checkpoint onto ``device`` (default: CUDA when available, else the CPU)."""
        dev = resolve_device(device)
        check_precision(precision, dev)
        model = load_trained(path, CLASSIFIER_MODEL)
        class_names = list(model.cfg.class_names)
        return cls(model, class_names, dev, path, precision)

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @torch.inference_mode()
    def batch_probabilities(self, source: np.ndarray, padding_mask: np.ndarray) -> np.ndarray:
        """``(B, num_classes)`` probabilities of a padded batch (True in ``padding_mask`` marks padding)."""
        source_t = torch.from_numpy(source).to(self.device)
        padding_t = torch.from_numpy(padding_mask).to(self.device)
        with self._autocast():
            logits = self.model(source_t, padding_mask=padding_t)
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise SerError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise SerError(f"precision fp16 needs a CUDA device, not {device}")


def resolve_device(device: Optional[str]) -> torch.device:
    """``device`` as a torch device; None: CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SerError(f"device {device!r}: not a torch device (expected cpu, cuda or cuda:N)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SerError(f"device {device!r}: CUDA is not available here")
    return dev
