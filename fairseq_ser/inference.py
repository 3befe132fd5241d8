"""Running a trained emotion classifier: loading its checkpoint and scoring audio.

A classifier checkpoint holds everything needed: the backbone's pretraining
config (``w2v_args``), the head's config and the class names. Neither the
original ``w2v_path`` nor the training manifests are read.

Recordings longer than a window are cut into windows (:class:`Windowing`);
a recording's probabilities are the duration-weighted mean of its windows'
probabilities, and its label the most probable class of that mean.
"""

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .data.audio import MIN_MODEL_SAMPLES, SAMPLE_RATE, to_mono_16k
from .errors import AudioError, CheckpointError, SerError
from .models.pretrained import checkpoint_config, model_name, read_checkpoint

logger = logging.getLogger(__name__)

CLASSIFIER_MODEL = "ser_wav2vec2_classifier"
# autocast dtype of each --precision; fp32 runs without autocast
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

Span = Tuple[int, int]


@dataclass
class WindowPrediction:
    """One window of a long recording: ``start`` and ``end`` in seconds."""

    start: float
    end: float
    label: str
    probabilities: Dict[str, float]


@dataclass
class Prediction:
    """The emotion of one recording.

    ``probabilities`` maps every class to its probability (they sum to 1);
    ``windows`` lists the windows when the recording was cut into two or more.
    """

    label: str
    probabilities: Dict[str, float]
    duration: float
    windows: List[WindowPrediction] = field(default_factory=list)


@dataclass(frozen=True)
class Windowing:
    """How recordings are cut, in seconds.

    Windows of ``window`` seconds start every ``hop`` seconds (default: the
    window, i.e. no overlap); ``window=None`` scores every recording whole.
    The last window ends at the end of the recording; if it is shorter than
    ``min_window`` (default: half a window) and not the only one, it is
    merged into the previous window, so windows are at most
    ``window + min_window`` long. Recordings up to one window long are one
    window.
    """

    window: Optional[float] = 10.0
    hop: Optional[float] = None
    min_window: Optional[float] = None

    def __post_init__(self):
        if self.window is not None and not self.window > 0:
            raise ValueError(f"window length must be positive, got {self.window}")
        if self.hop is not None and not (self.window is not None and 0 < self.hop <= self.window):
            raise ValueError(f"hop must be positive and at most the window length, got {self.hop}")
        if self.min_window is not None and not (self.window is not None and 0 <= self.min_window <= self.window):
            raise ValueError(f"minimum window must be between 0 and the window length, got {self.min_window}")

    def spans(self, num_samples: int, name: str = "audio") -> List[Span]:
        """``[(start, end), ...]`` sample ranges of the windows of a 16 kHz recording."""
        if num_samples < MIN_MODEL_SAMPLES:
            raise AudioError(
                f"{name}: {num_samples / SAMPLE_RATE:.3f} s of audio, shorter than the model's "
                f"minimum of {MIN_MODEL_SAMPLES} samples ({1000 * MIN_MODEL_SAMPLES // SAMPLE_RATE} ms)")
        window = None if self.window is None else int(round(self.window * SAMPLE_RATE))
        if window is None or num_samples <= window:
            return [(0, num_samples)]
        hop = window if self.hop is None else max(1, int(round(self.hop * SAMPLE_RATE)))
        min_window = window // 2 if self.min_window is None else int(round(self.min_window * SAMPLE_RATE))
        min_window = max(min_window, MIN_MODEL_SAMPLES)
        spans, start = [], 0
        while True:
            end = min(start + window, num_samples)
            spans.append((start, end))
            if end == num_samples:
                break
            start += hop
        if len(spans) > 1 and spans[-1][1] - spans[-1][0] < min_window:
            spans.pop()
            spans[-1] = (spans[-1][0], num_samples)
        return spans


