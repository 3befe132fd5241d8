"""Registered criterions, one per file (imported explicitly: fairseq does not scan a user dir's criterions)."""

from . import ser_cross_entropy  # noqa: F401
