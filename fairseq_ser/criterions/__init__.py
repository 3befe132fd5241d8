"""Registered criterions, one per file (imported explicitly: fairseq does not scan a user dir's criterions)."""

from . import ser_cross_entropy  # noqa: F401
from . import ser_ptapt_cross_entropy  # noqa: F401
from . import ser_wav2vec_tapt  # noqa: F401
from . import ser_frame_emotion  # noqa: F401