class EmotionClassifier:
    """A fine-tuned ``ser_wav2vec2_classifier`` ready for inference.

    >>> clf = EmotionClassifier.from_checkpoint("checkpoint_best.pt")
    >>> clf.predict(wav, sample_rate).label
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
        import fairseq_ser

        fairseq_ser.register()
        from .models.ser_wav2vec2_classifier import SerWav2Vec2Classifier

        dev = resolve_device(device)
        check_precision(precision, dev)
        state = read_checkpoint(path)
        cfg = checkpoint_config(state, path)
        name = model_name(cfg)
        if name != CLASSIFIER_MODEL:
            raise CheckpointError(
                f"{path}: holds a {name!r} model, not an emotion classifier "
                f"({CLASSIFIER_MODEL}); train one with config/vft.yaml"
            )
        class_names = cfg.model.get("class_names")
        if not class_names:
            raise CheckpointError(f"{path}: classifier checkpoint without class names")
        from fairseq.dataclass.utils import merge_with_parent
        from .models.ser_wav2vec2_classifier import SerWav2Vec2ClassifierConfig

        model_cfg = merge_with_parent(SerWav2Vec2ClassifierConfig(), cfg.model, remove_missing=True)
        with warnings.catch_warnings():
            # fairseq's positional convolution uses torch's deprecated weight_norm
            warnings.filterwarnings("ignore", message=".*weight_norm.* is deprecated")
            model = SerWav2Vec2Classifier.build_model(model_cfg, SimpleNamespace(class_names=list(class_names)))
        try:
            model.load_state_dict(state["model"], strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not match the stored config ({str(e).splitlines()[0]})")
        return cls(model, class_names, dev, path, precision)

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @torch.inference_mode()
    def predict_proba(self, waveforms: Sequence[np.ndarray], lengths: Optional[Sequence[int]] = None,
                      max_batch_samples: int = 16000 * 160, progress=None) -> np.ndarray:
        """Class probabilities ``(N, num_classes)`` of 16 kHz mono float waveforms.

        Utterances are sorted by length and batched up to ``max_batch_samples``
        padded samples, so padding stays small; results come back in input order.
        ``waveforms`` may be a lazy sequence (reading files on access) when
        ``lengths`` gives the sample counts up front. ``progress`` is called
        with the number of utterances done after each batch.
        """
        if lengths is None:
            lengths = [len(w) for w in waveforms]
        out = np.zeros((len(lengths), len(self.class_names)), dtype=np.float32)
        batches = length_batches(lengths, max_batch_samples)
        if logger.isEnabledFor(logging.DEBUG) and batches:
            valid, padded = batch_padding(lengths, batches)
            logger.debug("%d utterances in %d batches, %.1f %% padding",
                         len(lengths), len(batches), 100 * (1 - valid / max(padded, 1)))
        for batch in batches:
            wavs = [np.asarray(waveforms[i], dtype=np.float32) for i in batch]
            lengths_b = [len(w) for w in wavs]
            source = torch.zeros(len(batch), max(lengths_b))
            padding = torch.ones(len(batch), max(lengths_b), dtype=torch.bool)
            for row, wav in enumerate(wavs):
                source[row, : len(wav)] = torch.from_numpy(wav)
                padding[row, : len(wav)] = False
            with self._autocast():
                logits = self.model(source.to(self.device), padding_mask=padding.to(self.device))
            out[batch] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            if progress is not None:
                progress(len(batch))
        return out

    def predict(self, wav: np.ndarray, sample_rate: int, windowing: Optional[Windowing] = None,
                batch_seconds: float = 160.0) -> Prediction:
        """The emotion of one recording: ``(samples,)`` or ``(samples, channels)`` audio at any rate."""
        return self.predict_batch([wav], sample_rate, windowing, batch_seconds)[0]

    def predict_batch(self, wavs: Sequence[np.ndarray], sample_rates: Union[int, Sequence[int]],
                      windowing: Optional[Windowing] = None, batch_seconds: float = 160.0) -> List[Prediction]:
        """:meth:`predict` for many recordings at once (one rate for all, or one each).

        All windows of all recordings are batched together by length. A
        recording shorter than the model's minimum (25 ms) raises
        :class:`AudioError` naming its position.
        """
        rates = [sample_rates] * len(wavs) if np.isscalar(sample_rates) else list(sample_rates)
        if len(rates) != len(wavs):
            raise ValueError(f"{len(wavs)} recordings but {len(rates)} sample rates")
        windowing = windowing or Windowing()
        audio = [prepare_audio(w, r, f"input {i}") for i, (w, r) in enumerate(zip(wavs, rates))]
        spans = [windowing.spans(len(a), f"input {i}") for i, a in enumerate(audio)]
        return self.predict_windows(audio, spans, int(batch_seconds * SAMPLE_RATE))

    def predict_windows(self, audio: Sequence[np.ndarray], spans: Sequence[Sequence[Span]],
                        max_batch_samples: int, progress=None) -> List[Prediction]:
        """Predictions of 16 kHz mono recordings cut at ``spans`` (from :meth:`Windowing.spans`)."""
        pieces = [wav[s:e] for wav, sp in zip(audio, spans) for s, e in sp]
        probs = self.predict_proba(pieces, max_batch_samples=max_batch_samples, progress=progress)
        results, k = [], 0
        for wav, sp in zip(audio, spans):
            results.append(self._aggregate(probs[k:k + len(sp)], sp, len(wav)))
            k += len(sp)
        return results

    def _aggregate(self, probs: np.ndarray, spans: Sequence[Span], num_samples: int) -> Prediction:
        weights = np.array([e - s for s, e in spans], dtype=np.float64)
        mean = (weights[:, None] * probs.astype(np.float64)).sum(0) / weights.sum()
        windows = []
        if len(spans) > 1:
            windows = [WindowPrediction(s / SAMPLE_RATE, e / SAMPLE_RATE, self.class_names[int(p.argmax())],
                                        self._named(p)) for (s, e), p in zip(spans, probs)]
        return Prediction(self.class_names[int(mean.argmax())], self._named(mean),
                          num_samples / SAMPLE_RATE, windows)

    def _named(self, probs) -> Dict[str, float]:
        return {name: float(p) for name, p in zip(self.class_names, probs)}


def prepare_audio(wav: np.ndarray, sample_rate: int, name: str) -> np.ndarray:
    """``wav`` as 16 kHz mono float32; AudioError naming ``name`` for unusable audio."""
    if not (isinstance(sample_rate, (int, float, np.number)) and sample_rate > 0
            and float(sample_rate).is_integer()):
        raise AudioError(f"{name}: sample rate must be a positive whole number of Hz, got {sample_rate!r}")
    wav = np.asarray(wav)
    if np.issubdtype(wav.dtype, np.signedinteger):  # PCM samples: scale to [-1, 1) as soundfile does
        wav = wav.astype(np.float32) / -np.iinfo(wav.dtype).min
    if wav.size == 0:
        raise AudioError(f"{name}: audio holds no samples")
    try:
        wav = to_mono_16k(wav, int(sample_rate))
    except AudioError as e:
        raise AudioError(f"{name}: {e}")
    if not np.isfinite(wav).all():
        raise AudioError(f"{name}: audio holds NaN or infinite samples")
    return wav


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


def length_batches(lengths: Sequence[int], max_batch_samples: int, max_padding: float = 0.2) -> List[List[int]]:
    """Indices grouped by similar length, each group at most ``max_batch_samples`` once padded.

    A group is also closed before an utterance that would make more than
    ``max_padding`` of its padded samples padding (a jump in length), so
    padding stays small when lengths are spread out.
    """
    order = np.argsort(lengths, kind="stable")
    batches, current, longest, total = [], [], 0, 0
    for i in order:
        n = int(lengths[i])
        padded = max(longest, n) * (len(current) + 1)
        if current and (padded > max_batch_samples or padded - total - n > max_padding * padded):
            batches.append(current)
            current, longest, total = [], 0, 0
        current.append(int(i))
        longest = max(longest, n)
        total += n
    if current:
        batches.append(current)
    return batches


def batch_padding(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> Tuple[int, int]:
    """``(valid samples, padded samples)`` of ``batches``: padded = batch size × longest, summed."""
    valid = sum(int(lengths[i]) for b in batches for i in b)
    padded = sum(len(b) * max(int(lengths[i]) for i in b) for b in batches)
    return valid, padded
