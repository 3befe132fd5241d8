"""Inspecting corpus audio once, and converting what fairseq should not read as is.

A file is used in place when it already is what the corpora ship: WAV,
16-bit PCM, 16 kHz, mono. Everything else (other rates, several channels,
24-bit or float samples, FLAC, OGG, ...) is converted once into a cache
folder, and the manifest points at the converted copy. Keeping every manifest
entry in that one form means every reader (fairseq's dataset, our own
:func:`~fairseq_ser.data.audio.read_audio`, external tools) sees the same
samples, and decoding stays cheap during training.

Converted files are written as 16-bit PCM, not float: the corpora themselves
are 16-bit, 16-bit's 96 dB of dynamic range is far finer than anything
wav2vec 2.0 resolves, and the copies take half the disk. The one risk of
integer samples, clipping, is handled: a float source that goes beyond full
scale is scaled down to full scale rather than clipped or wrapped.

Each cached file ``<stem>-<hash of the source's absolute path>.wav`` has a
sidecar ``.json`` holding the source's size and modification time and the
converted file's length and peak, so a rerun reuses it without decoding
anything, and a changed source is converted again.

Files that cannot be used are rejected with an :class:`AudioError` whose
message is the reason; the caller lists them in ``excluded.tsv``.
"""

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass

import numpy as np

from ..errors import AudioError
from ..fileio import atomic_open, atomic_path
from .audio import MIN_MODEL_SAMPLES, SAMPLE_RATE, read_audio

logger = logging.getLogger(__name__)

# Peak absolute amplitude (full scale = 1.0) below which a file counts as
# silent: 1e-4 is -80 dBFS, about 3 steps of 16-bit PCM, i.e. digital silence
# or dither, never speech.
SILENCE_PEAK = 1e-4
DEFAULT_MIN_SECONDS = 0.1
_CACHE_VERSION = 1


@dataclass(frozen=True)
class AudioCheck:
    """What the checks need to know: shortest usable length and the silence threshold."""

    min_samples: int = int(DEFAULT_MIN_SECONDS * SAMPLE_RATE)
    silence_peak: float = SILENCE_PEAK

    @classmethod
    def from_seconds(cls, min_seconds: float, silence_peak: float = SILENCE_PEAK) -> "AudioCheck":
        # Below MIN_MODEL_SAMPLES the model's encoder yields no frame at all.
        return cls(max(MIN_MODEL_SAMPLES, int(round(min_seconds * SAMPLE_RATE))), silence_peak)


@dataclass(frozen=True)
class AudioInfo:
    """The file a manifest lists for one source, and its length in 16 kHz samples."""

    path: str
    num_samples: int
    converted: bool


def is_canonical(info) -> bool:
    """True for a ``soundfile.info`` result describing 16 kHz mono 16-bit PCM WAV."""
    return (info.format == "WAV" and info.subtype == "PCM_16"
            and info.samplerate == SAMPLE_RATE and info.channels == 1)


def cache_name(source: str) -> str:
    """Stable cache file name for ``source``: its stem plus a hash of its absolute path."""
    source = os.path.abspath(source)
    stem = re.sub(r"[^\w.-]+", "_", os.path.splitext(os.path.basename(source))[0])[:80]
    digest = hashlib.sha1(source.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{stem}-{digest}.wav"


def inspect_audio(path: str, cache_dir: str, check: AudioCheck = AudioCheck()) -> AudioInfo:
    """Check ``path`` and return the file the manifest should list for it.

    Raises :class:`AudioError` when the file is missing, unreadable, empty,
    shorter than ``check.min_samples`` or silent; the message gives the reason.
    """
    import soundfile as sf

    try:
        stat = os.stat(path)
    except OSError as e:
        raise AudioError(f"{path}: cannot access the file ({e.strerror or e})")
    try:
        info = sf.info(path)
    except Exception as e:  # LibsndfileError / RuntimeError for bad files
        raise AudioError(f"{path}: unreadable audio ({_short(e)})")
    if info.frames == 0:
        raise AudioError(f"{path}: empty (no samples)")
    if is_canonical(info):
        wav = _read(path)
        _check(path, len(wav), _peak(wav), check)
        return AudioInfo(path, len(wav), converted=False)
    return _converted(path, stat, os.path.abspath(cache_dir), check)


def _converted(path, stat, cache_dir, check):
    target = os.path.join(cache_dir, cache_name(path))
    sidecar = target[:-4] + ".json"
    source = {"source": os.path.abspath(path), "size": stat.st_size,
              "mtime_ns": stat.st_mtime_ns, "version": _CACHE_VERSION}
    cached = _read_sidecar(sidecar)
    if cached is not None and all(cached.get(k) == v for k, v in source.items()) \
            and os.path.isfile(target):
        _check(path, cached["num_samples"], cached["peak"], check)
        return AudioInfo(target, cached["num_samples"], converted=True)

    wav = _read(path)
    peak = _peak(wav)
    _check(path, len(wav), peak, check)
    if peak > 1.0:
        # float sources may exceed full scale; scale rather than clip or wrap
        wav = wav / peak
        logger.debug("%s: peak %.3f above full scale, scaled to 1.0", path, peak)
    wav = np.clip(wav, -1.0, 1.0)
    import soundfile as sf

    with atomic_path(target) as tmp:
        sf.write(tmp, wav, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    with atomic_open(sidecar, "w", encoding="utf-8") as f:
        json.dump(dict(source, num_samples=len(wav), peak=min(peak, 1.0)), f)
    return AudioInfo(target, len(wav), converted=True)


def _read(path):
    try:
        return read_audio(path)
    except AudioError:
        raise
    except Exception as e:  # a decoder failing part way (truncated FLAC/OGG, ...)
        raise AudioError(f"{path}: unreadable audio ({_short(e)})")


def _peak(wav):
    return float(np.max(np.abs(wav))) if len(wav) else 0.0


def _check(path, num_samples, peak, check):
    if num_samples == 0:
        raise AudioError(f"{path}: empty (no samples)")
    if num_samples < check.min_samples:
        raise AudioError(
            f"{path}: too short ({num_samples / SAMPLE_RATE:.3f} s, "
            f"minimum {check.min_samples / SAMPLE_RATE:.3f} s)")
    if not np.isfinite(peak):
        raise AudioError(f"{path}: samples are not finite numbers (NaN or inf)")
    if peak < check.silence_peak:
        raise AudioError(f"{path}: silent (peak amplitude {peak:.2g} below {check.silence_peak:g})")


def _read_sidecar(path):
    # not fileio.read_json_or_none: a sidecar is only a cache, so a corrupt one means "convert again"
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and {"num_samples", "peak"} <= data.keys() else None


def _short(e):
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__

