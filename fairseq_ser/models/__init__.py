"""Registered models; :mod:`.pretrained` owns checkpoint loading."""

from . import ser_wav2vec2_classifier  # noqa: F401
