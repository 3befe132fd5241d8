"""Registered models; :mod:`.pretrained` owns checkpoint loading."""

from . import ser_wav2vec2_classifier  # noqa: F401
from . import ser_wav2vec2_ptapt  # noqa: F401
from . import ser_wav2vec2_tapt  # noqa: F401
from . import ser_frame_emotion  # noqa: F401
