"""Exceptions raised by the library.

Library code raises these with the offending path and value in the message;
only the command-line layer (:mod:`fairseq_ser.cli`) turns them into exit codes.
"""


class SerError(Exception):
    """Base class of every error this package raises on purpose."""


class DataError(SerError, ValueError):
    """A manifest, label file, dictionary or corpus folder is missing or malformed."""


class AudioError(DataError):
    """An audio file cannot be read or is unusable (empty, silent, too short)."""


class CheckpointError(SerError, ValueError):
    """A checkpoint is missing, unreadable, or holds another kind of model."""
