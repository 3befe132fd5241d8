"""Predicting the emotions of audio files: finding them, reading them in chunks, writing the results.

Files are read a chunk at a time (about ``chunk_seconds`` of audio), the
windows of all files of a chunk are scored together in length-sorted batches,
and each file's result is written before the next chunk is read, so memory
does not grow with the number of files. A file that cannot be used (missing,
unreadable, empty, shorter than 25 ms) gets an error entry and the others go on.

Any :class:`.windowing.WindowedClassifier` scores the files: the PyTorch
:class:`.inference.EmotionClassifier` or the ONNX
:class:`.onnx_predictor.OnnxEmotionClassifier`. This module imports neither, so
the ONNX path runs without torch.
"""

import csv
import json
import logging
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Sequence

from .data.audio import SAMPLE_RATE, read_audio
from .errors import AudioError, DataError
from .fileio import atomic_open
from .windowing import Batches, Prediction, WindowedClassifier, Windowing, prepare_audio

logger = logging.getLogger(__name__)

# a chunk also ends after this many files, so results of short or broken files come out steadily
MAX_CHUNK_FILES = 1000
OUTPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv"}


@dataclass
class FileResult:
    """One file's prediction, or the reason it has none."""

    path: str
    prediction: Optional[Prediction] = None
    error: Optional[str] = None


@dataclass
class PredictionStats:
    files: int = 0
    failed: int = 0
    seconds: float = 0.0
    windows: int = 0
    valid_samples: int = 0
    padded_samples: int = 0

    @property
    def padding(self) -> float:
        """Fraction of the batched samples that were padding."""
        return 1.0 - self.valid_samples / self.padded_samples if self.padded_samples else 0.0

    def count_batches(self, batches: Batches) -> None:
        """Add the windows and samples of ``batches`` (a classifier's ``on_batches``)."""
        self.windows += sum(len(b) for b in batches)
        self.valid_samples += batches.valid_samples
        self.padded_samples += batches.padded_samples


def find_audio(paths: Sequence[str], extensions: Sequence[str]) -> List[str]:
    """Audio files under ``paths``: folders are searched recursively for ``extensions``.

    A path naming a file is kept whatever its extension (a missing one gets
    its error entry later); hidden files are skipped. Each file appears once.
    """
    suffixes = tuple("." + e.lower().lstrip(".") for e in extensions)
    files = []
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)
            continue
        found = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(os.path.join(root, n) for n in sorted(names)
                         if not n.startswith(".") and n.lower().endswith(suffixes))
        if not found:
            logger.warning("%s: no files ending in %s", path, ", ".join(suffixes))
        files.extend(found)
    if not files:
        raise DataError(f"no audio files ({', '.join(suffixes)}) in {', '.join(paths)}")
    seen = set()
    return [f for f in files if not (f in seen or seen.add(f))]


def predict_files(clf: WindowedClassifier, files: Iterable[str], windowing: Windowing,
                  batch_seconds: float = 160.0, chunk_seconds: float = 600.0,
                  stats: Optional[PredictionStats] = None) -> Iterator[FileResult]:
    """One :class:`FileResult` per file, in order, scoring about ``chunk_seconds`` of audio at a time."""
    stats = stats if stats is not None else PredictionStats()
    max_batch = int(batch_seconds * SAMPLE_RATE)
    chunk, seconds = [], 0.0
    for path in files:
        try:
            wav = prepare_audio(read_audio(path), SAMPLE_RATE, path)
            chunk.append((path, wav, windowing.spans(len(wav), path)))
            seconds += len(wav) / SAMPLE_RATE
        except AudioError as e:
            chunk.append((path, None, _without_path(str(e), path)))
        if seconds >= chunk_seconds or len(chunk) >= MAX_CHUNK_FILES:
            yield from _score_chunk(clf, chunk, max_batch, stats)
            chunk, seconds = [], 0.0
    if chunk:
        yield from _score_chunk(clf, chunk, max_batch, stats)


