"""Registered models; :mod:`.checkpoint` reads checkpoint files and :mod:`.backbone` builds backbones from them."""

from . import ser_wav2vec2_classifier  # noqa: F401
from . import ser_wav2vec2_ptapt  # noqa: F401
from . import ser_wav2vec2_tapt  # noqa: F401
from . import ser_frame_emotion  # noqa: F401
