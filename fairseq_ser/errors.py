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


def preview(items, n: int = 5) -> str:
    """The first ``n`` of ``items`` for an error message, with how many more there are."""
    items = list(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(str(i) for i in items[:n]) + more


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (fairseq's and torch's run over many lines)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