def _score_chunk(clf, chunk, max_batch, stats):
    ok = [(wav, spans) for _, wav, spans in chunk if wav is not None]
    predictions = iter(clf.predict_windows([w for w, _ in ok], [s for _, s in ok], max_batch,
                                           on_batches=stats.count_batches) if ok else [])
    for path, wav, spans_or_error in chunk:
        stats.files += 1
        if wav is None:
            stats.failed += 1
            yield FileResult(path, error=spans_or_error)
        else:
            stats.seconds += len(wav) / SAMPLE_RATE
            yield FileResult(path, prediction=next(predictions))


def _without_path(message: str, path: str) -> str:
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def output_format(path: str) -> str:
    """``jsonl`` or ``csv`` from the extension of ``path``; DataError for any other."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in OUTPUT_FORMATS:
        raise DataError(f"{path}: unknown output format; use a .jsonl or .csv file name")
    return OUTPUT_FORMATS[ext]


def write_results(results: Iterable[FileResult], output: str, class_names: Sequence[str], on_result=None) -> None:
    """Write ``results`` to ``output`` (.jsonl or .csv), renamed into place when complete."""
    fmt = output_format(output)
    with atomic_open(output, "w", encoding="utf-8", newline="") as f:
        writer = _CsvWriter(f, class_names) if fmt == "csv" else _JsonlWriter(f)
        for result in results:
            writer.write(result)
            if on_result is not None:
                on_result(result)


class _JsonlWriter:
    def __init__(self, f):
        self.f = f

    def write(self, result: FileResult):
        self.f.write(json.dumps(result_to_dict(result), ensure_ascii=False) + "\n")


class _CsvWriter:
    """A ``file`` row per file, followed by a ``window`` row per window of a long file."""

    def __init__(self, f, class_names):
        self.class_names = list(class_names)
        self.writer = csv.writer(f, lineterminator="\n")
        self.writer.writerow(["path", "type", "start", "end", "duration", "label"]
                             + [f"p_{c}" for c in self.class_names] + ["error"])

    def write(self, result: FileResult):
        p = result.prediction
        if p is None:
            self.writer.writerow([result.path, "file", "", "", "", ""] + [""] * len(self.class_names)
                                 + [result.error])
            return
        self._row(result.path, "file", 0.0, p.duration, p.label, p.probabilities)
        for w in p.windows:
            self._row(result.path, "window", w.start, w.end, w.label, w.probabilities)

    def _row(self, path, kind, start, end, label, probs):
        self.writer.writerow([path, kind, f"{start:.3f}", f"{end:.3f}", f"{end - start:.3f}", label]
                             + [f"{probs[c]:.6f}" for c in self.class_names] + [""])


def result_to_dict(result: FileResult) -> dict:
    """The JSON form of a result: path, duration, label, probabilities, windows; or path and error."""
    p = result.prediction
    if p is None:
        return {"path": result.path, "error": result.error}
    return {"path": result.path, "duration": round(p.duration, 3), "label": p.label,
            "probabilities": _rounded(p.probabilities),
            "windows": [{"start": round(w.start, 3), "end": round(w.end, 3), "label": w.label,
                         "probabilities": _rounded(w.probabilities)} for w in p.windows]}


def _rounded(probs):
    return {c: round(v, 6) for c, v in probs.items()}


def format_result(result: FileResult) -> str:
    """A readable line per file (tab-separated), then an indented line per window."""
    p = result.prediction
    if p is None:
        return f"{result.path}\terror: {result.error}"
    lines = [f"{result.path}\t{p.label}\t{p.duration:.2f} s\t{_ranked(p.probabilities)}"]
    lines += [f"  {w.start:7.2f}-{w.end:.2f} s\t{w.label}\t{_ranked(w.probabilities)}" for w in p.windows]
    return "\n".join(lines)


def _ranked(probs):
    return " ".join(f"{c}={v:.2f}" for c, v in sorted(probs.items(), key=lambda kv: -kv[1]))
