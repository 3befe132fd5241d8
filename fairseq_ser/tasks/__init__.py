"""Registered tasks, one per file."""

from . import ser_classification  # noqa: F401
from . import ser_ptapt  # noqa: F401
