"""Windows, length batches and window probabilities: the half of inference that needs no torch.

A classifier scores 16 kHz mono windows in padded batches; everything around
that is here, so that the PyTorch classifier (:mod:`.inference`) and the ONNX
one (:mod:`.onnx_predictor`) read, cut, batch and combine audio the same way:

- :func:`prepare_audio`: an array at any rate, mono or multichannel, as 16 kHz mono float32;
- :class:`Windowing`: recordings longer than a window are cut into windows;
- :func:`length_batches`: windows sorted by length and grouped so that padding stays small;
- :class:`WindowedClassifier`: the predict methods both classifiers share. A
  recording's probabilities are the duration-weighted mean of its windows'
  probabilities, and its label the most probable class of that mean.
"""

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .data.audio import MIN_MODEL_SAMPLES, SAMPLE_RATE, to_mono_16k
from .errors import AudioError

logger = logging.getLogger(__name__)

Span = Tuple[int, int]
# on the CPU, at most this many utterances run side by side (see WindowedClassifier.parallel_batches):
# each holds its own activations (about 0.15 GiB for an 8 s utterance at wav2vec2-base size), so a
# many-core machine shares its threads out between them instead
MAX_SIDE_BY_SIDE = 4


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


@dataclass
class Batches:
    """Utterance indices grouped into batches, and the padding they cost."""

    indices: List[List[int]] = field(default_factory=list)
    valid_samples: int = 0  # samples of the utterances themselves
    padded_samples: int = 0  # batch size x longest utterance, summed over the batches

    def __len__(self):
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)

    @property
    def padding(self) -> float:
        """Fraction of the padded samples that are padding."""
        return 1.0 - self.valid_samples / self.padded_samples if self.padded_samples else 0.0

    def add(self, batch: List[int], longest: int, total: int) -> None:
        self.indices.append(batch)
        self.valid_samples += total
        self.padded_samples += len(batch) * longest


def length_batches(lengths: Sequence[int], max_batch_samples: int, max_padding: float = 0.2) -> Batches:
    """Indices grouped by similar length, each group at most ``max_batch_samples`` once padded.

    A group is also closed before an utterance that would make more than
    ``max_padding`` of its padded samples padding (a jump in length), so
    padding stays small when lengths are spread out.
    """
    order = np.argsort(lengths, kind="stable")
    batches, current, longest, total = Batches(), [], 0, 0
    for i in order:
        n = int(lengths[i])
        padded = max(longest, n) * (len(current) + 1)
        if current and (padded > max_batch_samples or padded - total - n > max_padding * padded):
            batches.add(current, longest, total)
            current, longest, total = [], 0, 0
        current.append(int(i))
        longest = max(longest, n)
        total += n
    if current:
        batches.add(current, longest, total)
    return batches


