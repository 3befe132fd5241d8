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
import ctypes
import os
import sys
import threading
from typing import Optional, Sequence

import numpy as np
import torch

from .errors import SerError
from .models.checkpoint import load_trained
from .windowing import (MAX_SIDE_BY_SIDE, Batches, Prediction, Span, WindowedClassifier,  # noqa: F401
                        WindowPrediction, Windowing, length_batches, prepare_audio)

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
        if dev.type == "cpu":
            _limit_malloc_arenas()   # before loading starts torch's threads
        model = load_trained(path, CLASSIFIER_MODEL)
        class_names = list(model.cfg.class_names)
        return cls(model, class_names, dev, path, precision)

    def parallel_batches(self) -> int:
        """On the CPU, torch's thread count (as set when no prediction runs), at most
        :data:`MAX_SIDE_BY_SIDE`: that many utterances run at once, sharing the threads out.

        Two utterances side by side on one thread each ran 1.28x faster than
        one at a time on two threads (24 EmoDB files on 2 cores, 6.9 against
        8.8 s, wav2vec2-base). On a GPU, 1: batches keep it busy.
        """
        if self.device.type != "cpu":
            return 1
        with _threads_lock:
            threads = _threads_before if _threads_users else torch.get_num_threads()
        return min(threads, MAX_SIDE_BY_SIDE)

    def parallel_context(self):
        """torch's threads shared out between the utterances running side by side (1 each with up
        to :data:`MAX_SIDE_BY_SIDE` threads); restored after."""
        _limit_malloc_arenas()
        return _threads_shared_out()

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


M_ARENA_MAX = -8  # glibc's mallopt parameter: how many malloc arenas threads may create
_arenas_limited = False


def _limit_malloc_arenas(arenas: int = 1) -> None:
    """Have glibc's malloc share one arena between threads, once per process, unless the user set
    MALLOC_ARENA_MAX. With an arena per thread, each keeps the memory its forward passes freed:
    utterances side by side on 2 threads peaked at 1.45 GiB against 1.12 GiB with one arena, at the
    same speed (24 EmoDB files, wav2vec2-base). Not glibc (macOS, musl): nothing to do."""
    global _arenas_limited
    if _arenas_limited or "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    _arenas_limited = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


_threads_lock = threading.Lock()
_threads_users = 0
_threads_before = 1


@contextlib.contextmanager
def _threads_shared_out():
    # torch's thread count is process-wide: several callers at once (cv scores its chains in
    # threads) share one setting, and the last to leave restores what the first found
    global _threads_users, _threads_before
    with _threads_lock:
        if _threads_users == 0:
            _threads_before = torch.get_num_threads()
            torch.set_num_threads(max(1, _threads_before // MAX_SIDE_BY_SIDE))
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_before)


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
