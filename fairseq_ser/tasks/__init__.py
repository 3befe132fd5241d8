"""Registered tasks, one per file."""

from . import ser_classification  # noqa: F401
