"""Registered learning-rate schedulers."""

from . import ser_warmup_hold_linear  # noqa: F401