def pad_batch(wavs: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """``(source, padding_mask)`` of a batch: float32 ``(B, longest)`` zero-padded, bool True at padding."""
    longest = max(len(w) for w in wavs)
    source = np.zeros((len(wavs), longest), dtype=np.float32)
    padding = np.ones((len(wavs), longest), dtype=bool)
    for row, wav in enumerate(wavs):
        source[row, : len(wav)] = wav
        padding[row, : len(wav)] = False
    return source, padding


class WindowedClassifier:
    """What every classifier of 16 kHz windows does with recordings: windows, batches, aggregation.

    A subclass sets ``class_names`` and implements :meth:`batch_probabilities`;
    ``windowing`` is the default of :meth:`predict` and :meth:`predict_batch`.
    """

    class_names: List[str]
    windowing: Windowing = Windowing()
    device = "cpu"  # a subclass sets where its model runs: "cpu", "cuda", or a torch.device

    @property
    def max_padding(self) -> float:
        """Most of a batch's samples that may be padding (see :func:`length_batches`).

        0 on the CPU: there a batch runs no faster per sample than its
        utterances one by one (the matrix products already run near the
        core's peak), so padding is pure loss, and a batch's activations
        cost memory. Utterances of exactly the same length (the full windows
        of long recordings) are still batched. On a GPU, 0.2: batching is
        what keeps it busy.
        """
        return 0.0 if str(self.device).split(":")[0] == "cpu" else 0.2

    def batch_probabilities(self, source: np.ndarray, padding_mask: np.ndarray) -> np.ndarray:
        """``(B, num_classes)`` float32 probabilities of a padded batch from :func:`pad_batch`."""
        raise NotImplementedError

    def parallel_batches(self) -> int:
        """How many batches :meth:`predict_proba` runs at once (each alone, one utterance per batch,
        inside :meth:`parallel_context`); 1: one batch at a time, batched by :attr:`max_padding`."""
        return 1

    def parallel_context(self):
        """Entered around the batches when :meth:`parallel_batches` is above 1."""
        return contextlib.nullcontext()

    def predict_proba(self, waveforms: Sequence[np.ndarray], lengths: Optional[Sequence[int]] = None,
                      max_batch_samples: int = 16000 * 160, progress=None,
                      on_batches: Optional[Callable[[Batches], None]] = None) -> np.ndarray:
        """Class probabilities ``(N, num_classes)`` of 16 kHz mono float waveforms.

        Utterances are sorted by length and batched up to ``max_batch_samples``
        padded samples with at most :attr:`max_padding` of padding
        (:func:`length_batches`), or, where :meth:`parallel_batches` is above
        1, run one at a time on that many threads; results come back in
        input order. ``waveforms`` may be a lazy sequence (reading
        files on access) when ``lengths`` gives the sample counts up front.
        ``progress`` is called with the number of utterances done after each
        batch; ``on_batches`` once with the :class:`Batches` before they run
        (to count their padding).
        """
        if lengths is None:
            lengths = [len(w) for w in waveforms]
        out = np.zeros((len(lengths), len(self.class_names)), dtype=np.float32)
        workers = self.parallel_batches()
        # run side by side, each utterance is a batch of its own (a budget of 1 sample closes every batch)
        batches = length_batches(lengths, max_batch_samples if workers == 1 else 1, self.max_padding)
        if on_batches is not None:
            on_batches(batches)
        if batches:
            logger.debug("%d utterances in %d batches, %.1f %% padding, %d at a time",
                         len(lengths), len(batches), 100 * batches.padding, workers)

        def run(batch):
            source, padding = pad_batch([np.asarray(waveforms[i], dtype=np.float32) for i in batch])
            return self.batch_probabilities(source, padding)

        with contextlib.ExitStack() as stack:
            if workers == 1:
                results = map(run, batches)
            else:
                stack.enter_context(self.parallel_context())
                pool = stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix="predict"))
                results = pool.map(run, batches)   # in order, whichever finishes first
            for batch, probs in zip(batches, results):
                out[batch] = probs
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
        windowing = windowing or self.windowing
        audio = [prepare_audio(w, r, f"input {i}") for i, (w, r) in enumerate(zip(wavs, rates))]
        spans = [windowing.spans(len(a), f"input {i}") for i, a in enumerate(audio)]
        return self.predict_windows(audio, spans, int(batch_seconds * SAMPLE_RATE))

    def predict_windows(self, audio: Sequence[np.ndarray], spans: Sequence[Sequence[Span]],
                        max_batch_samples: int, progress=None,
                        on_batches: Optional[Callable[[Batches], None]] = None) -> List[Prediction]:
        """Predictions of 16 kHz mono recordings cut at ``spans`` (from :meth:`Windowing.spans`).

        ``progress`` and ``on_batches`` are passed to :meth:`predict_proba`.
        """
        pieces = [wav[s:e] for wav, sp in zip(audio, spans) for s, e in sp]
        probs = self.predict_proba(pieces, max_batch_samples=max_batch_samples, progress=progress,
                                   on_batches=on_batches)
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
