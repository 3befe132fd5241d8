"""Reading audio: any format soundfile reads, any rate, mono or multichannel.

torchaudio is never imported (the build that pip pairs with torch 2.13 does not
load); resampling is done with soxr.
"""

import numpy as np

from ..errors import AudioError
from ..frames import RECEPTIVE_FIELD

SAMPLE_RATE = 16000
# shorter input gives no wav2vec 2.0 frame at all
MIN_MODEL_SAMPLES = RECEPTIVE_FIELD
# file types libsndfile (hence soundfile) decodes (mp3 needs libsndfile >= 1.1, opus >= 1.0.29);
# the extensions that folder scans (prepare, predict) look for
AUDIO_EXTENSIONS = ("wav", "wave", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff", "aifc",
                    "au", "snd", "caf", "w64", "rf64", "sph", "nist", "voc", "htk")


def to_mono_16k(wav: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Downmix ``(samples,)`` or ``(samples, channels)`` audio and resample it to ``target_rate``."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2:
        wav = wav.mean(axis=1)
    elif wav.ndim != 1:
        raise AudioError(f"audio array has shape {wav.shape}; expected (samples,) or (samples, channels)")
    if sample_rate != target_rate:
        import soxr

        wav = soxr.resample(wav, sample_rate, target_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(wav)


def read_audio(path: str, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read ``path`` as float32 mono at ``target_rate``; errors name the file and the problem."""
    import soundfile as sf

    try:
        wav, rate = sf.read(path, dtype="float32", always_2d=False)
    except FileNotFoundError:
        raise AudioError(f"{path}: audio file not found")
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError for bad files
        if not _exists(path):
            raise AudioError(f"{path}: audio file not found")
        raise AudioError(f"{path}: cannot read audio ({e})")
    if wav.size == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    return to_mono_16k(wav, rate, target_rate)


def _exists(path):
    import os

    return os.path.exists(path)
